"""Behaviours of the jetstream backend beyond the shared contract (real servers only).

The reference's adapter defects (release notes v0.9, "Adapters"), each pinned here:
shard ids above 65,535 rejected as fatal; malformed stored data fatal, never empty
bytes; the cold-stream bail only on streams empty from the position on, so sparse
populated streams are walked fully; cursor arithmetic checked at the u64 edge;
``limit + 1`` without overflow. And: producer marks (a restarted producer keeps its
dedup ids unique), known shards, plugin registration, config errors, publish windows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from net_adapter_jetstream._client import NatsClient

from net_adapter_jetstream import (
    JetStreamStorage,
    JetStreamStorageConfig,
    NatsConnectionError,
)
from net_core.bus import Bus, BusConfig, StorageConfig
from net_core.errors import ConfigError, FatalAdapterError, UnknownPluginError
from net_core.plugins import Kind, PluginManager
from net_core.testing.services import NatsServer, free_port
from net_core.testing.storage_conformance import make_batch, read_all

MODES = ["batch", "pipelined"]


async def _open(url: str, prefix: str, **options: Any) -> JetStreamStorage:
    backend = JetStreamStorage(JetStreamStorageConfig(url=url, prefix=prefix, **options))
    await backend.open()
    return backend


@pytest.fixture
async def new_backend(
    nats_url_new: str, nats_prefix: str, request: pytest.FixtureRequest
) -> AsyncIterator[JetStreamStorage]:
    backend = await _open(nats_url_new, nats_prefix, read_mode=request.param)
    try:
        yield backend
    finally:
        await backend.close()


def _js(server: NatsServer, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    return server.js_request(subject, json.dumps(body).encode())


async def _publish_raw(url: str, subject: str, header: bytes, body: bytes) -> None:
    """Put a message on a shard subject the way a foreign writer would."""
    backend = JetStreamStorage(JetStreamStorageConfig(url=url))
    client: NatsClient = backend._client
    try:
        acks = await client.publish_acked(subject, [header], [body], max_in_flight=1, wait_s=5)
        assert b'"seq"' in acks[0].payload, acks
    finally:
        await client.aclose()


# -- shard ids, positions, limits ------------------------------------------------------


@pytest.mark.anyio
async def test_shard_ids_above_u16_are_fatal(nats_url: str, nats_prefix: str) -> None:
    backend = await _open(nats_url, nats_prefix)
    try:
        for shard in (65_536, 2**32, -1):
            with pytest.raises(FatalAdapterError, match="outside u16 range"):
                await backend.write_batch(make_batch(shard, 0, [b"x"]))
            with pytest.raises(FatalAdapterError, match="outside u16 range"):
                await backend.read_shard(shard, None, 10)
        await backend.write_batch(make_batch(65_535, 0, [b"top"]))
        assert [e.raw for e in await read_all(backend, 65_535)] == [b"top"]
        assert 65_535 in await backend.known_shards()
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_positions_are_checked_at_the_u64_edge(nats_url: str, nats_prefix: str) -> None:
    backend = await _open(nats_url, nats_prefix)
    try:
        await backend.write_batch(make_batch(0, 0, [b"a", b"b"]))
        # Nothing can follow u64::MAX (the reference wrapped to 0 and re-read everything).
        result = await backend.read_shard(0, str(2**64 - 1), 10)
        assert (result.events, result.next_id, result.has_more) == ([], None, False)
        for bad in (str(2**64), "-1", "abc", "1-0", "", "٣"):
            with pytest.raises(FatalAdapterError, match="position"):
                await backend.read_shard(0, bad, 10)
        page = await backend.read_shard(0, "0", 2**64 - 1)  # limit + 1 must not wrap
        assert [e.raw for e in page.events] == [b"a", b"b"]
    finally:
        await backend.close()


# -- the read paths ---------------------------------------------------------------------


async def _delete(server: NatsServer, stream: str, seqs: list[int]) -> None:
    for seq in seqs:
        reply = await anyio.to_thread.run_sync(
            _js, server, f"$JS.API.STREAM.MSG.DELETE.{stream}", {"seq": seq}
        )
        assert reply.get("success"), reply


@pytest.mark.anyio
@pytest.mark.parametrize("new_backend", MODES, indirect=True)
async def test_sparse_populated_stream_is_walked_fully(
    new_backend: JetStreamStorage, nats_server_new: NatsServer
) -> None:
    payloads = [f"e{i}".encode() for i in range(1, 301)]
    await new_backend.write_batch(make_batch(0, 0, payloads))
    keep = {1, 150, 300}
    await _delete(
        nats_server_new, new_backend.stream_name(0), [s for s in range(1, 301) if s not in keep]
    )
    for page in (1, 2, 100, 1000):
        events = await read_all(new_backend, 0, page=page)
        assert [e.id for e in events] == ["1", "150", "300"]
        assert [e.raw for e in events] == [b"e1", b"e150", b"e300"]
    # The head is gone too: a read from the start jumps to the first message.
    await _delete(nats_server_new, new_backend.stream_name(0), [1])
    first = await new_backend.read_shard(0, None, 1)
    assert [e.id for e in first.events] == ["150"]
    assert first.has_more


@pytest.mark.anyio
@pytest.mark.parametrize("new_backend", MODES, indirect=True)
async def test_cold_stream_and_caught_up_reads_are_empty(
    new_backend: JetStreamStorage, nats_server_new: NatsServer
) -> None:
    await new_backend.write_batch(make_batch(0, 0, [b"only"]))
    caught_up = await new_backend.read_shard(0, "1", 100)
    assert (caught_up.events, caught_up.has_more) == ([], False)
    reply = await anyio.to_thread.run_sync(
        _js, nats_server_new, f"$JS.API.STREAM.PURGE.{new_backend.stream_name(0)}", {}
    )
    assert reply.get("success"), reply
    with anyio.fail_after(5):
        empty = await new_backend.read_shard(0, None, 10_000)
    assert (empty.events, empty.next_id, empty.has_more) == ([], None, False)


@pytest.mark.anyio
@pytest.mark.parametrize("new_backend", MODES, indirect=True)
async def test_limits_trim_the_head_and_reads_follow(new_backend: JetStreamStorage) -> None:
    config = JetStreamStorageConfig(
        url=new_backend.config.url,
        prefix=new_backend.config.prefix,
        max_messages=5,
        read_mode=new_backend.read_mode or "auto",
    )
    trimmed = JetStreamStorage(config)
    await trimmed.open()
    try:
        await trimmed.write_batch(make_batch(2, 0, [b"%d" % i for i in range(20)]))
        events = await read_all(trimmed, 2, page=2)
        assert [e.raw for e in events] == [b"%d" % i for i in range(15, 20)]
        assert [e.id for e in events] == [str(s) for s in range(16, 21)]
    finally:
        await trimmed.close()


@pytest.mark.anyio
@pytest.mark.parametrize("new_backend", MODES, indirect=True)
@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"NATS/1.0\r\nNats-Msg-Id: ab:0:0:0\r\nNet-Ts: 1\r\nNet-Shard: 70000\r\n\r\n", "u16"),
        (b"NATS/1.0\r\nNats-Msg-Id: ab:0:0:0\r\nNet-Ts: x\r\nNet-Shard: 0\r\n\r\n", "Net-Ts"),
        (b"NATS/1.0\r\nOther: 1\r\n\r\n", "lacks"),
    ],
)
async def test_malformed_stored_message_is_fatal_never_empty(
    new_backend: JetStreamStorage, header: bytes, match: str
) -> None:
    await new_backend.write_batch(make_batch(0, 0, [b"good"]))
    await _publish_raw(new_backend.config.url, new_backend.subject(0), header, b'{"r":"x"}')
    with pytest.raises(FatalAdapterError, match=match) as info:
        await read_all(new_backend, 0)
    assert info.value.__cause__ is not None
    first = await new_backend.read_shard(0, None, 1)  # before the bad message: fine
    assert [e.raw for e in first.events] == [b"good"]


@pytest.mark.anyio
async def test_old_server_reads_pipelined_new_server_batched(
    nats_url: str, nats_url_new: str, nats_prefix: str
) -> None:
    new = await _open(nats_url_new, nats_prefix)
    try:
        assert new.read_mode == "batch"
    finally:
        await new.close()
    forced = await _open(nats_url, nats_prefix, read_mode="pipelined")
    try:
        assert forced.read_mode == "pipelined"
    finally:
        await forced.close()


# -- writes -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_small_publish_window_and_oversized_event(nats_url: str, nats_prefix: str) -> None:
    backend = await _open(nats_url, nats_prefix, max_in_flight=3)
    try:
        payloads = [b"w%d" % i for i in range(50)]
        await backend.write_batch(make_batch(1, 0, payloads))
        assert [e.raw for e in await read_all(backend, 1)] == payloads
        huge = b"x" * (int(backend._client.server_info["max_payload"]) + 1)
        with pytest.raises(FatalAdapterError, match="max_payload"):
            await backend.write_batch(make_batch(1, 50, [b"ok", huge]))
        assert len(await read_all(backend, 1)) == 50  # nothing of that batch was sent
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_resume_sequence_and_known_shards(nats_url: str, nats_prefix: str) -> None:
    backend = await _open(nats_url, nats_prefix)
    try:
        assert await backend.resume_sequence(0, 7) == 0
        assert await backend.known_shards() == []
        await backend.write_batch(make_batch(0, 0, [b"a"] * 4, nonce=7))
        await backend.write_batch(make_batch(0, 4, [b"b"] * 3, nonce=7))
        await backend.write_batch(make_batch(0, 0, [b"a"] * 4, nonce=7))  # late retry
        await backend.write_batch(make_batch(3, 0, [b"c"] * 2, nonce=8))
        assert await backend.resume_sequence(0, 7) == 7
        assert await backend.resume_sequence(3, 8) == 2
        assert await backend.resume_sequence(3, 7) == 0
    finally:
        await backend.close()
    other = await _open(nats_url, nats_prefix + "x")
    try:
        await other.write_batch(make_batch(5, 0, [b"elsewhere"]))
    finally:
        await other.close()
    again = await _open(nats_url, nats_prefix)
    try:
        assert await again.resume_sequence(0, 7) == 7
        assert await again.known_shards() == [0, 3]
    finally:
        await again.close()


@pytest.mark.anyio
async def test_bus_restart_with_persisted_nonce_stores_new_events(
    nats_url: str, nats_prefix: str, tmp_path: Any
) -> None:
    """Within the server's dedup window, a restarted producer must not reuse dedup ids
    (the server would drop its new events as duplicates): resume_sequence prevents it."""
    config = BusConfig(
        shards=2,
        producer_nonce_path=str(tmp_path / "nonce"),
        storage=StorageConfig("jetstream", {"url": nats_url, "prefix": nats_prefix}),
    )
    for run in range(2):
        async with Bus.open(config) as bus:
            for i in range(200):
                bus.ingest_raw(b'{"run":%d,"i":%d}' % (run, i))
            await bus.flush()
            stats = bus.stats()
            assert stats.events_dispatched == 200
    async with Bus.open(config) as bus:
        seen = []
        cursor = None
        while True:
            page = await bus.poll(150, cursor)
            seen.extend(e.raw for e in page.events)
            cursor = page.next_cursor
            if not page.has_more:
                break
    assert sorted(seen) == sorted(
        b'{"run":%d,"i":%d}' % (r, i) for r in range(2) for i in range(200)
    )


# -- lifecycle, config, plugin ----------------------------------------------------------


@pytest.mark.anyio
async def test_unreachable_server_is_a_connection_error() -> None:
    backend = JetStreamStorage(
        JetStreamStorageConfig(url=f"nats://127.0.0.1:{free_port()}", connect_timeout_ms=500)
    )
    with anyio.fail_after(5), pytest.raises(NatsConnectionError, match="could not connect"):
        await backend.open()
    await backend.close()
    with pytest.raises(FatalAdapterError, match="closed"):
        await backend.read_shard(0, None, 1)


@pytest.mark.parametrize(
    ("options", "path", "text"),
    [
        ({"url": "tls://h:1"}, "url", "TLS is not supported"),
        ({"url": "nats://:4222"}, "url", "no host"),
        ({"url": "nats://h:99999"}, "url", "invalid NATS URL"),
        ({"prefix": "a.b"}, "prefix", "A-Za-z0-9_-"),
        ({"prefix": ""}, "prefix", "A-Za-z0-9_-"),
        ({"replicas": 0}, "replicas", "in [1, 5]"),
        ({"read_mode": "fast"}, "read_mode", "fast"),
        ({"max_in_flight": 0}, "max_in_flight", "in [1, 1000000], got 0"),
        ({"surprise": 1}, None, "surprise"),
    ],
)
def test_config_errors_name_the_field(options: dict[str, Any], path: str | None, text: str) -> None:
    pm = PluginManager(discover=True, allow="jetstream")
    with pytest.raises(ConfigError) as info:
        pm.build(Kind.STORAGE, "jetstream", options, path="storage.options")
    assert text in str(info.value)
    if path is not None:
        assert f"storage.options.{path}" in str(info.value)


def test_url_credentials_are_parsed() -> None:
    address = JetStreamStorageConfig(url="nats://u%40x:p%3Aw@10.0.0.1:4333").address
    assert (address.host, address.port, address.user, address.password) == (
        "10.0.0.1",
        4333,
        "u@x",
        "p:w",
    )
    assert JetStreamStorageConfig(url="nats://s3cret@h").address.token == "s3cret"


def test_plugin_registers_the_backend_and_its_absence_is_reported() -> None:
    pm = PluginManager(discover=True, allow="jetstream")
    info = {p.name: p for p in pm.plugins()}["jetstream"]
    assert info.distribution == "net-adapter-jetstream"
    assert "jetstream" in info.provides[Kind.STORAGE]
    assert isinstance(pm.build(Kind.STORAGE, "jetstream", {}), JetStreamStorage)
    without = PluginManager(discover=True, allow="")
    with pytest.raises(UnknownPluginError, match=r"unknown storage 'jetstream'; available: ") as e:
        without.build(Kind.STORAGE, "jetstream", {})
    assert "memory" in e.value.available
