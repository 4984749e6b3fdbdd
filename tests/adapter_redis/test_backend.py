"""The ``redis`` backend against real servers: errors, timeouts, reconnects, trimming,
foreign entries, producer marks and the options the conformance suite does not cover."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import anyio
import attrs
import pytest
from net_adapter_redis._connection import RedisAddress, RedisConnection
from net_adapter_redis._entry import check_exec_reply
from net_adapter_redis._resp import ServerError, encode_command

from net_adapter_redis import RedisStorage, RedisStorageConfig, RedisStreamDedup
from net_adapter_redis import _connection as connection_module
from net_adapter_redis import _storage as storage_module
from net_core.errors import FatalAdapterError, TransientAdapterError
from net_core.testing.pytest_plugin import RedisServerFactory
from net_core.testing.services import RedisServer, free_port
from net_core.testing.storage_conformance import make_batch, read_all


def _payloads(n: int, tag: str = "e") -> list[bytes]:
    return [f'{{"{tag}":{i}}}'.encode() for i in range(n)]


@pytest.fixture
async def backend(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStorage]:
    b = RedisStorage(RedisStorageConfig(url=redis_url, prefix=redis_prefix, warn_duplicates=False))
    await b.open()
    try:
        yield b
    finally:
        await b.close()


@pytest.mark.anyio
async def test_foreign_entries_are_skipped_and_counted(
    backend: RedisStorage, redis_server: RedisServer, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:shard:0"
    await backend.write_batch(make_batch(0, 0, _payloads(2)))
    redis_server.command("XADD", key, "*", "other", "field")
    redis_server.command("XADD", key, "*", "d", "not an event")
    # Written by someone without a dedup id: still an event.
    redis_server.command("XADD", key, "*", "d", '{"r":{"x":1},"t":5,"s":0}')
    await backend.write_batch(make_batch(0, 2, _payloads(1, "f")))
    events = await read_all(backend, 0, page=1)
    assert [e.raw for e in events] == [*_payloads(2), b'{"x":1}', *_payloads(1, "f")]
    assert events[2].dedup_id is None
    assert events[2].insertion_ts == 5
    assert backend.malformed_entries >= 2
    # A page that starts with only malformed entries still reaches the next event.
    page = await backend.read_shard(0, events[1].id, 1)
    assert [e.raw for e in page.events] == [b'{"x":1}']
    assert page.has_more


@pytest.mark.anyio
async def test_read_spans_chunks(backend: RedisStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "READ_CHUNK", 4)
    await backend.write_batch(make_batch(1, 0, _payloads(11)))
    result = await backend.read_shard(1, None, 10)
    assert [e.raw for e in result.events] == _payloads(10)
    assert result.has_more
    everything = await backend.read_shard(1, None, 2**64)
    assert len(everything.events) == 11
    assert not everything.has_more


@pytest.mark.anyio
async def test_marks_resume_and_known_shards(
    backend: RedisStorage, redis_url: str, redis_prefix: str
) -> None:
    await backend.write_batch(make_batch(3, 0, _payloads(5), nonce=0xAB))
    await backend.write_batch(make_batch(3, 5, _payloads(2), nonce=0xAB))
    await backend.write_batch(make_batch(12, 0, _payloads(1), nonce=0xCD))
    assert await backend.resume_sequence(3, 0xAB) == 7
    assert await backend.resume_sequence(3, 0xCD) == 0
    assert await backend.resume_sequence(12, 0xCD) == 1
    assert await backend.known_shards() == [3, 12]
    # A prefix with glob characters matches only itself.
    other = RedisStorage(
        RedisStorageConfig(url=redis_url, prefix=f"{redis_prefix}*", warn_duplicates=False)
    )
    await other.open()
    try:
        assert await other.known_shards() == []
        await other.write_batch(make_batch(4, 0, _payloads(1)))
        assert await other.known_shards() == [4]
        assert await backend.known_shards() == [3, 12]
    finally:
        await other.close()


@pytest.mark.anyio
async def test_exact_and_approximate_trimming(
    redis_url: str, redis_prefix: str, redis_server: RedisServer
) -> None:
    exact = RedisStorage(
        RedisStorageConfig(
            url=redis_url,
            prefix=redis_prefix,
            max_stream_len=10,
            approximate_trim=False,
            warn_duplicates=False,
        )
    )
    await exact.open()
    try:
        for start in range(0, 50, 5):
            await exact.write_batch(make_batch(0, start, _payloads(5)[::-1]))
        assert redis_server.command("XLEN", f"{redis_prefix}:shard:0") == b":10\r\n"
        events = await read_all(exact, 0)
        assert len(events) == 10
    finally:
        await exact.close()
    approx = RedisStorage(
        RedisStorageConfig(
            url=redis_url, prefix=f"{redis_prefix}a", max_stream_len=100, warn_duplicates=False
        )
    )
    await approx.open()
    try:
        for start in range(0, 2000, 500):
            await approx.write_batch(make_batch(0, start, _payloads(500)))
        length = int(redis_server.command("XLEN", f"{redis_prefix}a:shard:0")[1:-2])
        assert 100 <= length < 2000
    finally:
        await approx.close()


@pytest.mark.anyio
async def test_wrong_type_is_fatal_and_bad_arguments_are_fatal(
    backend: RedisStorage, redis_server: RedisServer, redis_prefix: str
) -> None:
    redis_server.command("SET", f"{redis_prefix}:shard:9", "a string")
    with pytest.raises(FatalAdapterError, match="WRONGTYPE"):
        await backend.write_batch(make_batch(9, 0, _payloads(1)))
    with pytest.raises(FatalAdapterError, match="WRONGTYPE"):
        await backend.read_shard(9, None, 10)
    with pytest.raises(FatalAdapterError, match="invalid position"):
        await backend.read_shard(0, "12", 10)
    with pytest.raises(FatalAdapterError, match="shard id"):
        await backend.read_shard(65536, None, 10)
    with pytest.raises(FatalAdapterError, match="shard id"):
        await backend.write_batch(make_batch(-1, 0, _payloads(1)))
    with pytest.raises(FatalAdapterError, match="timestamps"):
        await backend.write_batch(attrs.evolve(make_batch(0, 0, _payloads(2)), timestamps=[1]))


@pytest.mark.anyio
async def test_unreachable_server_is_transient_and_quick() -> None:
    port = free_port()
    b = RedisStorage(RedisStorageConfig(url=f"redis://127.0.0.1:{port}", warn_duplicates=False))
    started = time.monotonic()
    with pytest.raises(TransientAdapterError, match="connection"):
        await b.open()
    assert not await b.health()
    assert time.monotonic() - started < 5
    await b.close()
    with pytest.raises(FatalAdapterError, match="closed"):
        await b.read_shard(0, None, 1)
    with pytest.raises(FatalAdapterError, match="after close"):
        await b.open()


@pytest.mark.anyio
async def test_not_opened_is_fatal(redis_url: str) -> None:
    b = RedisStorage(RedisStorageConfig(url=redis_url))
    with pytest.raises(FatalAdapterError, match="not open"):
        await b.write_batch(make_batch(0, 0, [b"x"]))
    assert not await b.health()


@pytest.mark.anyio
async def test_server_restart_reconnects(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(appendonly=True, appendfsync="always")
    b = RedisStorage(
        RedisStorageConfig(
            url=server.url, prefix="r", command_timeout_ms=500, warn_duplicates=False
        )
    )
    await b.open()
    try:
        await b.write_batch(make_batch(0, 0, _payloads(3)))
        assert await b.health()
        await anyio.to_thread.run_sync(server.kill)
        assert not await b.health()
        with pytest.raises(TransientAdapterError):
            await b.write_batch(make_batch(0, 3, _payloads(2, "x")))
        with pytest.raises(TransientAdapterError):
            await b.read_shard(0, None, 10)
        await anyio.to_thread.run_sync(server.start)
        assert await b.health()
        # The failed batch is retried after the restart (its outcome was unknown).
        await b.write_batch(make_batch(0, 3, _payloads(2, "x")))
        events = await read_all(b, 0)
        assert [e.raw for e in events] == [*_payloads(3), *_payloads(2, "x")]
    finally:
        await b.close()


@pytest.mark.anyio
async def test_every_command_is_bounded_by_the_timeout(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    b = RedisStorage(
        RedisStorageConfig(
            url=server.url, prefix="p", command_timeout_ms=200, warn_duplicates=False
        )
    )
    await b.open()
    try:
        server.command("CLIENT", "PAUSE", "1500", "ALL")
        started = time.monotonic()
        assert not await b.health()  # PING, bounded
        with pytest.raises(TransientAdapterError, match=r"no reply within 0\.2 s"):
            await b.read_shard(0, None, 10)
        assert time.monotonic() - started < 1.2
    finally:
        server.command("CLIENT", "UNPAUSE")
        await b.close()


@pytest.mark.anyio
async def test_retry_after_a_lost_reply_leaves_no_duplicate_after_dedup(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    b = RedisStorage(
        RedisStorageConfig(
            url=server.url, prefix="p", command_timeout_ms=200, warn_duplicates=False
        )
    )
    await b.open()
    batch = make_batch(0, 0, _payloads(50))
    try:
        server.command("CLIENT", "PAUSE", "600", "WRITE")
        with pytest.raises(TransientAdapterError):
            await b.write_batch(batch)
        await anyio.sleep(0.6)
        # The retry first reads the producer mark, so a transaction that did land is
        # not written again; either way the dedup ids make copies recognisable.
        await b.write_batch(batch)
        await b.write_batch(batch)  # a retry after success is skipped locally
        events = await read_all(b, 0)
        unique = RedisStreamDedup(1000).filter(events)
        assert [e.raw for e in unique] == list(batch.events)
        assert [e.dedup_id for e in unique] == [batch.dedup_id(i) for i in range(50)]
        assert b.skipped_on_retry >= 50
    finally:
        await b.close()


@pytest.mark.anyio
async def test_password_and_database_from_the_url(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    server.command("CONFIG", "SET", "requirepass", "s3cret")
    port = server.port
    b = RedisStorage(RedisStorageConfig(url=f"redis://:s3cret@127.0.0.1:{port}/2", prefix="a"))
    await b.open()
    await b.write_batch(make_batch(0, 0, [b"{}"]))
    assert len(await read_all(b, 0)) == 1
    await b.close()
    wrong = RedisStorage(RedisStorageConfig(url=f"redis://:nope@127.0.0.1:{port}", prefix="a"))
    with pytest.raises(FatalAdapterError, match="WRONGPASS"):
        await wrong.open()
    await wrong.close()
    anonymous = RedisStorage(RedisStorageConfig(url=f"redis://127.0.0.1:{port}", prefix="a"))
    with pytest.raises(FatalAdapterError, match="NOAUTH"):
        await anonymous.open()
    await anonymous.close()
    # The stream is in database 2, not in database 0.
    db0 = RedisStorage(RedisStorageConfig(url=f"redis://:s3cret@127.0.0.1:{port}/0", prefix="a"))
    await db0.open()
    assert await db0.known_shards() == []
    await db0.close()


@pytest.mark.anyio
async def test_duplicate_warning_is_logged_once_per_process(
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage_module, "_warned_duplicates", False)
    caplog.set_level(logging.WARNING, logger="net_adapter_redis")
    for _ in range(2):
        b = RedisStorage(RedisStorageConfig(url=redis_url, prefix=redis_prefix))
        await b.open()
        await b.close()
    warnings = [r for r in caplog.records if "at-least-once" in r.getMessage()]
    assert len(warnings) == 1
    assert "RedisStreamDedup" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_transaction_refused_at_queue_time_is_reported(redis_url: str) -> None:
    """A command the server refuses while queueing aborts the whole transaction; the
    connection then parses every reply to say which one."""
    conn = await RedisConnection.connect(RedisAddress.parse(redis_url))
    try:
        buffer = b"".join(
            [
                encode_command("MULTI"),
                encode_command("SET", "k", "v"),
                encode_command("XADD", "only-a-key"),
                encode_command("EXEC"),
            ]
        )
        replies, result = await conn.transaction(buffer, 2)
        assert replies is not None
        error = check_exec_reply(replies, result, 2)
        assert error is not None
        assert "wrong number of arguments" in error.message
        assert isinstance(result, ServerError)
        assert result.code == "EXECABORT"
        # The connection is still in step: the next request gets its own reply.
        assert await conn.command("PING") == b"PONG"
        replies, result = await conn.transaction(
            encode_command("MULTI") + encode_command("PING") + encode_command("EXEC"), 1
        )
        assert replies is None
        assert result == [b"PONG"]
    finally:
        await conn.aclose()


@pytest.mark.anyio
async def test_cancelled_write_discards_its_connection(
    redis_server_factory: RedisServerFactory,
) -> None:
    """The bus bounds each write by its own timeout; a write cancelled mid-flight must
    not leave a half-read reply on a pooled connection."""
    server = redis_server_factory()
    b = RedisStorage(
        RedisStorageConfig(url=server.url, prefix="c", command_timeout_ms=5000, max_connections=1)
    )
    await b.open()
    batch = make_batch(0, 0, _payloads(20))
    try:
        server.command("CLIENT", "PAUSE", "400", "WRITE")
        with anyio.move_on_after(0.1) as scope:
            await b.write_batch(batch)
        assert scope.cancelled_caught
        await anyio.sleep(0.4)
        # The only pooled connection was dropped: this read gets its own reply (the
        # cancelled transaction either never ran or ran whole).
        first = await b.read_shard(0, None, 100)
        assert [e.raw for e in first.events] in ([], list(batch.events))
        await b.write_batch(batch)
        events = await read_all(b, 0)
        assert [e.raw for e in RedisStreamDedup(100).filter(events)] == list(batch.events)
        assert await b.health()
    finally:
        server.command("CLIENT", "UNPAUSE")
        await b.close()


@pytest.mark.anyio
async def test_an_idle_connection_dropped_by_the_server_is_replaced(
    backend: RedisStorage, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "IDLE_CHECK_S", 0.0)
    await backend.write_batch(make_batch(0, 0, _payloads(1)))
    pool = backend._pool
    assert pool is not None
    before = pool.opened
    # The server drops every client of this backend (as its `timeout` setting would).
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")
    await backend.write_batch(make_batch(0, 1, _payloads(1, "x")))
    assert pool.opened == before + 1
    assert [e.raw for e in await read_all(backend, 0)] == [*_payloads(1), *_payloads(1, "x")]
