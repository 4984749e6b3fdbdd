"""The ``redex`` benchmark suite: RedEX appends, reads, tails and memory, vs the reference.

Every throughput scenario runs the *same* loop over the *same* payload objects on both
sides; only the way the file is opened differs (``net_core.redex.Redex`` here,
``net.Redex`` in the reference). Payloads are distinct ``bytes`` objects (an 8-byte
counter, then filler) made before the clock starts, 64 bytes unless a name says
otherwise. Scenarios:

* ``heap_append`` / ``heap_append_batch_1000``: ``append`` one at a time, or
  ``append_batch`` of 1000, on a heap-only file.
* ``disk_append`` / ``disk_append_batch_1000`` (and ``disk_append_1k``, 1 KiB
  payloads): the same on a persistent file in a fresh temporary directory, default
  fsync policy (never on append) on both sides; closing (which fsyncs) is not timed.
* ``read_range``: one ``read_range`` over N events, then touching every event's
  ``seq`` and ``payload``, so that building the event objects counts on both sides.
* ``tail``: a live tail opened on an empty file receives N events appended in chunks
  of 1000 (``append_batch``), drained after each chunk: the reference's tail is a sync
  iterator with a 1024-event buffer that would lag otherwise. Ours is an async
  iterator, run with anyio on asyncio, following the same pattern. Producer and
  consumer time are both counted.
* ``heap_memory_per_event``: bytes per retained event beyond the payload itself, from
  ``tracemalloc`` (ours only: it cannot see the reference's Rust allocations).
* ``heap_rss_per_event``: the same quantity from resident-set growth
  (``/proc/self/statm``), each side in a fresh interpreter; coarser, but it sees both.

This module must stay a benchmark: it never changes library behaviour or settings.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO, final

import anyio
import attrs

from net_core.bench._harness import Reference, Side, Stopwatch, Suite, SuiteReport
from net_core.redex import Redex

__all__ = ["DEFAULT_SIZES", "QUICK_SIZES", "RedexSizes", "run_redex_suite"]

PAYLOAD_SIZE: Final = 64
LARGE_PAYLOAD_SIZE: Final = 1024
BATCH: Final = 1000
CHANNEL: Final = "bench/redex"

_COUNTER = struct.Struct("<Q")


@final
@attrs.frozen(slots=True)
class RedexSizes:
    """Events per timed round of each scenario, and the rounds per side."""

    heap_append: int
    heap_batch: int
    disk_append: int
    disk_append_1k: int
    disk_batch: int
    read_range: int
    tail: int
    memory: int
    repeats: int


#: Stable figures in well under a minute on a 2-core machine.
DEFAULT_SIZES: Final = RedexSizes(
    heap_append=200_000,
    heap_batch=500_000,
    disk_append=100_000,
    disk_append_1k=50_000,
    disk_batch=500_000,
    read_range=200_000,
    tail=200_000,
    memory=200_000,
    repeats=7,
)

#: A smoke run of a few seconds: shapes only, the figures mean nothing.
QUICK_SIZES: Final = RedexSizes(
    heap_append=5_000,
    heap_batch=10_000,
    disk_append=2_000,
    disk_append_1k=1_000,
    disk_batch=10_000,
    read_range=5_000,
    tail=5_000,
    memory=50_000,
    repeats=2,
)


def make_payloads(n: int, size: int = PAYLOAD_SIZE) -> list[bytes]:
    """``n`` distinct payloads of ``size`` bytes (a little-endian counter, then filler)."""
    if size < _COUNTER.size:
        raise ValueError(f"payloads are at least {_COUNTER.size} bytes, got {size}")
    pad = b"\xa5" * (size - _COUNTER.size)
    pack = _COUNTER.pack
    return [pack(i) + pad for i in range(n)]


def _chunks(items: Sequence[bytes], size: int = BATCH) -> list[Sequence[bytes]]:
    """``items`` cut into lists of ``size`` (the last may be shorter), made untimed."""
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- how each side opens and closes a file -------------------------------------------
#
# An opener returns (file, release); release() closes the file and drops the manager.
Opener = Callable[[Path | None], tuple[Any, Callable[[], None]]]


def _open_ours(directory: Path | None) -> tuple[Any, Callable[[], None]]:
    redex = Redex(directory)
    file = redex.open_file(CHANNEL, persistent=directory is not None)

    def release() -> None:
        file.close()
        redex.close()

    return file, release


def _reference_opener(net: Any) -> Opener:
    def open_reference(directory: Path | None) -> tuple[Any, Callable[[], None]]:
        redex = net.Redex(persistent_dir=None if directory is None else str(directory))
        file = redex.open_file(CHANNEL, persistent=directory is not None)
        return file, file.close

    return open_reference


class _Disk:
    """Fresh directories for persistent rounds, under one temporary root."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def fresh(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))


