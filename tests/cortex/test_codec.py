"""Tests of the Tasks / Memories tail and snapshot codecs, including oracle tests that
decode logs written by the reference (``ai2070-net`` 0.18) and feed it logs we sealed."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.cortex import (
    DISPATCH_MEMORY_DELETED,
    DISPATCH_MEMORY_PINNED,
    DISPATCH_MEMORY_RETAGGED,
    DISPATCH_MEMORY_STORED,
    DISPATCH_MEMORY_UNPINNED,
    DISPATCH_TASK_COMPLETED,
    DISPATCH_TASK_CREATED,
    DISPATCH_TASK_DELETED,
    DISPATCH_TASK_RENAMED,
    EventMeta,
    Memory,
    MemoryDeleted,
    MemoryEvent,
    MemoryPinned,
    MemoryRetagged,
    MemorySnapshot,
    MemoryStored,
    MemoryUnpinned,
    PostcardError,
    Task,
    TaskCompleted,
    TaskCreated,
    TaskDeleted,
    TaskEvent,
    TaskRenamed,
    TaskSnapshot,
    TaskStatus,
    UnknownDispatchError,
    checksum_v1,
    decode_memory_event,
    decode_memory_snapshot,
    decode_task_event,
    decode_task_snapshot,
    encode_memory_event,
    encode_memory_snapshot,
    encode_task_event,
    encode_task_snapshot,
    open_event,
    seal,
)
from net_core.errors import DecodeError
from net_core.redex import Redex

reference: Any
try:
    import net as reference
except ImportError:  # pragma: no cover - depends on the environment
    reference = None

needs_reference = pytest.mark.skipif(reference is None, reason="ai2070-net not installed")

U64 = st.integers(0, 2**64 - 1)
TAGS = st.lists(st.text(max_size=8), max_size=5).map(tuple)
TASK_EVENTS: st.SearchStrategy[TaskEvent] = st.one_of(
    st.builds(TaskCreated, U64, st.text(), U64),
    st.builds(TaskRenamed, U64, st.text(), U64),
    st.builds(TaskCompleted, U64, U64),
    st.builds(TaskDeleted, U64),
)
MEMORY_EVENTS: st.SearchStrategy[MemoryEvent] = st.one_of(
    st.builds(MemoryStored, U64, st.text(), TAGS, st.text(), U64),
    st.builds(MemoryRetagged, U64, TAGS, U64),
    st.builds(MemoryPinned, U64, U64),
    st.builds(MemoryUnpinned, U64, U64),
    st.builds(MemoryDeleted, U64),
)


# -- golden bytes (from the fact sheet and real reference logs) --------------------------


@pytest.mark.parametrize(
    ("event", "dispatch", "tail"),
    [
        (TaskCreated(1, "Hello", 1000), DISPATCH_TASK_CREATED, "01 05 48656c6c6f e807"),
        (TaskCreated(300, "x", 2**40), DISPATCH_TASK_CREATED, "ac02 01 78 8080808080 20"),
        (TaskCreated(1, "Héllo", 1000), DISPATCH_TASK_CREATED, "01 06 48c3a96c6c6f e807"),
        (TaskRenamed(1, "x", 2000), DISPATCH_TASK_RENAMED, "01 01 78 d00f"),
        (TaskCompleted(1, 3000), DISPATCH_TASK_COMPLETED, "01 b817"),
        (TaskDeleted(1), DISPATCH_TASK_DELETED, "01"),
    ],
)
def test_task_golden(event: TaskEvent, dispatch: int, tail: str) -> None:
    assert encode_task_event(event) == (dispatch, bytes.fromhex(tail))
    assert decode_task_event(dispatch, bytes.fromhex(tail)) == event


@pytest.mark.parametrize(
    ("event", "dispatch", "tail"),
    [
        (
            MemoryStored(5, "content", ("z",), "src", 10),
            DISPATCH_MEMORY_STORED,
            "05 07 636f6e74656e74 01 01 7a 03 737263 0a",
        ),
        (MemoryRetagged(5, ("a", "a"), 11), DISPATCH_MEMORY_RETAGGED, "05 02 0161 0161 0b"),
        (MemoryPinned(5, 12), DISPATCH_MEMORY_PINNED, "05 0c"),
        (MemoryUnpinned(5, 13), DISPATCH_MEMORY_UNPINNED, "05 0d"),
        (MemoryDeleted(5), DISPATCH_MEMORY_DELETED, "05"),
    ],
)
def test_memory_golden(event: MemoryEvent, dispatch: int, tail: str) -> None:
    assert encode_memory_event(event) == (dispatch, bytes.fromhex(tail))
    assert decode_memory_event(dispatch, bytes.fromhex(tail)) == event


def test_decoders_ignore_trailing_bytes() -> None:
    assert decode_task_event(DISPATCH_TASK_DELETED, b"\x01junk") == TaskDeleted(1)
    assert decode_memory_event(DISPATCH_MEMORY_DELETED, b"\x02junk") == MemoryDeleted(2)


@pytest.mark.parametrize("dispatch", [0x00, 0x05, 0x10, 0x80, 0xFF])
def test_unknown_task_dispatch(dispatch: int) -> None:
    with pytest.raises(UnknownDispatchError) as info:
        decode_task_event(dispatch, b"\x01")
    assert info.value.dispatch == dispatch
    assert isinstance(info.value, DecodeError)


@pytest.mark.parametrize("dispatch", [0x00, 0x01, 0x15, 0x80])
def test_unknown_memory_dispatch(dispatch: int) -> None:
    with pytest.raises(UnknownDispatchError):
        decode_memory_event(dispatch, b"\x01")


def test_truncated_tails_raise_postcard_error() -> None:
    with pytest.raises(PostcardError):
        decode_task_event(DISPATCH_TASK_CREATED, bytes.fromhex("01 05 4865"))
    with pytest.raises(PostcardError):
        decode_memory_event(DISPATCH_MEMORY_STORED, bytes.fromhex("05 00 02 0161"))


def test_task_snapshot_golden() -> None:
    data = bytes.fromhex("05 0f 01 01 01 06 48c3a96c6c6f 01 e807 b817")
    snap = TaskSnapshot(5, {1: Task(1, "Héllo", TaskStatus.COMPLETED, 1000, 3000)})
    assert decode_task_snapshot(data) == snap
    assert encode_task_snapshot(snap) == data
    assert encode_task_snapshot(TaskSnapshot(1)) == bytes.fromhex("01 01 00")
    assert decode_task_snapshot(data + b"junk") == snap


def test_memory_snapshot_golden() -> None:
    data = bytes.fromhex("05 15 01 05 05 07636f6e74656e74 01 017a 03737263 0a 0d 00")
    snap = MemorySnapshot(5, {5: Memory(5, "content", ("z",), "src", 10, 13, False)})
    assert decode_memory_snapshot(data) == snap
    assert encode_memory_snapshot(snap) == data


def test_bad_snapshot_variant() -> None:
    with pytest.raises(PostcardError, match="status"):
        decode_task_snapshot(bytes.fromhex("00 07 01 01 01 00 78 02 00 00"))


# -- round trips and fuzzing --------------------------------------------------------------


@given(TASK_EVENTS)
def test_task_round_trip(event: TaskEvent) -> None:
    assert decode_task_event(*encode_task_event(event)) == event


@given(MEMORY_EVENTS)
def test_memory_round_trip(event: MemoryEvent) -> None:
    assert decode_memory_event(*encode_memory_event(event)) == event


@given(U64, st.dictionaries(U64, st.tuples(U64, st.text(), st.booleans(), U64, U64), max_size=4))
def test_task_snapshot_round_trip(app_seq: int, raw: dict[int, Any]) -> None:
    tasks = {
        k: Task(i, t, TaskStatus.COMPLETED if done else TaskStatus.PENDING, c, u)
        for k, (i, t, done, c, u) in raw.items()
    }
    snap = TaskSnapshot(app_seq, tasks)
    assert decode_task_snapshot(encode_task_snapshot(snap)) == snap


@given(
    U64,
    st.dictionaries(
        U64, st.builds(Memory, U64, st.text(), TAGS, st.text(), U64, U64, st.booleans()), max_size=4
    ),
)
def test_memory_snapshot_round_trip(app_seq: int, memories: dict[int, Memory]) -> None:
    snap = MemorySnapshot(app_seq, memories)
    assert decode_memory_snapshot(encode_memory_snapshot(snap)) == snap


@given(st.integers(0, 255), st.binary(max_size=48))
def test_arbitrary_tails_only_raise_decode_errors(dispatch: int, tail: bytes) -> None:
    for decode in (decode_task_event, decode_memory_event):
        with contextlib.suppress(PostcardError, UnknownDispatchError):
            decode(dispatch, tail)


@given(st.binary(max_size=64))
def test_arbitrary_snapshots_only_raise_postcard_error(data: bytes) -> None:
    for decode in (decode_task_snapshot, decode_memory_snapshot):
        with contextlib.suppress(PostcardError):
            decode(data)


# -- oracle: the reference writes, we read; we write, the reference folds -----------------

ORIGIN = 0x0123_4567_89AB_CDEF


def _read_log(base: Path, channel: str) -> list[bytes]:
    with Redex(base) as redex:
        log = redex.open_file(channel, persistent=True)
        return [e.payload for e in log.read_range(0, log.next_seq)]


@pytest.mark.oracle
@needs_reference
def test_reference_tasks_log_decodes(tmp_path: Path) -> None:
    assert reference is not None
    adapter = reference.TasksAdapter.open(
        reference.Redex(persistent_dir=str(tmp_path)), ORIGIN, persistent=True
    )
    expected: list[TaskEvent] = [
        TaskCreated(1, "Héllo wörld", 1000),
        TaskCreated(2**40, "", 2**63),
        TaskRenamed(1, "renamed", 2000),
        TaskCompleted(1, 3000),
        TaskRenamed(99, "missing", 1),
        TaskDeleted(2**40),
    ]
    seq = 0
    for ev in expected:
        if isinstance(ev, TaskCreated):
            seq = adapter.create(ev.id, ev.title, ev.now_ns)
        elif isinstance(ev, TaskRenamed):
            seq = adapter.rename(ev.id, ev.new_title, ev.now_ns)
        elif isinstance(ev, TaskCompleted):
            seq = adapter.complete(ev.id, ev.now_ns)
        else:
            seq = adapter.delete(ev.id)
    adapter.wait_for_seq(seq)
    ref_snapshot, _ = adapter.snapshot()
    adapter.close()

    payloads = _read_log(tmp_path, "cortex/tasks")
    assert len(payloads) == len(expected)
    for app_seq, (payload, ev) in enumerate(zip(payloads, expected, strict=True)):
        meta, tail, version = open_event(payload)
        assert version == 2
        assert (meta.origin_hash, meta.seq_or_ts, meta.flags) == (ORIGIN, app_seq, 0)
        assert decode_task_event(meta.dispatch, tail) == ev
        assert encode_task_event(ev) == (meta.dispatch, tail)
        assert seal(meta.dispatch, ORIGIN, app_seq, tail) == payload
    assert decode_task_snapshot(ref_snapshot) == TaskSnapshot(
        len(expected), {1: Task(1, "renamed", TaskStatus.COMPLETED, 1000, 3000)}
    )


@pytest.mark.oracle
@needs_reference
def test_reference_memories_log_decodes(tmp_path: Path) -> None:
    assert reference is not None
    adapter = reference.MemoriesAdapter.open(
        reference.Redex(persistent_dir=str(tmp_path)), ORIGIN, persistent=True
    )
    expected: list[MemoryEvent] = [
        MemoryStored(5, "content ✓", ("z", "a", "z"), "src", 10),
        MemoryStored(6, "", (), "", 2**64 - 1),
        MemoryRetagged(5, ("x",), 11),
        MemoryPinned(5, 12),
        MemoryUnpinned(6, 13),
        MemoryDeleted(6),
    ]
    seq = 0
    for ev in expected:
        if isinstance(ev, MemoryStored):
            seq = adapter.store(ev.id, ev.content, list(ev.tags), ev.source, ev.now_ns)
        elif isinstance(ev, MemoryRetagged):
            seq = adapter.retag(ev.id, list(ev.tags), ev.now_ns)
        elif isinstance(ev, MemoryPinned):
            seq = adapter.pin(ev.id, ev.now_ns)
        elif isinstance(ev, MemoryUnpinned):
            seq = adapter.unpin(ev.id, ev.now_ns)
        else:
            seq = adapter.delete(ev.id)
    adapter.wait_for_seq(seq)
    ref_snapshot, _ = adapter.snapshot()
    adapter.close()

    payloads = _read_log(tmp_path, "cortex/memories")
    assert len(payloads) == len(expected)
    for app_seq, (payload, ev) in enumerate(zip(payloads, expected, strict=True)):
        meta, tail, version = open_event(payload)
        assert version == 2
        assert (meta.origin_hash, meta.seq_or_ts) == (ORIGIN, app_seq)
        assert decode_memory_event(meta.dispatch, tail) == ev
        assert encode_memory_event(ev) == (meta.dispatch, tail)
    assert decode_memory_snapshot(ref_snapshot) == MemorySnapshot(
        len(expected), {5: Memory(5, "content ✓", ("x",), "src", 10, 12, True)}
    )


@pytest.mark.oracle
@needs_reference
def test_reference_folds_our_sealed_events(tmp_path: Path) -> None:
    assert reference is not None
    task_events: list[TaskEvent] = [
        TaskCreated(1, "one", 100),
        TaskCreated(2, "two", 200),
        TaskRenamed(2, "deux", 250),
        TaskCompleted(1, 300),
        TaskCreated(3, "gone", 400),
        TaskDeleted(3),
    ]
    memory_events: list[MemoryEvent] = [
        MemoryStored(7, "hello", ("t1", "t2"), "s", 10),
        MemoryPinned(7, 20),
    ]
    with Redex(tmp_path) as redex:
        tasks_log = redex.open_file("cortex/tasks", persistent=True)
        for n, tev in enumerate(task_events):
            dispatch, tail = encode_task_event(tev)
            tasks_log.append(seal(dispatch, ORIGIN, n, tail))
        # A legacy (v1-checksummed) record must fold too.
        dispatch, tail = encode_task_event(TaskCreated(4, "legacy", 500))
        legacy = EventMeta(dispatch, 0, ORIGIN, len(task_events), checksum_v1(tail))
        tasks_log.append(legacy.encode() + tail)
        memories_log = redex.open_file("cortex/memories", persistent=True)
        for n, mev in enumerate(memory_events):
            dispatch, tail = encode_memory_event(mev)
            memories_log.append(seal(dispatch, ORIGIN, n, tail))

    ref_redex = reference.Redex(persistent_dir=str(tmp_path))
    tasks = reference.TasksAdapter.open(ref_redex, 99, persistent=True)
    got = sorted((t.id, t.title, t.status, t.created_ns, t.updated_ns) for t in tasks.list_tasks())
    assert got == [
        (1, "one", "completed", 100, 300),
        (2, "deux", "pending", 200, 250),
        (4, "legacy", "pending", 500, 500),
    ]
    tasks.close()

    memories = reference.MemoriesAdapter.open(ref_redex, 99, persistent=True)
    [memory] = memories.list_memories()
    assert (memory.id, memory.content, list(memory.tags), memory.source) == (
        7,
        "hello",
        ["t1", "t2"],
        "s",
    )
    assert (memory.pinned, memory.created_ns, memory.updated_ns) == (True, 10, 20)
    memories.close()
