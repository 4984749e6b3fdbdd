"""``net demo``: the event bus end to end on local disk, with resumption and self-checks.

Theory of operation. One run:

1. takes the next *run number* from ``DIR/demo.run`` and the consumer cursor of the
   previous run from ``DIR/consumer.cursor`` (none on a first run);
2. starts a :class:`~net_core.bus.Bus` on the ``redex`` backend under ``DIR`` with its
   producer nonce in ``DIR/producer.nonce``, so a rerun is the same producer and its
   shards' sequence numbers continue where they stopped;
3. ingests N synthetic AI-workload events (:func:`~net_core.bench._bus.synthetic_events`:
   tokens, tool calls, state changes; deterministic per run number) with
   ``Bus.ingest``, yielding to the event loop every 1000 events as an async producer
   does; a full ring is waited out, never dropped;
4. flushes, then polls everything after the saved cursor (the events new since the last
   run) and saves the new cursor; then counts every stored event with a full poll from
   the start;
5. checks that each event of this run was read back exactly once and that within each
   shard the run's events come back in ingest order (each event carries its number in
   the run, ``demo_seq``).

Timing: *ingest* is the ingest phase minus the time spent making the events (the shard
workers dispatch during the yields, so part of the dispatch is in it), *poll* counts
only the ``poll`` calls; end to end is N / (ingest + flush + poll).

A progress bar (plain text, about ten updates a second) goes to stderr when stderr is a
terminal and ``--json`` is off. Exit status 1 when a check fails or the library reports
an error; the JSON document holds every figure either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Final, TextIO, final

import anyio
import anyio.lowlevel
import attrs
import orjson

from net_core.bench._bus import synthetic_events
from net_core.bus import Backpressure, Bus, BusConfig, BusStats, StorageConfig
from net_core.cli._bus import (
    DEFAULT_DATA_DIR,
    DEFAULT_SHARDS,
    NONCE_FILE,
    describe_stats,
    ingest_after_backpressure,
    positive_int,
)
from net_core.cli._common import add_json_flag, command, emit_json
from net_core.consumer import CompositeCursor, InvalidCursor
from net_core.errors import BusError

__all__ = ["CURSOR_FILE", "DEFAULT_EVENTS", "RUN_FILE", "DemoStateError", "register"]

DEFAULT_EVENTS: Final = 200_000
#: The consumer cursor of the last run (plain text: usable with `net bus poll --cursor`).
CURSOR_FILE: Final = "consumer.cursor"
#: The number of the last run.
RUN_FILE: Final = "demo.run"
#: Events made and ingested between two yields to the event loop.
_CHUNK: Final = 1000
_POLL_LIMIT: Final = 10_000
_REFRESH_S: Final = 0.1
_BAR_WIDTH: Final = 30


class DemoStateError(BusError):
    """A state file of the demo directory (run number, cursor) is unreadable."""


# -- progress -----------------------------------------------------------------------------


@final
class _ProgressBar:
    """A one-line text progress bar on ``stream``, redrawn at most every 0.1 s."""

    __slots__ = ("_enabled", "_label", "_last", "_start", "_stream", "_total", "_width")

    def __init__(self, label: str, total: int | None, *, enabled: bool, stream: TextIO) -> None:
        self._label = label
        self._total = total
        self._enabled = enabled
        self._stream = stream
        self._start = time.monotonic()
        self._last = 0.0
        self._width = 0  # of the line drawn last, to blank out what a shorter one leaves

    def update(self, done: int) -> None:
        if self._enabled:
            now = time.monotonic()
            if now - self._last >= _REFRESH_S:
                self._last = now
                self._draw(done, now)

    def finish(self, done: int) -> None:
        if self._enabled:
            self._draw(done, time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, done: int, now: float) -> None:
        elapsed = now - self._start
        rate = f"{done / elapsed:>11,.0f} events/s" if elapsed > 0 else ""
        if self._total:
            fraction = min(1.0, done / self._total)
            filled = int(fraction * _BAR_WIDTH)
            bar = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:6.1%} "
            count = f"{done:>,}/{self._total:,}"
        else:
            bar, count = "", f"{done:,}"
        line = f"{self._label:<9}{bar}{count} events {rate}"
        self._stream.write(f"\r{line:<{self._width}}")
        self._stream.flush()
        self._width = len(line)


# -- state files --------------------------------------------------------------------------


def _next_run(data_dir: Path) -> int:
    """Read, bump and save the run number (saved first: a crashed run is not reused)."""
    path = data_dir / RUN_FILE
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        last = 0
    except (OSError, UnicodeDecodeError) as exc:
        raise DemoStateError(f"cannot read {path}: {exc}") from exc
    else:
        if not text.isdigit():
            raise DemoStateError(f"{path} does not hold a run number ({text[:20]!r})")
        last = int(text)
    _write_atomically(path, f"{last + 1}\n")
    return last + 1


def _read_cursor(data_dir: Path) -> str | None:
    path = data_dir / CURSOR_FILE
    try:
        text = path.read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DemoStateError(f"cannot read {path}: {exc}") from exc
    if not text:
        return None
    try:
        CompositeCursor.decode(text)
    except InvalidCursor as exc:
        raise DemoStateError(
            f"{path} holds an invalid cursor ({exc}); delete it to read from the start"
        ) from exc
    return text


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


# -- the report ---------------------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class _Timings:
    generate_s: float
    ingest_s: float
    flush_s: float
    poll_s: float
    count_s: float
    check_s: float


@final
@attrs.frozen(slots=True)
class _Throughput:
    ingest_events_per_s: float
    poll_events_per_s: float
    end_to_end_events_per_s: float


@final
@attrs.frozen(slots=True)
class _Checks:
    """``count``: every event of the run read back exactly once; ``order``: each shard
    returned the run's events in ingest order."""

    count_ok: bool
    order_ok: bool
    expected: int
    read_this_run: int
    missing: int
    duplicates: int
    order_violations: int
    #: Events of this run per shard (JSON object keys are text).
    per_shard: dict[str, int]
    failed_shards: list[int]


