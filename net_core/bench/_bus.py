"""The ``bus`` benchmark suite: event-bus ingest and a disk round trip, vs the reference.

Both sides get a bus of 4 shards with a ring of ``1 << 20`` events per shard and the
``drop_oldest`` backpressure mode (the reference's default), and the *same* events:
synthetic AI-workload JSON (:func:`synthetic_events`: tokens, tool calls, state changes;
190 bytes on average), each side in its natural input type, prepared before the clock
starts. Ours runs on a ``memory`` storage backend inside one ``anyio.run`` per round;
the reference (``net.Net``) on its no-op adapter. Scenarios:

* ``ingest_raw``: N single ``ingest_raw`` calls (ours ``bytes``, the reference ``str``).
* ``ingest_raw_batch_1000``: N/1000 ``ingest_raw_batch`` calls of 1000 events (ours a
  list of ``bytes``, the reference a list of ``str``).
* ``ingest_dict``: N ``ingest(dict)`` calls on the same dicts (ours serializes with
  orjson, the reference with ``json.dumps``).
* ``end_to_end_redex`` (ours only): N ``ingest_raw`` calls into a bus on the ``redex``
  backend in a fresh temporary directory (yielding to the event loop every 1000 events,
  as an async producer does), ``flush()``, then poll every event back by cursor. The
  reference has no figure: its Python API has no local-disk bus backend (its adapters
  are no-op, Redis, JetStream and the mesh).

Only the ingest calls are timed in the three ingest scenarios: the reference drains its
rings on its own threads while the producer runs and its Python API has no ``flush``;
ours dispatches after the timed block (an untimed ``flush()``). Each round then checks
that every event was accepted (ours: dispatched), so a fast figure cannot hide drops.

This module must stay a benchmark: it never changes library behaviour or settings. The
workload generator is also what ``net demo`` ingests.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO, final

import anyio
import anyio.lowlevel
import attrs

from net_core.bench._harness import Reference, Side, Stopwatch, Suite, SuiteReport
from net_core.bus import Bus, BusConfig, StorageConfig

__all__ = [
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "BusSizes",
    "bench_bus_config",
    "run_bus_suite",
    "synthetic_events",
]

SHARDS: Final = 4
RING_CAPACITY: Final = 1 << 20
BACKPRESSURE: Final = "drop_oldest"
BATCH: Final = 1000
#: Events a poll asks for in ``end_to_end_redex``.
POLL_LIMIT: Final = 10_000
#: An async producer yields to the event loop this often (``end_to_end_redex``).
YIELD_EVERY: Final = 1000

_MASK64: Final = (1 << 64) - 1


@final
@attrs.frozen(slots=True)
class BusSizes:
    """Events per timed round of each scenario, and the rounds per side."""

    ingest_raw: int
    ingest_raw_batch: int
    ingest_dict: int
    end_to_end: int
    repeats: int


#: Stable figures in about 40 s on a 2-core machine.
DEFAULT_SIZES: Final = BusSizes(
    ingest_raw=200_000,
    ingest_raw_batch=500_000,
    ingest_dict=200_000,
    end_to_end=200_000,
    repeats=5,
)

#: A smoke run of a few seconds: shapes only, the figures mean nothing.
QUICK_SIZES: Final = BusSizes(
    ingest_raw=5_000,
    ingest_raw_batch=10_000,
    ingest_dict=5_000,
    end_to_end=5_000,
    repeats=2,
)


# -- the workload ---------------------------------------------------------------------

_MODELS: Final = ("gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large")
_WORDS: Final = (
    "the", " agent", " calls", " a", " tool", " to", " read", " the", " file", ",",
    " then", " plans", " its", " next", " step", ".", " Result", ":", " ok", "\n",
)  # fmt: skip
#: (tool, arguments) of the tool calls; the argument dicts are shared, never mutated.
_TOOL_CALLS: Final = (
    ("web_search", {"query": "quarterly revenue by region"}),
    ("read_file", {"path": "src/agent/planner.py"}),
    ("run_python", {"code": "print(sum(range(10)))"}),
    ("sql_query", {"sql": "SELECT count(*) FROM runs WHERE status = 'failed'"}),
    ("http_get", {"url": "https://api.example.com/v1/weather?city=Oslo"}),
)
_STATES: Final = ("queued", "thinking", "acting", "waiting_for_tool", "done")


def synthetic_events(run: int, start: int, count: int) -> list[dict[str, Any]]:
    """Events ``start .. start + count - 1`` of run ``run``: AI-workload shapes.

    Seven in ten are ``token`` events (a streamed model token), two ``tool_call`` and
    one ``state_change``, spread over 16 agents. Each carries ids (``id``, ``run_id``,
    ``agent_id``), ``demo_run`` = ``run`` and ``demo_seq`` = its number in the run, so
    a reader can check order and completeness. Deterministic: the same ``(run, i)``
    always gives the same event, whatever the chunking.
    """
    events: list[dict[str, Any]] = []
    append = events.append
    salt = (run * 0xD6E8FEB86659FD93) & _MASK64
    for i in range(start, start + count):
        h = (((i + 1) * 0x9E3779B97F4A7C15) ^ salt) & _MASK64
        agent = (h >> 8) & 15
        common = {
            "id": f"evt-{run:x}-{i:08x}",
            "run_id": f"run-{run:04d}-{agent:02d}",
            "agent_id": f"agent-{agent:02d}",
            "demo_run": run,
            "demo_seq": i,
        }
        kind = h % 10
        if kind < 7:
            append(
                {
                    "type": "token",
                    **common,
                    "model": _MODELS[(h >> 12) & 3],
                    "index": i >> 4,
                    "text": _WORDS[(h >> 16) % len(_WORDS)],
                    "logprob": -((h >> 24) & 1023) / 1000,
                }
            )
        elif kind < 9:
            tool, args = _TOOL_CALLS[(h >> 12) % len(_TOOL_CALLS)]
            append(
                {
                    "type": "tool_call",
                    **common,
                    "call_id": f"call_{h >> 40:06x}",
                    "tool": tool,
                    "args": args,
                    "status": "started" if (h >> 28) & 1 else "ok",
                }
            )
        else:
            state = (h >> 12) % (len(_STATES) - 1)
            append(
                {
                    "type": "state_change",
                    **common,
                    "from": _STATES[state],
                    "to": _STATES[state + 1],
                    "reason": "tool_result" if state == 3 else "planner",
                }
            )
    return events


def bench_bus_config(storage: StorageConfig | None = None) -> BusConfig:
    """Our side's bus: the reference's shape (4 shards, ring 1 << 20, drop_oldest)."""
    return BusConfig(
        shards=SHARDS,
        ring_capacity=RING_CAPACITY,
        backpressure=BACKPRESSURE,
        storage=storage if storage is not None else StorageConfig(),
    )


@final
@attrs.frozen(slots=True)
class _Inputs:
    """The same events in each side's natural input type, made before any clock."""

    dicts: list[dict[str, Any]]
    texts: list[str]
    raw: list[bytes]

    @classmethod
    def make(cls, n: int) -> _Inputs:
        dicts = synthetic_events(0, 0, n)
        # Compact JSON, as both sides store it; ours gets the same text as UTF-8 bytes.
        texts = [json.dumps(d, separators=(",", ":")) for d in dicts]
        return cls(dicts, texts, [t.encode() for t in texts])


