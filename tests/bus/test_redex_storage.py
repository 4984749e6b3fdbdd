"""The ``redex`` storage backend beyond the shared conformance suite: the stored layout,
error mapping, retention, idempotency across restarts, shard bounds and config."""

from __future__ import annotations

import errno
import struct
from pathlib import Path
from typing import Any

import anyio
import pytest

from net_core.bus import _redex_storage as redex_storage
from net_core.bus._redex_storage import (
    HEADER_SIZE,
    MAX_SHARD_ID,
    RedexStorage,
    RedexStorageConfig,
)
from net_core.bus._storage import Batch
from net_core.config import ConfigError, structure
from net_core.errors import FatalAdapterError, TransientAdapterError
from net_core.redex import Redex
from net_core.testing.storage_conformance import make_batch, read_all
from tests.redex.faults import FaultyOps

pytestmark = pytest.mark.anyio


def _config(tmp_path: Path, **options: Any) -> RedexStorageConfig:
    return RedexStorageConfig(data_dir=str(tmp_path / "data"), **options)


async def _opened(tmp_path: Path, ops: FaultyOps | None = None, **options: Any) -> RedexStorage:
    backend = (
        RedexStorage(_config(tmp_path, **options))
        if ops is None
        else RedexStorage(_config(tmp_path, **options), ops=ops)
    )
    await backend.open()
    return backend


def _raw_entries(tmp_path: Path, channel: str) -> list[bytes]:
    with Redex(tmp_path / "data") as redex:
        f = redex.open_file(channel, persistent=True)
        return list(f.read_payloads(0, f.next_seq)[1])


# -- layout ----------------------------------------------------------------------------


async def test_stored_entry_is_header_then_raw_bytes(tmp_path: Path) -> None:
    batch = Batch(
        shard_id=2,
        sequence_start=10,
        nonce=0x1234_5678_9ABC_DEF0,
        events=[b"first", b"", b"\xff\x00"],
        timestamps=[111, 222, 2**64 - 1],
    )
    backend = await _opened(tmp_path)
    await backend.write_batch(batch)
    await backend.close()
    entries = _raw_entries(tmp_path, "bus/shard-2")
    assert HEADER_SIZE == 28
    assert len(entries) == 3
    for i, entry in enumerate(entries):
        header, raw = entry[:HEADER_SIZE], entry[HEADER_SIZE:]
        assert header == struct.pack("<QQQI", batch.timestamps[i], batch.nonce, 10 + i, i)
        assert raw == batch.events[i]
    # The first 24 bytes are insertion_ts | nonce | sequence, little-endian.
    ts, nonce, sequence = (222).to_bytes(8, "little"), batch.nonce.to_bytes(8, "little"), b"\x0b"
    assert entries[1][:24] == ts + nonce + sequence.ljust(8, b"\x00")


async def test_channels_live_under_data_dir_and_prefix(tmp_path: Path) -> None:
    backend = await _opened(tmp_path, prefix="events/bus")
    await backend.write_batch(make_batch(0, 0, [b"a"]))
    await backend.write_batch(make_batch(65_535, 0, [b"b"]))
    await backend.close()
    root = tmp_path / "data" / "events" / "bus"
    assert sorted(p.name for p in root.iterdir()) == ["shard-0", "shard-65535"]


async def test_positions_are_redex_seqs_and_dedup_ids_come_from_the_header(
    tmp_path: Path,
) -> None:
    backend = await _opened(tmp_path)
    try:
        first = make_batch(0, 0, [b"a", b"b"], nonce=0xF00)
        second = make_batch(0, 2, [b"c"], nonce=0xF00)
        await backend.write_batch(first)
        await backend.write_batch(second)
        events = (await backend.read_shard(0, None, 10)).events
        assert [e.id for e in events] == ["0", "1", "2"]
        assert [e.dedup_id for e in events] == ["f00:0:0:0", "f00:0:0:1", "f00:0:2:0"]
    finally:
        await backend.close()


# -- malformed entries and error mapping -----------------------------------------------


async def test_entry_shorter_than_header_is_fatal_naming_shard_and_seq(tmp_path: Path) -> None:
    backend = await _opened(tmp_path)
    await backend.write_batch(make_batch(3, 0, [b"ok-0", b"ok-1"]))
    await backend.close()
    with Redex(tmp_path / "data") as redex:
        f = redex.open_file("bus/shard-3", persistent=True)
        assert f.append(b"short") == 2
    backend = await _opened(tmp_path)
    try:
        with pytest.raises(FatalAdapterError, match=r"shard 3: entry at seq 2 is malformed"):
            await backend.read_shard(3, None, 10)
        # The entries before it are still readable, and the read never returns it empty.
        page = await backend.read_shard(3, None, 2)
        assert [e.raw for e in page.events] == [b"ok-0", b"ok-1"]
        assert page.has_more
        with pytest.raises(FatalAdapterError, match="seq 2"):
            await backend.read_shard(3, page.next_id, 1)
        # Writes go on after it; a consumer can skip it by its position.
        await backend.write_batch(make_batch(3, 2, [b"ok-2"]))
        after = await backend.read_shard(3, "2", 10)
        assert [(e.id, e.raw) for e in after.events] == [("3", b"ok-2")]
    finally:
        await backend.close()