# -- scenarios (identical loops for both sides) ---------------------------------------


def _append_side(
    opener: Opener, payloads: Sequence[bytes], disk: _Disk | None, *, batch: bool
) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        directory = disk.fresh() if disk is not None else None
        file, release = opener(directory)
        try:
            if batch:
                chunks = _chunks(payloads[:n])
                append_batch = file.append_batch
                with sw:
                    for chunk in chunks:
                        first = append_batch(chunk)
                last = first + len(chunks[-1]) - 1
            else:
                items = payloads[:n]
                append = file.append
                with sw:
                    for payload in items:
                        last = append(payload)
            if last != n - 1:
                raise RuntimeError(f"appended {n} events but the last seq is {last}")
        finally:
            release()
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    return side


def _read_side(opener: Opener, payloads: Sequence[bytes]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        file, release = opener(None)
        try:
            for chunk in _chunks(payloads[:n]):
                file.append_batch(chunk)
            seqs = 0
            nbytes = 0
            with sw:
                events = file.read_range(0, n)
                for event in events:
                    seqs += event.seq
                    nbytes += len(event.payload)
            if len(events) != n or seqs != n * (n - 1) // 2 or nbytes != n * PAYLOAD_SIZE:
                raise RuntimeError(f"read_range returned {len(events)} events, wanted {n}")
        finally:
            release()

    return side


def _ours_tail_side(payloads: Sequence[bytes]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        file, release = _open_ours(None)
        chunks = _chunks(payloads[:n])
        last = -1

        async def consume() -> None:
            nonlocal last
            tail = file.tail(0)
            next_event = tail.__anext__
            append_batch = file.append_batch
            try:
                with sw:
                    for chunk in chunks:
                        append_batch(chunk)
                        for _ in range(len(chunk)):
                            event = await next_event()
                        last = event.seq
            finally:
                tail.close()

        try:
            anyio.run(consume, backend="asyncio")
        finally:
            release()
        if last != n - 1:
            raise RuntimeError(f"the tail ended at seq {last}, wanted {n - 1}")

    return side


def _reference_tail_side(opener: Opener, payloads: Sequence[bytes]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        file, release = opener(None)
        chunks = _chunks(payloads[:n])
        last = -1
        tail = file.tail(0)
        try:
            append_batch = file.append_batch
            with sw:
                for chunk in chunks:
                    append_batch(chunk)
                    for _ in range(len(chunk)):
                        event = next(tail)
                    last = event.seq
        finally:
            tail.close()
            release()
        if last != n - 1:
            raise RuntimeError(f"the tail ended at seq {last}, wanted {n - 1}")

    return side


# -- memory ---------------------------------------------------------------------------


def _append_fresh(file: Any, n: int, size: int) -> None:
    """Append ``n`` payloads made one by one, so the caller keeps none of them alive."""
    pad = b"\xa5" * (size - _COUNTER.size)
    pack = _COUNTER.pack
    append = file.append
    for i in range(n):
        append(pack(i) + pad)


def tracemalloc_overhead(n: int, size: int = PAYLOAD_SIZE) -> float:
    """Our heap file's traced bytes per retained event, minus the payload length."""
    file, release = _open_ours(None)
    try:
        file.append(b"\0" * size)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            _append_fresh(file, n, size)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    finally:
        release()
    return (after - before) / n - size


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_child(side: str, n: int, size: int) -> dict[str, float]:
    """In a fresh interpreter: RSS growth per retained event (minus the payload)."""
    if side == "ours":
        file, release = _open_ours(None)
    else:
        import net  # noqa: PLC0415 - the reference, only when asked for

        file, release = _reference_opener(net)(None)
    file.append(b"\0" * size)
    gc.collect()
    before = _rss_bytes()
    _append_fresh(file, n, size)
    gc.collect()
    after = _rss_bytes()
    release()
    return {"overhead": (after - before) / n - size, "rss_growth": after - before}


def _rss_overhead(side: str, n: int, size: int = PAYLOAD_SIZE) -> float:
    code = (
        "import json, sys; from net_core.bench._redex import rss_child; "
        "print(json.dumps(rss_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, side, str(n), str(size)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the RSS probe ({side}) failed: {done.stderr.strip()}")
    overhead: float = json.loads(done.stdout)["overhead"]
    return overhead


# -- the suite ------------------------------------------------------------------------


def _scenarios(
    sizes: RedexSizes, disk: _Disk, theirs: Opener | None
) -> list[tuple[str, int, int, Callable[[Sequence[bytes]], tuple[Side, Side | None]], int]]:
    """(name, events per round, payload size, sides from payloads, warm-up events)."""

    def both(make: Callable[[Opener], Side]) -> tuple[Side, Side | None]:
        return make(_open_ours), (make(theirs) if theirs is not None else None)

    def tail(payloads: Sequence[bytes]) -> tuple[Side, Side | None]:
        ref = _reference_tail_side(theirs, payloads) if theirs is not None else None
        return _ours_tail_side(payloads), ref

    small, large = PAYLOAD_SIZE, LARGE_PAYLOAD_SIZE
    return [
        (
            "heap_append",
            sizes.heap_append,
            small,
            lambda p: both(lambda o: _append_side(o, p, None, batch=False)),
            sizes.heap_append // 10,
        ),
        (
            "heap_append_batch_1000",
            sizes.heap_batch,
            small,
            lambda p: both(lambda o: _append_side(o, p, None, batch=True)),
            BATCH,
        ),
        (
            "disk_append",
            sizes.disk_append,
            small,
            lambda p: both(lambda o: _append_side(o, p, disk, batch=False)),
            sizes.disk_append // 10,
        ),
        (
            "disk_append_batch_1000",
            sizes.disk_batch,
            small,
            lambda p: both(lambda o: _append_side(o, p, disk, batch=True)),
            BATCH,
        ),
        (
            "disk_append_1k",
            sizes.disk_append_1k,
            large,
            lambda p: both(lambda o: _append_side(o, p, disk, batch=False)),
            sizes.disk_append_1k // 10,
        ),
        (
            "read_range",
            sizes.read_range,
            small,
            lambda p: both(lambda o: _read_side(o, p)),
            sizes.read_range // 10,
        ),
        ("tail", sizes.tail, small, tail, BATCH),
    ]


def run_redex_suite(
    *,
    quick: bool = False,
    progress: TextIO | None = None,
    reference: Reference | None = None,
    sizes: RedexSizes | None = None,
) -> SuiteReport:
    """Run every RedEX scenario on both sides; see the module docstring."""
    chosen = sizes if sizes is not None else (QUICK_SIZES if quick else DEFAULT_SIZES)
    suite = Suite(
        "redex", quick=quick, repeats=chosen.repeats, reference=reference, progress=progress
    )
    net = suite.reference.module
    theirs = _reference_opener(net) if net is not None else None
    suite.add_meta(
        payload_bytes=PAYLOAD_SIZE,
        large_payload_bytes=LARGE_PAYLOAD_SIZE,
        batch=BATCH,
        sizes=attrs.asdict(chosen),
        temp_dir=tempfile.gettempdir(),
        fsync="never on append (the default of both); close() is not timed",
        heap_memory_per_event="tracemalloc, ours only (the reference allocates in Rust)",
        heap_rss_per_event="resident-set growth in a fresh interpreter per side",
    )
    with tempfile.TemporaryDirectory(prefix="net-bench-") as root:
        for name, n, size, make_sides, warmup_n in _scenarios(chosen, _Disk(Path(root)), theirs):
            # Each scenario gets its own payloads, dropped afterwards, so that no
            # scenario's garbage-collector walks include another scenario's objects.
            ours, ref = make_sides(make_payloads(n, size))
            suite.throughput(name, n, ours, ref, warmup_n=warmup_n)
            del ours, ref
            gc.collect()
    suite.measure(
        "heap_memory_per_event",
        "bytes/event",
        lambda: tracemalloc_overhead(chosen.memory),
        None,
    )
    if not os.path.exists("/proc/self/statm"):
        suite.note("heap_rss_per_event: skipped (no /proc/self/statm on this platform)")
        return suite.report()
    suite.measure(
        "heap_rss_per_event",
        "bytes/event",
        lambda: _rss_overhead("ours", chosen.memory),
        lambda: _rss_overhead("reference", chosen.memory),
    )
    return suite.report()