def _chunks(items: Sequence[Any], size: int = BATCH) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


#: Makes a round's input from the first ``n`` events (untimed), then feeds it to a bus
#: (timed) and returns how many events the bus accepted.
_Prepare = Callable[[int], Any]
_Feed = Callable[[Any, Any], int]


def _feed_one_by_one(method: str) -> _Feed:
    def feed(bus: Any, items: Any) -> int:
        call = getattr(bus, method)
        for item in items:
            call(item)
        return len(items)

    return feed


def _feed_batches(bus: Any, chunks: Any) -> int:
    ingest_raw_batch = bus.ingest_raw_batch
    accepted = 0
    for chunk in chunks:
        accepted += ingest_raw_batch(chunk)
    return int(accepted)


# -- our side -------------------------------------------------------------------------


def _ours(prepare: _Prepare, feed: _Feed) -> Side:
    """Time ``feed`` on a fresh memory-backed bus; check that everything was dispatched."""

    def side(n: int, sw: Stopwatch) -> None:
        items = prepare(n)

        async def round_() -> tuple[int, int]:
            async with Bus.open(bench_bus_config()) as bus:
                with sw:
                    accepted = feed(bus, items)
                await bus.flush()
                return accepted, bus.stats().events_dispatched

        accepted, dispatched = anyio.run(round_)
        if accepted != n or dispatched != n:
            raise RuntimeError(f"ours: {n} events, {accepted} accepted, {dispatched} dispatched")

    return side


def _ours_end_to_end(raw: list[bytes], root: Path) -> Side:
    """Ingest (yielding every YIELD_EVERY events), flush, poll back: all of it timed."""

    def side(n: int, sw: Stopwatch) -> None:
        directory = Path(tempfile.mkdtemp(dir=root))
        chunks = _chunks(raw[:n], YIELD_EVERY)

        async def round_() -> int:
            read = 0
            storage = StorageConfig("redex", {"data_dir": str(directory)})
            async with Bus.open(bench_bus_config(storage)) as bus:
                ingest_raw = bus.ingest_raw
                checkpoint = anyio.lowlevel.checkpoint
                with sw:
                    for chunk in chunks:
                        for event in chunk:
                            ingest_raw(event)
                        await checkpoint()
                    await bus.flush()
                    cursor = None
                    while True:
                        page = await bus.poll(POLL_LIMIT, cursor)
                        read += len(page.events)
                        cursor = page.next_cursor
                        if not page.has_more:
                            break
            return read

        try:
            read = anyio.run(round_)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if read != n:
            raise RuntimeError(f"end_to_end_redex: ingested {n} events, read back {read}")

    return side


