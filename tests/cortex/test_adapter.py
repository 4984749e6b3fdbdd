"""The generic CortEX fold adapter: watermarks, policies, catch-up, waits, changes,
snapshots and the snapshot store (the seed behaviours of v0.9 / v0.11)."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.cortex import (
    AdapterClosedError,
    Change,
    CortexAdapter,
    CortexAdapterConfig,
    CortexEvent,
    Fold,
    FoldErrorPolicy,
    FoldStoppedError,
    FoldTimeoutError,
    Snapshot,
    SnapshotAheadError,
    SnapshotDecodeError,
    SnapshotMismatchError,
    SnapshotStore,
    SnapshotUnsupportedError,
    StateSnapshot,
    TasksAdapter,
    _snapshot_store,
    checksum_v1,
    seal,
)
from net_core.errors import DecodeError
from net_core.redex import Redex, RedexFile

pytestmark = pytest.mark.anyio

APP = 0x80


class Recorder(Fold[dict[int, bytes]]):
    """Records tails by seq; ``b"bad"`` is undecodable, ``b"boom"`` fails to apply unless
    ``healed`` (a failure that a later restore no longer hits)."""

    name = "recorder"
    snapshot_version = 1

    def __init__(self, *, healed: bool = False) -> None:
        self.healed = healed
        self.calls: list[int] = []

    def apply(self, event: CortexEvent, state: dict[int, bytes]) -> None:
        self.calls.append(event.seq)
        if event.tail == b"bad":
            raise DecodeError("undecodable tail")
        if event.tail == b"boom" and not self.healed:
            raise RuntimeError("boom")
        state[event.seq] = event.tail

    def encode_state(self, state: dict[int, bytes]) -> bytes:
        out = bytearray()
        for seq, tail in sorted(state.items()):
            out += seq.to_bytes(8, "little") + len(tail).to_bytes(4, "little") + tail
        return bytes(out)

    def decode_state(self, data: bytes, version: int) -> dict[int, bytes]:
        state: dict[int, bytes] = {}
        pos = 0
        while pos < len(data):
            seq = int.from_bytes(data[pos : pos + 8], "little")
            n = int.from_bytes(data[pos + 8 : pos + 12], "little")
            state[seq] = data[pos + 12 : pos + 12 + n]
            pos += 12 + n
        return state


class NoCodec(Fold[list[int]]):
    name = "nocodec"

    def apply(self, event: CortexEvent, state: list[int]) -> None:
        state.append(event.seq)


@pytest.fixture
def file() -> Any:
    redex = Redex()
    f = redex.open_file("t/fold")
    yield f
    redex.close()


def stop_cfg() -> CortexAdapterConfig:
    return CortexAdapterConfig(error_policy=FoldErrorPolicy.STOP)


def lac_cfg() -> CortexAdapterConfig:
    return CortexAdapterConfig(error_policy="log_and_continue")


# -- basics ------------------------------------------------------------------------------


async def test_ingest_wait_state_and_replay_rebuilds_identical_state(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        assert a.folded_through_seq is None
        assert a.applied_through_seq is None
        seqs = [a.ingest(APP, f"e{i}".encode(), seq_or_ts=i) for i in range(50)]
        await a.wait_for_seq(seqs[-1])
        assert a.folded_through_seq == 49
        assert a.applied_through_seq == 49
        first = dict(a.state)
    assert first == {i: f"e{i}".encode() for i in range(50)}
    async with CortexAdapter.open(file, Recorder(), {}) as b:
        # open() waits until everything already in the log is folded.
        assert b.state == first
        assert b.folded_through_seq == 49


async def test_open_on_empty_file_does_not_block_and_ingest_returns_seq(file: RedexFile) -> None:
    with anyio.fail_after(5):
        async with CortexAdapter.open(file, Recorder(), {}) as a:
            assert a.is_running
            assert a.ingest(APP, b"x") == 0
            assert a.ingest_payload(seal(APP, 1, 0, b"y")) == 1
            await a.wait_for_seq(1)
            assert a.state == {0: b"x", 1: b"y"}


async def test_payload_layout_is_header_then_tail_with_v2_checksum(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}, CortexAdapterConfig(origin_hash=9)) as a:
        seq = a.ingest(APP, b"tail", seq_or_ts=5, flags=1)
    assert file.read_one(seq).payload == seal(APP, 9, 5, b"tail", flags=1)


async def test_multiple_origins_on_one_file_all_fold(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        for origin in (1, 2, 3):
            a.ingest(APP, bytes([origin]), origin_hash=origin)
        await a.wait_for_seq(2)
        assert sorted(a.state.values()) == [b"\x01", b"\x02", b"\x03"]


async def test_appends_from_another_thread_are_folded(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:

        def produce() -> None:
            for i in range(500):
                file.append(seal(APP, 1, i, b"t"))

        worker = threading.Thread(target=produce)
        worker.start()
        await anyio.to_thread.run_sync(worker.join)
        await a.wait_for_seq(499, timeout=10)
        assert len(a.state) == 500


async def test_100k_back_to_back_ingests_are_all_folded(file: RedexFile) -> None:
    """The reference's fold stops for good when producers outrun it by more than the
    tail buffer (2,000 back-to-back creates left 1,280 folded). Ours catches up."""
    redex = Redex()
    n = 100_000
    async with TasksAdapter.open(redex, origin_hash=7) as tasks:
        for i in range(n):  # no await: the fold cannot run until the loop ends
            last = tasks.create(i, "t", 1_000 + i)
        await tasks.wait_for_seq(last, timeout=120)
        assert tasks.is_running
        assert tasks.count() == n
        assert tasks.adapter.applied_through_seq == n - 1
        assert tasks.fold_errors == 0


# -- decode errors, policies and the strict prefix -------------------------------------


async def test_decode_errors_are_skipped_under_stop_and_freeze_the_prefix(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}, stop_cfg()) as a:
        a.ingest(APP, b"ok0")
        a.ingest(APP, b"bad")  # seq 1: the fold says undecodable
        file.append(b"short")  # seq 2: not even a header
        a.ingest(APP, b"ok3")
        await a.wait_for_seq(3)
        assert a.is_running
        assert a.state == {0: b"ok0", 3: b"ok3"}
        assert a.fold_errors == 2
        assert a.folded_through_seq == 3
        # Strict prefix: seq 1 was skipped, so the prefix ends at 0 for good.
        assert a.applied_through_seq == 0
        a.ingest(APP, b"ok4")
        await a.wait_for_seq(4)
        assert a.applied_through_seq == 0


async def test_stop_policy_halts_without_advancing_or_broadcasting_the_failing_seq(
    file: RedexFile,
) -> None:
    async with CortexAdapter.open(file, Recorder(), {}, stop_cfg()) as a:
        changes = a.changes()
        a.ingest(APP, b"ok0")
        a.ingest(APP, b"boom")  # seq 1 halts the fold
        a.ingest(APP, b"ok2")
        with pytest.raises(FoldStoppedError) as info:
            await a.wait_for_seq(2, timeout=5)
        err = info.value
        assert err.folded_through_seq == 0
        assert err.applied_through_seq == 0
        assert "boom" in err.reason
        assert not a.is_running
        assert "seq 1" in a.stop_reason
        assert a.folded_through_seq == 0
        assert a.state == {0: b"ok0"}
        seen = [c async for c in changes]
        assert seen == [Change(0, 0)]  # never the halting seq 1, never seq 2
        # Waits after the halt fail at once, with the same watermarks.
        with pytest.raises(FoldStoppedError, match="folded_through=0"):
            await a.wait_for_seq(1)
        # A seq already folded is still fine.
        await a.wait_for_seq(0)


async def test_log_and_continue_skips_fold_errors_and_freezes_the_prefix(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}, lac_cfg()) as a:
        changes = a.changes()
        for tail in (b"ok0", b"boom", b"ok2", b"bad", b"ok4"):
            a.ingest(APP, tail)
        await a.wait_for_seq(4)
        assert a.is_running
        assert a.state == {0: b"ok0", 2: b"ok2", 4: b"ok4"}
        assert a.fold_errors == 2
        assert a.folded_through_seq == 4
        assert a.applied_through_seq == 0
        a.close()
        assert [c.seq async for c in changes] == [0, 2, 4]


async def test_v2_checksum_detects_a_flipped_header_bit_and_v1_records_still_load(
    file: RedexFile,
) -> None:
    good = seal(APP, 5, 1, b"payload")
    flipped = bytes([good[0] ^ 0x01]) + good[1:]  # dispatch 0x80 -> 0x81
    legacy_tail = b"legacy"
    legacy = seal(APP, 5, 2, legacy_tail)[:20] + checksum_v1(legacy_tail).to_bytes(4, "little")
    legacy += legacy_tail
    for payload in (good, flipped, legacy):
        file.append(payload)
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        assert a.state == {0: b"payload", 2: b"legacy"}
        assert a.fold_errors == 1
        assert a.applied_through_seq == 0


@pytest.mark.parametrize("bit", range(0, 24 * 8, 7))
async def test_every_header_bit_flip_outside_the_pad_is_detected(bit: int) -> None:
    payload = bytearray(seal(APP, 0x1122334455667788, 99, b"tail bytes"))
    payload[bit // 8] ^= 1 << (bit % 8)
    redex = Redex()
    f = redex.open_file("flip")
    f.append(bytes(payload))
    async with CortexAdapter.open(f, Recorder(), {}) as a:
        if 2 <= bit // 8 < 4:  # the pad is ignored on read, as in the reference
            assert a.fold_errors == 0
        else:
            assert a.fold_errors == 1
            assert a.state == {}


# -- waits -------------------------------------------------------------------------------


async def test_wait_timeout_and_before_start(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        with pytest.raises(FoldTimeoutError) as info:
            await a.wait_for_seq(10, timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert info.value.reached is None
        a.ingest(APP, b"x")
        await a.wait_for_applied_seq(0, timeout=5)


async def test_wait_for_applied_seq_never_passes_a_skipped_seq(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        a.ingest(APP, b"bad")
        a.ingest(APP, b"ok")
        await a.wait_for_seq(1)
        with pytest.raises(FoldTimeoutError):
            await a.wait_for_applied_seq(1, timeout=0.05)


async def test_close_wakes_waiters_with_a_typed_error_and_refuses_ingest(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        result: list[BaseException] = []

        async def waiter() -> None:
            try:
                await a.wait_for_seq(5)
            except FoldStoppedError as exc:
                result.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.01)
            a.close()
        assert len(result) == 1
        assert "adapter closed" in str(result[0])
        with pytest.raises(AdapterClosedError, match="ingest failed: adapter closed"):
            a.ingest(APP, b"x")
        a.close()  # idempotent
    # The file stays open: the adapter never owned it.
    assert file.append(b"still open") == 0


async def test_closing_the_file_stops_the_fold(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        a.ingest(APP, b"x")
        await a.wait_for_seq(0)
        file.close()
        with pytest.raises(FoldStoppedError, match="file closed"):
            await a.wait_for_seq(1, timeout=5)


# -- changes -------------------------------------------------------------------------------


async def test_changes_report_lag_to_slow_subscribers(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        slow = a.changes(buffer=4)
        for i in range(10):
            a.ingest(APP, bytes([i]))
        await a.wait_for_seq(9)
        got = [await slow.__anext__() for _ in range(4)]
        assert got == [Change(6, 6), Change(7), Change(8), Change(9)]
        assert slow.missed == 6
        slow.close()
        with pytest.raises(StopAsyncIteration):
            await slow.__anext__()


async def test_changes_on_a_stopped_adapter_end_at_once(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        pass
    assert [c async for c in a.changes()] == []


# -- retention ------------------------------------------------------------------------------


def _retained_file(keep: int) -> RedexFile:
    redex = Redex()
    return redex.open_file(
        "ret", retention={"count": {"max_events": keep}}, retention_check_every=0
    )


async def test_open_starts_at_the_oldest_retained_event() -> None:
    f = _retained_file(10)
    for i in range(30):
        f.append(seal(APP, 1, i, bytes([i])))
    f.sweep_retention()
    async with CortexAdapter.open(f, Recorder(), {}) as a:
        assert a.start_seq == f.lowest_retained_seq
        assert sorted(a.state) == list(range(f.lowest_retained_seq or 0, 30))
        assert a.applied_through_seq == 29


@pytest.mark.parametrize("policy", ["stop", "log_and_continue"])
async def test_history_evicted_before_it_was_folded(policy: str) -> None:
    f = _retained_file(10)
    n = 3000
    async with CortexAdapter.open(
        f, Recorder(), {}, CortexAdapterConfig(error_policy=policy), wait_caught_up=False
    ) as a:
        for i in range(n):  # no await: the fold cannot run before the sweep
            f.append(seal(APP, 1, i, i.to_bytes(2, "little")))
        f.sweep_retention()
        lowest = f.lowest_retained_seq
        assert lowest == n - 10
        if policy == "stop":
            with pytest.raises(FoldStoppedError, match="evicted by retention"):
                await a.wait_for_seq(n - 1, timeout=5)
            assert a.events_evicted == lowest
            assert a.state == {}
            assert a.folded_through_seq is None
        else:
            await a.wait_for_seq(n - 1, timeout=5)
            assert a.is_running
            assert a.events_evicted == lowest
            assert sorted(a.state) == list(range(lowest, n))
            assert a.applied_through_seq is None  # the prefix broke at seq 0
            assert a.folded_through_seq == n - 1


# -- snapshots -------------------------------------------------------------------------------


async def test_snapshot_writes_the_strict_prefix_and_restore_reattempts_the_skipped_event(
    file: RedexFile,
) -> None:
    async with CortexAdapter.open(file, Recorder(), {}, lac_cfg()) as a:
        for tail in (b"a", b"b", b"boom", b"d"):
            a.ingest(APP, tail)
        await a.wait_for_seq(3)
        assert a.state == {0: b"a", 1: b"b", 3: b"d"}
        snap = a.snapshot()
    assert snap.applied_through_seq == 1  # not 3: seq 2 was never applied
    healed = Recorder(healed=True)
    async with CortexAdapter.open_from_snapshot(
        file, healed, Snapshot.from_bytes(snap.to_bytes()), dict
    ) as b:
        assert b.start_seq == 2
        assert healed.calls == [2, 3]  # seq 2 is attempted again; 0 and 1 never
        assert b.state == {0: b"a", 1: b"b", 2: b"boom", 3: b"d"}
        assert b.applied_through_seq == 3


async def test_empty_state_snapshot_has_no_watermark_and_restores_from_the_start(
    file: RedexFile,
) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        snap = a.snapshot()
    assert snap.applied_through_seq is None
    file.append(seal(APP, 1, 0, b"x"))
    async with CortexAdapter.open_from_snapshot(file, Recorder(), snap, dict) as b:
        assert b.state == {0: b"x"}


async def test_restore_resumes_after_the_watermark_without_refolding(file: RedexFile) -> None:
    async with CortexAdapter.open(file, Recorder(), {}) as a:
        for i in range(5):
            a.ingest(APP, bytes([i]))
        await a.wait_for_seq(4)
        snap = a.snapshot()
    assert snap.applied_through_seq == 4
    fold = Recorder()
    async with CortexAdapter.open_from_snapshot(file, fold, snap, dict) as b:
        assert b.applied_through_seq == 4
        assert b.folded_through_seq == 4
        await b.wait_for_seq(3)  # before the start: returns at once
        b.ingest(APP, b"new")
        await b.wait_for_seq(5)
        assert fold.calls == [5]
        assert b.applied_through_seq == 5


async def test_unknown_snapshot_version_is_discarded_and_the_log_replayed(
    file: RedexFile,
) -> None:
    for i in range(3):
        file.append(seal(APP, 1, i, bytes([i])))
    future = Snapshot("recorder", 99, 2, b"from a newer release")
    async with CortexAdapter.open_from_snapshot(file, Recorder(), future, dict) as a:
        assert a.snapshot_discarded is not None
        assert "version 99" in a.snapshot_discarded
        assert a.state == {0: b"\x00", 1: b"\x01", 2: b"\x02"}
        assert a.applied_through_seq == 2


async def test_snapshot_guards(file: RedexFile) -> None:
    file.append(seal(APP, 1, 0, b"x"))
    with pytest.raises(SnapshotMismatchError):
        async with CortexAdapter.open_from_snapshot(
            file, Recorder(), Snapshot("other", 1, 0, b""), dict
        ):
            pass
    with pytest.raises(SnapshotAheadError, match="next seq is 1"):
        async with CortexAdapter.open_from_snapshot(
            file, Recorder(), Snapshot("recorder", 1, 10, b""), dict
        ):
            pass
    async with CortexAdapter.open(file, NoCodec(), []) as a:
        with pytest.raises(SnapshotUnsupportedError):
            a.snapshot()
    with pytest.raises(ValueError, match="applied_through_seq"):
        Snapshot("recorder", 1, 2**64 - 1, b"")


def test_snapshot_envelope_round_trips_and_rejects_corruption() -> None:
    snap = Snapshot("cortex/tasks", 1, 41, b"\x05\x0f state")
    data = snap.to_bytes()
    assert Snapshot.from_bytes(data) == snap
    assert Snapshot.from_bytes(Snapshot("x", 7, None, b"").to_bytes()).applied_through_seq is None
    for i in range(len(data)):
        broken = bytearray(data)
        broken[i] ^= 0x10
        with pytest.raises(SnapshotDecodeError):
            Snapshot.from_bytes(bytes(broken))
    with pytest.raises(SnapshotDecodeError):
        Snapshot.from_bytes(data + b"\x00")
    with pytest.raises(SnapshotDecodeError):
        Snapshot.from_bytes(data[:-1])


@given(st.binary(max_size=80))
def test_snapshot_decoder_gives_a_value_or_a_decode_error(data: bytes) -> None:
    try:
        snap = Snapshot.from_bytes(data)
    except DecodeError:  # SnapshotDecodeError is in the DecodeError family
        return
    assert snap.to_bytes() == data


@given(
    st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255),
    st.integers(0, 2**32 - 1),
    st.none() | st.integers(0, 2**64 - 2),
    st.binary(max_size=64),
)
def test_snapshot_envelope_round_trip_property(
    name: str, version: int, seq: int | None, state: bytes
) -> None:
    snap = Snapshot(name, version, seq, state)
    assert Snapshot.from_bytes(snap.to_bytes()) == snap


# -- snapshot store ---------------------------------------------------------------------------


def _entity(n: int) -> bytes:
    return n.to_bytes(32, "little")


def test_snapshot_store_high_water_survives_removal() -> None:
    store = SnapshotStore()
    e = _entity(1)
    assert store.store(StateSnapshot(e, 5, b"v5"))
    assert not store.store(StateSnapshot(e, 5, b"again"))  # equal is not newer
    assert not store.store(StateSnapshot(e, 3, b"older"))
    assert store.store(StateSnapshot(e, 6, b"v6"))
    assert store.get(e) == StateSnapshot(e, 6, b"v6")
    assert store.remove(e) is not None
    assert store.get(e) is None
    assert store.count() == 0
    # A stale producer cannot stage an older snapshot after the removal.
    assert not store.store(StateSnapshot(e, 4, b"stale"))
    assert store.high_water(e) == 6
    assert store.store(StateSnapshot(e, 7, b"v7"))
    # Other entities are independent.
    assert store.store(StateSnapshot(_entity(2), 1, b"x"))
    assert len(store) == 2


def test_snapshot_store_has_no_public_way_to_clear_the_mark() -> None:
    public = {n for n in dir(SnapshotStore) if not n.startswith("_")}
    assert public == {"store", "get", "remove", "high_water", "count"}
    assert "_forget" not in _snapshot_store.__all__
    with pytest.raises(ValueError, match="32 bytes"):
        StateSnapshot(b"short", 1, b"")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="'explode' is not a valid FoldErrorPolicy"):
        CortexAdapterConfig(error_policy="explode")
    with pytest.raises(ValueError, match="batch_limit"):
        CortexAdapterConfig(batch_limit=0)


async def test_invalid_writes_raise_and_do_not_consume_a_counter() -> None:
    redex = Redex()
    async with TasksAdapter.open(redex, origin_hash=7) as tasks:
        tasks.create(1, "ok", 5)
        before = tasks.app_seq
        with pytest.raises(ValueError, match="out of range"):
            tasks.create(-1, "negative id", 5)
        with pytest.raises(TypeError):
            tasks.create(2, b"not a str", 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="out of range"):
            tasks.complete(1, 2**64)
        assert tasks.app_seq == before
        assert tasks.adapter.file.next_seq == 1
        tasks.close()
        with pytest.raises(AdapterClosedError, match="create failed: adapter closed"):
            tasks.create(3, "after close", 5)
        with pytest.raises(AdapterClosedError, match="delete failed: adapter closed"):
            tasks.delete(1)
