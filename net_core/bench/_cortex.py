"""The ``cortex`` benchmark suite: the Tasks model's writes, folds and replays, vs the reference.

Both sides run the *same* loop over the *same* titles and timestamps (made before the
clock starts); only the way the adapter is opened differs: ours is
``net_core.cortex.TasksAdapter`` over ``net_core.redex.Redex`` inside ``anyio.run``
(asyncio), the reference's ``net.TasksAdapter`` over ``net.Redex``. Task ``i`` is
created with the title ``f"task {i}"`` and ``now_ns`` = a fixed base + ``i`` (distinct).
Scenarios:

* ``tasks_create``: sustained create rate with the fold keeping up. N creates on a heap
  ``Redex``, a ``wait_for_seq`` after every ``wait_every`` (100) creates and a final one
  for the last seq, all timed. The reference's fold stops for good when producers outrun
  it by more than about 1100 events (its tail buffer); the wait every 100 creates keeps
  it well inside that, and ours runs the identical loop.
* ``tasks_create_and_wait``: latency of one ``create`` followed by ``wait_for_seq`` on
  its seq, timed operation by operation on a heap ``Redex``: p50 and p99 in µs.
* ``fold_replay``: a persistent log of N Tasks creates is written once, untimed, by the
  *reference's* adapter (by ours when the reference is not installed; the on-disk formats
  are byte-compatible), and both sides replay that same log: open a fresh ``Redex`` on
  the directory and ``TasksAdapter.open`` it (which returns once the fold has caught up),
  timed until ``count()`` is N.

After every timed block the side checks that its fold has folded everything: every task
is there and the fold is still running (ours: ``folded_through_seq`` is the last seq). A
side that falls short raises :class:`~net_core.bench._harness.SideFailed` and is
reported as failed, never with a figure.

This module must stay a benchmark: it never changes library behaviour or settings.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Final, TextIO, final

import anyio
import attrs

from net_core.bench._harness import (
    Laps,
    LatencySide,
    Reference,
    Side,
    SideFailed,
    Stopwatch,
    Suite,
    SuiteReport,
)
from net_core.cortex import TASKS_CHANNEL, TasksAdapter
from net_core.redex import Redex

__all__ = ["DEFAULT_SIZES", "QUICK_SIZES", "CortexSizes", "run_cortex_suite"]

ORIGIN: Final = 0xC0FFEE
#: ``now_ns`` of task 0 (2023-11-14T22:13:20Z); task ``i`` gets ``NOW_BASE + i``.
NOW_BASE: Final = 1_700_000_000_000_000_000
WAIT_EVERY: Final = 100


@final
@attrs.frozen(slots=True)
class CortexSizes:
    """Operations per timed round of each scenario, the rounds per side, and how often
    ``tasks_create`` waits for the fold."""

    tasks_create: int
    create_and_wait: int
    fold_replay: int
    repeats: int
    wait_every: int = WAIT_EVERY


#: Stable figures in well under a minute on a 2-core machine.
DEFAULT_SIZES: Final = CortexSizes(
    tasks_create=100_000, create_and_wait=20_000, fold_replay=100_000, repeats=5
)

#: A smoke run of a few seconds: shapes only, the figures mean nothing.
QUICK_SIZES: Final = CortexSizes(
    tasks_create=2_000, create_and_wait=500, fold_replay=2_000, repeats=2
)


@final
@attrs.frozen(slots=True)
class _Work:
    """The titles and timestamps of tasks ``0 .. n - 1``, made before any clock."""

    titles: list[str]
    nows: list[int]

    @classmethod
    def make(cls, n: int) -> _Work:
        return cls([f"task {i}" for i in range(n)], [NOW_BASE + i for i in range(n)])


def check_folded(side: str, count: int, n: int, running: bool, detail: str = "") -> None:
    """Raise :class:`SideFailed` unless the fold holds all ``n`` tasks and still runs."""
    if count != n or not running:
        state = "running" if running else "stopped"
        more = f"; {detail}" if detail else ""
        raise SideFailed(f"{side}: the fold holds {count} of {n} tasks and is {state}{more}")


# -- our side -------------------------------------------------------------------------


def _ours_create(work: _Work, wait_every: int) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        titles, nows = work.titles, work.nows

        async def round_() -> None:
            with Redex() as redex:
                async with TasksAdapter.open(redex, ORIGIN) as tasks:
                    create, wait = tasks.create, tasks.wait_for_seq
                    seq = -1
                    with sw:
                        for i in range(n):
                            seq = create(i, titles[i], nows[i])
                            if i % wait_every == wait_every - 1:
                                await wait(seq)
                        await wait(seq)
                    adapter = tasks.adapter
                    check_folded(
                        "ours",
                        tasks.count(),
                        n,
                        adapter.is_running and adapter.folded_through_seq == seq,
                        adapter.stop_reason,
                    )

        anyio.run(round_)

    return side


def _ours_create_and_wait(work: _Work) -> LatencySide:
    def side(n: int, laps: Laps) -> None:
        titles, nows = work.titles, work.nows

        async def round_() -> None:
            with Redex() as redex:
                async with TasksAdapter.open(redex, ORIGIN) as tasks:
                    create, wait = tasks.create, tasks.wait_for_seq
                    add = laps.add
                    clock = laps.start()
                    for i in range(n):
                        t0 = clock()
                        await wait(create(i, titles[i], nows[i]))
                        add(clock() - t0)
                    check_folded("ours", tasks.count(), n, tasks.is_running)

        anyio.run(round_)

    return side


def _ours_replay(logs: _Logs) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        directory = logs.get(n)

        async def round_() -> None:
            async with AsyncExitStack() as stack:
                with sw:
                    redex = stack.enter_context(Redex(directory))
                    tasks = await stack.enter_async_context(
                        TasksAdapter.open(redex, ORIGIN, persistent=True)
                    )
                    count = tasks.count()
                adapter = tasks.adapter
                check_folded(
                    "ours",
                    count,
                    n,
                    adapter.folded_through_seq == n - 1,
                    adapter.stop_reason,
                )

        anyio.run(round_)

    return side


# -- the reference --------------------------------------------------------------------


def _stopped_detail(net: Any, wait: Any, seq: int) -> str:
    """Wait for ``seq`` on a reference adapter; the error text if its fold stopped."""
    try:
        wait(seq)
    except net.CortexError as exc:
        return str(exc)
    return ""


def _reference_create(net: Any, work: _Work, wait_every: int) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        titles, nows = work.titles, work.nows
        tasks = net.TasksAdapter.open(net.Redex(), ORIGIN)
        create, wait = tasks.create, tasks.wait_for_seq
        seq = -1
        stopped = ""
        try:
            with sw:
                try:
                    for i in range(n):
                        seq = create(i, titles[i], nows[i])
                        if i % wait_every == wait_every - 1:
                            wait(seq)
                    wait(seq)
                except net.CortexError as exc:
                    # Its fold stopped (outrun by the producer): the round has failed; the
                    # check below says so with the state the fold reached.
                    stopped = str(exc)
            check_folded("reference", tasks.count(), n, tasks.is_running(), stopped)
        finally:
            tasks.close()

    return side


def _reference_create_and_wait(net: Any, work: _Work) -> LatencySide:
    def side(n: int, laps: Laps) -> None:
        titles, nows = work.titles, work.nows
        tasks = net.TasksAdapter.open(net.Redex(), ORIGIN)
        create, wait = tasks.create, tasks.wait_for_seq
        add = laps.add
        stopped = ""
        try:
            clock = laps.start()
            try:
                for i in range(n):
                    t0 = clock()
                    wait(create(i, titles[i], nows[i]))
                    add(clock() - t0)
            except net.CortexError as exc:
                stopped = str(exc)
            check_folded("reference", tasks.count(), n, tasks.is_running(), stopped)
        finally:
            tasks.close()

    return side


def _reference_replay(net: Any, logs: _Logs) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        directory = logs.get(n)
        with sw:
            redex = net.Redex(persistent_dir=str(directory))
            tasks = net.TasksAdapter.open(redex, ORIGIN, persistent=True)
            count = tasks.count()
        try:
            check_folded("reference", count, n, tasks.is_running())
        finally:
            tasks.close()
            # The reference's adapters leave their file open; closing it lets the next
            # round's manager read the log from disk again.
            redex.open_file(TASKS_CHANNEL, persistent=True).close()

    return side


# -- the shared log -------------------------------------------------------------------


@final
class _Logs:
    """Persistent Tasks logs of N creates under ``root``, written once per size."""

    __slots__ = ("_built", "_net", "_work", "root", "writer")

    def __init__(self, root: Path, work: _Work, net: Any) -> None:
        self.root = root
        self._work = work
        self._net = net
        self._built: dict[int, Path] = {}
        self.writer = "reference" if net is not None else "ours"

    def get(self, n: int) -> Path:
        """The directory holding a log of ``n`` creates (written now if it is new)."""
        directory = self._built.get(n)
        if directory is None:
            directory = self.root / f"tasks-{n}"
            if self._net is not None:
                self._write_reference(directory, n)
            else:
                anyio.run(self._write_ours, directory, n)
            self._built[n] = directory
        return directory

    def _write_reference(self, directory: Path, n: int) -> None:
        net = self._net
        titles, nows = self._work.titles, self._work.nows
        redex = net.Redex(persistent_dir=str(directory))
        tasks = net.TasksAdapter.open(redex, ORIGIN, persistent=True)
        try:
            seq = -1
            for i in range(n):
                seq = tasks.create(i, titles[i], nows[i])
                if i % WAIT_EVERY == WAIT_EVERY - 1:
                    tasks.wait_for_seq(seq)
            tasks.wait_for_seq(seq)
            if tasks.count() != n:
                raise RuntimeError(f"fold_replay: the reference wrote {tasks.count()} of {n}")
        finally:
            tasks.close()
            redex.open_file(TASKS_CHANNEL, persistent=True).close()

    async def _write_ours(self, directory: Path, n: int) -> None:
        titles, nows = self._work.titles, self._work.nows
        with Redex(directory) as redex:
            async with TasksAdapter.open(redex, ORIGIN, persistent=True) as tasks:
                seq = -1
                for i in range(n):
                    seq = tasks.create(i, titles[i], nows[i])
                    if i % WAIT_EVERY == WAIT_EVERY - 1:
                        await tasks.wait_for_seq(seq)
                await tasks.wait_for_seq(seq)


# -- the suite ------------------------------------------------------------------------


def run_cortex_suite(
    *,
    quick: bool = False,
    progress: TextIO | None = None,
    reference: Reference | None = None,
    sizes: CortexSizes | None = None,
) -> SuiteReport:
    """Run every cortex scenario on both sides; see the module docstring."""
    chosen = sizes if sizes is not None else (QUICK_SIZES if quick else DEFAULT_SIZES)
    if chosen.wait_every < 1:
        raise ValueError(f"wait_every must be >= 1, got {chosen.wait_every}")
    suite = Suite(
        "cortex", quick=quick, repeats=chosen.repeats, reference=reference, progress=progress
    )
    net = suite.reference.module
    work = _Work.make(max(chosen.tasks_create, chosen.create_and_wait, chosen.fold_replay))
    root = Path(tempfile.mkdtemp(prefix="net-bench-cortex-"))
    logs = _Logs(root, work, net)
    suite.add_meta(
        sizes=attrs.asdict(chosen),
        event_loop="ours: anyio on asyncio",
        redex="heap Redex for tasks_create and tasks_create_and_wait; a persistent "
        "directory (default fsync policy) for fold_replay",
        tasks_create=f"creates with a wait_for_seq every {chosen.wait_every} and on the "
        "last seq, all timed; counts only when every task was folded",
        tasks_create_and_wait="create + wait_for_seq on its seq, each timed alone",
        fold_replay=f"one log written by {logs.writer}'s adapter, replayed by both sides: "
        "fresh Redex on the directory + TasksAdapter.open (waits until caught up), timed "
        "until count() is N",
        temp_dir=tempfile.gettempdir(),
    )
    try:
        suite.throughput(
            "tasks_create",
            chosen.tasks_create,
            _ours_create(work, chosen.wait_every),
            _reference_create(net, work, chosen.wait_every) if net is not None else None,
            unit="tasks/s",
        )
        suite.latency(
            "tasks_create_and_wait",
            chosen.create_and_wait,
            _ours_create_and_wait(work),
            _reference_create_and_wait(net, work) if net is not None else None,
        )
        suite.throughput(
            "fold_replay",
            chosen.fold_replay,
            _ours_replay(logs),
            _reference_replay(net, logs) if net is not None else None,
            # Warm up on the same log: it is written once and the page cache is warm
            # for both sides' timed rounds.
            warmup_n=chosen.fold_replay,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return suite.report()