@final
@attrs.frozen(slots=True)
class _DemoReport:
    ok: bool
    data_dir: str
    run: int
    events: int
    shards: int
    backend: str
    producer_nonce: str
    resumed_from_cursor: bool
    stored_total: int
    new_this_run: int
    #: New events that are not this run's (left unread by an interrupted earlier run).
    carried_over: int
    backpressure_waits: int
    timings: _Timings
    throughput: _Throughput
    checks: _Checks
    stats: BusStats


@final
class _Checker:
    """Counts this run's events as they are read and checks their order per shard."""

    __slots__ = ("bad", "duplicates", "failed", "last", "n", "other", "per_shard", "run", "seen")

    def __init__(self, run: int, n: int) -> None:
        self.run = run
        self.n = n
        self.seen = bytearray(n)
        self.duplicates = 0
        self.bad = 0  # order violations
        self.other = 0
        self.last: dict[int, int] = {}
        self.per_shard: dict[int, int] = {}
        self.failed: set[int] = set()

    def add(self, shard: int, raw: bytes) -> None:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.other += 1
            return
        if not isinstance(event, dict) or event.get("demo_run") != self.run:
            self.other += 1
            return
        seq = event.get("demo_seq")
        if not isinstance(seq, int) or not 0 <= seq < self.n or self.seen[seq]:
            self.duplicates += 1
            return
        self.seen[seq] = 1
        self.per_shard[shard] = self.per_shard.get(shard, 0) + 1
        if seq <= self.last.get(shard, -1):
            self.bad += 1
        self.last[shard] = seq

    def result(self) -> _Checks:
        read = sum(self.per_shard.values())
        missing = self.n - read
        return _Checks(
            count_ok=missing == 0 and self.duplicates == 0,
            order_ok=self.bad == 0,
            expected=self.n,
            read_this_run=read,
            missing=missing,
            duplicates=self.duplicates,
            order_violations=self.bad,
            per_shard={str(k): v for k, v in sorted(self.per_shard.items())},
            failed_shards=sorted(self.failed),
        )


