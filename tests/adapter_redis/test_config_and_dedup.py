"""Configuration of the backend, URL parsing, limits, and the RedisStreamDedup window."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from net_adapter_redis._dedup import decode_state, encode_state
from net_adapter_redis._storage import MAX_COUNT, READ_CHUNK, saturating_count

from net_adapter_redis import (
    MAX_CAPACITY,
    DedupStateError,
    RedisAddress,
    RedisDedupConfig,
    RedisStorage,
    RedisStorageConfig,
    RedisStreamDedup,
)
from net_core.bus import StoredEvent
from net_core.config import structure
from net_core.errors import ConfigError, DecodeError, UnknownPluginError
from net_core.plugins import Kind, PluginManager

# -- configuration --------------------------------------------------------------------------


def test_defaults_are_the_reference_shape() -> None:
    config = RedisStorageConfig(url="redis://127.0.0.1:6379")
    assert config.prefix == "net"
    assert config.max_stream_len is None
    assert config.command_timeout_ms == 1000.0
    assert config.connect_timeout_ms == 5000.0


@pytest.mark.parametrize(
    ("options", "path", "fragment"),
    [
        ({}, "url", "required"),
        ({"url": ""}, "url", "non-empty"),
        ({"url": "http://x"}, "url", "scheme"),
        ({"url": "redis://"}, "url", "no host"),
        ({"url": "redis://h:99999"}, "url", "invalid URL"),
        ({"url": "redis://h/abc"}, "url", "database"),
        ({"url": "unix://"}, "url", "socket path"),
        ({"url": "redis://h", "prefix": ""}, "prefix", "1-256"),
        ({"url": "redis://h", "prefix": "a b"}, "prefix", "whitespace"),
        ({"url": "redis://h", "max_stream_len": 0}, "max_stream_len", "must be in [1,"),
        ({"url": "redis://h", "max_stream_len": 2**63}, "max_stream_len", "must be in [1,"),
        ({"url": "redis://h", "command_timeout_ms": 0}, "command_timeout_ms", "must be in [1,"),
        ({"url": "redis://h", "max_connections": 0}, "max_connections", "must be in [1,"),
        ({"url": "redis://h", "colour": "blue"}, None, "unknown field"),
    ],
)
def test_invalid_options_name_the_field(
    options: dict[str, Any], path: str | None, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        structure(options, RedisStorageConfig, path="storage.options")
    text = str(info.value)
    assert fragment in text
    if path is not None:
        assert f"storage.options.{path}" in text


def test_url_forms() -> None:
    a = RedisAddress.parse("redis://user:p%40ss@example.org:7000/3")
    assert (a.host, a.port, a.username, a.password, a.db, a.tls) == (
        "example.org",
        7000,
        "user",
        "p@ss",
        3,
        False,
    )
    assert "p@ss" not in repr(a)
    assert a.describe() == "redis://example.org:7000/3"
    b = RedisAddress.parse("rediss://:secret@[::1]")
    assert (b.host, b.port, b.username, b.password, b.tls) == ("::1", 6379, None, "secret", True)
    assert b.describe() == "rediss://[::1]:6379/0"
    c = RedisAddress.parse("unix:///run/redis.sock?db=2")
    assert (c.unix_path, c.db) == ("/run/redis.sock", 2)


def test_limits_saturate() -> None:
    assert saturating_count(0) == 1
    assert saturating_count(5) == 6
    assert saturating_count(READ_CHUNK) == READ_CHUNK
    for huge in (2**63 - 1, 2**63, 2**64 - 1, 2**200):
        assert saturating_count(huge) == READ_CHUNK
        assert saturating_count(huge, chunk=2**70) == MAX_COUNT
    assert saturating_count(-3) == 1


def test_the_plugin_registers_both_backends() -> None:
    pm = PluginManager()
    assert "redis" in pm.names(Kind.STORAGE)
    assert "redis" in pm.names(Kind.DEDUP)
    assert pm.provider(Kind.STORAGE, "redis").distribution == "net-adapter-redis"
    backend = pm.storage_backend("redis", {"url": "redis://127.0.0.1:1", "prefix": "x"})
    assert isinstance(backend, RedisStorage)
    assert type(backend).dedups is False
    dedup = pm.dedup("redis", {"capacity": 0})
    assert isinstance(dedup, RedisStreamDedup)
    assert dedup.capacity == 1


def test_without_the_plugin_the_name_is_unknown() -> None:
    pm = PluginManager(allow="")  # built-ins only: as if the distribution were not installed
    with pytest.raises(UnknownPluginError) as info:
        pm.storage_backend("redis", {"url": "redis://127.0.0.1:1"})
    assert str(info.value) == "unknown storage 'redis'; available: memory, redex"


# -- the dedup window -----------------------------------------------------------------------


def _event(dedup_id: str | None, i: int = 0) -> StoredEvent:
    return StoredEvent(f"1-{i}", b"{}", i, 0, dedup_id)


def test_fifo_window_semantics() -> None:
    d = RedisStreamDedup(3)
    assert [d.is_duplicate(x) for x in ("a", "b", "a", "c")] == [False, False, True, False]
    assert len(d) == 3
    # "a" was seen again but not refreshed: FIFO evicts it first
    assert d.is_duplicate("d") is False
    assert "a" not in d
    assert "b" in d
    assert d.is_duplicate("a") is False  # forgotten, so new again
    assert d.ids() == ["c", "d", "a"]
    assert (d.duplicates, d.evictions) == (1, 2)
    d.clear()
    assert d.is_empty
    assert (d.duplicates, d.evictions, len(d)) == (0, 0, 0)
    assert repr(d) == "RedisStreamDedup(len=0, capacity=3)"


def test_capacity_is_clamped() -> None:
    assert RedisStreamDedup(0).capacity == 1
    assert RedisStreamDedup(2**64).capacity == MAX_CAPACITY
    assert RedisStreamDedup().capacity == 65536
    with pytest.raises(ConfigError, match="capacity"):
        RedisStreamDedup(-1)
    with pytest.raises(ConfigError, match="capacity"):
        structure({"capacity": -1}, RedisDedupConfig)


def test_filter_drops_copies_and_keeps_unidentified() -> None:
    d = RedisStreamDedup(10)
    events = [_event("a", 0), _event("b", 1), _event("a", 2), _event(None, 3), _event(None, 4)]
    assert [e.insertion_ts for e in d.filter(events)] == [0, 1, 3, 4]
    assert d.unidentified == 2
    assert d.filter([_event("b", 5)]) == []


def test_state_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "seen.state"
    d = RedisStreamDedup(4, state_path=path)
    for x in ("a", "b", "c", "d", "e"):
        d.is_duplicate(x)
    d.is_duplicate(b"\x00bytes")
    d.save()
    again = RedisStreamDedup(4, state_path=path)
    assert again.ids() == ["c", "d", "e", b"\x00bytes"]
    assert again.is_duplicate("e")
    smaller = RedisStreamDedup(2, state_path=path)
    assert smaller.ids() == ["e", b"\x00bytes"]
    assert [p.name for p in tmp_path.iterdir()] == ["seen.state"]


def test_built_from_config_loads_the_state(tmp_path: Path) -> None:
    path = tmp_path / "s"
    d = RedisStreamDedup(8, state_path=path)
    d.is_duplicate("x")
    d.save()
    pm = PluginManager()
    loaded = pm.dedup("redis", {"capacity": 8, "state_path": str(path)})
    assert "x" in loaded


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "seen.state"
    # A crashed writer (a pid that cannot exist) and our own leftover.
    dead = tmp_path / f".seen.state.{2**22 + 12345}.abc.tmp"
    dead.write_bytes(b"partial")
    own = tmp_path / f".seen.state.{os.getpid()}.def.tmp"
    own.write_bytes(b"partial")
    unrelated = tmp_path / ".other.1.tmp"
    unrelated.write_bytes(b"keep")
    d = RedisStreamDedup(4, state_path=path)
    assert not dead.exists()
    assert not own.exists()
    dead.write_bytes(b"partial again")
    d.is_duplicate("a")
    d.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.1.tmp", "seen.state"]


def test_fsync_errors_propagate_and_keep_the_old_state(tmp_path: Path) -> None:
    path = tmp_path / "seen.state"
    good = RedisStreamDedup(4, state_path=path)
    good.is_duplicate("old")
    good.save()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    bad = RedisStreamDedup(4, state_path=path, fsync=failing_fsync)
    bad.is_duplicate("new")
    with pytest.raises(OSError, match="No space left"):
        bad.save()
    assert RedisStreamDedup(4, state_path=path).ids() == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["seen.state"]


def test_save_without_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="state_path"):
        RedisStreamDedup(4).save()


@pytest.mark.anyio
async def test_asave_runs_in_a_thread(tmp_path: Path) -> None:
    d = RedisStreamDedup(4, state_path=tmp_path / "s")
    d.is_duplicate("z")
    await d.asave()
    assert RedisStreamDedup(4, state_path=tmp_path / "s").ids() == ["z"]


def test_corrupt_state_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    data = bytearray(encode_state(4, ["a", "b"]))
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DedupStateError, match="checksum"):
        RedisStreamDedup(4, state_path=path)


@given(
    st.integers(1, MAX_CAPACITY), st.lists(st.text(max_size=8) | st.binary(max_size=8), max_size=10)
)
def test_state_round_trip(capacity: int, ids: list[str | bytes]) -> None:
    ids = ids[:capacity]
    assert decode_state(encode_state(capacity, ids)) == (capacity, ids)


@given(st.binary(max_size=120))
def test_any_state_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_state(data)


@given(st.binary(min_size=1, max_size=60), st.integers(0, 59))
def test_damaged_valid_state_is_rejected(data: bytes, where: int) -> None:
    blob = bytearray(encode_state(8, [data]))
    blob[where % len(blob)] ^= 0x01
    with pytest.raises(DecodeError):
        decode_state(bytes(blob))
