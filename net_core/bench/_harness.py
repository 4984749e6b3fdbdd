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

Ratios are expressed so that ``>= 1.0`` always means "net-core is at least as good":
``ours / reference`` for rates (``.../s``, higher is better) and ``reference / ours``
for sizes (lower is better).

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
from collections.abc import Callable
from types import ModuleType
from typing import Any, TextIO, final

import attrs

from net_core._version import __version__

__all__ = [
    "REFERENCE_MISSING",
    "Reference",
    "Result",
    "Side",
    "Stopwatch",
    "Suite",
    "SuiteReport",
    "format_table",
    "load_reference",
]

#: What the report says in place of the reference version when ``import net`` fails.
REFERENCE_MISSING = "reference not installed"


@final
@attrs.frozen(slots=True)
class Result:
    """One measured figure: ours, the reference's (or ``None``) and their ratio.

    ``ratio`` is ``None`` exactly when ``reference`` is; ``>= 1.0`` means net-core is at
    least as good (see :func:`ratio_of`).
    """

    name: str
    unit: str
    value: float
    reference: float | None
    ratio: float | None


def higher_is_better(unit: str) -> bool:
    """Rates (``events/s``) are better high; sizes (``bytes/event``) are better low."""
    return unit.endswith("/s")


def ratio_of(unit: str, ours: float, reference: float | None) -> float | None:
    """``ours / reference`` for rates, ``reference / ours`` for sizes; ``None`` without one."""
    if reference is None:
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
class Suite:
    """Runs scenarios, collects :class:`Result` rows and the report's ``meta``.

    ``repeats`` timed rounds per side (best of them is kept); progress lines go to
    ``progress`` (stderr by default; ``None`` silences them).
    """

    __slots__ = (
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
        sides: list[tuple[str, Side]] = [("ours", ours)]
        if reference is not None and self.has_reference:
            sides.append(("reference", reference))
        for _, side in sides:
            _time_side(side, warm)
        times: dict[str, list[int]] = {label: [] for label, _ in sides}
        for round_ in range(self.repeats):
            order = sides if round_ % 2 == 0 else sides[::-1]
            for label, side in order:
                times[label].append(_time_side(side, n))
        best = {label: min(ts) for label, ts in times.items()}
        self._spread[name] = {label: max(ts) / min(ts) - 1.0 for label, ts in times.items()}
        ref_value = n * 1e9 / best["reference"] if "reference" in best else None
        result = self._record(name, unit, n * 1e9 / best["ours"], ref_value)
        self.note(f"{name}: {_describe(result)} ({time.perf_counter() - started:.1f} s)")
        return result

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

    def _record(self, name: str, unit: str, value: float, reference: float | None) -> Result:
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
            "ratio": "ours/reference for rates, reference/ours for sizes; >= 1.0: we are "
            "at least as good",
            **self._meta,
            "spread": self._spread,
        }
        return SuiteReport(self.name, list(self._results), meta)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if higher_is_better(unit):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _describe(result: Result) -> str:
    ours = f"ours {_fmt(result.value, result.unit)}"
    if result.reference is None:
        return f"{ours} {result.unit}"
    ratio = f"{result.ratio:.2f}x" if result.ratio is not None else "-"
    return f"{ours}, reference {_fmt(result.reference, result.unit)} {result.unit} ({ratio})"


def format_table(report: SuiteReport) -> str:
    """The results as an aligned text table, plus a line on the reference and ratios."""
    header = ("name", "ours", "reference", "ratio", "unit")
    rows = [
        (
            r.name,
            _fmt(r.value, r.unit),
            _fmt(r.reference, r.unit),
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
    meta = report.meta
    version = meta.get("reference_version", REFERENCE_MISSING)
    if version == REFERENCE_MISSING:
        out.append(f"\n{REFERENCE_MISSING} (pip install ai2070-net): reference and ratio are -")
    else:
        out.append(f"\nreference: ai2070-net {version}, measured in the same process and run")
    out.append(
        "ratio >= 1.00x: net-core is at least as good (ours/ref for rates, ref/ours for sizes)"
    )
    out.append(
        f"python {meta.get('python')} on {meta.get('platform')}, {meta.get('cpus')} cpus; "
        f"{'QUICK sizes (not meaningful)' if meta.get('quick') else 'default sizes'}"
    )
    return "\n".join(out) + "\n"