# -- the run ------------------------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class _Options:
    data_dir: Path
    events: int
    shards: int
    progress: bool


async def _demo(opts: _Options) -> _DemoReport:
    data_dir, n = opts.data_dir, opts.events
    await anyio.to_thread.run_sync(partial(data_dir.mkdir, parents=True, exist_ok=True))
    run = _next_run(data_dir)
    cursor = _read_cursor(data_dir)
    config = BusConfig(
        shards=opts.shards,
        backpressure="fail_producer",
        storage=StorageConfig("redex", {"data_dir": str(data_dir)}),
        producer_nonce_path=str(data_dir / NONCE_FILE),
    )
    bar = partial(_ProgressBar, enabled=opts.progress, stream=sys.stderr)
    checker = _Checker(run, n)
    generate_s = ingest_s = poll_s = 0.0
    waits = new = 0
    async with Bus.open(config) as bus:
        # -- ingest
        progress = bar("ingest", n)
        ingest = bus.ingest
        clock = time.perf_counter
        for start in range(0, n, _CHUNK):
            t0 = clock()
            events = synthetic_events(run, start, min(_CHUNK, n - start))
            t1 = clock()
            for event in events:
                try:
                    ingest(event)
                except Backpressure:
                    waits += await ingest_after_backpressure(bus, event)
            await anyio.lowlevel.checkpoint()
            generate_s += t1 - t0
            ingest_s += clock() - t1
            progress.update(start + len(events))
        progress.finish(n)
        # -- flush
        t0 = clock()
        await bus.flush()
        flush_s = clock() - t0
        # -- read what is new since the saved cursor
        progress = bar("poll", n)
        check_s = 0.0
        next_cursor = cursor
        while True:
            t0 = clock()
            page = await bus.poll(_POLL_LIMIT, next_cursor)
            t1 = clock()
            poll_s += t1 - t0
            for stored in page.events:
                checker.add(stored.shard_id, stored.raw)
            checker.failed.update(page.failed_shards)
            check_s += clock() - t1
            new += len(page.events)
            next_cursor = page.next_cursor
            progress.update(new)
            if not page.has_more:
                break
        progress.finish(new)
        if next_cursor is not None:
            _write_atomically(data_dir / CURSOR_FILE, next_cursor + "\n")
        # -- count everything stored
        progress = bar("count", None)
        t0 = clock()
        total = 0
        position: str | None = None
        while True:
            page = await bus.poll(_POLL_LIMIT, position)
            total += len(page.events)
            position = page.next_cursor
            progress.update(total)
            if not page.has_more:
                break
        count_s = clock() - t0
        progress.finish(total)
        nonce = bus.nonce
    stats = bus.stats()
    checks = checker.result()
    ok = checks.count_ok and checks.order_ok and not stats.shutdown_was_lossy
    return _DemoReport(
        ok=ok,
        data_dir=str(data_dir),
        run=run,
        events=n,
        shards=opts.shards,
        backend="redex",
        producer_nonce=f"{nonce:016x}",
        resumed_from_cursor=cursor is not None,
        stored_total=total,
        new_this_run=new,
        carried_over=checker.other,
        backpressure_waits=waits,
        timings=_Timings(generate_s, ingest_s, flush_s, poll_s, count_s, check_s),
        throughput=_Throughput(
            ingest_events_per_s=n / ingest_s if ingest_s > 0 else 0.0,
            poll_events_per_s=new / poll_s if poll_s > 0 else 0.0,
            end_to_end_events_per_s=n / (ingest_s + flush_s + poll_s),
        ),
        checks=checks,
        stats=stats,
    )


# -- output -------------------------------------------------------------------------------


def _row(label: str, events: int | None, seconds: float, rate: float | None) -> str:
    count = f"{events:>11,} events" if events is not None else " " * 18
    speed = f"{rate:>12,.0f} events/s" if rate is not None else ""
    return f"  {label:<11} {count} {seconds:8.3f} s {speed}".rstrip()


