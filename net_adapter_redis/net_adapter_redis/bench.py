"""The ``redis`` benchmark suite (``net bench redis``): the bus into Redis Streams.

Registered through the ``net_core.bench`` entry-point group. Every scenario runs both
sides in the same process against the same server, alternating, best of the rounds
(the harness in :mod:`net_core.bench._harness`). Events are 64-byte JSON objects
(``{"i":N,"pad":"xx..."}``), made before any clock starts. Our bus has the reference's
shape: 4 shards, a ring of ``1 << 20`` events, ``drop_oldest``.

* ``ingest_to_store``: N ``ingest_raw`` calls into a bus on the ``redis`` backend
  (yielding to the event loop every 1000 events, as an async producer does), then
  ``flush()``: the clock stops when the server has acknowledged every event. The
  reference: ``net.Net(..., redis_url=...)`` gets the same N ``ingest_raw`` calls and the
  clock stops when the server's streams hold N entries (``XLEN``, polled every 0.5 ms;
  its Python API has no flush).
* ``ingest_to_store_vs_raw``: the same measurement of ours, against the raw client
  doing the same work in the same run: redis-py (with its hiredis parser) sending the
  events in batches of 1000, each batch one ``MULTI``/``EXEC`` pipeline of ``XADD``
  commands with the same fields (``d`` built per event, ``dedup_id``). Measured also
  when the reference implementation is not installed.
* ``poll_from_store``: N events stored beforehand (untimed, by our backend; the
  reference reads the same streams, the layout is shared) are read back by cursor,
  10,000 per poll, until ``has_more`` is false; ours with ``Bus.poll``, the reference
  with ``Net.poll``.

The server: ``NET_BENCH_REDIS_URL`` if set (keys are named with a fresh prefix per round
and deleted afterwards), else a private ``redis-server`` started like the test fixtures
start one (:class:`net_core.testing.services.RedisServer`, no AOF: the figures measure
the client side, not the disk) and stopped at the end.

Benchmarks assert nothing about speed; each round checks that every event arrived.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, TextIO, final

import anyio
import anyio.lowlevel
import attrs

from net_core.bench import Reference, Side, Stopwatch, Suite, SuiteReport
from net_core.bus import Bus, BusConfig, StorageConfig

__all__ = [
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "URL_ENV",
    "RedisBenchSizes",
    "bench_events",
    "run_redis_suite",
]

#: Environment variable naming an existing server to benchmark against.
URL_ENV: Final = "NET_BENCH_REDIS_URL"

SHARDS: Final = 4
RING_CAPACITY: Final = 1 << 20
BACKPRESSURE: Final = "drop_oldest"
EVENT_BYTES: Final = 64
#: Events per transaction of the raw client; also how often our producer yields.
BATCH: Final = 1000
POLL_LIMIT: Final = 10_000
_STORED_POLL_S: Final = 0.0005


@final
@attrs.frozen(slots=True)
class RedisBenchSizes:
    """Events per timed round of each scenario, and the rounds per side."""

    ingest: int
    poll: int
    repeats: int


#: About a minute on a 2-core machine.
DEFAULT_SIZES: Final = RedisBenchSizes(ingest=200_000, poll=200_000, repeats=5)
#: A smoke run of a few seconds: shapes only, the figures mean nothing.
QUICK_SIZES: Final = RedisBenchSizes(ingest=3_000, poll=3_000, repeats=2)


def bench_events(n: int) -> list[bytes]:
    """``n`` distinct 64-byte JSON events."""
    out: list[bytes] = []
    for i in range(n):
        head = b'{"i":%d,"pad":"' % i
        out.append(head + b"x" * (EVENT_BYTES - len(head) - 2) + b'"}')
    return out


def _prefix() -> str:
    return f"bench{uuid.uuid4().hex[:10]}"


class _Server:
    """The Redis server of the run, plus a redis-py client for checks and cleanup."""

    def __init__(self) -> None:
        import redis  # noqa: PLC0415 - a benchmark-only dependency

        url = os.environ.get(URL_ENV)
        self._own: Any = None
        if not url:
            from net_core.testing.services import RedisServer  # noqa: PLC0415

            self._own = RedisServer()
            self._own.start()
            url = self._own.url
        self.url: str = url
        self.client: Any = redis.Redis.from_url(url)
        self.version = str(self.client.info("server").get("redis_version", "?"))

    def stored(self, prefix: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.xlen(f"{prefix}:shard:{shard}")
        return int(sum(pipe.execute()))

    def wait_stored(self, prefix: str, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stored(prefix) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{prefix}: only {self.stored(prefix)} of {n} events stored")
            time.sleep(_STORED_POLL_S)

    def drop(self, prefix: str) -> None:
        keys = list(self.client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            self.client.unlink(*keys)

    def close(self) -> None:
        self.client.close()
        if self._own is not None:
            self._own.close()


def _bus_config(url: str, prefix: str) -> BusConfig:
    return BusConfig(
        shards=SHARDS,
        ring_capacity=RING_CAPACITY,
        backpressure=BACKPRESSURE,
        storage=StorageConfig("redis", {"url": url, "prefix": prefix, "warn_duplicates": False}),
    )


# -- ingest ---------------------------------------------------------------------------


def _ours_ingest(server: _Server, events: list[bytes]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        prefix = _prefix()
        chunks = [events[i : min(i + BATCH, n)] for i in range(0, n, BATCH)]

        async def round_() -> int:
            async with Bus.open(_bus_config(server.url, prefix)) as bus:
                ingest_raw = bus.ingest_raw
                checkpoint = anyio.lowlevel.checkpoint
                with sw:
                    for chunk in chunks:
                        for event in chunk:
                            ingest_raw(event)
                        await checkpoint()
                    await bus.flush()
                return bus.stats().events_dispatched

        try:
            dispatched = anyio.run(round_)
            stored = server.stored(prefix)
        finally:
            server.drop(prefix)
        if dispatched != n or stored != n:
            raise RuntimeError(f"ours: {n} events, {dispatched} dispatched, {stored} stored")

    return side


def _reference_ingest(net: Any, server: _Server, texts: list[str]) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        prefix = _prefix()
        items = texts[:n]
        bus = net.Net(
            num_shards=SHARDS,
            ring_buffer_capacity=RING_CAPACITY,
            backpressure_mode=BACKPRESSURE,
            redis_url=server.url,
            redis_prefix=prefix,
        )
        try:
            ingest_raw = bus.ingest_raw
            with sw:
                for text in items:
                    ingest_raw(text)
                server.wait_stored(prefix, n)
        finally:
            bus.shutdown()
            stored = server.stored(prefix)
            server.drop(prefix)
        if stored != n:
            raise RuntimeError(f"reference: {n} events, {stored} stored")

    return side


def _raw_client_ingest(server: _Server, events: list[bytes]) -> Side:
    """redis-py: batches of BATCH events, each one MULTI/EXEC pipeline of XADDs."""

    def side(n: int, sw: Stopwatch) -> None:
        import redis  # noqa: PLC0415

        prefix = _prefix()
        client = redis.Redis.from_url(server.url)
        nonce = 0x5EED
        keys = [f"{prefix}:shard:{s}" for s in range(SHARDS)]
        sequence = [0] * SHARDS
        now = time.time_ns
        try:
            with sw:
                for batch_no, start in enumerate(range(0, n, BATCH)):
                    shard = batch_no % SHARDS
                    key = keys[shard]
                    seq = sequence[shard]
                    pipe = client.pipeline(transaction=True)
                    for i, event in enumerate(events[start : min(start + BATCH, n)]):
                        pipe.xadd(
                            key,
                            {
                                "d": b'{"r":%b,"t":%d,"s":%d}' % (event, now(), shard),
                                "dedup_id": f"{nonce:x}:{shard}:{seq}:{i}",
                            },
                        )
                    pipe.execute()
                    sequence[shard] = seq + min(BATCH, n - start)
            stored = server.stored(prefix)
        finally:
            client.close()
            server.drop(prefix)
        if stored != n:
            raise RuntimeError(f"raw client: {n} events, {stored} stored")

    return side


# -- poll -----------------------------------------------------------------------------


async def _fill(url: str, prefix: str, events: list[bytes]) -> None:
    async with Bus.open(_bus_config(url, prefix)) as bus:
        for i in range(0, len(events), BATCH):
            bus.ingest_raw_batch(events[i : i + BATCH])
            await anyio.lowlevel.checkpoint()
        await bus.flush()


def _ours_poll(server: _Server, prefix: str) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        async def round_() -> int:
            read = 0
            async with Bus.open(_bus_config(server.url, prefix)) as bus:
                with sw:
                    cursor = None
                    while True:
                        page = await bus.poll(POLL_LIMIT, cursor)
                        read += len(page.events)
                        cursor = page.next_cursor
                        if not page.has_more:
                            break
            return read

        read = anyio.run(round_)
        if read < n:
            raise RuntimeError(f"ours: read {read} of {n} events")

    return side


def _reference_poll(net: Any, server: _Server, prefix: str) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        bus = net.Net(num_shards=SHARDS, redis_url=server.url, redis_prefix=prefix)
        read = 0
        try:
            with sw:
                cursor = None
                while True:
                    page = bus.poll(POLL_LIMIT, cursor)
                    read += len(page.events)
                    cursor = page.next_id
                    if not page.has_more:
                        break
        finally:
            bus.shutdown()
        if read < n:
            raise RuntimeError(f"reference: read {read} of {n} events")

    return side


# -- the suite ------------------------------------------------------------------------


def run_redis_suite(
    *,
    quick: bool = False,
    progress: TextIO | None = None,
    reference: Reference | None = None,
    sizes: RedisBenchSizes | None = None,
) -> SuiteReport:
    """Run every scenario (see the module docstring)."""
    chosen = sizes if sizes is not None else (QUICK_SIZES if quick else DEFAULT_SIZES)
    suite = Suite(
        "redis", quick=quick, repeats=chosen.repeats, reference=reference, progress=progress
    )
    net = suite.reference.module
    import redis  # noqa: PLC0415 - a benchmark-only dependency

    server = _Server()
    try:
        suite.add_meta(
            server=f"redis-server {server.version}",
            server_source=URL_ENV if os.environ.get(URL_ENV) else "private, no AOF",
            shards=SHARDS,
            ring_capacity=RING_CAPACITY,
            backpressure=BACKPRESSURE,
            event_bytes=EVENT_BYTES,
            raw_client_batch=BATCH,
            poll_limit=POLL_LIMIT,
            sizes=attrs.asdict(chosen),
            timed="ingest: ingest calls until the server holds every event (ours: flush; "
            "reference: XLEN polled every 0.5 ms); poll: every page until has_more is false",
        )
        events = bench_events(max(chosen.ingest, chosen.poll))
        texts = [e.decode() for e in events]
        n = chosen.ingest
        warm = max(BATCH, n // 10)

        def throughput(name: str, ours: Side, theirs: Side | None, count: int) -> None:
            gc.collect()
            suite.throughput(name, count, ours, theirs, warmup_n=warm)

        reference_side: Callable[[], Side | None] = lambda: (  # noqa: E731
            _reference_ingest(net, server, texts) if net is not None else None
        )
        throughput("ingest_to_store", _ours_ingest(server, events), reference_side(), n)
        # The raw client is this scenario's "reference": measured whether or not the
        # reference implementation is installed (a suite of its own, merged below).
        raw_suite = Suite(
            "redis",
            quick=quick,
            repeats=chosen.repeats,
            reference=Reference(redis, f"redis-py {redis.__version__}"),
            progress=progress,
        )
        gc.collect()
        raw_result = raw_suite.throughput(
            "ingest_to_store_vs_raw",
            n,
            _ours_ingest(server, events),
            _raw_client_ingest(server, events),
            warmup_n=warm,
        )
        prefix = _prefix()
        try:
            anyio.run(_fill, server.url, prefix, events[: chosen.poll])
            throughput(
                "poll_from_store",
                _ours_poll(server, prefix),
                _reference_poll(net, server, prefix) if net is not None else None,
                chosen.poll,
            )
        finally:
            server.drop(prefix)
    finally:
        server.close()
    report = suite.report()
    meta = dict(report.meta)
    meta["spread"] = {**meta.get("spread", {}), **raw_suite.report().meta.get("spread", {})}
    meta["ingest_to_store_vs_raw_reference"] = (
        f"redis-py {redis.__version__} (hiredis parser: {_hiredis_version()}), not the "
        "reference implementation"
    )
    results = list(report.results)
    results.insert(1, raw_result)
    return SuiteReport(suite=report.suite, results=results, meta=meta)


def _hiredis_version() -> str:
    try:
        return importlib.metadata.version("hiredis")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
