"""Compatibility with the reference (``ai2070-net``): both implementations read the
streams the other one wrote, on the same server and prefix."""

from __future__ import annotations

import time

import anyio
import orjson
import pytest

from net_adapter_redis import RedisStorage, RedisStorageConfig, RedisStreamDedup
from net_core.bus import Bus, BusConfig, StorageConfig
from net_core.testing.services import RedisServer
from net_core.testing.storage_conformance import read_all

net = pytest.importorskip("net", reason="ai2070-net (the reference) is not installed")

pytestmark = pytest.mark.oracle

SHARDS = 2


def _wait_stored(server: RedisServer, prefix: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        stored = sum(
            int(server.command("XLEN", f"{prefix}:shard:{s}")[1:-2]) for s in range(SHARDS)
        )
        if stored >= n or time.monotonic() > deadline:
            return
        time.sleep(0.01)


@pytest.mark.anyio
async def test_we_read_what_the_reference_wrote(
    redis_url: str, redis_server: RedisServer, redis_prefix: str
) -> None:
    texts = [orjson.dumps({"i": i, "text": f"tok {i} ✓", "n": 1.5}).decode() for i in range(40)]
    texts.append('{"spaced" :  [1, 2 ,3] }')  # kept byte-exact

    def produce() -> None:
        ref = net.Net(num_shards=SHARDS, redis_url=redis_url, redis_prefix=redis_prefix)
        try:
            for text in texts:
                ref.ingest_raw(text)
            _wait_stored(redis_server, redis_prefix, len(texts))
        finally:
            ref.shutdown()

    await anyio.to_thread.run_sync(produce)
    backend = RedisStorage(RedisStorageConfig(url=redis_url, prefix=redis_prefix))
    await backend.open()
    try:
        assert await backend.known_shards() == list(range(SHARDS))
        events = [e for s in range(SHARDS) for e in await read_all(backend, s, page=7)]
    finally:
        await backend.close()
    assert sorted(e.raw.decode() for e in events) == sorted(texts)
    assert backend.malformed_entries == 0
    for event in events:
        nonce, shard, start, index = event.dedup_id.split(":")  # type: ignore[union-attr]
        assert int(shard) == event.shard_id
        assert int(nonce, 16) > 0
        assert int(start) >= 0
        assert int(index) >= 0
    assert len(RedisStreamDedup().filter(events)) == len(texts)


@pytest.mark.anyio
async def test_the_reference_reads_what_we_wrote(redis_url: str, redis_prefix: str) -> None:
    config = BusConfig(
        shards=SHARDS,
        storage=StorageConfig("redis", {"url": redis_url, "prefix": redis_prefix}),
    )
    events = [{"i": i, "kind": "token" if i % 3 else "tool_call"} for i in range(60)]
    async with Bus.open(config) as bus:
        for event in events:
            bus.ingest(event)
        await bus.flush()
        ours = await bus.poll(1000)

    def consume() -> list[tuple[str, str, int, int]]:
        ref = net.Net(num_shards=SHARDS, redis_url=redis_url, redis_prefix=redis_prefix)
        try:
            got = []
            cursor = None
            while True:
                page = ref.poll(7, cursor)
                got.extend((e.id, e.raw, e.insertion_ts, e.shard_id) for e in page)
                cursor = page.next_id
                if not page.has_more:
                    return got
        finally:
            ref.shutdown()

    theirs = await anyio.to_thread.run_sync(consume)
    assert sorted(orjson.loads(raw)["i"] for _, raw, _, _ in theirs) == list(range(60))
    by_id = {e.id: e for e in ours.events}
    for position, raw, ts, shard in theirs:
        mine = by_id[position]
        assert raw.encode() == mine.raw
        assert ts == mine.insertion_ts
        assert shard == mine.shard_id