async def test_entry_with_index_above_sequence_is_fatal(tmp_path: Path) -> None:
    with Redex(tmp_path / "data") as redex:
        f = redex.open_file("bus/shard-0", persistent=True)
        f.append(struct.pack("<QQQI", 1, 1, 2, 3) + b"x")
    backend = await _opened(tmp_path)
    try:
        with pytest.raises(FatalAdapterError, match="seq 0 is malformed"):
            await backend.read_shard(0, None, 10)
    finally:
        await backend.close()


async def test_disk_error_is_transient_and_the_retry_does_not_duplicate(tmp_path: Path) -> None:
    ops = FaultyOps()
    backend = await _opened(tmp_path, ops)
    try:
        await backend.write_batch(make_batch(0, 0, [b"a"]))
        ops.fail("write_all", match="/dat")
        batch = make_batch(0, 1, [b"b", b"c"])
        with pytest.raises(TransientAdapterError, match="shard 0: write"):
            await backend.write_batch(batch)
        assert [e.raw for e in await read_all(backend, 0)] == [b"a"]
        await backend.write_batch(batch)
        await backend.write_batch(batch)
        assert [e.raw for e in await read_all(backend, 0)] == [b"a", b"b", b"c"]
    finally:
        await backend.close()


async def test_poisoned_channel_is_fatal_then_reopened_and_repaired(tmp_path: Path) -> None:
    ops = FaultyOps()
    backend = await _opened(tmp_path, ops)
    try:
        await backend.write_batch(make_batch(1, 0, [b"a", b"b"]))
        ops.fail("write_all", match="/idx", partial=True)
        ops.fail("ftruncate")
        batch = make_batch(1, 2, [b"c"])
        with pytest.raises(FatalAdapterError, match="poisoned"):
            await backend.write_batch(batch)
        ops.clear()
        # The next call re-opens the channel: recovery repairs the torn write.
        assert await backend.health()
        assert [e.raw for e in await read_all(backend, 1)] == [b"a", b"b"]
        await backend.write_batch(batch)
        await backend.write_batch(make_batch(1, 0, [b"a", b"b"]))
        assert [e.raw for e in await read_all(backend, 1)] == [b"a", b"b", b"c"]
    finally:
        await backend.close()


async def test_flush_failure_is_transient(tmp_path: Path) -> None:
    ops = FaultyOps()
    backend = await _opened(tmp_path, ops)
    try:
        await backend.write_batch(make_batch(0, 0, [b"a"]))
        ops.fail("fsync", err=errno.EIO)
        with pytest.raises(TransientAdapterError, match="flush"):
            await backend.flush()
        await backend.flush()
    finally:
        await backend.close()


async def test_channel_locked_by_another_backend_is_transient(tmp_path: Path) -> None:
    first = await _opened(tmp_path)
    second = await _opened(tmp_path)
    try:
        await first.write_batch(make_batch(0, 0, [b"a"]))
        with pytest.raises(TransientAdapterError, match="open"):
            await second.write_batch(make_batch(0, 1, [b"b"]))
    finally:
        await first.close()
        await second.close()
    # Once the first is closed the channel opens fine.
    third = await _opened(tmp_path)
    try:
        await third.write_batch(make_batch(0, 1, [b"b"]))
        assert [e.raw for e in await read_all(third, 0)] == [b"a", b"b"]
    finally:
        await third.close()


async def test_bad_batches_are_fatal(tmp_path: Path) -> None:
    backend = await _opened(tmp_path)
    try:
        bad_ts = Batch(shard_id=0, sequence_start=0, nonce=1, events=[b"a"], timestamps=[2**64])
        with pytest.raises(FatalAdapterError, match="cannot encode"):
            await backend.write_batch(bad_ts)
        mismatched = Batch(shard_id=0, sequence_start=0, nonce=1, events=[b"a"], timestamps=[])
        with pytest.raises(FatalAdapterError, match="timestamps"):
            await backend.write_batch(mismatched)
        huge_nonce = Batch(shard_id=0, sequence_start=0, nonce=2**64, events=[b"a"], timestamps=[1])
        with pytest.raises(FatalAdapterError, match="u64"):
            await backend.write_batch(huge_nonce)
        assert await read_all(backend, 0) == []
        with pytest.raises(FatalAdapterError, match="invalid position"):
            await backend.read_shard(0, "1-0", 10)
        with pytest.raises(FatalAdapterError, match="invalid position"):
            await backend.read_shard(0, "-1", 10)
    finally:
        await backend.close()