def _describe(report: _DemoReport) -> str:
    t, rate, c = report.timings, report.throughput, report.checks
    n = report.events
    resumed = "resumed from the saved cursor" if report.resumed_from_cursor else "first run"
    lines = [
        f"net demo: run {report.run}, {n:,} events into {report.data_dir} "
        f"(redex backend, {report.shards} shards)",
        _row("ingest", n, t.ingest_s, rate.ingest_events_per_s),
        _row("flush", None, t.flush_s, None),
        _row("poll", report.new_this_run, t.poll_s, rate.poll_events_per_s) + f"  ({resumed})",
        _row("end to end", n, t.ingest_s + t.flush_s + t.poll_s, rate.end_to_end_events_per_s),
        f"  {'stored':<11} {report.stored_total:,} events in total, "
        f"{report.new_this_run:,} new this run"
        + (f" ({report.carried_over:,} left by an earlier run)" if report.carried_over else ""),
    ]
    shards = len(c.per_shard)
    if c.count_ok and c.order_ok:
        verdict = (
            f"OK: all {n:,} events of run {report.run} read back exactly once, "
            f"in ingest order in each of {shards} shards"
        )
    else:
        problems = []
        if not c.count_ok:
            problems.append(
                f"{c.read_this_run:,} of {n:,} events read back "
                f"({c.missing:,} missing, {c.duplicates:,} duplicates)"
            )
        if not c.order_ok:
            problems.append(f"{c.order_violations:,} events out of ingest order in their shard")
        if c.failed_shards:
            problems.append(f"shards {c.failed_shards} could not be read")
        if c.missing and report.resumed_from_cursor:
            # The usual cause: the store was deleted or replaced but not the saved cursor.
            problems.append(
                f"if {report.data_dir}/bus was deleted, the saved cursor is past its end: "
                f"delete {CURSOR_FILE}"
            )
        verdict = "FAILED: " + "; ".join(problems)
    lines.append(f"  {'checks':<11} {verdict}")
    lines.append(f"  {'bus':<11} {describe_stats(report.stats)}")
    lines.append(
        f"  producer    nonce {report.producer_nonce} ({NONCE_FILE}), cursor in {CURSOR_FILE}"
    )
    lines.append("")
    lines.append("Run it again to see it resume. Look at the events with")
    lines.append(
        f"  net bus poll --data-dir {report.data_dir} --limit 3 "
        """--filter '{"path": "type", "value": "tool_call"}'"""
    )
    return "\n".join(lines) + "\n"


@command
def _run(args: argparse.Namespace) -> int:
    """Run the demo."""
    opts = _Options(
        data_dir=Path(args.data_dir),
        events=args.events,
        shards=args.shards,
        progress=not args.json and sys.stderr.isatty(),
    )
    report = anyio.run(_demo, opts)
    if args.json:
        emit_json(attrs.asdict(report))
    else:
        sys.stdout.write(_describe(report))
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the event bus end to end on local disk and check the result",
        description=(
            "Start a bus on the redex backend under DIR, ingest N synthetic AI-workload "
            "events (tokens, tool calls, state changes), flush, read back what is new "
            "since the last run by cursor (kept in DIR/consumer.cursor), count "
            "everything stored, check that every event came back exactly once and in "
            "ingest order per shard, and print throughput and bus stats. Rerunning "
            "continues: same producer (DIR/producer.nonce), the cursor resumes. Exit "
            "status 1 when a check fails."
        ),
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"where the bus keeps its data (default: ./{DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--events",
        type=positive_int,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"events to ingest ({DEFAULT_EVENTS:,})",
    )
    parser.add_argument(
        "--shards",
        type=positive_int,
        default=DEFAULT_SHARDS,
        metavar="S",
        help=f"shards of the bus ({DEFAULT_SHARDS})",
    )
    add_json_flag(parser)
    parser.set_defaults(func=_run)
