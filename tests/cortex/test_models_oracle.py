"""Compatibility of the Tasks and Memories models with the reference (``ai2070-net``).

Logs written on disk by the reference's adapters fold to identical state in ours and
the other way round; the payload bytes of the same operation are identical; snapshots
restore across implementations; the reference's verified mixed log of malformed events
folds the same way. Every comparison covers every field of every record and ``app_seq``
(read from the reference through its snapshot bytes, whose first varint it is).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from net_core.cortex import (
    DISPATCH_TASK_CREATED,
    MEMORIES_CHANNEL,
    TASKS_CHANNEL,
    EventMeta,
    MemoriesAdapter,
    Memory,
    Snapshot,
    Task,
    TasksAdapter,
    TaskStatus,
    checksum_v1,
    decode_memory_snapshot,
    decode_task_snapshot,
    seal,
)
from net_core.cortex._pcstruct import pack
from net_core.redex import Redex

net = pytest.importorskip(
    "net", reason="the reference implementation (ai2070-net, a dev dependency) is not installed"
)

pytestmark = [pytest.mark.oracle, pytest.mark.anyio]

END = 2**64 - 1
U64_MAX = 2**64 - 1
ORIGIN_A = 0x0123_4567_89AB_CDEF
ORIGIN_B = 0xFEDC_BA98_7654_3210
ORIGIN_C = 7
SEEDS = (1, 2, 3)

TITLES = ("", "a", "Hello", "Héllo wörld", "日本語のタイトル", "x" * 300, "emoji 🎉", "tab\there")
TAGS = ("a", "b", "A", "fact", "ünï", "", "tag with space")

Op = tuple[Any, ...]
TaskRow = tuple[int, str, str, int, int]
MemoryRow = tuple[int, str, list[str], str, int, int, bool]


# -- random operation plans ----------------------------------------------------------------


def _now(rng: random.Random) -> int:
    return rng.choice((0, 1, 1000, rng.randrange(2**40), rng.randrange(2**64), U64_MAX))


def _task_id(rng: random.Random) -> int:
    # Mostly a small pool (re-creates, ops on existing and deleted ids), sometimes an
    # id nobody created, sometimes the u64 extremes.
    return int(rng.choice((*range(6), *range(6), 1000 + rng.randrange(50), 0, U64_MAX)))


def task_plan(rng: random.Random, n: int) -> list[Op]:
    """``n`` random Tasks operations: every kind, re-creates, unknown ids."""
    ops: list[Op] = []
    for _ in range(n):
        kind = rng.choices(("create", "rename", "complete", "delete"), (4, 3, 3, 2))[0]
        tid = _task_id(rng)
        if kind == "create":
            ops.append(("create", tid, rng.choice(TITLES), _now(rng)))
        elif kind == "rename":
            ops.append(("rename", tid, rng.choice(TITLES) + str(rng.randrange(9)), _now(rng)))
        elif kind == "complete":
            ops.append(("complete", tid, _now(rng)))
        else:
            ops.append(("delete", tid))
    return ops


def memory_plan(rng: random.Random, n: int) -> list[Op]:
    """``n`` random Memories operations: every kind, re-stores of pinned memories,
    duplicate tags, unknown ids."""
    ops: list[Op] = []
    for _ in range(n):
        kind = rng.choices(("store", "retag", "pin", "unpin", "delete"), (4, 2, 3, 2, 1))[0]
        mid = _task_id(rng)
        if kind == "store":
            tags = [rng.choice(TAGS) for _ in range(rng.randrange(4))]
            ops.append(("store", mid, rng.choice(TITLES), tags, rng.choice(TAGS), _now(rng)))
        elif kind == "retag":
            ops.append(
                ("retag", mid, [rng.choice(TAGS) for _ in range(rng.randrange(4))], _now(rng))
            )
        elif kind in ("pin", "unpin"):
            ops.append((kind, mid, _now(rng)))
        else:
            ops.append(("delete", mid))
    return ops


def run(adapter: Any, op: Op) -> int:
    """Apply one op to an adapter (ours or the reference's: same method names)."""
    seq: int = getattr(adapter, op[0])(*op[1:])
    return seq


# -- normalized views ----------------------------------------------------------------------


def ref_tasks(adapter: Any) -> dict[int, TaskRow]:
    return {
        t.id: (t.id, t.title, t.status, t.created_ns, t.updated_ns) for t in adapter.list_tasks()
    }


def our_task_row(t: Task) -> TaskRow:
    status = {TaskStatus.PENDING: "pending", TaskStatus.COMPLETED: "completed"}[t.status]
    return (t.id, t.title, status, t.created_ns, t.updated_ns)


def our_tasks(adapter: TasksAdapter) -> dict[int, TaskRow]:
    return {k: our_task_row(t) for k, t in adapter.tasks.items()}


def ref_memories(adapter: Any) -> dict[int, MemoryRow]:
    return {
        m.id: (m.id, m.content, list(m.tags), m.source, m.created_ns, m.updated_ns, m.pinned)
        for m in adapter.list_memories()
    }


def our_memory_row(m: Memory) -> MemoryRow:
    return (m.id, m.content, list(m.tags), m.source, m.created_ns, m.updated_ns, m.pinned)


def our_memories(adapter: MemoriesAdapter) -> dict[int, MemoryRow]:
    return {k: our_memory_row(m) for k, m in adapter.memories.items()}


def ref_app_seq(adapter: Any, decode: Callable[[bytes], Any]) -> int:
    """The reference adapter's ``app_seq`` (the first field of its snapshot bytes)."""
    state, _last = adapter.snapshot()
    app_seq: int = decode(bytes(state)).app_seq
    return app_seq


def own_counters(base: Path, channel: str, origin: int) -> list[int]:
    """The ``seq_or_ts`` of every event of ``origin`` in a persistent channel."""
    with Redex(base) as redex:
        f = redex.open_file(channel, persistent=True)
        out = []
        for e in f.read_range(0, END):
            meta = EventMeta.decode(e.payload)
            if meta.origin_hash == origin:
                out.append(meta.seq_or_ts)
        return out


@contextmanager
def reference_redex(base: Path | None) -> Iterator[Any]:
    """A reference manager; on exit every channel it opened is closed (the reference's
    adapters leave their file open)."""
    redex = net.Redex(persistent_dir=str(base)) if base is not None else net.Redex()
    try:
        yield redex
    finally:
        for channel in (TASKS_CHANNEL, MEMORIES_CHANNEL):
            # Re-opening returns the already-open handle (or creates an empty channel).
            redex.open_file(channel, persistent=base is not None).close()


class Model(NamedTuple):
    """One model's channel, plan generator, adapters (reference, ours), views, decoder."""

    channel: str
    plan: Callable[[random.Random, int], list[Op]]
    ref_cls: Callable[[], Any]
    ours_cls: Any
    ref_view: Callable[[Any], dict[int, Any]]
    our_view: Callable[[Any], dict[int, Any]]
    decode: Callable[[bytes], Any]


MODELS = {
    "tasks": Model(
        TASKS_CHANNEL,
        task_plan,
        lambda: net.TasksAdapter,
        TasksAdapter,
        ref_tasks,
        our_tasks,
        decode_task_snapshot,
    ),
    "memories": Model(
        MEMORIES_CHANNEL,
        memory_plan,
        lambda: net.MemoriesAdapter,
        MemoriesAdapter,
        ref_memories,
        our_memories,
        decode_memory_snapshot,
    ),
}


# -- reference writes, ours folds ----------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("model", sorted(MODELS))
async def test_reference_log_folds_to_identical_state_in_ours(
    tmp_path: Path, model: str, seed: int
) -> None:
    m = MODELS[model]
    rng = random.Random(seed)
    ops = m.plan(rng, 400)
    with reference_redex(tmp_path) as ref:
        a = m.ref_cls().open(ref, ORIGIN_A, persistent=True)
        b = m.ref_cls().open(ref, ORIGIN_B, persistent=True)
        last = max(run(rng.choice((a, a, b)), op) for op in ops)
        a.wait_for_seq(last)
        b.wait_for_seq(last)
        expected = m.ref_view(a)
        assert m.ref_view(b) == expected
        expected_app = {ORIGIN_A: ref_app_seq(a, m.decode), ORIGIN_B: ref_app_seq(b, m.decode)}
        a.close()
        b.close()
        # The reference itself, replaying the log, agrees (a sanity check of the oracle).
        replay = m.ref_cls().open(ref, ORIGIN_A, persistent=True)
        assert m.ref_view(replay) == expected
        assert ref_app_seq(replay, m.decode) == expected_app[ORIGIN_A]
        replay.close()
    assert expected, "the plan should leave some records"

    for origin in (ORIGIN_A, ORIGIN_B, ORIGIN_C):
        with Redex(tmp_path) as redex:
            async with m.ours_cls.open(redex, origin, persistent=True) as ours:
                assert m.our_view(ours) == expected
                assert ours.is_running
                assert ours.fold_errors == 0
                assert ours.adapter.applied_through_seq == last
                assert ours.adapter.folded_through_seq == last
                counters = own_counters_from(redex, m.channel, origin)
                assert all(ours.app_seq > c for c in counters)
                assert ours.app_seq == expected_app.get(origin, 0)


def own_counters_from(redex: Redex, channel: str, origin: int) -> list[int]:
    f = redex.open_file(channel, persistent=True)
    return [
        meta.seq_or_ts
        for meta in (EventMeta.decode(e.payload) for e in f.read_range(0, END))
        if meta.origin_hash == origin
    ]


# -- ours writes, the reference folds ------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("model", sorted(MODELS))
async def test_our_log_folds_to_identical_state_in_the_reference(
    tmp_path: Path, model: str, seed: int
) -> None:
    m = MODELS[model]
    rng = random.Random(seed + 100)
    ops = m.plan(rng, 400)
    with Redex(tmp_path) as redex:
        async with (
            m.ours_cls.open(redex, ORIGIN_A, persistent=True) as a,
            m.ours_cls.open(redex, ORIGIN_B, persistent=True) as b,
        ):
            last = max(run(rng.choice((a, b, b)), op) for op in ops)
            await a.wait_for_seq(last)
            await b.wait_for_seq(last)
            expected = m.our_view(a)
            assert m.our_view(b) == expected
            app = {ORIGIN_A: a.app_seq, ORIGIN_B: b.app_seq}
    assert app == {
        origin: max(own_counters(tmp_path, m.channel, origin), default=-1) + 1
        for origin in (ORIGIN_A, ORIGIN_B)
    }
    with reference_redex(tmp_path) as ref:
        for origin in (ORIGIN_A, ORIGIN_B, ORIGIN_C):
            theirs = m.ref_cls().open(ref, origin, persistent=True)
            try:
                assert theirs.is_running()
                assert m.ref_view(theirs) == expected
                assert ref_app_seq(theirs, m.decode) == app.get(origin, 0)
                assert theirs.snapshot()[1] == last
            finally:
                theirs.close()


async def test_appending_across_implementations_on_one_file(tmp_path: Path) -> None:
    """Reference, then ours, then the reference again append to one log."""
    rng = random.Random(9)
    with reference_redex(tmp_path) as ref:
        t = net.TasksAdapter.open(ref, ORIGIN_A, persistent=True)
        for op in task_plan(rng, 50):
            run(t, op)
        t.close()
    with Redex(tmp_path) as redex:
        async with TasksAdapter.open(redex, ORIGIN_A, persistent=True) as ours:
            first_counter = ours.app_seq
            for op in task_plan(rng, 50):
                last = run(ours, op)
            await ours.wait_for_seq(last)
            expected = our_tasks(ours)
            app = ours.app_seq
    assert app == first_counter + 50
    with reference_redex(tmp_path) as ref:
        t = net.TasksAdapter.open(ref, ORIGIN_A, persistent=True)
        assert ref_tasks(t) == expected
        assert ref_app_seq(t, decode_task_snapshot) == app
        t.close()
    assert own_counters(tmp_path, TASKS_CHANNEL, ORIGIN_A) == list(range(app))


# -- payload bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_payload_bytes_are_identical_to_the_references(model: str) -> None:
    m = MODELS[model]
    ops = m.plan(random.Random(5), 300)
    # Make sure the extremes are there whatever the RNG picked.
    if model == "tasks":
        ops += [("create", U64_MAX, "Héllo", U64_MAX), ("rename", 300, "x", 2**40)]
        ops += [("complete", 0, 0), ("delete", U64_MAX)]
    else:
        ops += [("store", U64_MAX, "c", ["z", "z", ""], "src", U64_MAX), ("retag", 5, [], 0)]
        ops += [("pin", 1, 2**63), ("unpin", 1, 1), ("delete", 0)]
    with reference_redex(None) as ref:
        theirs = m.ref_cls().open(ref, ORIGIN_A)
        ref_seqs = [run(theirs, op) for op in ops]
        theirs.close()
        ref_payloads = [bytes(e.payload) for e in ref.open_file(m.channel).read_range(0, END)]
    with Redex() as redex:
        async with m.ours_cls.open(redex, ORIGIN_A) as ours:
            our_seqs = [run(ours, op) for op in ops]
        our_payloads = [e.payload for e in redex.open_file(m.channel).read_range(0, END)]
    assert our_seqs == ref_seqs == list(range(len(ops)))
    assert len(our_payloads) == len(ops)
    for i, (mine, theirs_payload) in enumerate(zip(our_payloads, ref_payloads, strict=True)):
        assert mine == theirs_payload, (i, ops[i])
    # The header carries our origin, the per-adapter counter and a v2 checksum.
    for i, payload in enumerate(our_payloads):
        meta = EventMeta.decode(payload)
        assert (meta.origin_hash, meta.seq_or_ts, meta.flags) == (ORIGIN_A, i, 0)
        assert meta.checksum != 0
        assert payload == seal(meta.dispatch, ORIGIN_A, i, payload[24:])


async def test_payload_bytes_match_on_disk_too(tmp_path: Path) -> None:
    ops = task_plan(random.Random(6), 100)
    with reference_redex(tmp_path / "ref") as ref:
        t = net.TasksAdapter.open(ref, ORIGIN_B, persistent=True)
        for op in ops:
            run(t, op)
        t.close()
    with Redex(tmp_path / "ours") as redex:
        async with TasksAdapter.open(redex, ORIGIN_B, persistent=True) as ours:
            for op in ops:
                run(ours, op)
    # Each side's file read by the *other* implementation.
    with reference_redex(tmp_path / "ours") as ref:
        from_ours = [
            bytes(e.payload)
            for e in ref.open_file(TASKS_CHANNEL, persistent=True).read_range(0, END)
        ]
    with Redex(tmp_path / "ref") as redex:
        from_ref = [
            e.payload for e in redex.open_file(TASKS_CHANNEL, persistent=True).read_range(0, END)
        ]
    assert len(from_ours) == len(ops)
    assert from_ours == from_ref


# -- snapshots -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_reference_snapshot_restores_in_ours(tmp_path: Path, model: str) -> None:
    m = MODELS[model]
    rng = random.Random(11)
    with reference_redex(tmp_path) as ref:
        theirs = m.ref_cls().open(ref, ORIGIN_A, persistent=True)
        last = max(run(theirs, op) for op in m.plan(rng, 150))
        theirs.wait_for_seq(last)
        state_bytes, last_seq = theirs.snapshot()
        at_snapshot = m.ref_view(theirs)
        # Events after the snapshot (some of another origin) must be replayed on restore.
        other = m.ref_cls().open(ref, ORIGIN_B, persistent=True)
        tail_last = max(run(rng.choice((theirs, other)), op) for op in m.plan(rng, 60))
        theirs.wait_for_seq(tail_last)
        expected = m.ref_view(theirs)
        expected_app = ref_app_seq(theirs, m.decode)
        theirs.close()
        other.close()
    assert last_seq == last
    snap = Snapshot(m.channel, 1, last_seq, bytes(state_bytes))
    with Redex(tmp_path) as redex:
        # Restored alone (nothing after it folded yet) it is exactly the reference's state.
        async with m.ours_cls.open_from_snapshot(
            redex, ORIGIN_A, snap, persistent=True, config=None
        ) as ours:
            assert ours.adapter.start_seq == last_seq + 1
            assert m.our_view(ours) == expected
            assert ours.app_seq == expected_app
            assert ours.adapter.applied_through_seq == tail_last
            assert ours.fold_errors == 0
    # And the snapshot bytes alone decode to the state at the snapshot.
    decoded = m.decode(bytes(state_bytes))
    records = decoded.tasks if model == "tasks" else decoded.memories
    row = our_task_row if model == "tasks" else our_memory_row
    assert {k: row(v) for k, v in records.items()} == at_snapshot


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_our_snapshot_restores_in_the_reference(tmp_path: Path, model: str) -> None:
    m = MODELS[model]
    rng = random.Random(12)
    with Redex(tmp_path) as redex:
        async with m.ours_cls.open(redex, ORIGIN_A, persistent=True) as ours:
            last = max(run(ours, op) for op in m.plan(rng, 150))
            await ours.wait_for_seq(last)
            snap = ours.snapshot()
            async with m.ours_cls.open(redex, ORIGIN_B, persistent=True) as other:
                tail_last = max(run(rng.choice((ours, other)), op) for op in m.plan(rng, 60))
                await ours.wait_for_seq(tail_last)
            expected = m.our_view(ours)
            expected_app = ours.app_seq
    assert snap.applied_through_seq == last
    assert (snap.fold, snap.version) == (m.channel, 1)
    with reference_redex(tmp_path) as ref:
        theirs = m.ref_cls().open_from_snapshot(
            ref, ORIGIN_A, snap.state, snap.applied_through_seq, persistent=True
        )
        try:
            assert m.ref_view(theirs) == expected
            assert ref_app_seq(theirs, m.decode) == expected_app
            assert theirs.snapshot()[1] == tail_last
        finally:
            theirs.close()


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_snapshot_bytes_equal_the_references_for_deterministic_states(model: str) -> None:
    """Empty and one-record states have a single encoding: ours must be it."""
    m = MODELS[model]
    if model == "tasks":
        steps: list[Op] = [
            ("create", 1, "Héllo", 1000),
            ("complete", 1, 3000),
            ("create", 2, "b", 5),
        ]
        steps += [("delete", 2), ("rename", 1, "renamed ✓", 2**63)]
    else:
        steps = [
            ("store", 5, "content", ["z"], "src", 10),
            ("pin", 5, 11),
            ("retag", 5, ["a", "a"], 12),
        ]
        steps += [("store", 6, "x", [], "", 13), ("delete", 6), ("unpin", 5, 14)]
    with reference_redex(None) as ref:
        theirs = m.ref_cls().open(ref, ORIGIN_C)
        ref_snaps = [theirs.snapshot()]
        for op in steps:
            theirs.wait_for_seq(run(theirs, op))
            ref_snaps.append(theirs.snapshot())
        theirs.close()
    with Redex() as redex:
        async with m.ours_cls.open(redex, ORIGIN_C) as ours:
            our_snaps = [ours.snapshot()]
            for op in steps:
                await ours.wait_for_seq(run(ours, op))
                our_snaps.append(ours.snapshot())
    assert our_snaps[0].applied_through_seq is None
    for i, (mine, (state, last)) in enumerate(zip(our_snaps, ref_snaps, strict=True)):
        if len(getattr(m.decode(bytes(state)), model)) <= 1:
            assert mine.state == bytes(state), i
        assert mine.applied_through_seq == last, i
        assert m.decode(mine.state) == m.decode(bytes(state)), i


# -- the reference's verified mixed log (§3.5) ----------------------------------------------


def mixed_log() -> list[bytes]:
    """[v1-checksum create, bad-checksum create, 5-byte junk, other-origin create, unknown
    dispatch, truncated postcard], own-origin counters 0, 30, -, (other), 10, 20."""
    create_1 = pack("usu", 1, "legacy v1", 100)
    v1 = EventMeta(DISPATCH_TASK_CREATED, 0, ORIGIN_A, 0, checksum_v1(create_1)).encode() + create_1
    good = seal(DISPATCH_TASK_CREATED, ORIGIN_A, 30, pack("usu", 2, "bad checksum", 200))
    bad_checksum = good[:20] + bytes(b ^ 0x5A for b in good[20:24]) + good[24:]
    other_origin = seal(DISPATCH_TASK_CREATED, ORIGIN_B, 0, pack("usu", 3, "other origin", 300))
    unknown_dispatch = seal(0x7E, ORIGIN_A, 10, b"not a tasks event")
    truncated = seal(DISPATCH_TASK_CREATED, ORIGIN_A, 20, pack("usu", 4, "truncated", 400)[:5])
    return [v1, bad_checksum, b"junk!", other_origin, unknown_dispatch, truncated]


async def test_reference_mixed_log_folds_the_same_in_ours(tmp_path: Path) -> None:
    payloads = mixed_log()
    with reference_redex(tmp_path) as ref:
        f = ref.open_file(TASKS_CHANNEL, persistent=True)
        for p in payloads:
            f.append(p)
        theirs = net.TasksAdapter.open(ref, ORIGIN_A, persistent=True)
        expected = ref_tasks(theirs)
        assert theirs.is_running()
        assert theirs.snapshot()[1] == 0
        ref_app = ref_app_seq(theirs, decode_task_snapshot)
        theirs.wait_for_seq(theirs.create(9, "after", 900))
        assert theirs.is_running()
        assert theirs.snapshot()[1] == 0  # the prefix broke at seq 1, forever
        expected_after = ref_tasks(theirs)
        theirs.close()
    assert sorted(expected) == [1, 3]
    assert ref_app == 11  # counters 0 and 10 applied; 20 and 30 failed
    assert sorted(expected_after) == [1, 3, 9]

    with Redex(tmp_path) as redex:
        async with TasksAdapter.open(redex, ORIGIN_A, persistent=True) as ours:
            assert our_tasks(ours) == expected_after
            assert ours.is_running
            # bad checksum, 5-byte junk and truncated postcard; the unknown dispatch is a
            # successful (ignored) apply, as in the reference.
            assert ours.fold_errors == 3
            assert ours.adapter.applied_through_seq == 0
            assert ours.adapter.folded_through_seq == len(payloads)
            assert ours.app_seq == 12  # the reference's create after the log used 11
            await ours.wait_for_seq(ours.create(10, "ours", 1000))
            assert ours.adapter.applied_through_seq == 0
            assert ours.is_running
            assert ours.snapshot().applied_through_seq == 0


async def test_mixed_log_fresh_in_ours_then_reference(tmp_path: Path) -> None:
    """The same log appended by ours folds the same in both before anything else."""
    with Redex(tmp_path) as redex:
        f = redex.open_file(TASKS_CHANNEL, persistent=True)
        for p in mixed_log():
            f.append(p)
        async with TasksAdapter.open(redex, ORIGIN_A, persistent=True) as ours:
            mine = our_tasks(ours)
            app = ours.app_seq
            assert ours.fold_errors == 3
            assert ours.adapter.applied_through_seq == 0
            assert ours.snapshot().applied_through_seq == 0
    with reference_redex(tmp_path) as ref:
        theirs = net.TasksAdapter.open(ref, ORIGIN_A, persistent=True)
        assert ref_tasks(theirs) == mine
        assert ref_app_seq(theirs, decode_task_snapshot) == app == 11
        assert theirs.snapshot()[1] == 0
        theirs.close()