# -- shard ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("shard", [-1, MAX_SHARD_ID + 1, 2**64])
async def test_shard_id_outside_u16_is_fatal(tmp_path: Path, shard: int) -> None:
    backend = await _opened(tmp_path)
    try:
        with pytest.raises(FatalAdapterError, match=rf"shard id {shard} outside 0\.\.65535"):
            await backend.write_batch(make_batch(shard, 0, [b"a"]))
        with pytest.raises(FatalAdapterError, match=r"outside 0\.\.65535"):
            await backend.read_shard(shard, None, 10)
    finally:
        await backend.close()


async def test_shard_id_bounds_are_usable(tmp_path: Path) -> None:
    backend = await _opened(tmp_path)
    try:
        for shard in (0, MAX_SHARD_ID):
            await backend.write_batch(make_batch(shard, 0, [str(shard).encode()]))
            assert [e.raw for e in await read_all(backend, shard)] == [str(shard).encode()]
    finally:
        await backend.close()


# -- retention ---------------------------------------------------------------------------


async def test_retention_config_is_honoured(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "retention": {"count": {"max_events": 10}},
        "retention_check_every": 1,
    }
    backend = await _opened(tmp_path, **options)
    batches = [make_batch(0, s, [f"e{s + i}".encode() for i in range(5)]) for s in range(0, 50, 5)]
    try:
        for batch in batches:
            await backend.write_batch(batch)
        events = await read_all(backend, 0, page=3)
        assert [e.raw for e in events] == [f"e{i}".encode() for i in range(40, 50)]
        assert [e.id for e in events] == [str(i) for i in range(40, 50)]
        # A cursor into evicted history resumes at the oldest retained event.
        page = await backend.read_shard(0, "5", 4)
        assert [e.id for e in page.events] == ["40", "41", "42", "43"]
        assert page.has_more
        exact = await backend.read_shard(0, "5", 10)
        assert len(exact.events) == 10
        assert not exact.has_more
        # A retry of a retained batch is still recognised.
        await backend.write_batch(batches[-1])
        assert len(await read_all(backend, 0)) == 10
    finally:
        await backend.close()
    backend = await _opened(tmp_path, **options)
    try:
        await backend.write_batch(batches[-1])
        events = await read_all(backend, 0)
        assert [e.id for e in events] == [str(i) for i in range(40, 50)]
    finally:
        await backend.close()


async def test_unknown_retention_policy_fails_at_open(tmp_path: Path) -> None:
    backend = RedexStorage(_config(tmp_path, retention={"nope": {}}))
    with pytest.raises(FatalAdapterError, match="invalid retention config"):
        await backend.open()
    await backend.close()


# -- idempotency across restarts ------------------------------------------------------


async def test_partially_written_batch_range_is_completed_after_restart(tmp_path: Path) -> None:
    nonce = 0xBEEF
    backend = await _opened(tmp_path)
    # What an earlier run managed to store: sequences 0..4 of a 10-event batch.
    await backend.write_batch(make_batch(0, 0, [f"e{i}".encode() for i in range(5)], nonce=nonce))
    await backend.close()

    backend = await _opened(tmp_path)
    try:
        full = make_batch(0, 0, [f"e{i}".encode() for i in range(10)], nonce=nonce)
        await backend.write_batch(full)
        events = await read_all(backend, 0)
        assert [e.raw for e in events] == [f"e{i}".encode() for i in range(10)]
        assert [e.dedup_id for e in events[5:]] == [full.dedup_id(i) for i in range(5, 10)]
        # A batch overlapping the stored range only adds what is new.
        overlap = make_batch(0, 8, [b"e8", b"e9", b"e10", b"e11"], nonce=nonce)
        await backend.write_batch(overlap)
        events = await read_all(backend, 0)
        assert [e.raw for e in events] == [f"e{i}".encode() for i in range(12)]
        assert [e.dedup_id for e in events[10:]] == [overlap.dedup_id(2), overlap.dedup_id(3)]
        # Another producer's sequences are independent.
        await backend.write_batch(make_batch(0, 0, [b"other"], nonce=nonce + 1))
    finally:
        await backend.close()

    backend = await _opened(tmp_path)
    try:
        for batch in (full, overlap, make_batch(0, 0, [b"other"], nonce=nonce + 1)):
            await backend.write_batch(batch)
        events = await read_all(backend, 0)
        assert len(events) == 13
        assert events[-1].raw == b"other"
    finally:
        await backend.close()


