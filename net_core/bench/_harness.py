"""The benchmark harness: time both implementations the same way, compare, report.

Theory of operation. A suite measures *scenarios*. A throughput scenario has one
*side* per implementation (ours, and the reference ``ai2070-net`` when ``import net``
works); a side is a callable ``side(n, stopwatch)`` that prepares its state, runs the
measured work for ``n`` events inside ``with stopwatch:`` and cleans up. The harness:

1. runs each side once untimed on a small ``n`` (warm-up: imports, first-use caches,
   the file system's directory entries);
2. runs ``repeats`` timed rounds, alternating which side goes first, so a slow spell
   of a shared machine hurts both sides alike;
3. keeps the *best* (shortest) round of each side: interference on a busy machine only
   ever adds time, so the minimum is the least-disturbed estimate of the real cost;
   the relative spread of the rounds is kept in the report's ``meta``.

Garbage collection stays *enabled* on both sides (a user pays for it too); the
stopwatch runs ``gc.collect()`` before it starts the clock, so neither side is charged
for garbage left by an earlier round. Time is read with ``time.perf_counter_ns``.

A *latency* scenario times each operation separately: a side ``side(n, laps)`` runs
``n`` operations, reading the clock :meth:`Laps.start` gives it around each one and
handing the duration to :meth:`Laps.add`. Each round yields percentiles (p50 and p99 by
default, nearest-rank, in microseconds); rounds alternate sides as above and each
percentile keeps its best (lowest) round.

A side whose implementation did not do the work it was timed for (a check after the
timed block failed) raises :class:`SideFailed`: that side is reported as *failed*, never
with a figure: its value is ``None``, the ratio is ``None``, the reason is in the report's
``meta["failures"]`` and the table prints ``FAILED``. Any other exception is a bug of the
benchmark and ends the run.

Ratios are expressed so that ``>= 1.0`` always means "net-core is at least as good":
``ours / reference`` for rates (``.../s``, higher is better) and ``reference / ours``
for sizes and durations (lower is better).

This module knows nothing about RedEX or the bus; it must never be imported by
library code (benchmarks sit on top of the library, never inside it).
"""

from __future__ import annotations

import gc
import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TextIO, TypeVar, final

import attrs

from net_core._version import __version__

__all__ = [
    "REFERENCE_MISSING",
    "Laps",
    "LatencySide",
    "Reference",
    "Result",
    "Side",
    "SideFailed",
    "Stopwatch",
    "Suite",
    "SuiteReport",
    "format_table",
    "load_reference",
]

#: What the report says in place of the reference version when ``import net`` fails.
REFERENCE_MISSING = "reference not installed"
#: What the table prints in place of the figure of a side that failed.
FAILED = "FAILED"

T = TypeVar("T")


class SideFailed(Exception):
    """Raised by a benchmark side whose implementation did not do the work it was timed
    for (a check after the timed block found, say, events missing): the scenario reports
    that side as failed, with this message, instead of a figure."""


@final
@attrs.frozen(slots=True)
class Result:
    """One measured figure: ours, the reference's and their ratio.

    ``value`` (ours) is ``None`` only when our side failed; ``reference`` is ``None`` when
    the reference is not installed, cannot run the scenario or failed (the report's
    ``meta["failures"]`` names failed sides). ``ratio`` is ``None`` when either figure is;
    ``>= 1.0`` means net-core is at least as good (see :func:`ratio_of`).
    """

    name: str
    unit: str
    value: float | None
    reference: float | None
    ratio: float | None


def higher_is_better(unit: str) -> bool:
    """Rates (``events/s``) are better high; sizes (``bytes/event``) are better low."""
    return unit.endswith("/s")


def ratio_of(unit: str, ours: float | None, reference: float | None) -> float | None:
    """``ours / reference`` for rates, ``reference / ours`` for sizes; ``None`` without one."""
    if reference is None or ours is None:
        return None
    num, den = (ours, reference) if higher_is_better(unit) else (reference, ours)
    if den <= 0 or num <= 0:
        return None
    return num / den


@final
@attrs.frozen(slots=True)
class SuiteReport:
    """What a suite run produced; ``attrs.asdict`` of it is the ``--json`` document."""

    suite: str
    results: list[Result]
    meta: dict[str, Any]


