"""Faults: the Redis server is killed mid-ingest and restarted (AOF on, fsync always).

What must hold, on asyncio and trio:

* every event of a batch the backend acknowledged (the bus counts it as dispatched) is
  readable after the restart, and after a second crash once the bus is gone;
* retried batches leave no duplicate once the consumer drops copies by dedup id;
* what the bus could not deliver is counted by reason, and dispatched + dropped equals
  what was accepted.

The backend is the real one; the subclass only records which writes returned and which
raised, so the test knows exactly what the bus was told.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import orjson
import pytest

from net_adapter_redis import RedisStorage, RedisStorageConfig, RedisStreamDedup
from net_core.bus import Batch, BatchConfig, Bus, BusConfig, StorageConfig, StoredEvent
from net_core.testing.pytest_plugin import RedisServerFactory
from net_core.testing.services import RedisServer
from net_core.testing.storage_conformance import read_all

SHARDS = 2


class RecordingRedisStorage(RedisStorage):
    """The real backend, remembering the outcome of every write."""

    def __init__(self, config: RedisStorageConfig) -> None:
        super().__init__(config)
        self.acknowledged: list[Batch] = []
        self.failed_writes = 0

    async def write_batch(self, batch: Batch) -> None:
        try:
            await super().write_batch(batch)
        except BaseException:
            self.failed_writes += 1
            raise
        self.acknowledged.append(batch)


def _config(url: str, *, retries: int) -> tuple[BusConfig, RedisStorageConfig]:
    bus = BusConfig(
        shards=SHARDS,
        retries=retries,
        adapter_timeout_ms=2000,
        batch=BatchConfig(min_size=20, max_size=200, max_delay_ms=5.0),
    )
    storage = RedisStorageConfig(
        url=url, prefix="fault", command_timeout_ms=300, warn_duplicates=False
    )
    return bus, storage


async def _ingest_through_a_crash(
    bus: Bus, server: RedisServer, *, total: int, down_s: float
) -> int:
    """Ingest at a steady pace; kill the server a third of the way into ``total`` events
    and start it again ``down_s`` seconds later. Ingesting goes on until at least
    ``total`` events and the restart (so batches are written while the server is down,
    however slow the machine); returns how many events were accepted."""
    crashed = anyio.Event()
    restarted = anyio.Event()

    async def crash() -> None:
        await crashed.wait()
        await anyio.to_thread.run_sync(server.kill)
        await anyio.sleep(down_s)
        await anyio.to_thread.run_sync(server.start)
        restarted.set()

    accepted = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(crash)
        i = 0
        while i < total or not restarted.is_set():
            bus.ingest({"i": i})
            accepted += 1
            if i == total // 3:
                crashed.set()
            if i % 50 == 49:
                await anyio.sleep(0.01)
            i += 1
    return accepted


async def _stored_after_another_crash(
    server: RedisServer, storage: RedisStorageConfig
) -> list[StoredEvent]:
    """Kill and restart once more (the bus is gone), then read every shard back."""
    await anyio.to_thread.run_sync(server.kill)
    await anyio.to_thread.run_sync(server.start)
    reader = RedisStorage(storage)
    await reader.open()
    try:
        events: list[StoredEvent] = []
        for shard in await reader.known_shards():
            events.extend(await read_all(reader, shard))
        return events
    finally:
        await reader.close()


def _check_no_duplicates_after_dedup(events: list[StoredEvent]) -> dict[str, Any]:
    unique = RedisStreamDedup(100_000).filter(events)
    payloads = [orjson.loads(e.raw)["i"] for e in unique]
    assert len(payloads) == len(set(payloads)), "one event stored under two dedup ids"
    # Copies carry the same bytes as their original.
    by_id: dict[str | None, set[bytes]] = {}
    for event in events:
        by_id.setdefault(event.dedup_id, set()).add(event.raw)
    assert all(len(raws) == 1 for raws in by_id.values())
    return {e.dedup_id: orjson.loads(e.raw)["i"] for e in unique}


@pytest.mark.anyio
async def test_crash_mid_ingest_with_retries_loses_nothing(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(appendonly=True, appendfsync="always")
    bus_config, storage_config = _config(server.url, retries=6)
    storage = RecordingRedisStorage(storage_config)
    total = 3000
    async with Bus.open(bus_config, storage=storage) as bus:
        accepted = await _ingest_through_a_crash(bus, server, total=total, down_s=0.4)
        await bus.flush()
    stats = bus.stats()
    assert storage.failed_writes > 0, "the crash did not hit any write"
    assert stats.events_ingested == accepted >= total
    assert stats.events_dispatched + stats.events_dropped == accepted
    # Six retries (75 ms .. 2.4 s of backoff) outlast a 0.4 s outage: nothing is lost.
    assert stats.events_dropped == 0, stats.dropped
    assert not stats.shutdown_was_lossy
    events = await _stored_after_another_crash(server, storage_config)
    unique = _check_no_duplicates_after_dedup(events)
    assert sorted(unique.values()) == list(range(accepted))
    acknowledged = {b.dedup_id(i) for b in storage.acknowledged for i in range(len(b))}
    assert acknowledged <= set(unique)
    assert sum(len(b) for b in storage.acknowledged) == stats.events_dispatched


@pytest.mark.anyio
async def test_crash_without_retries_reports_what_was_dropped(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(appendonly=True, appendfsync="always")
    bus_config, storage_config = _config(server.url, retries=0)
    storage = RecordingRedisStorage(storage_config)
    total = 2000
    async with Bus.open(bus_config, storage=storage) as bus:
        accepted = await _ingest_through_a_crash(bus, server, total=total, down_s=0.3)
        await bus.flush()
    stats = bus.stats()
    assert storage.failed_writes > 0
    assert stats.events_dispatched + stats.events_dropped == accepted
    assert stats.dropped["adapter_failed"] > 0
    assert stats.events_dropped == stats.dropped["adapter_failed"]
    assert stats.shutdown_was_lossy
    events = await _stored_after_another_crash(server, storage_config)
    unique = _check_no_duplicates_after_dedup(events)
    acknowledged = {b.dedup_id(i): i for b in storage.acknowledged for i in range(len(b))}
    assert set(acknowledged) <= set(unique), "an acknowledged event is missing after the restart"
    assert len(acknowledged) == stats.events_dispatched
    # A dropped batch whose transaction had landed before its reply was lost is stored
    # although counted as dropped; never the other way round.
    assert stats.events_dispatched <= len(unique) <= accepted
    assert Counter(unique.values()).most_common(1)[0][1] == 1


@pytest.mark.anyio
async def test_a_refused_batch_is_reported_as_rejected(
    redis_url: str, redis_server: RedisServer, redis_prefix: str
) -> None:
    """A server error no retry can fix (the shard's key holds a string) drops that
    shard's batches as ``adapter_rejected``; the other shard is stored."""
    redis_server.command("SET", f"{redis_prefix}:shard:1", "not a stream")
    config = BusConfig(
        shards=2,
        retries=3,
        storage=StorageConfig("redis", {"url": redis_url, "prefix": redis_prefix}),
    )
    async with Bus.open(config) as bus:
        accepted = [bus.ingest({"i": i}) for i in range(200)]
        await bus.flush()
    stats = bus.stats()
    on_one = accepted.count(1)
    assert 0 < on_one < 200
    assert stats.dropped["adapter_rejected"] == on_one
    assert stats.events_dispatched == 200 - on_one
    assert stats.shutdown_was_lossy