async def test_marks_are_rebuilt_per_shard_on_first_use(tmp_path: Path) -> None:
    backend = await _opened(tmp_path)
    await backend.write_batch(make_batch(0, 0, [b"a"] * 3, nonce=7))
    await backend.write_batch(make_batch(1, 0, [b"b"] * 2, nonce=7))
    await backend.close()
    backend = await _opened(tmp_path)
    try:
        # Shard 1 is first used by a write: its marks come from its own channel.
        await backend.write_batch(make_batch(1, 0, [b"b"] * 3, nonce=7))
        assert [e.raw for e in await read_all(backend, 1)] == [b"b"] * 3
        await backend.write_batch(make_batch(0, 0, [b"a"] * 3, nonce=7))
        assert len(await read_all(backend, 0)) == 3
    finally:
        await backend.close()


# -- lifecycle and concurrency ---------------------------------------------------------


async def test_lifecycle_errors_and_health(tmp_path: Path) -> None:
    backend = RedexStorage(_config(tmp_path))
    assert not await backend.health()
    with pytest.raises(FatalAdapterError, match="not open"):
        await backend.write_batch(make_batch(0, 0, [b"a"]))
    await backend.open()
    await backend.open()
    assert (tmp_path / "data").is_dir()
    assert await backend.health()
    await backend.close()
    assert not await backend.health()
    with pytest.raises(FatalAdapterError, match="closed"):
        await backend.read_shard(0, None, 1)
    with pytest.raises(FatalAdapterError, match="closed"):
        await backend.write_batch(make_batch(0, 0, [b"a"]))
    with pytest.raises(FatalAdapterError, match="after close"):
        await backend.open()
    await backend.close()


async def test_health_is_false_when_data_dir_is_gone(tmp_path: Path) -> None:
    backend = await _opened(tmp_path)
    try:
        (tmp_path / "data").rmdir()
        assert not await backend.health()
    finally:
        await backend.close()


async def test_reading_an_unknown_shard_creates_nothing(tmp_path: Path) -> None:
    backend = await _opened(tmp_path)
    try:
        assert (await backend.read_shard(9, None, 10)).events == []
        assert list((tmp_path / "data").iterdir()) == []
    finally:
        await backend.close()


async def test_concurrent_first_use_opens_a_shard_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await _opened(tmp_path)
    await backend.write_batch(make_batch(0, 0, [b"a"]))
    await backend.close()
    opens: list[str] = []
    real_open = redex_storage._open_shard

    def counting_open(*args: Any) -> Any:
        opens.append(args[1])
        return real_open(*args)

    monkeypatch.setattr(redex_storage, "_open_shard", counting_open)
    backend = await _opened(tmp_path)
    try:
        results: list[int] = []

        async def read() -> None:
            results.append(len((await backend.read_shard(0, None, 10)).events))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(read)
            tg.start_soon(backend.write_batch, make_batch(0, 0, [b"a"]))
        assert results == [1] * 8
        assert opens == ["bus/shard-0"]
    finally:
        await backend.close()


@pytest.mark.parametrize(
    "options",
    [{"fsync_every_n": 1}, {"fsync_interval_ms": 5}, {}],
    ids=["every_n", "interval", "never"],
)
async def test_fsync_policies_write_and_survive_restart(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    backend = await _opened(tmp_path, **options)
    try:
        for s in range(0, 30, 3):
            await backend.write_batch(make_batch(0, s, [b"x", b"y", b"z"]))
    finally:
        await backend.close()
    backend = await _opened(tmp_path, **options)
    try:
        assert len(await read_all(backend, 0)) == 30
    finally:
        await backend.close()


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/bus", "bus/", "a//b", "sp ace", "..", "ü"])
def test_invalid_prefix_is_a_config_error(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        _config(tmp_path, prefix=prefix)


def test_config_validation_and_structure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fsync_every_n"):
        _config(tmp_path, fsync_every_n=1, fsync_interval_ms=10)
    with pytest.raises(ConfigError, match="fsync_every_n"):
        _config(tmp_path, fsync_every_n=0)
    with pytest.raises(ConfigError, match="data_dir"):
        RedexStorageConfig(data_dir="")
    with pytest.raises(ConfigError, match="retention"):
        _config(tmp_path, retention={"count": 3})
    cfg = structure(
        {"data_dir": "d", "prefix": "x/y", "retention": {"count": {"max_events": 5}}},
        RedexStorageConfig,
    )
    assert cfg.channel_name(4) == "x/y/shard-4"
    assert cfg.file_config().persistent
    assert cfg.file_config().retention == {"count": {"max_events": 5}}
    with pytest.raises(ConfigError, match="bogus"):
        structure({"data_dir": "d", "bogus": 1}, RedexStorageConfig)
    assert RedexStorageConfig(data_dir=tmp_path).data_dir == str(tmp_path)