@final
@attrs.frozen(slots=True)
class Reference:
    """The reference implementation as loaded in this process (``module`` may be None)."""

    module: ModuleType | None
    version: str


def load_reference() -> Reference:
    """Import the reference (``import net`` from ``ai2070-net``) if it is installed."""
    try:
        import net  # noqa: PLC0415 - optional, only for comparison
    except ImportError:
        return Reference(None, REFERENCE_MISSING)
    try:
        version = importlib.metadata.version("ai2070-net")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return Reference(net, version)


@final
class Stopwatch:
    """Times the one block a side runs inside ``with stopwatch:``.

    Entering collects garbage (outside the measured time), then reads the clock.
    """

    __slots__ = ("_start", "elapsed_ns", "uses")

    def __init__(self) -> None:
        self._start = 0
        self.elapsed_ns = 0
        self.uses = 0

    def __enter__(self) -> Stopwatch:
        gc.collect()
        self._start = time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_ns = time.perf_counter_ns() - self._start
        self.uses += 1


#: One implementation's run of a throughput scenario: ``side(n, stopwatch)``.
Side = Callable[[int, Stopwatch], None]


def _time_side(side: Side, n: int) -> int:
    sw = Stopwatch()
    side(n, sw)
    if sw.uses != 1:
        raise RuntimeError(f"a benchmark side must time exactly one block, timed {sw.uses}")
    return max(sw.elapsed_ns, 1)


@final
class Laps:
    """Collects the duration of each operation of a latency side.

    The side calls :meth:`start` once, before its first operation (it collects garbage,
    outside any measurement, and returns the clock, ``time.perf_counter_ns``), then reads
    the clock around each operation and passes the difference to :meth:`add`.
    """

    __slots__ = ("samples_ns", "starts")

    def __init__(self) -> None:
        self.samples_ns: list[int] = []
        self.starts = 0

    def start(self) -> Callable[[], int]:
        """Collect garbage and return the clock to time operations with."""
        gc.collect()
        self.starts += 1
        return time.perf_counter_ns

    def add(self, elapsed_ns: int) -> None:
        """Record one operation's duration (nanoseconds)."""
        self.samples_ns.append(elapsed_ns)


#: One implementation's run of a latency scenario: ``side(n, laps)`` times n operations.
LatencySide = Callable[[int, Laps], None]


