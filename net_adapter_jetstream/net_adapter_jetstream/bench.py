"""The ``jetstream`` benchmark suite (``net bench jetstream``): the bus into a real server.

Scenarios (64-byte events, a bus of 4 shards, fresh streams every round):

* ``ingest_to_store``: N ``ingest_raw`` calls (yielding to the event loop every 1000
  events, as an async producer does) and ``flush()``, which returns once the server
  acknowledged every event: events/s counted when stored. The reference implementation
  (``ai2070-net``) has no figure: its Python wheel ships no JetStream adapter.
* ``ingest_to_store_vs_raw``: the same measurement, with the raw client doing the same
  work in the same run as the "reference": nats-py publishing the same N messages (same
  subjects, same ``Nats-Msg-Id`` / ``Net-Ts`` / ``Net-Shard`` headers) with acks, using
  its fastest acked path (``publish_async``, then waiting for every ack).
* ``poll_from_store`` (ours only): N events stored beforehand (untimed), then read back
  through ``Bus.poll`` by cursor, pages of 10,000.

Server: ``NET_BENCH_NATS_URL`` (``nats://host:port``) names one to use; without it the
suite starts its own ``nats-server -js`` on a free loopback port the way the test
fixtures do (:class:`net_core.testing.services.NatsServer`) and removes it afterwards.

This module is a benchmark: it never changes library behaviour, and library code must
not import it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import time
import uuid
from collections.abc import Iterator
from typing import Final, TextIO, final

import anyio
import anyio.lowlevel
import attrs

from net_adapter_jetstream._config import JetStreamStorageConfig
from net_adapter_jetstream._storage import JetStreamStorage
from net_core.bench import Reference, Side, Stopwatch, Suite, SuiteReport
from net_core.bus import Backpressure, BatchConfig, Bus, BusConfig, StorageConfig

__all__ = ["NATS_URL_ENV", "JetStreamSizes", "run_jetstream_suite"]

#: Environment variable naming the server to benchmark against.
NATS_URL_ENV: Final = "NET_BENCH_NATS_URL"
SHARDS: Final = 4
EVENT_BYTES: Final = 64
YIELD_EVERY: Final = 1000
POLL_LIMIT: Final = 10_000


@final
@attrs.frozen(slots=True)
class JetStreamSizes:
    """Events per timed round of each scenario, and the rounds per side."""

    ingest: int
    poll: int
    repeats: int


DEFAULT_SIZES: Final = JetStreamSizes(ingest=100_000, poll=100_000, repeats=5)
QUICK_SIZES: Final = JetStreamSizes(ingest=2_000, poll=2_000, repeats=2)


def _events(n: int) -> list[bytes]:
    """``n`` distinct JSON events of exactly :data:`EVENT_BYTES` bytes."""
    out = []
    for i in range(n):
        head = b'{"type":"token","i":%d,"text":"' % i
        out.append(head + b"x" * (EVENT_BYTES - len(head) - 2) + b'"}')
    return out


@contextlib.contextmanager
def _server(progress: Suite) -> Iterator[tuple[str, str]]:
    url = os.environ.get(NATS_URL_ENV)
    if url:
        yield url, "given by NET_BENCH_NATS_URL"
        return
    from net_core.testing.services import NatsServer  # noqa: PLC0415 - only when needed

    server = NatsServer()
    server.start()
    progress.note(f"started {server.binary} on {server.url}")
    try:
        yield server.url, f"started by the suite ({server.binary})"
    finally:
        server.close()


def _bus_config(url: str, prefix: str) -> BusConfig:
    return BusConfig(
        shards=SHARDS,
        ring_capacity=1 << 20,
        batch=BatchConfig(min_size=1000, max_size=10_000, max_delay_ms=5.0),
        adapter_timeout_ms=30_000,
        storage=StorageConfig("jetstream", {"url": url, "prefix": prefix}),
    )


def _prefix() -> str:
    return f"bench{uuid.uuid4().hex[:10]}"


async def _drop_streams(url: str, prefix: str) -> None:
    """Delete the round's streams so the server's storage stays small."""
    backend = JetStreamStorage(JetStreamStorageConfig(url=url, prefix=prefix))
    await backend.open()
    try:
        for shard in await backend.known_shards():
            await backend._api(f"$JS.API.STREAM.DELETE.{backend.stream_name(shard)}", b"", "drop")
        with contextlib.suppress(Exception):
            await backend._api(f"$JS.API.STREAM.DELETE.{backend.marks_stream}", b"", "drop")
    finally:
        await backend.close()


async def _ingest(bus: Bus, events: list[bytes]) -> None:
    ingest_raw = bus.ingest_raw
    checkpoint = anyio.lowlevel.checkpoint
    for start in range(0, len(events), YIELD_EVERY):
        for event in events[start : start + YIELD_EVERY]:
            while True:
                try:
                    ingest_raw(event)
                    break
                except Backpressure:
                    await anyio.sleep(0.001)
        await checkpoint()
    await bus.flush()


def _ours_ingest(url: str, events: list[bytes]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        prefix = _prefix()
        batch = events[:n]

        async def round_() -> int:
            try:
                async with Bus.open(_bus_config(url, prefix)) as bus:
                    with sw:
                        await _ingest(bus, batch)
                    return bus.stats().events_dispatched
            finally:
                await _drop_streams(url, prefix)

        stored = anyio.run(round_)
        if stored != n:
            raise RuntimeError(f"ingest_to_store: {n} events, {stored} stored")

    return side


def _raw_ingest(url: str, events: list[bytes]) -> Side:
    """nats-py, the same messages on the same subjects, acked (publish_async)."""

    def side(n: int, sw: Stopwatch) -> None:
        import nats  # noqa: PLC0415 - the raw client is only needed here

        prefix = _prefix()
        batch = events[:n]
        nonce = f"{uuid.uuid4().int & ((1 << 64) - 1):x}"

        async def round_() -> int:
            nc = await nats.connect(url)
            try:
                js = nc.jetstream()
                for shard in range(SHARDS):
                    await js.add_stream(
                        name=f"{prefix}_shard_{shard}",
                        subjects=[f"{prefix}.shard.{shard}"],
                        allow_direct=True,
                    )
                subjects = [f"{prefix}.shard.{s}" for s in range(SHARDS)]
                headers = [
                    {
                        "Nats-Msg-Id": f"{nonce}:{i % SHARDS}:0:{i}",
                        "Net-Ts": str(time.time_ns()),
                        "Net-Shard": str(i % SHARDS),
                    }
                    for i in range(n)
                ]
                acked = 0
                with sw:
                    futures = [
                        await js.publish_async(subjects[i % SHARDS], batch[i], headers=headers[i])
                        for i in range(n)
                    ]
                    for future in futures:
                        ack = await future
                        acked += ack.seq > 0
                return acked
            finally:
                await nc.close()
                await _drop_streams(url, prefix)

        acked = anyio.run(round_, backend="asyncio")
        if acked != n:
            raise RuntimeError(f"raw nats-py: {n} events, {acked} acked")

    return side


def _ours_poll(url: str, events: list[bytes]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        prefix = _prefix()

        async def round_() -> int:
            try:
                async with Bus.open(_bus_config(url, prefix)) as bus:
                    await _ingest(bus, events[:n])  # untimed: the data to read
                async with Bus.open(_bus_config(url, prefix)) as bus:
                    read = 0
                    cursor = None
                    with sw:
                        while True:
                            page = await bus.poll(POLL_LIMIT, cursor)
                            read += len(page.events)
                            cursor = page.next_cursor
                            if not page.has_more:
                                break
                    return read
            finally:
                await _drop_streams(url, prefix)

        read = anyio.run(round_)
        if read != n:
            raise RuntimeError(f"poll_from_store: stored {n} events, read back {read}")

    return side


def run_jetstream_suite(
    *,
    quick: bool = False,
    progress: TextIO | None = None,
    sizes: JetStreamSizes | None = None,
) -> SuiteReport:
    """Run every scenario (see the module docstring)."""
    chosen = sizes if sizes is not None else (QUICK_SIZES if quick else DEFAULT_SIZES)
    try:
        nats_py = importlib.metadata.version("nats-py")
        import nats  # noqa: PLC0415

        raw = Reference(nats, f"raw client nats-py {nats_py} (ingest_to_store_vs_raw only)")
    except (importlib.metadata.PackageNotFoundError, ImportError):
        raw = Reference(None, "raw client nats-py not installed")
    suite = Suite(
        "jetstream", quick=quick, repeats=chosen.repeats, reference=raw, progress=progress
    )
    events = _events(max(chosen.ingest, chosen.poll))
    with _server(suite) as (url, origin):
        suite.add_meta(
            server=url,
            server_origin=origin,
            shards=SHARDS,
            event_bytes=EVENT_BYTES,
            sizes=attrs.asdict(chosen),
            reference_note="ai2070-net has no JetStream adapter in its wheel: no reference "
            "figure for ingest_to_store and poll_from_store; ingest_to_store_vs_raw compares "
            "with nats-py publishing the same messages with acks (publish_async) in the same run",
            timed="ingest: ingest_raw calls + flush (all acked by the server); raw: "
            "publish_async of every message + every ack; poll: Bus.poll pages until the end",
        )
        suite.throughput(
            "ingest_to_store", chosen.ingest, _ours_ingest(url, events), None, warmup_n=1000
        )
        suite.throughput(
            "ingest_to_store_vs_raw",
            chosen.ingest,
            _ours_ingest(url, events),
            _raw_ingest(url, events),
            warmup_n=1000,
        )
        suite.throughput(
            "poll_from_store", chosen.poll, _ours_poll(url, events), None, warmup_n=1000
        )
    return suite.report()
