"""Faults: the nats-server stops (gracefully or by SIGKILL) while the bus ingests.

Each test runs a private server (``nats_server_factory``, JetStream on disk) so that
killing it cannot disturb other tests. What must hold:

* every event the bus reports as delivered is readable after the server restarts;
* retried batches leave no duplicates (each dedup id, and each event, stored once);
* what the bus could not deliver is counted, by reason, and the shutdown says it was lossy.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from net_adapter_jetstream import JetStreamStorage, JetStreamStorageConfig
from net_core.bus import BatchConfig, Bus, BusConfig, StorageConfig, StoredEvent
from net_core.testing.pytest_plugin import NatsServerFactory
from net_core.testing.services import NatsServer
from net_core.testing.storage_conformance import make_batch, read_all

SHARDS = 3


def _config(url: str, prefix: str, *, retries: int, timeout_ms: float = 1500) -> BusConfig:
    return BusConfig(
        shards=SHARDS,
        retries=retries,
        adapter_timeout_ms=timeout_ms,
        batch=BatchConfig(min_size=50, max_size=200, max_delay_ms=2.0),
        storage=StorageConfig(
            "jetstream",
            {
                "url": url,
                "prefix": prefix,
                "connect_timeout_ms": 300,
                "request_timeout_ms": 1000,
            },
        ),
    )


async def _stored(url: str, prefix: str) -> list[StoredEvent]:
    backend = JetStreamStorage(JetStreamStorageConfig(url=url, prefix=prefix))
    await backend.open()
    try:
        out: list[StoredEvent] = []
        for shard in await backend.known_shards():
            out.extend(await read_all(backend, shard, page=500))
        return out
    finally:
        await backend.close()


def _payload(i: int) -> bytes:
    return b'{"i":%d,"pad":"%s"}' % (i, b"x" * 40)


async def _ingest_through_outage(
    server: NatsServer, bus: Bus, total: int, *, outage: str, down_s: float, restart: bool
) -> None:
    """Ingest ``total`` events in chunks; a third of the way in, take the server down."""
    chunk = 100
    for start in range(0, total, chunk):
        for i in range(start, start + chunk):
            bus.ingest_raw(_payload(i))
        await anyio.sleep(0.01)
        if start == (total // 3) // chunk * chunk:
            await anyio.to_thread.run_sync(server.kill if outage == "kill" else server.stop)
        if restart and start == (total // 3) // chunk * chunk + 5 * chunk:
            await anyio.sleep(down_s)
            await anyio.to_thread.run_sync(server.restart)


def _check_no_duplicates(events: list[StoredEvent]) -> None:
    ids = [e.dedup_id for e in events]
    assert None not in ids
    assert len(set(ids)) == len(ids), "a retried batch was stored twice"
    raws = [e.raw for e in events]
    assert len(set(raws)) == len(raws), "an event was stored twice"


@pytest.mark.anyio
@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_restart_mid_ingest_loses_nothing_delivered_and_duplicates_nothing(
    nats_server_factory: NatsServerFactory, nats_prefix: str, outage: str
) -> None:
    server = nats_server_factory()
    total = 3000
    async with Bus.open(_config(server.url, nats_prefix, retries=40)) as bus:
        await _ingest_through_outage(server, bus, total, outage=outage, down_s=0.5, restart=True)
        await bus.flush()
        stats = await bus.shutdown()
    assert stats.events_ingested == total
    assert stats.events_dispatched + stats.events_dropped == total
    # The outage was shorter than the retry budget: everything was delivered.
    assert stats.events_dropped == 0, stats.dropped
    assert not stats.shutdown_was_lossy
    events = await _stored(server.url, nats_prefix)
    _check_no_duplicates(events)
    assert sorted(e.raw for e in events) == sorted(_payload(i) for i in range(total))


@pytest.mark.anyio
async def test_server_down_for_good_drops_are_counted_by_reason(
    nats_server_factory: NatsServerFactory, nats_prefix: str
) -> None:
    server = nats_server_factory()
    total = 1500
    async with Bus.open(_config(server.url, nats_prefix, retries=1, timeout_ms=800)) as bus:
        await _ingest_through_outage(server, bus, total, outage="kill", down_s=0, restart=False)
        await bus.flush()
        stats = await bus.shutdown()
    assert stats.events_ingested == total
    assert stats.events_dispatched + stats.events_dropped == total
    assert stats.events_dropped > 0
    assert stats.dropped["adapter_failed"] == stats.events_dropped
    assert stats.shutdown_was_lossy
    # Back up: whatever the bus called delivered is there, once.
    await anyio.to_thread.run_sync(server.restart)
    events = await _stored(server.url, nats_prefix)
    _check_no_duplicates(events)
    assert len(events) >= stats.events_dispatched
    assert {e.raw for e in events} <= {_payload(i) for i in range(total)}


@pytest.mark.anyio
async def test_backend_reconnects_after_restart_without_caller_retry(
    nats_server_factory: NatsServerFactory, nats_prefix: str
) -> None:
    """A restart between two calls is invisible: the next call reconnects by itself."""
    server = nats_server_factory()
    backend = JetStreamStorage(
        JetStreamStorageConfig(url=server.url, prefix=nats_prefix, connect_timeout_ms=2000)
    )
    await backend.open()
    try:
        await backend.write_batch(make_batch(0, 0, [b"before"]))
        await anyio.to_thread.run_sync(server.stop)
        assert not await backend.health()
        await anyio.to_thread.run_sync(server.restart)
        await backend.write_batch(make_batch(0, 1, [b"after"]))
        assert await backend.health()
        got: list[Any] = [e.raw for e in await read_all(backend, 0)]
        assert got == [b"before", b"after"]
    finally:
        await backend.close()


@pytest.mark.anyio
@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_dedup_window_survives_a_server_restart(
    nats_server_factory: NatsServerFactory, nats_prefix: str, outage: str
) -> None:
    """A batch stored before the restart and retried after it is not stored twice."""
    server = nats_server_factory()
    batch = make_batch(0, 0, [b"a", b"b", b"c"])
    backend = JetStreamStorage(JetStreamStorageConfig(url=server.url, prefix=nats_prefix))
    await backend.open()
    try:
        await backend.write_batch(batch)
        await anyio.to_thread.run_sync(server.kill if outage == "kill" else server.stop)
        await anyio.to_thread.run_sync(server.restart)
        await backend.write_batch(batch)
        assert [e.raw for e in await read_all(backend, 0)] == [b"a", b"b", b"c"]
    finally:
        await backend.close()