def percentile(sorted_samples: Sequence[int], p: float) -> int:
    """The nearest-rank ``p``-th percentile of ascending ``sorted_samples`` (non-empty)."""
    rank = max(1, math.ceil(p / 100 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def _lap_side(side: LatencySide, n: int, percentiles: Sequence[float]) -> list[float]:
    """Run a latency side once; its percentiles in microseconds."""
    laps = Laps()
    side(n, laps)
    if laps.starts != 1 or len(laps.samples_ns) != n:
        raise RuntimeError(
            f"a latency side must start once and time {n} operations; "
            f"started {laps.starts} times, timed {len(laps.samples_ns)}"
        )
    ordered = sorted(laps.samples_ns)
    return [percentile(ordered, p) / 1000 for p in percentiles]


@final
class Suite:
    """Runs scenarios, collects :class:`Result` rows and the report's ``meta``.

    ``repeats`` timed rounds per side (best of them is kept); progress lines go to
    ``progress`` (stderr by default; ``None`` silences them).
    """

    __slots__ = (
        "_failures",
        "_meta",
        "_results",
        "_spread",
        "name",
        "progress",
        "quick",
        "reference",
        "repeats",
    )

    def __init__(
        self,
        name: str,
        *,
        quick: bool,
        repeats: int,
        reference: Reference | None = None,
        progress: TextIO | None = None,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.name = name
        self.quick = quick
        self.repeats = repeats
        self.reference = reference if reference is not None else load_reference()
        self.progress = progress
        self._results: list[Result] = []
        self._spread: dict[str, dict[str, float]] = {}
        self._failures: dict[str, dict[str, str]] = {}
        self._meta: dict[str, Any] = {}

    @property
    def has_reference(self) -> bool:
        """Whether the reference implementation is importable here."""
        return self.reference.module is not None

    def note(self, message: str) -> None:
        """Write one progress line (stderr by default)."""
        if self.progress is not None:
            self.progress.write(f"bench {self.name}: {message}\n")
            self.progress.flush()

    def add_meta(self, **items: Any) -> None:
        """Add suite-specific entries (sizes, payload length, notes) to ``meta``."""
        self._meta.update(items)

    def _rounds(
        self,
        name: str,
        sides: list[tuple[str, Callable[[int], T]]],
        n: int,
        warm: int,
    ) -> dict[str, list[T]]:
        """Warm each side up, then run the timed rounds (sides alternating); a side that
        raises :class:`SideFailed` is dropped and recorded as failed."""
        failed = self._failures.setdefault(name, {})

        def attempt(label: str, run: Callable[[int], T], size: int) -> T | None:
            try:
                return run(size)
            except SideFailed as exc:
                failed[label] = str(exc)
                self.note(f"{name}: {label} {FAILED}: {exc}")
                return None

        live = [(label, run) for label, run in sides if attempt(label, run, warm) is not None]
        got: dict[str, list[T]] = {label: [] for label, _ in live}
        for round_ in range(self.repeats):
            order = live if round_ % 2 == 0 else live[::-1]
            for label, run in order:
                if label in failed:
                    continue
                value = attempt(label, run, n)
                if value is not None:
                    got[label].append(value)
        if not failed:
            del self._failures[name]
        return {label: values for label, values in got.items() if label not in failed}

    def _sides(self, ours: T, reference: T | None) -> list[tuple[str, T]]:
        sides: list[tuple[str, T]] = [("ours", ours)]
        if reference is not None and self.has_reference:
            sides.append(("reference", reference))
        return sides

    def throughput(
        self,
        name: str,
        n: int,
        ours: Side,
        reference: Side | None,
        *,
        warmup_n: int | None = None,
        unit: str = "events/s",
    ) -> Result:
        """Measure ``n`` events per round on each side; record and return the result."""
        started = time.perf_counter()
        self.note(f"{name}: n={n}, {self.repeats} rounds ...")
        warm = max(1, min(n, warmup_n if warmup_n is not None else n // 10))
        sides = [(label, _bind_throughput(side)) for label, side in self._sides(ours, reference)]
        times = self._rounds(name, sides, n, warm)
        best = {label: min(ts) for label, ts in times.items()}
        self._spread[name] = {label: max(ts) / min(ts) - 1.0 for label, ts in times.items()}
        rate = {label: n * 1e9 / t for label, t in best.items()}
        result = self._record(name, unit, rate.get("ours"), rate.get("reference"))
        self.note(f"{name}: {_describe(result)} ({time.perf_counter() - started:.1f} s)")
        return result

    def latency(
        self,
        name: str,
        n: int,
        ours: LatencySide,
        reference: LatencySide | None,
        *,
        percentiles: Sequence[float] = (50, 99),
        warmup_n: int | None = None,
    ) -> list[Result]:
        """Time ``n`` operations one by one per round on each side; record and return one
        result per percentile, named ``{name}_p{percentile}``, in microseconds."""
        started = time.perf_counter()
        self.note(f"{name}: n={n} operations timed one by one, {self.repeats} rounds ...")
        warm = max(1, min(n, warmup_n if warmup_n is not None else n // 10))
        sides = [
            (label, _bind_latency(side, percentiles))
            for label, side in self._sides(ours, reference)
        ]
        rounds = self._rounds(name, sides, n, warm)
        # Each percentile keeps its best round; the spread is the p50's.
        best = {label: [min(col) for col in zip(*rs, strict=True)] for label, rs in rounds.items()}
        self._spread[name] = {
            label: max(r[0] for r in rs) / min(r[0] for r in rs) - 1.0
            for label, rs in rounds.items()
        }
        self._meta.setdefault(
            "latency",
            "per-operation durations in microseconds; nearest-rank percentiles of each "
            "round, each percentile the best (lowest) of the timed rounds",
        )
        results: list[Result] = []
        for i, p in enumerate(percentiles):
            ours_p = best["ours"][i] if "ours" in best else None
            ref_p = best["reference"][i] if "reference" in best else None
            results.append(self._record(f"{name}_p{p:g}", "µs", ours_p, ref_p))
        described = "; ".join(f"{r.name}: {_describe(r)}" for r in results)
        self.note(f"{described} ({time.perf_counter() - started:.1f} s)")
        return results

    def measure(
        self,
        name: str,
        unit: str,
        ours: Callable[[], float],
        reference: Callable[[], float] | None,
    ) -> Result:
        """Record a one-shot figure (e.g. memory per event) measured by each callable."""
        started = time.perf_counter()
        self.note(f"{name}: measuring ...")
        value = ours()
        ref_value = reference() if reference is not None and self.has_reference else None
        result = self._record(name, unit, value, ref_value)
        self.note(f"{name}: {_describe(result)} ({time.perf_counter() - started:.1f} s)")
        return result

    def _record(self, name: str, unit: str, value: float | None, reference: float | None) -> Result:
        for figure in (value, reference):
            if figure is not None and not math.isfinite(figure):
                raise ValueError(f"{name}: measured a non-finite value {figure!r}")
        result = Result(name, unit, value, reference, ratio_of(unit, value, reference))
        self._results.append(result)
        return result

    def report(self) -> SuiteReport:
        """The results so far, with the environment and method in ``meta``."""
        meta: dict[str, Any] = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "net_core_version": __version__,
            "reference_version": self.reference.version,
            "quick": self.quick,
            "repeats": self.repeats,
            "method": "best of the timed rounds, sides alternating, after one warm-up run",
            "gc": "enabled on both sides; gc.collect() before each timed block",
            "ratio": "ours/reference for rates, reference/ours for sizes and durations; "
            ">= 1.0: we are at least as good",
            **self._meta,
            "spread": self._spread,
            "failures": self._failures,
        }
        return SuiteReport(self.name, list(self._results), meta)


def _bind_throughput(side: Side) -> Callable[[int], int]:
    return lambda n: _time_side(side, n)


def _bind_latency(side: LatencySide, percentiles: Sequence[float]) -> Callable[[int], list[float]]:
    return lambda n: _lap_side(side, n, percentiles)


def _fmt(value: float | None, unit: str, *, failed: bool = False) -> str:
    if failed:
        return FAILED
    if value is None:
        return "-"
    if higher_is_better(unit):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _describe(result: Result) -> str:
    ours = f"ours {_fmt(result.value, result.unit, failed=result.value is None)}"
    if result.reference is None:
        return f"{ours} {result.unit}"
    ratio = f"{result.ratio:.2f}x" if result.ratio is not None else "-"
    return f"{ours}, reference {_fmt(result.reference, result.unit)} {result.unit} ({ratio})"


def format_table(report: SuiteReport) -> str:
    """The results as an aligned text table, plus a line on the reference and ratios."""
    header = ("name", "ours", "reference", "ratio", "unit")
    failures: dict[str, dict[str, str]] = report.meta.get("failures", {})
    rows = [
        (
            r.name,
            _fmt(r.value, r.unit, failed="ours" in failures.get(_scenario(r.name), {})),
            _fmt(r.reference, r.unit, failed="reference" in failures.get(_scenario(r.name), {})),
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            r.unit,
        )
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 4}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    for scenario, sides in failures.items():
        for label, reason in sides.items():
            out.append(f"{scenario}: {label} {FAILED}: {reason}")
    meta = report.meta
    version = meta.get("reference_version", REFERENCE_MISSING)
    if version == REFERENCE_MISSING:
        out.append(f"\n{REFERENCE_MISSING} (pip install ai2070-net): reference and ratio are -")
    else:
        out.append(f"\nreference: ai2070-net {version}, measured in the same process and run")
    out.append(
        "ratio >= 1.00x: net-core is at least as good (ours/ref for rates, ref/ours for sizes "
        "and durations)"
    )
    out.append(
        f"python {meta.get('python')} on {meta.get('platform')}, {meta.get('cpus')} cpus; "
        f"{'QUICK sizes (not meaningful)' if meta.get('quick') else 'default sizes'}"
    )
    return "\n".join(out) + "\n"


def _scenario(result_name: str) -> str:
    """The scenario a result belongs to (a latency result's name has a ``_pNN`` suffix)."""
    stem, sep, tail = result_name.rpartition("_p")
    return stem if sep and tail.replace(".", "", 1).isdigit() else result_name
