"""RedEX persistence under faults: crashes during compaction, failing writes, capacity
limits, damaged files at open, and the fsync policies.

Every crash test "kills" the process with :class:`SimulatedCrash` at a named checkpoint
of the store, then behaves like a dead process: the ``Redex``/``RedexFile`` objects are
dropped without ``close()``, the leaked descriptors (data files and the ``.lock`` flock)
are closed without writing, and a fresh ``Redex`` with the default operations reopens
the directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import net_core.redex._file as file_module
from net_core.redex import (
    FsyncError,
    PayloadTooLargeError,
    PoisonedError,
    Redex,
    RedexFile,
    RedexIOError,
    SegmentOffsetOverflowError,
)
from net_core.redex._format import (
    FLAG_TOMBSTONE,
    IDX_RECORD_SIZE,
    Manifest,
    decode_records,
    encode_records,
    encode_timestamps,
    generation_dir_name,
    heap_record,
    inline_record,
    parse_generation_dir_name,
)
from net_core.redex._recovery import plan_recovery
from tests.redex.faults import (
    FaultyOps,
    SimulatedCrash,
    close_leaked_fds,
    snapshot_fds,
    wait_until,
)

CHAN = "fault/chan"
KEEP = 4
COUNT_RETENTION: dict[str, Any] = {"count": {"max_events": KEEP}}
# Every entry accounts for at least 20 bytes, so this evicts everything.
EVICT_ALL: dict[str, Any] = {"bytes": {"max_bytes": 1}}

#: Compaction checkpoints before the manifest rename (the old generation stays live)
#: and after it (the new one is live), in the order the store reaches them.
PRE_RENAME = (
    "compact.mkdir",
    "compact.write_idx",
    "compact.write_dat",
    "compact.write_ts",
    "compact.files_synced",
    "compact.delta",
    "compact.manifest_tmp",
)
POST_RENAME = ("compact.renamed", "compact.dir_synced", "compact.swapped", "compact.deleting")
COMPACTION_POINTS = PRE_RENAME + POST_RENAME
MIGRATION_POINTS = ("migrate.idx", "migrate.dat", "migrate.ts")

Rec = tuple[int, bytes, int, bool]


# -- helpers ---------------------------------------------------------------------------------


def open_chan(
    base: Path, ops: FaultyOps | None = None, /, **options: Any
) -> tuple[Redex, RedexFile]:
    redex = Redex(base) if ops is None else Redex(base, ops=ops)
    config = {"persistent": True, "retention_check_every": 0, **options}
    return redex, redex.open_file(CHAN, **config)


def snap(f: RedexFile) -> list[Rec]:
    return [(e.seq, e.payload, e.ts, e.is_inline) for e in f]


def chan_dir(base: Path) -> Path:
    return base / "fault" / "chan"


def gen_dir(base: Path, generation: int) -> Path:
    return chan_dir(base) / generation_dir_name(generation)


def generation_dirs(chan: Path) -> list[str]:
    return sorted(
        p.name for p in chan.iterdir() if p.is_dir() and parse_generation_dir_name(p.name)
    )


def manifest_generation(chan: Path) -> int:
    return Manifest.decode((chan / "manifest").read_bytes()).generation


def assert_single_generation(base: Path, generation: int) -> None:
    chan = chan_dir(base)
    assert generation_dirs(chan) == [generation_dir_name(generation)]
    assert manifest_generation(chan) == generation
    assert not (chan / "manifest.tmp").exists()


def raw(base: Path, generation: int) -> tuple[bytes, bytes, bytes]:
    d = gen_dir(base, generation)
    return (d / "idx").read_bytes(), (d / "dat").read_bytes(), (d / "ts").read_bytes()


def assert_clean_on_disk(base: Path, generation: int) -> None:
    """A second recovery walk over the files would change nothing."""
    idx, dat, ts = raw(base, generation)
    plan = plan_recovery(idx, dat, ts, now_ns=time.time_ns())
    assert not plan.changes_files, plan


def fill(f: RedexFile) -> None:
    """Twelve acknowledged records: single appends, batches, inline ones, a 0-byte one."""
    f.append(b"first")
    f.append_batch([b"b-one", b"", b"b-three" * 5])
    f.append_inline(b"inline-1")
    f.append(b"x" * 300)
    f.append_batch([b"c1", b"c2"])
    f.append_inline(b"inline-2")
    f.append(b"last heap")
    f.append_inline(b"inline-3")
    f.append(b"tail")


def die(before: frozenset[tuple[int, str]], base: Path) -> None:
    """What the kernel does for a dead process: release its descriptors and its flock
    (the store locks the channel directory, or a ``.lock`` file in older layouts)."""
    closed = close_leaked_fds(before, base)
    assert str(chan_dir(base).resolve()) in closed or any(t.endswith(".lock") for t in closed)
    assert close_leaked_fds(before, base) == []


def continue_and_recheck(base: Path, f: RedexFile, redex: Redex, **options: Any) -> None:
    """Appends work after a reopen, and one more reopen sees exactly the same state."""
    next_seq = f.next_seq
    assert f.append(b"after-reopen") == next_seq
    assert f.append_batch([b"after-1", b"after-2"]) == next_seq + 1
    assert f.append_inline(b"after-in") == next_seq + 3
    state = snap(f)
    generation = f.generation
    assert generation is not None
    redex.close()
    again, f2 = open_chan(base, **options)
    try:
        assert snap(f2) == state
        assert f2.next_seq == next_seq + 4
        report = again.reports[CHAN]
        assert (report.generation, report.resolved_by, report.swept) == (
            generation,
            "manifest",
            (),
        )
        assert not report.plan.changes_files
    finally:
        again.close()
    assert_single_generation(base, generation)
    assert_clean_on_disk(base, generation)


# -- the list of crash points ------------------------------------------------------------


def test_every_compaction_and_migration_checkpoint_is_covered(tmp_path: Path) -> None:
    """The crash tests below cover every checkpoint the store declares."""
    source = Path(file_module.__file__).with_name("_store.py").read_text()
    names: set[str] = set()
    for literal in re.findall(r'checkpoint\(f?"([^"]+)"\)', source):
        if "{name}" in literal:
            names.update(literal.replace("{name}", n) for n in ("idx", "dat", "ts"))
        else:
            names.add(literal)
    assert names == set(COMPACTION_POINTS) | set(MIGRATION_POINTS)

    # And a successful compaction reaches the compaction ones in the order listed.
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=COUNT_RETENTION)
    try:
        fill(f)
        f.sweep_retention()
        assert tuple(p for p in ops.points if p.startswith("compact.")) == COMPACTION_POINTS
    finally:
        redex.close()


# -- crashes during compaction -----------------------------------------------------------


@pytest.mark.parametrize(
    "retention", [COUNT_RETENTION, EVICT_ALL], ids=["count-retention", "evict-all"]
)
@pytest.mark.parametrize("point", COMPACTION_POINTS)
def test_crash_during_compaction(tmp_path: Path, point: str, retention: dict[str, Any]) -> None:
    before = snapshot_fds()
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=retention)
    fill(f)
    full = snap(f)
    next_seq = f.next_seq
    assert f.generation == 1
    suffix = full[-KEEP:] if retention is COUNT_RETENTION else []

    ops.crash_at(point)
    with pytest.raises(SimulatedCrash):
        f.sweep_retention()
    del f, redex
    die(before, tmp_path)

    options = {"retention": retention}
    redex2, f2 = open_chan(tmp_path, **options)
    report = redex2.reports[CHAN]
    if point in PRE_RENAME:
        assert (report.generation, report.resolved_by) == (1, "manifest")
        assert snap(f2) == full
        orphans = (
            ("v0000000002", "manifest.tmp") if point == "compact.manifest_tmp" else ("v0000000002",)
        )
        assert report.swept == orphans
    else:
        assert (report.generation, report.resolved_by) == (2, "manifest")
        assert snap(f2) == suffix
        assert report.swept == ("v0000000001",)
    assert f2.next_seq == next_seq
    assert report.plan.dropped_corrupt == 0
    assert report.plan.dropped_torn == 0
    assert_single_generation(tmp_path, report.generation)
    continue_and_recheck(tmp_path, f2, redex2, **options)


LATE_POINTS = (
    "compact.files_synced",
    *COMPACTION_POINTS[COMPACTION_POINTS.index("compact.delta") :],
)


@pytest.mark.parametrize("crash", [None, *LATE_POINTS])
def test_records_appended_during_compaction_survive(tmp_path: Path, crash: str | None) -> None:
    """Appends that land between prepare and commit are carried into the new generation
    (or stay in the old one if the crash comes before the manifest flip)."""
    before = snapshot_fds()
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=COUNT_RETENTION)
    fill(f)
    full = snap(f)
    late_seqs: list[int] = []

    def append_late(_point: str) -> None:
        # prepare() runs without the file lock, so appends go through (to generation 1).
        late_seqs.append(f.append(b"late single"))
        first = f.append_batch([b"late batch 1", b"", b"late batch 3"])
        assert first is not None
        late_seqs.extend(range(first, first + 3))
        late_seqs.append(f.append_inline(b"late-inl"))

    ops.on_checkpoint("compact.files_synced", append_late)
    if crash is None:
        assert f.sweep_retention() == len(full) - KEEP
        assert f.generation == 2
        late = snap(f)[KEEP:]
        assert [r[0] for r in late] == late_seqs == list(range(12, 17))
        expected = full[-KEEP:] + late
        assert snap(f) == expected
        next_seq = f.next_seq
        redex.close()
    else:
        ops.crash_at(crash)
        with pytest.raises(SimulatedCrash):
            f.sweep_retention()
        assert late_seqs == list(range(12, 17))
        late = snap(f)[len(full) :]
        expected = (full if crash in PRE_RENAME else full[-KEEP:]) + late
        next_seq = f.next_seq
        del f, redex
        die(before, tmp_path)

    assert [r[0] for r in late] == list(range(12, 17))
    assert [r[1] for r in late] == [
        b"late single",
        b"late batch 1",
        b"",
        b"late batch 3",
        b"late-inl",
    ]
    assert late[-1][3] is True
    options = {"retention": COUNT_RETENTION}
    redex2, f2 = open_chan(tmp_path, **options)
    report = redex2.reports[CHAN]
    assert report.generation == (1 if crash in PRE_RENAME else 2)
    assert snap(f2) == expected
    assert f2.next_seq == next_seq == 17
    assert_single_generation(tmp_path, report.generation)
    continue_and_recheck(tmp_path, f2, redex2, **options)


# -- compaction that fails (no crash) ----------------------------------------------------


def _chan_is(base: Path) -> Callable[[str], bool]:
    chan = str(chan_dir(base))
    return lambda target: target == chan


FAILING_COMPACTION_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("mkdir", {"match": "v0000000002"}),
    ("write_file", {"match": "v0000000002/idx.tmp"}),
    ("write_file", {"match": "v0000000002/dat.tmp", "partial": True}),
    ("write_file", {"match": "v0000000002/ts.tmp"}),
    ("rename", {"match": "v0000000002/dat"}),
    ("fsync_dir", {"match": "v0000000002"}),
    ("open_append", {"match": "v0000000002/ts"}),
    ("write_file", {"match": "manifest.tmp", "partial": True}),
    ("rename", {"match": "/manifest"}),
]


@pytest.mark.parametrize(
    ("op", "fault"),
    FAILING_COMPACTION_STEPS,
    ids=[f"{op}-{kw['match']}" for op, kw in FAILING_COMPACTION_STEPS],
)
def test_failed_compaction_changes_nothing(tmp_path: Path, op: str, fault: dict[str, Any]) -> None:
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=COUNT_RETENTION)
    try:
        fill(f)
        full = snap(f)
        state = (len(f), f.next_seq, f.generation)
        ops.fail(op, **fault)
        with pytest.raises(RedexIOError):
            f.sweep_retention()
        assert ops.faults[0].fired == 1
        assert snap(f) == full
        assert (len(f), f.next_seq, f.generation) == state
        # The half-built generation and the manifest.tmp are gone again.
        assert_single_generation(tmp_path, 1)
        # The file still works and a later sweep succeeds.
        assert f.append(b"after failure") == state[1]
        assert f.sweep_retention() == len(full) + 1 - KEEP
        assert f.generation == 2
        expected = snap(f)
        assert [r[0] for r in expected] == list(range(state[1] + 1 - KEEP, state[1] + 1))
    finally:
        redex.close()
    redex2, f2 = open_chan(tmp_path, retention=COUNT_RETENTION)
    assert snap(f2) == expected
    continue_and_recheck(tmp_path, f2, redex2, retention=COUNT_RETENTION)


def test_failed_fsync_of_channel_dir_after_the_flip_still_succeeds(tmp_path: Path) -> None:
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=COUNT_RETENTION)
    try:
        fill(f)
        full = snap(f)
        ops.fail("fsync_dir", match=_chan_is(tmp_path))
        assert f.sweep_retention() == len(full) - KEEP
        assert ops.faults[0].fired == 1
        assert f.generation == 2
        assert snap(f) == full[-KEEP:]
    finally:
        redex.close()
    assert_single_generation(tmp_path, 2)


def test_manifest_rename_that_took_effect_but_reported_failure(tmp_path: Path) -> None:
    """The rename happened yet raised: memory stays on generation 1 and so must a reopen
    (the discarded generation 2 is missing, so the manifest is not usable)."""
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=COUNT_RETENTION)
    try:
        fill(f)
        full = snap(f)
        ops.fail("rename", match="/manifest", after=True)
        with pytest.raises(RedexIOError):
            f.sweep_retention()
        assert snap(f) == full
        assert f.generation == 1
        f.append(b"still generation 1")
        expected = snap(f)
    finally:
        redex.close()
    redex2, f2 = open_chan(tmp_path, retention=COUNT_RETENTION)
    report = redex2.reports[CHAN]
    assert (report.generation, report.resolved_by) == (1, "fallback")
    assert snap(f2) == expected
    continue_and_recheck(tmp_path, f2, redex2, retention=COUNT_RETENTION)


def test_crash_while_discarding_a_failed_compaction(tmp_path: Path) -> None:
    before = snapshot_fds()
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, retention=COUNT_RETENTION)
    fill(f)
    full = snap(f)
    ops.fail("write_file", match="manifest.tmp")
    ops.crash_at("compact.deleting")
    with pytest.raises(SimulatedCrash):
        f.sweep_retention()
    del f, redex
    die(before, tmp_path)
    redex2, f2 = open_chan(tmp_path, retention=COUNT_RETENTION)
    report = redex2.reports[CHAN]
    assert report.generation == 1
    assert "v0000000002" in report.swept
    assert snap(f2) == full
    continue_and_recheck(tmp_path, f2, redex2, retention=COUNT_RETENTION)


# -- append rollback ---------------------------------------------------------------------

ROLLBACK_CASES = [
    (stage, kind)
    for stage in ("dat", "idx", "ts")
    for kind in ("single", "batch", "inline")
    if not (stage == "dat" and kind == "inline")  # an inline append writes no dat
]


def _do_append(f: RedexFile, kind: str) -> int:
    if kind == "single":
        return f.append(b"the payload that fails")
    if kind == "batch":
        first = f.append_batch([b"batch-a", b"", b"batch-ccc"])
        assert first is not None
        return first
    return f.append_inline(b"inl-fail")


def _expected_sizes(records: list[Rec]) -> tuple[int, int, int]:
    heap = sum(len(r[1]) for r in records if not r[3])
    return IDX_RECORD_SIZE * len(records), heap, 8 * len(records)


def _seed(f: RedexFile) -> None:
    f.append(b"one")
    f.append_batch([b"two", b"three"])
    f.append_inline(b"inline01")


@pytest.mark.parametrize("partial", [False, True], ids=["nothing-written", "torn-write"])
@pytest.mark.parametrize(("stage", "kind"), ROLLBACK_CASES)
def test_failed_write_rolls_back(tmp_path: Path, stage: str, kind: str, partial: bool) -> None:
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops)
    try:
        _seed(f)
        before = snap(f)
        state = f.len_and_next_seq()
        ops.fail("write_all", match="/" + stage, partial=partial)
        with pytest.raises(RedexIOError) as info:
            _do_append(f, kind)
        assert ops.faults[0].fired == 1
        assert not isinstance(info.value, PoisonedError)
        assert f.len_and_next_seq() == state
        assert snap(f) == before
        # No partial record on disk.
        idx, dat, ts = raw(tmp_path, 1)
        assert (len(idx), len(dat), len(ts)) == _expected_sizes(before)
        # No seq was burnt.
        assert _do_append(f, kind) == state[1]
        expected = snap(f)
    finally:
        redex.close()
    redex2, f2 = open_chan(tmp_path)
    assert snap(f2) == expected
    assert not redex2.reports[CHAN].plan.changes_files
    continue_and_recheck(tmp_path, f2, redex2)


POISON_STAGES = ("dat", "idx", "ts")


@pytest.mark.parametrize("kind", ["single", "batch"])
@pytest.mark.parametrize("stage", POISON_STAGES)
def test_failed_rollback_poisons_until_reopen(tmp_path: Path, stage: str, kind: str) -> None:
    ops = FaultyOps()
    options = {"retention": {"count": {"max_events": 1}}}
    redex, f = open_chan(tmp_path, ops, **options)
    try:
        _seed(f)
        before = snap(f)
        state = f.len_and_next_seq()
        ops.fail("write_all", match="/" + stage, partial=True)
        ops.fail("ftruncate")
        with pytest.raises(PoisonedError):
            _do_append(f, kind)
        assert f.len_and_next_seq() == state
        assert snap(f) == before
        ops.clear()
        # Every later write path refuses; reads still work.
        with pytest.raises(PoisonedError):
            f.append(b"more")
        with pytest.raises(PoisonedError):
            f.append_batch([b"more", b"more"])
        with pytest.raises(PoisonedError):
            f.append_inline(b"8 bytes!")
        with pytest.raises(PoisonedError):
            f.sync()
        with pytest.raises(PoisonedError):
            f.sweep_retention()
        with pytest.raises(PoisonedError):
            f.compact()
        with pytest.raises(PoisonedError):
            redex.sweep_retention()
        assert f.len_and_next_seq() == state
        assert snap(f) == before
        fsyncs = ops.count("fsync")
        f.close()
        # A poisoned file is closed without fsync (nothing it could flush is trusted).
        assert ops.count("fsync") == fsyncs
    finally:
        redex.close()
    redex2, f2 = open_chan(tmp_path, **options)
    report = redex2.reports[CHAN]
    assert report.plan.changes_files  # the torn tail was cut
    assert report.plan.dropped_corrupt == 0
    got = snap(f2)
    assert got[: len(before)] == before
    extra = got[len(before) :]
    if stage == "dat":
        # Nothing of the refused append reached idx: it is gone.
        assert extra == []
        assert f2.next_seq == state[1]
    else:
        # The refused append's dat (and for "ts" its idx) was complete when the rollback
        # failed, so a prefix of it may come back at open (a batch too: the format has
        # no batch boundaries). An error leaves the outcome open, but whatever comes
        # back is whole, in order, and right after the acknowledged records.
        doomed = (
            [b"the payload that fails"] if kind == "single" else [b"batch-a", b"", b"batch-ccc"]
        )
        assert [r[0] for r in extra] == list(range(state[1], state[1] + len(extra)))
        assert [r[1] for r in extra] == doomed[: len(extra)]
        if stage == "ts":
            assert len(extra) == len(doomed)
        assert f2.next_seq == state[1] + len(extra)
    continue_and_recheck(tmp_path, f2, redex2, **options)


# -- capacity checks happen before a seq is allocated -------------------------------------


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "heap"])
def test_payload_too_large_burns_no_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, persistent: bool
) -> None:
    monkeypatch.setattr(file_module, "MAX_HEAP_BYTES", 64)
    redex = Redex(tmp_path)
    f = redex.open_file(CHAN, persistent=persistent)
    try:
        assert f.append(b"a" * 40) == 0
        with pytest.raises(PayloadTooLargeError) as info:
            f.append(b"b" * 30)
        assert (info.value.size, info.value.maximum) == (30, 24)
        with pytest.raises(PayloadTooLargeError) as info:
            f.append_batch([b"c" * 10, b"d" * 15])
        assert (info.value.size, info.value.maximum) == (25, 24)
        assert f.len_and_next_seq() == (1, 1)
        assert f.append_batch([b"e" * 10, b"f" * 14]) == 1
        assert f.next_seq == 3
        expected = snap(f)
    finally:
        redex.close()
    if persistent:
        idx, dat, ts = raw(tmp_path, 1)
        assert (len(idx), len(dat), len(ts)) == _expected_sizes(expected)
        redex2, f2 = open_chan(tmp_path)
        assert snap(f2) == expected
        redex2.close()


def test_segment_offset_overflow_burns_no_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "MAX_U32", 50)
    options = {"retention": {"count": {"max_events": 1}}}
    redex, f = open_chan(tmp_path, **options)
    try:
        assert f.append(b"a" * 40) == 0  # offset 0
        assert f.append(b"b" * 20) == 1  # offset 40
        with pytest.raises(SegmentOffsetOverflowError) as info:
            f.append(b"c")  # offset 60
        assert info.value.offset == 60
        with pytest.raises(SegmentOffsetOverflowError):
            f.append_batch([b"d"])
        assert f.len_and_next_seq() == (2, 2)
        # An inline append needs no dat offset.
        assert f.append_inline(b"inline!!") == 2
        # Compaction rebases the offsets to 0, which clears the condition.
        assert f.sweep_retention() == 2
        assert f.append(b"e" * 10) == 3  # offset 0
        # A batch is refused when its last payload's offset does not fit.
        with pytest.raises(SegmentOffsetOverflowError) as info:
            f.append_batch([b"f" * 41, b"g"])
        assert info.value.offset == 51
        assert f.append_batch([b"h" * 40, b"i" * 100]) == 4  # last offset 50 fits
        assert f.next_seq == 6
        expected = snap(f)
    finally:
        redex.close()
    monkeypatch.undo()
    redex2, f2 = open_chan(tmp_path, **options)
    assert snap(f2) == expected
    redex2.close()


# -- recovery at open (file level) ---------------------------------------------------------


def _make(base: Path, fill_with: Callable[[RedexFile], None] = fill) -> list[Rec]:
    redex, f = open_chan(base)
    try:
        fill_with(f)
        return snap(f)
    finally:
        redex.close()


def _reopen_n(base: Path, n: int = 3) -> list[tuple[list[Rec], int, Any]]:
    """Open and close ``n`` times; return (records, next_seq, report) of each open."""
    out = []
    for _ in range(n):
        redex, f = open_chan(base)
        out.append((snap(f), f.next_seq, redex.reports[CHAN]))
        redex.close()
    return out


def test_torn_idx_tail_is_cut(tmp_path: Path) -> None:
    records = _make(tmp_path)
    idx_path = gen_dir(tmp_path, 1) / "idx"
    size = idx_path.stat().st_size
    os.truncate(idx_path, size - 7)
    (got, next_seq, report), *later = _reopen_n(tmp_path)
    assert got == records[:-1]
    assert next_seq == records[-1][0]
    assert report.plan.dropped_torn == 1
    assert (gen_dir(tmp_path, 1) / "idx").stat().st_size == size - IDX_RECORD_SIZE
    for again, seq, rep in later:
        assert (again, seq) == (got, next_seq)
        assert not rep.plan.changes_files
    assert_clean_on_disk(tmp_path, 1)


def test_torn_dat_cuts_the_torn_record(tmp_path: Path) -> None:
    records = _make(tmp_path)
    assert records[-1][1] == b"tail"
    dat_path = gen_dir(tmp_path, 1) / "dat"
    os.truncate(dat_path, dat_path.stat().st_size - 2)
    (got, next_seq, report), *later = _reopen_n(tmp_path)
    assert got == records[:-1]
    assert next_seq == records[-1][0]
    assert report.plan.dropped_torn == 1
    assert [(r, s) for r, s, _ in later] == [(got, next_seq)] * 2
    assert_clean_on_disk(tmp_path, 1)


def test_torn_dat_also_cuts_the_inline_records_after_it(tmp_path: Path) -> None:
    def fill_with(f: RedexFile) -> None:
        f.append(b"keep")
        f.append_inline(b"inline-a")
        f.append(b"torn" * 10)
        f.append_inline(b"inline-b")
        f.append_inline(b"inline-c")

    records = _make(tmp_path, fill_with)
    dat_path = gen_dir(tmp_path, 1) / "dat"
    os.truncate(dat_path, dat_path.stat().st_size - 5)
    (got, next_seq, report), *_ = _reopen_n(tmp_path)
    assert got == records[:2]
    assert next_seq == 2
    assert report.plan.dropped_torn == 3
    assert_clean_on_disk(tmp_path, 1)


def test_garbage_after_dat_is_trimmed(tmp_path: Path) -> None:
    records = _make(tmp_path)
    dat_path = gen_dir(tmp_path, 1) / "dat"
    size = dat_path.stat().st_size
    with dat_path.open("ab") as fh:
        fh.write(os.urandom(100))
    (got, next_seq, report), *_ = _reopen_n(tmp_path)
    assert got == records
    assert next_seq == records[-1][0] + 1
    assert report.plan.dat_truncate_to == size
    assert dat_path.stat().st_size == size
    assert_clean_on_disk(tmp_path, 1)


def _flip_payload_byte(base: Path, seq: int) -> None:
    idx, _, _ = raw(base, 1)
    rec = next(r for r in decode_records(idx) if r.seq == seq)
    assert not rec.is_inline
    assert rec.length > 0
    with (gen_dir(base, 1) / "dat").open("r+b") as fh:
        fh.seek(rec.offset + rec.length // 2)
        byte = fh.read(1)
        fh.seek(rec.offset + rec.length // 2)
        fh.write(bytes([byte[0] ^ 0x5A]))


def test_corrupt_record_in_the_middle_is_tombstoned(tmp_path: Path) -> None:
    records = _make(tmp_path)
    victim = records[5]  # b"x" * 300
    assert victim[1] == b"x" * 300
    _flip_payload_byte(tmp_path, victim[0])
    opens = _reopen_n(tmp_path)
    expected = [r for r in records if r[0] != victim[0]]
    for i, (got, next_seq, report) in enumerate(opens):
        assert got == expected
        assert next_seq == records[-1][0] + 1
        assert report.plan.dropped_corrupt == (1 if i == 0 else 0)
        assert [s for s, _ in report.plan.tombstones] == [victim[0]]
        # Tombstoned in place: idx keeps every record, ts stays aligned with it.
        idx, _, ts = raw(tmp_path, 1)
        on_disk = decode_records(idx)
        assert len(on_disk) == len(records)
        assert len(ts) == 8 * len(records)
        assert [bool(r.flags & FLAG_TOMBSTONE) for r in on_disk] == [
            r.seq == victim[0] for r in on_disk
        ]
        stamps = [int.from_bytes(ts[8 * k : 8 * k + 8], "little") for k in range(len(records))]
        assert stamps == [r[2] for r in records]
    assert_clean_on_disk(tmp_path, 1)
    # Compaction drops the tombstone; timestamps stay with their records.
    redex, f = open_chan(tmp_path)
    assert f.compact() == 2
    assert snap(f) == expected
    redex.close()
    redex, f = open_chan(tmp_path)
    assert snap(f) == expected
    assert len(decode_records(raw(tmp_path, 2)[0])) == len(expected)
    continue_and_recheck(tmp_path, f, redex)


def test_corrupt_last_record_never_has_its_seq_reused(tmp_path: Path) -> None:
    records = _make(tmp_path)
    last = records[-1]
    _flip_payload_byte(tmp_path, last[0])
    for got, next_seq, _ in _reopen_n(tmp_path):
        assert got == records[:-1]
        assert next_seq == last[0] + 1
    redex, f = open_chan(tmp_path)
    try:
        assert f.append(b"replacement") == last[0] + 1
    finally:
        redex.close()
    for got, next_seq, _ in _reopen_n(tmp_path, 2):
        assert [r[0] for r in got] == [r[0] for r in records[:-1]] + [last[0] + 1]
        assert next_seq == last[0] + 2
    seqs = [r.seq for r in decode_records(raw(tmp_path, 1)[0])]
    assert seqs == sorted(set(seqs))  # no seq twice on disk
    # A compaction that evicts nothing keeps the high-water mark too.
    redex, f = open_chan(tmp_path)
    try:
        assert f.compact() == 2
        f.append(b"post-compact")
        assert f.next_seq == last[0] + 3
    finally:
        redex.close()
    (_, next_seq, _), *_ = _reopen_n(tmp_path, 1)
    assert next_seq == last[0] + 3


def test_corrupt_inline_record_is_tombstoned(tmp_path: Path) -> None:
    records = _make(tmp_path)
    victim = next(r for r in records if r[3])
    idx_path = gen_dir(tmp_path, 1) / "idx"
    idx = bytearray(idx_path.read_bytes())
    at = next(i for i, r in enumerate(decode_records(bytes(idx))) if r.seq == victim[0])
    idx[at * IDX_RECORD_SIZE + 9] ^= 0x01  # a payload byte stored in the record
    idx_path.write_bytes(bytes(idx))
    for got, next_seq, _ in _reopen_n(tmp_path):
        assert got == [r for r in records if r[0] != victim[0]]
        assert next_seq == records[-1][0] + 1
    assert decode_records(raw(tmp_path, 1)[0])[at].flags & FLAG_TOMBSTONE


def test_truncated_ts_keeps_the_timestamps_it_has(tmp_path: Path) -> None:
    records = _make(tmp_path)
    ts_path = gen_dir(tmp_path, 1) / "ts"
    os.truncate(ts_path, 8 * 5 + 3)
    t0 = time.time_ns()
    (got, next_seq, report), (again, _, report2), _ = _reopen_n(tmp_path)
    t1 = time.time_ns()
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in records]
    assert [r[2] for r in got[:5]] == [r[2] for r in records[:5]]
    assert all(t0 <= r[2] <= t1 for r in got[5:])
    assert report.plan.timestamps_filled == len(records) - 5
    assert next_seq == records[-1][0] + 1
    assert ts_path.stat().st_size == 8 * len(records)
    # The filled-in timestamps are durable: the next open sees the same ones.
    assert again == got
    assert not report2.plan.changes_files


def test_missing_ts_is_recreated(tmp_path: Path) -> None:
    records = _make(tmp_path)
    (gen_dir(tmp_path, 1) / "ts").unlink()
    t0 = time.time_ns()
    (got, next_seq, report), (again, _, _), _ = _reopen_n(tmp_path)
    assert report.generation == 1
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in records]
    assert all(r[2] >= t0 for r in got)
    assert next_seq == records[-1][0] + 1
    assert again == got
    assert_single_generation(tmp_path, 1)


def _compacted(base: Path) -> list[Rec]:
    """A channel whose live generation is 2 (one retention compaction)."""
    redex, f = open_chan(base, retention=COUNT_RETENTION)
    try:
        fill(f)
        f.sweep_retention()
        assert f.generation == 2
        return snap(f)
    finally:
        redex.close()


def test_missing_ts_in_a_later_generation_keeps_the_records(tmp_path: Path) -> None:
    records = _compacted(tmp_path)
    (gen_dir(tmp_path, 2) / "ts").unlink()
    redex, f = open_chan(tmp_path)
    try:
        assert f.next_seq == records[-1][0] + 1
        assert f.generation == 2
        assert [r[:2] + r[3:] for r in snap(f)] == [r[:2] + r[3:] for r in records]
    finally:
        redex.close()


def _write_legacy(chan: Path, files: tuple[str, ...] = ("idx", "dat", "ts")) -> list[Rec]:
    """A v0.9/v0.10 flat channel written with the format encoders."""
    entries: list[tuple[bytes, bool]] = [
        (b"legacy-0", False),
        (b"inline-1", True),
        (b"", False),
        (b"legacy-three", False),
    ]
    records = []
    dat = bytearray()
    stamps = [1_700_000_000_000_000_000 + 1000 * i for i in range(len(entries))]
    out: list[Rec] = []
    for seq, (payload, inline) in enumerate(entries, start=10):
        if inline:
            records.append(inline_record(seq, payload))
        else:
            records.append(heap_record(seq, len(dat), len(payload), payload))
            dat += payload
        out.append((seq, payload, stamps[seq - 10], inline))
    chan.mkdir(parents=True)
    content = {"idx": encode_records(records), "dat": bytes(dat), "ts": encode_timestamps(stamps)}
    for name in files:
        (chan / name).write_bytes(content[name])
    return out


def test_legacy_flat_layout_migrates(tmp_path: Path) -> None:
    chan = chan_dir(tmp_path)
    records = _write_legacy(chan)
    redex, f = open_chan(tmp_path)
    report = redex.reports[CHAN]
    assert (report.generation, report.resolved_by) == (1, "migrated")
    assert snap(f) == records
    assert f.next_seq == 14
    assert not any((chan / n).exists() for n in ("idx", "dat", "ts"))
    assert_single_generation(tmp_path, 1)
    continue_and_recheck(tmp_path, f, redex)


@pytest.mark.parametrize(
    ("files", "expected_seqs"),
    # idx alone: every heap record points past the (empty) dat, so the torn-dat rule
    # cuts them and everything after the first one, the inline record included.
    [(("dat",), []), (("idx", "dat"), [10, 11, 12, 13]), (("idx",), [])],
    ids=["dat-only", "no-ts", "idx-only"],
)
def test_partial_legacy_layout_migrates(
    tmp_path: Path, files: tuple[str, ...], expected_seqs: list[int]
) -> None:
    chan = chan_dir(tmp_path)
    records = _write_legacy(chan, files)
    redex, f = open_chan(tmp_path)
    report = redex.reports[CHAN]
    assert (report.generation, report.resolved_by) == (1, "migrated")
    got = snap(f)
    assert [r[0] for r in got] == expected_seqs
    by_seq = {r[0]: r for r in records}
    for r in got:
        assert r[1] == by_seq[r[0]][1]
    assert_single_generation(tmp_path, 1)
    assert all((chan / generation_dir_name(1) / n).is_file() for n in ("idx", "dat", "ts"))
    continue_and_recheck(tmp_path, f, redex)


@pytest.mark.parametrize("point", MIGRATION_POINTS)
def test_crash_during_migration_reruns_it(tmp_path: Path, point: str) -> None:
    chan = chan_dir(tmp_path)
    records = _write_legacy(chan)
    before = snapshot_fds()
    ops = FaultyOps()
    ops.crash_at(point)
    with pytest.raises(SimulatedCrash):
        open_chan(tmp_path, ops)
    close_leaked_fds(before, tmp_path)  # no store existed yet, so there may be none
    redex, f = open_chan(tmp_path)
    report = redex.reports[CHAN]
    assert report.generation == 1
    assert report.resolved_by == ("fallback" if point == "migrate.ts" else "migrated")
    assert snap(f) == records
    assert_single_generation(tmp_path, 1)
    continue_and_recheck(tmp_path, f, redex)


@pytest.mark.parametrize(
    "manifest",
    [
        b"",
        b"REDM\x01",
        b"\xde\xad\xbe\xef" * 4,
        Manifest(2).encode()[:15],
        b"XXXX" + Manifest(2).encode()[4:],
    ],
    ids=["empty", "torn", "garbage", "short", "bad-magic"],
)
def test_unusable_manifest_falls_back_to_the_highest_complete_generation(
    tmp_path: Path, manifest: bytes
) -> None:
    records = _compacted(tmp_path)
    # An older complete generation too: the highest one must win.
    shutil.copytree(gen_dir(tmp_path, 2), gen_dir(tmp_path, 1))
    (chan_dir(tmp_path) / "manifest").write_bytes(manifest)
    redex, f = open_chan(tmp_path)
    report = redex.reports[CHAN]
    assert (report.generation, report.resolved_by, report.swept) == (
        2,
        "fallback",
        ("v0000000001",),
    )
    assert snap(f) == records
    assert (chan_dir(tmp_path) / "manifest").read_bytes() == Manifest(2).encode()
    assert_single_generation(tmp_path, 2)
    continue_and_recheck(tmp_path, f, redex)


def test_manifest_naming_a_missing_generation_falls_back(tmp_path: Path) -> None:
    records = _make(tmp_path)
    (chan_dir(tmp_path) / "manifest").write_bytes(Manifest(7).encode())
    redex, f = open_chan(tmp_path)
    report = redex.reports[CHAN]
    assert (report.generation, report.resolved_by) == (1, "fallback")
    assert snap(f) == records
    assert manifest_generation(chan_dir(tmp_path)) == 1
    continue_and_recheck(tmp_path, f, redex)


def test_orphans_are_swept_and_strays_left_alone(tmp_path: Path) -> None:
    records = _compacted(tmp_path)
    chan = chan_dir(tmp_path)
    live = gen_dir(tmp_path, 2)
    shutil.copytree(live, gen_dir(tmp_path, 1))  # older, complete
    shutil.copytree(live, gen_dir(tmp_path, 5))  # newer, complete: the manifest wins
    gen_dir(tmp_path, 3).mkdir()  # newer, incomplete
    (gen_dir(tmp_path, 3) / "idx").write_bytes(b"")
    (chan / "manifest.tmp").write_bytes(Manifest(5).encode())
    strays = ["v1", "v00000000001", "v0000000000", "vABCDEFGHIJ"]
    for name in strays:
        (chan / name).mkdir()
        (chan / name / "idx").write_bytes(b"keep me")
    (chan / "v0000000009").write_bytes(b"a file named like a generation")
    (chan / "notes.txt").write_bytes(b"hello")

    redex, f = open_chan(tmp_path)
    report = redex.reports[CHAN]
    assert (report.generation, report.resolved_by) == (2, "manifest")
    assert sorted(report.swept) == sorted(
        ["v0000000001", "v0000000003", "v0000000005", "manifest.tmp"]
    )
    assert snap(f) == records
    redex.close()
    assert_single_generation(tmp_path, 2)
    for name in strays:
        assert (chan / name / "idx").read_bytes() == b"keep me"
    assert (chan / "v0000000009").read_bytes() == b"a file named like a generation"
    assert (chan / "notes.txt").read_bytes() == b"hello"


def test_open_that_cannot_repair_fails_cleanly_and_retries(tmp_path: Path) -> None:
    records = _make(tmp_path)
    idx_path = gen_dir(tmp_path, 1) / "idx"
    os.truncate(idx_path, idx_path.stat().st_size - 3)
    ops = FaultyOps()
    ops.fail("truncate", match="/idx", err=errno.EIO)
    with pytest.raises(RedexIOError):
        open_chan(tmp_path, ops)
    # Nothing was left locked or half-open: a normal open repairs it.
    redex, f = open_chan(tmp_path)
    assert snap(f) == records[:-1]
    continue_and_recheck(tmp_path, f, redex)


def _damage(base: Path) -> None:
    """A corrupt mid-file record, torn idx and ts tails, trailing dat garbage, orphans."""
    _flip_payload_byte(base, 5)
    d = gen_dir(base, 1)
    with (d / "idx").open("ab") as fh:
        fh.write(b"\x07" * 7)
    with (d / "dat").open("ab") as fh:
        fh.write(b"garbage" * 7)
    os.truncate(d / "ts", 8 * 8 + 3)
    orphan = gen_dir(base, 2)
    orphan.mkdir()
    (orphan / "idx").write_bytes(b"")
    (chan_dir(base) / "manifest.tmp").write_bytes(b"junk")


RECOVERY_STEPS = [
    ("truncate", "/idx"),
    ("open_rw", "/idx"),
    ("pwrite", "/idx"),
    ("fsync", "/idx"),
    ("truncate", "/dat"),
    ("truncate", "/ts"),
    ("write_all", "/ts"),
    ("rmtree", "v0000000002"),
    ("unlink", "manifest.tmp"),
]


@pytest.mark.parametrize("after", [False, True], ids=["before-op", "after-op"])
@pytest.mark.parametrize(
    ("op", "match"), RECOVERY_STEPS, ids=[f"{o}{m}" for o, m in RECOVERY_STEPS]
)
def test_crash_during_recovery_converges(tmp_path: Path, op: str, match: str, after: bool) -> None:
    """Open-time repairs are idempotent: dying in the middle of them and opening again
    ends in the same state as an uninterrupted recovery."""
    base = tmp_path / "crashed"
    records = _make(base)
    _damage(base)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    redex, f = open_chan(clean)
    expected, expected_next = snap(f), f.next_seq
    redex.close()
    assert [r[0] for r in expected] == [r[0] for r in records if r[0] != 5]
    assert expected_next == records[-1][0] + 1

    before = snapshot_fds()
    ops = FaultyOps()
    ops.fail(op, match=match, crash=True, after=after)
    with pytest.raises(SimulatedCrash):
        open_chan(base, ops)
    assert ops.faults[0].fired == 1
    close_leaked_fds(before, base)

    redex, f = open_chan(base)
    got = snap(f)
    # Timestamps that recovery had to invent ("now") may differ between the two runs.
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in expected]
    assert [r[2] for r in got if r[0] < 8] == [r[2] for r in expected if r[0] < 8]
    assert f.next_seq == expected_next
    assert [s for s, _ in redex.reports[CHAN].plan.tombstones] == [5]
    continue_and_recheck(base, f, redex)


NEW_CHANNEL_STEPS = [
    ("mkdir", "v0000000001"),
    ("write_file", "v0000000001/idx"),
    ("write_file", "v0000000001/ts"),
    ("fsync_dir", "v0000000001"),
    ("write_file", "manifest.tmp"),
    ("rename", "/manifest"),
]


@pytest.mark.parametrize("after", [False, True], ids=["before-op", "after-op"])
@pytest.mark.parametrize(
    ("op", "match"), NEW_CHANNEL_STEPS, ids=[f"{o}-{m}" for o, m in NEW_CHANNEL_STEPS]
)
def test_crash_while_creating_a_channel(tmp_path: Path, op: str, match: str, after: bool) -> None:
    before = snapshot_fds()
    ops = FaultyOps()
    ops.fail(op, match=match, crash=True, after=after)
    with pytest.raises(SimulatedCrash):
        open_chan(tmp_path, ops)
    close_leaked_fds(before, tmp_path)
    redex, f = open_chan(tmp_path)
    assert redex.reports[CHAN].generation == 1
    assert (len(f), f.next_seq) == (0, 0)
    assert_single_generation(tmp_path, 1)
    continue_and_recheck(tmp_path, f, redex)


@pytest.mark.parametrize("op", ["mkdir", "write_file", "fsync_dir", "rename"])
def test_failed_channel_creation_can_be_retried(tmp_path: Path, op: str) -> None:
    ops = FaultyOps()
    ops.fail(op)
    with pytest.raises(RedexIOError):
        open_chan(tmp_path, ops)
    redex, f = open_chan(tmp_path)
    assert f.append(b"works") == 0
    continue_and_recheck(tmp_path, f, redex)


# -- regressions: library bugs these tests found (all fixed) ---------------------------------


def test_append_is_not_failed_by_a_concurrent_close_during_its_retention_sweep(
    tmp_path: Path,
) -> None:
    ops = FaultyOps()
    redex, f = open_chan(
        tmp_path, ops, retention={"count": {"max_events": 2}}, retention_check_every=3
    )
    # Stands in for another thread calling close() while prepare() runs unlocked.
    ops.on_checkpoint("compact.files_synced", lambda _point: f.close())
    try:
        f.append(b"a")
        f.append(b"b")
        outcome: object
        try:
            outcome = f.append(b"c")  # written, then its retention check compacts
        except Exception as exc:
            outcome = exc
    finally:
        redex.close()
    redex2, f2 = open_chan(tmp_path)
    assert [r[1] for r in snap(f2)] == [b"a", b"b", b"c"]  # the record is durable...
    redex2.close()
    assert outcome == 2  # ...so append() must report its seq


def test_append_is_not_failed_by_a_concurrent_poisoning_during_its_retention_sweep(
    tmp_path: Path,
) -> None:
    ops = FaultyOps()
    redex, f = open_chan(
        tmp_path, ops, retention={"count": {"max_events": 2}}, retention_check_every=3
    )

    def other_thread_poisons(_point: str) -> None:
        ops.fail("write_all", match="/idx")
        ops.fail("ftruncate")
        with pytest.raises(PoisonedError):
            f.append(b"other thread")

    ops.on_checkpoint("compact.files_synced", other_thread_poisons)
    try:
        f.append(b"a")
        f.append(b"b")
        outcome: object
        try:
            outcome = f.append(b"c")
        except Exception as exc:
            outcome = exc
    finally:
        redex.close()
    redex2, f2 = open_chan(tmp_path)
    assert [r[1] for r in snap(f2)] == [b"a", b"b", b"c"]
    redex2.close()
    assert outcome == 2


def test_poisoned_file_with_fsync_worker_still_raises_poisoned(tmp_path: Path) -> None:
    ops = FaultyOps()
    redex, f = open_chan(tmp_path, ops, fsync_interval_ms=5)
    try:
        f.append(b"a")
        ops.fail("write_all", match="/idx")
        ops.fail("ftruncate")
        with pytest.raises(PoisonedError):
            f.append(b"b")
        time.sleep(0.05)  # a few timer rounds of the worker
        with pytest.raises(PoisonedError):
            f.append(b"c")
    finally:
        redex.close()


def test_stray_file_named_like_the_next_generation_does_not_block_compaction(
    tmp_path: Path,
) -> None:
    redex, f = open_chan(tmp_path, retention=COUNT_RETENTION)
    try:
        (chan_dir(tmp_path) / generation_dir_name(2)).write_bytes(b"not a generation")
        fill(f)
        assert f.sweep_retention() == 12 - KEEP
    finally:
        redex.close()


def _poisoned_and_healthy(base: Path) -> tuple[Redex, RedexFile, RedexFile]:
    """Channel ``a`` poisoned, channel ``b`` healthy; both have events to evict."""
    ops = FaultyOps()
    redex = Redex(base, ops=ops)
    options: dict[str, Any] = {
        "persistent": True,
        "retention": {"count": {"max_events": 1}},
        "retention_check_every": 0,
    }
    a = redex.open_file("a", **options)
    b = redex.open_file("b", **options)
    a.append(b"1")
    a.append(b"2")
    ops.fail("write_all", match="a/v0000000001/idx")
    ops.fail("ftruncate")
    with pytest.raises(PoisonedError):
        a.append(b"3")
    b.append(b"1")
    b.append(b"2")
    return redex, a, b


@pytest.mark.anyio
async def test_background_retention_survives_a_poisoned_channel(tmp_path: Path) -> None:
    import anyio  # noqa: PLC0415

    redex, _a, b = _poisoned_and_healthy(tmp_path)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(redex.run_retention, 0.01)
            for _ in range(500):
                if len(b) <= 1:
                    break
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert len(b) == 1
    finally:
        redex.close()


def test_manager_sweep_still_sweeps_healthy_channels(tmp_path: Path) -> None:
    redex, _a, b = _poisoned_and_healthy(tmp_path)
    try:
        with contextlib.suppress(PoisonedError):
            redex.sweep_retention()
        assert len(b) == 1
    finally:
        redex.close()


def test_concurrent_appends_during_compactions(tmp_path: Path) -> None:
    """Three appending threads and a thread that sweeps in a loop: every acknowledged
    record that retention kept is on disk after a reopen, in order, with its payload."""
    options = {"retention": {"count": {"max_events": 40}}}
    redex, f = open_chan(tmp_path, **options)
    acked: dict[int, bytes] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        rng = random.Random(i)
        try:
            while not stop.is_set():
                roll = rng.random()
                if roll < 0.5:
                    p = b"w%d-%d" % (i, rng.randrange(10**9))
                    acked[f.append(p)] = p
                elif roll < 0.7:
                    p = rng.randrange(2**64).to_bytes(8, "little")
                    acked[f.append_inline(p)] = p
                else:
                    ps = [b"b%d-%d" % (i, rng.randrange(10**6)) for _ in range(rng.randint(1, 9))]
                    first = f.append_batch(ps)
                    assert first is not None
                    for k, p in enumerate(ps):
                        acked[first + k] = p
        except BaseException as exc:
            errors.append(exc)

    def sweeper() -> None:
        try:
            while not stop.is_set():
                f.sweep_retention()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=sweeper))
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert f.compactions >= 3
    in_memory = snap(f)
    next_seq = f.next_seq
    redex.close()
    redex2, f2 = open_chan(tmp_path, **options)
    try:
        on_disk = snap(f2)
        assert on_disk == in_memory
        assert f2.next_seq == next_seq == max(acked) + 1
        assert all(acked[seq] == payload for seq, payload, _, _ in on_disk)
        low = on_disk[0][0]
        assert [s for s in sorted(acked) if s >= low] == [r[0] for r in on_disk]
    finally:
        redex2.close()
    assert_single_generation(tmp_path, f2.generation or 0)


# -- fsync policies ------------------------------------------------------------------------


def _live_fsyncs(ops: FaultyOps) -> int:
    return ops.count("fsync", lambda t: t.rsplit("/", 1)[-1] in ("idx", "dat", "ts"))


def _open_policy(base: Path, **policy: Any) -> tuple[FaultyOps, Redex, RedexFile]:
    ops = FaultyOps()
    redex, f = open_chan(base, ops, **policy)
    return ops, redex, f


QUIET = 0.08  # how long "nothing happens" is observed


def test_never_policy_syncs_only_on_sync_and_close(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path)
    try:
        for i in range(50):
            f.append(b"p%d" % i)
        f.append_batch([b"b"] * 20)
        time.sleep(QUIET)
        assert _live_fsyncs(ops) == 0
        f.sync()
        assert _live_fsyncs(ops) == 3
        f.append(b"one more")
        f.close()
        assert _live_fsyncs(ops) == 6
    finally:
        redex.close()


def test_every_n_policy(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_every_n=3)
    try:
        f.append(b"1")
        f.append(b"2")
        time.sleep(QUIET)
        assert _live_fsyncs(ops) == 0
        f.append(b"3")
        assert wait_until(lambda: _live_fsyncs(ops) >= 3)
        time.sleep(QUIET)
        assert _live_fsyncs(ops) == 3
        f.append_batch([b"a", b"b", b"c", b"d"])  # a batch counts its size
        assert wait_until(lambda: _live_fsyncs(ops) >= 6)
    finally:
        redex.close()


def test_interval_policy(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_interval_ms=10)
    try:
        f.append(b"x")
        assert wait_until(lambda: _live_fsyncs(ops) >= 9)  # three timer rounds
    finally:
        redex.close()


def test_bytes_policy(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_max_bytes=200)
    try:
        for _ in range(5):
            f.append(b"0123456789")  # 10 + 20 + 8 = 38 bytes each: 190 in all
        time.sleep(QUIET)
        assert _live_fsyncs(ops) == 0
        f.append(b"0123456789")  # 228 >= 200
        assert wait_until(lambda: _live_fsyncs(ops) >= 3)
        time.sleep(QUIET)
        assert _live_fsyncs(ops) == 3
        f.append(b"x" * 500)
        assert wait_until(lambda: _live_fsyncs(ops) >= 6)
    finally:
        redex.close()


def test_interval_or_bytes_policy_bytes_arm(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_interval_ms=60_000, fsync_max_bytes=200)
    try:
        f.append(b"x" * 100)
        time.sleep(QUIET)
        assert _live_fsyncs(ops) == 0
        f.append(b"x" * 100)
        assert wait_until(lambda: _live_fsyncs(ops) >= 3)
    finally:
        redex.close()


def test_interval_or_bytes_policy_timer_arm(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_interval_ms=10, fsync_max_bytes=10**9)
    try:
        f.append(b"x")
        assert wait_until(lambda: _live_fsyncs(ops) >= 6)
    finally:
        redex.close()


def _wait_for_background_failure(f: RedexFile, ops: FaultyOps) -> None:
    assert wait_until(lambda: ops.faults[0].fired == 1)
    # The worker records the failure right after the fsync raised.
    assert wait_until(lambda: f._fsync_error is not None)


def test_failed_background_fsync_surfaces_on_the_next_append(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_every_n=1)
    try:
        ops.fail("fsync", err=errno.EIO)
        assert f.append(b"first") == 0
        _wait_for_background_failure(f, ops)
        with pytest.raises(FsyncError):
            f.append(b"refused")
        assert f.len_and_next_seq() == (1, 1)
        # Reported once; the worker kept running and syncs again.
        synced = _live_fsyncs(ops)
        assert f.append(b"second") == 1
        assert wait_until(lambda: _live_fsyncs(ops) >= synced + 3)
        assert f.append_batch([b"a", b"b"]) == 2
    finally:
        redex.close()


def test_failed_background_fsync_surfaces_on_batch(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_every_n=1)
    try:
        ops.fail("fsync", err=errno.EIO)
        f.append(b"first")
        _wait_for_background_failure(f, ops)
        with pytest.raises(FsyncError):
            f.append_batch([b"refused", b"too"])
        assert f.next_seq == 1
    finally:
        redex.close()


def test_failed_background_fsync_surfaces_on_sync(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_max_bytes=10)
    try:
        ops.fail("fsync", err=errno.EIO)
        f.append(b"0123456789")
        _wait_for_background_failure(f, ops)
        synced = _live_fsyncs(ops)
        with pytest.raises(FsyncError):
            f.sync()
        assert _live_fsyncs(ops) == synced + 3  # sync() retried before reporting
        f.sync()  # reported once
    finally:
        redex.close()


def test_failing_foreground_sync_raises(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path)
    try:
        f.append(b"x")
        ops.fail("fsync", match="/idx", err=errno.EIO)
        with pytest.raises(RedexIOError):
            f.sync()
        f.sync()
    finally:
        redex.close()


@pytest.mark.parametrize(
    "policy",
    [{}, {"fsync_every_n": 1000}, {"fsync_interval_ms": 60_000}, {"fsync_max_bytes": 10**9}],
    ids=["never", "every_n", "interval", "bytes"],
)
def test_close_always_fsyncs(tmp_path: Path, policy: Mapping[str, Any]) -> None:
    ops, redex, f = _open_policy(tmp_path, **policy)
    try:
        f.append(b"x")
        time.sleep(0.01)
        assert _live_fsyncs(ops) == 0
        f.close()
        assert _live_fsyncs(ops) == 3
        assert {t.rsplit("/", 1)[-1] for (o, t) in ops.calls_on if o == "fsync"} == {
            "dat",
            "idx",
            "ts",
        }
    finally:
        redex.close()


def test_close_reports_an_unreported_background_fsync_failure(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path, fsync_every_n=1)
    try:
        ops.fail("fsync", err=errno.EIO)
        f.append(b"x")
        _wait_for_background_failure(f, ops)
        with pytest.raises(FsyncError):
            f.close()
    finally:
        redex.close()


def test_close_reports_a_failed_final_fsync(tmp_path: Path) -> None:
    ops, redex, f = _open_policy(tmp_path)
    try:
        f.append(b"x")
        ops.fail("fsync", err=errno.EIO)
        with pytest.raises(RedexIOError):
            f.close()
    finally:
        redex.close()