# -- the reference --------------------------------------------------------------------


def _reference(net: Any, prepare: _Prepare, feed: _Feed) -> Side:
    """Time ``feed`` on a fresh ``net.Net``; check that everything was ingested."""

    def side(n: int, sw: Stopwatch) -> None:
        items = prepare(n)
        bus = net.Net(
            num_shards=SHARDS, ring_buffer_capacity=RING_CAPACITY, backpressure_mode=BACKPRESSURE
        )
        try:
            with sw:
                accepted = feed(bus, items)
            ingested = bus.stats().events_ingested
        finally:
            bus.shutdown()
        if accepted != n or ingested != n:
            raise RuntimeError(f"reference: {n} events, {accepted} accepted, {ingested} ingested")

    return side


# -- the suite ------------------------------------------------------------------------


def _sides(
    net: Any, ours: tuple[_Prepare, _Feed], theirs: tuple[_Prepare, _Feed]
) -> tuple[Side, Side | None]:
    return _ours(*ours), (_reference(net, *theirs) if net is not None else None)


def _head(items: list[Any]) -> _Prepare:
    """The first ``n`` items (binds the one list a side feeds, not all the inputs)."""
    return lambda n: items[:n]


def _head_chunks(items: list[Any]) -> _Prepare:
    return lambda n: _chunks(items[:n])


def run_bus_suite(
    *,
    quick: bool = False,
    progress: TextIO | None = None,
    reference: Reference | None = None,
    sizes: BusSizes | None = None,
) -> SuiteReport:
    """Run every bus scenario on both sides; see the module docstring."""
    chosen = sizes if sizes is not None else (QUICK_SIZES if quick else DEFAULT_SIZES)
    suite = Suite(
        "bus", quick=quick, repeats=chosen.repeats, reference=reference, progress=progress
    )
    net = suite.reference.module
    sample = _Inputs.make(1000)
    suite.add_meta(
        shards=SHARDS,
        ring_capacity=RING_CAPACITY,
        backpressure=BACKPRESSURE,
        batch=BATCH,
        mean_event_bytes=round(sum(map(len, sample.raw)) / len(sample.raw), 1),
        sizes=attrs.asdict(chosen),
        storage="ours: memory backend (end_to_end_redex: redex in a temp dir); "
        "reference: its no-op adapter",
        timed="ingest scenarios: the ingest calls only (ours flushes untimed afterwards; "
        "the reference drains on its own threads and has no flush); end_to_end_redex: "
        "ingest + flush + poll by cursor",
        end_to_end_redex="ours only: the reference's Python API has no local-disk bus "
        "backend (its adapters are noop, redis, jetstream and net)",
        temp_dir=tempfile.gettempdir(),
    )

    def timed(name: str, n: int, make: Callable[[_Inputs], tuple[Side, Side | None]]) -> None:
        # Each scenario gets its own events, dropped afterwards, so that no scenario's
        # garbage-collector walks include another scenario's objects.
        # The sides keep only the lists they feed: the other forms of the events (200,000
        # dicts are 200,000 objects the collector walks) are dropped before the clock.
        inputs = _Inputs.make(n)
        ours, theirs = make(inputs)
        del inputs
        gc.collect()
        suite.throughput(name, n, ours, theirs, warmup_n=max(BATCH, n // 10))
        del ours, theirs
        gc.collect()

    timed(
        "ingest_raw",
        chosen.ingest_raw,
        lambda i: _sides(
            net,
            (_head(i.raw), _feed_one_by_one("ingest_raw")),
            (_head(i.texts), _feed_one_by_one("ingest_raw")),
        ),
    )
    timed(
        "ingest_raw_batch_1000",
        chosen.ingest_raw_batch,
        lambda i: _sides(
            net,
            (_head_chunks(i.raw), _feed_batches),
            (_head_chunks(i.texts), _feed_batches),
        ),
    )
    timed(
        "ingest_dict",
        chosen.ingest_dict,
        lambda i: _sides(
            net,
            (_head(i.dicts), _feed_one_by_one("ingest")),
            (_head(i.dicts), _feed_one_by_one("ingest")),
        ),
    )
    with tempfile.TemporaryDirectory(prefix="net-bench-bus-") as root:
        timed(
            "end_to_end_redex",
            chosen.end_to_end,
            lambda i: (_ours_end_to_end(i.raw, Path(root)), None),
        )
    return suite.report()
