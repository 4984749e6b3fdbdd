"""Tests of the pure recovery planner: the reference's walk, tombstoning, fuzzing, oracle."""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path
from types import ModuleType

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from net_core.redex._format import (
    FLAG_COMPACTED,
    FLAG_INLINE,
    FLAG_TOMBSTONE,
    IDX_RECORD_SIZE,
    MAX_SEQ,
    IdxRecord,
    Manifest,
    decode_records,
    decode_timestamps,
    encode_records,
    encode_timestamps,
    entry_checksum,
    generation_dir_name,
    heap_record,
    inline_record,
)
from net_core.redex._recovery import (
    RecoveryPlan,
    apply_plan_to_bytes,
    live_records,
    plan_recovery,
)

reference: ModuleType | None
try:
    import net as reference
except ImportError:
    reference = None

needs_reference = pytest.mark.skipif(reference is None, reason="ai2070-net not installed")

NOW = 9_999_999_999


@attrs.frozen
class Files:
    """The three files of one generation, as bytes (``ts`` None = file missing)."""

    idx: bytes
    dat: bytes
    ts: bytes | None


@attrs.frozen
class Written:
    """A valid file set and what it holds."""

    files: Files
    records: list[IdxRecord]
    payloads: list[bytes]
    stamps: list[int]


def build(entries: list[tuple[bytes, bool]], first_seq: int = 0) -> Written:
    """Write ``(payload, inline)`` entries the way an appender would."""
    records: list[IdxRecord] = []
    dat = bytearray()
    for seq, (payload, inline) in enumerate(entries, start=first_seq):
        if inline:
            records.append(inline_record(seq, payload))
        else:
            records.append(heap_record(seq, len(dat), len(payload), payload))
            dat += payload
    stamps = [1_000 + 10 * i for i in range(len(records))]
    files = Files(encode_records(records), bytes(dat), encode_timestamps(stamps))
    return Written(files, records, [p for p, _ in entries], stamps)


def plan(files: Files, now: int = NOW) -> RecoveryPlan:
    return plan_recovery(files.idx, files.dat, files.ts, now_ns=now)


def apply(files: Files, p: RecoveryPlan) -> Files:
    return Files(*apply_plan_to_bytes(files.idx, files.dat, files.ts, p))


def live(p: RecoveryPlan) -> list[IdxRecord]:
    return live_records(p)


def payload_of(rec: IdxRecord, dat: bytes) -> bytes:
    return rec.inline_payload if rec.is_inline else dat[rec.offset : rec.payload_end]


def flip(buf: bytes, position: int, mask: int = 0xFF) -> bytes:
    out = bytearray(buf)
    out[position] ^= mask
    return bytes(out)


def tombstoned(rec: IdxRecord) -> IdxRecord:
    return attrs.evolve(rec, flags=rec.flags | FLAG_TOMBSTONE)


def same_outcome(a: RecoveryPlan, b: RecoveryPlan) -> bool:
    return (
        a.seqs,
        a.offsets,
        a.lengths,
        a.words,
        a.timestamps,
        a.positions,
        a.tombstones,
        a.next_seq,
        a.seq_space_exhausted,
        a.dat_len,
    ) == (
        b.seqs,
        b.offsets,
        b.lengths,
        b.words,
        b.timestamps,
        b.positions,
        b.tombstones,
        b.next_seq,
        b.seq_space_exhausted,
        b.dat_len,
    )


def assert_fixed_point(files: Files, p: RecoveryPlan) -> Files:
    """Applying ``p`` leaves aligned files that a second walk does not change."""
    repaired = apply(files, p)
    assert repaired.ts is not None
    n_live = len(p.seqs)
    total = n_live + len(p.tombstones)
    assert len(repaired.idx) == IDX_RECORD_SIZE * total
    assert len(repaired.ts) == 8 * total
    assert len(repaired.dat) == p.dat_len
    on_disk = decode_records(repaired.idx)
    stamps = decode_timestamps(repaired.ts, total)
    assert stamps is not None
    assert [on_disk[i] for i in p.positions] == live(p)
    assert [stamps[i] for i in p.positions] == list(p.timestamps)
    dead = [i for i in range(total) if i not in set(p.positions)]
    assert all(on_disk[i].flags & FLAG_TOMBSTONE for i in dead)
    assert not any(rec.flags & FLAG_TOMBSTONE for rec in live(p))
    assert [(on_disk[i].seq, stamps[i]) for i in dead] == list(p.tombstones)
    for rec in live(p):
        assert entry_checksum(payload_of(rec, repaired.dat)) == rec.checksum
    again = plan(repaired, now=NOW + 1)
    assert not again.changes_files
    assert same_outcome(again, p)
    assert again.dropped_corrupt == again.dropped_torn == again.timestamps_filled == 0
    return repaired


THREE = [(b"alpha", False), (b"beta", False), (b"gamma", False)]


# -- the reference walk ----------------------------------------------------------------------


def test_clean_files_need_nothing() -> None:
    w = build([*THREE, (b"inline!!", True), (b"", False)], first_seq=7)
    p = plan(w.files)
    assert live(p) == w.records
    assert list(p.timestamps) == w.stamps
    assert list(p.positions) == [0, 1, 2, 3, 4]
    assert list(p.offsets)[3:4] == [w.records[3].offset]
    assert list(p.words) == [r.flags | r.checksum for r in w.records]
    assert p.tombstones == p.tombstone_writes == ()
    assert (p.next_seq, p.seq_space_exhausted) == (12, False)
    assert p.dat_len == len(w.files.dat)
    assert not p.changes_files
    assert (p.dropped_corrupt, p.dropped_torn, p.timestamps_filled) == (0, 0, 0)


def test_column_types() -> None:
    p = plan(build(THREE).files)
    for column in (p.seqs, p.offsets, p.lengths, p.timestamps, p.positions):
        assert (column.typecode, column.itemsize) == ("Q", 8)
    assert p.words.itemsize == 4


def test_empty_generation() -> None:
    p = plan(Files(b"", b"", b""))
    assert live(p) == []
    assert p.next_seq == 0
    assert p.dat_len == 0
    assert not p.changes_files
    # A missing ts file is (re)created, empty.
    missing = plan(Files(b"", b"", None))
    assert missing.ts_append == b""
    assert missing.changes_files
    assert apply(Files(b"", b"", None), missing) == Files(b"", b"", b"")


def test_empty_files_with_garbage() -> None:
    p = plan(Files(b"\x01" * 19, b"junk", b"\x02" * 7))
    assert (p.idx_truncate_to, p.dat_truncate_to, p.ts_truncate_to) == (0, 0, 0)
    assert p.ts_append is None
    assert p.dropped_torn == 1
    assert p.next_seq == 0
    assert_fixed_point(Files(b"\x01" * 19, b"junk", b"\x02" * 7), p)


def test_partial_idx_tail_is_cut() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, idx=w.files.idx + b"garbage")
    p = plan(files)
    assert p.idx_truncate_to == 60
    assert p.dropped_torn == 1
    assert live(p) == w.records
    assert (p.ts_truncate_to, p.ts_append) == (None, None)
    assert p.next_seq == 3
    assert_fixed_point(files, p)


def test_torn_dat_cuts_the_last_event_and_its_seq_is_not_counted() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, dat=w.files.dat[:-2])
    p = plan(files)
    assert live(p) == w.records[:2]
    assert p.idx_truncate_to == 40
    assert p.dat_truncate_to == len(b"alphabeta")
    assert p.ts_truncate_to == 16
    assert p.ts_append is None
    assert p.dropped_torn == 1
    assert p.dropped_corrupt == 0
    # The cut record's append never returned: its seq was never acknowledged.
    assert p.next_seq == 2
    assert_fixed_point(files, p)


def test_torn_dat_keeps_inline_records_before_the_torn_heap_record() -> None:
    w = build([(b"aa", False), (b"INLINE01", True), (b"INLINE02", True), (b"bbbb", False)])
    files = attrs.evolve(w.files, dat=w.files.dat[:4])
    p = plan(files)
    assert live(p) == w.records[:3]
    assert p.dropped_torn == 1
    assert p.idx_truncate_to == 60
    assert p.dat_truncate_to == 2
    assert p.next_seq == 3
    assert_fixed_point(files, p)


def test_torn_rule_skips_inline_records_but_cuts_those_after() -> None:
    w = build([(b"aa", False), (b"INLINE01", True), (b"bbbb", False), (b"INLINE02", True)])
    files = attrs.evolve(w.files, dat=w.files.dat[:3])
    p = plan(files)
    assert live(p) == w.records[:2]
    assert p.dropped_torn == 2
    assert p.idx_truncate_to == 40
    assert p.dat_truncate_to == 2
    assert_fixed_point(files, p)


def test_trailing_dat_garbage_is_trimmed() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, dat=w.files.dat + b"junk")
    p = plan(files)
    assert p.dat_truncate_to == len(w.files.dat)
    assert live(p) == w.records
    assert p.idx_truncate_to is None
    assert (p.ts_truncate_to, p.ts_append) == (None, None)
    assert_fixed_point(files, p)


# -- tombstoning: fix (a), ts stays aligned --------------------------------------------------


def test_mid_file_corrupt_payload_is_tombstoned_in_place() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, dat=flip(w.files.dat, 6))  # inside "beta"
    p = plan(files)
    assert live(p) == [w.records[0], w.records[2]]
    assert list(p.positions) == [0, 2]
    assert list(p.timestamps) == [w.stamps[0], w.stamps[2]]
    assert p.tombstones == ((1, w.stamps[1]),)
    word = w.records[1].flags | w.records[1].checksum
    assert p.tombstone_writes == ((IDX_RECORD_SIZE + 16, word | FLAG_TOMBSTONE),)
    assert p.dropped_corrupt == 1
    # No idx rewrite or truncation, ts untouched and still aligned, "beta" kept as dead
    # space so the reference still finds (and rejects) its bytes.
    assert (p.idx_truncate_to, p.dat_truncate_to, p.ts_truncate_to, p.ts_append) == (
        None,
        None,
        None,
        None,
    )
    assert p.next_seq == 3
    repaired = assert_fixed_point(files, p)
    assert repaired.ts == files.ts
    assert decode_records(repaired.idx)[1] == tombstoned(w.records[1])
    # Every later plan agrees, and the checksum bits were left alone.
    for _ in range(3):
        again = plan(repaired)
        assert same_outcome(again, p)
        assert again.next_seq == 3
    assert decode_records(repaired.idx)[1].checksum == w.records[1].checksum


def test_corrupt_last_record_is_tombstoned_and_its_seq_stays_burnt() -> None:
    w = build(THREE, first_seq=10)
    files = attrs.evolve(w.files, dat=flip(w.files.dat, len(w.files.dat) - 1))
    p = plan(files)
    assert live(p) == w.records[:2]
    assert p.tombstones == ((12, w.stamps[2]),)
    assert p.next_seq == 13
    assert p.idx_truncate_to is None
    # The tombstoned record's payload still fits, so dat keeps it.
    assert p.dat_truncate_to is None
    assert p.dat_len == len(w.files.dat)
    repaired = assert_fixed_point(files, p)
    for now in range(3):
        assert plan(repaired, now=now).next_seq == 13


def test_corrupt_inline_record_is_tombstoned() -> None:
    w = build([(b"INLINE01", True), (b"x", False)])
    files = attrs.evolve(w.files, idx=flip(w.files.idx, 8))
    p = plan(files)
    assert live(p) == [w.records[1]]
    assert p.tombstones == ((0, w.stamps[0]),)
    ((at, word),) = p.tombstone_writes
    assert at == 16
    assert word & FLAG_INLINE
    assert word & FLAG_TOMBSTONE
    assert_fixed_point(files, p)


def test_corrupt_checksum_word_is_tombstoned() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, idx=flip(w.files.idx, IDX_RECORD_SIZE + 16, 0x01))
    p = plan(files)
    assert [r.seq for r in live(p)] == [0, 2]
    assert_fixed_point(files, p)


def test_mid_file_heap_record_past_dat_is_tombstoned_and_dat_not_extended() -> None:
    good = [heap_record(0, 0, 3, b"abc"), heap_record(2, 3, 2, b"de")]
    stray = heap_record(1, 100, 3, b"zzz")
    files = Files(encode_records([good[0], stray, good[1]]), b"abcdeXY", encode_timestamps([1, 2]))
    p = plan(files)
    assert live(p) == good
    assert list(p.timestamps) == [1, NOW]
    assert p.tombstones == ((1, 2),)
    assert p.dropped_corrupt == 1
    assert p.dropped_torn == 0
    # The stray record contributes nothing to dat, which is trimmed to the last fitting end.
    assert p.dat_len == 5
    assert p.dat_truncate_to == 5
    assert p.ts_append == encode_timestamps([NOW])
    assert p.timestamps_filled == 1
    assert_fixed_point(files, p)


def test_unknown_flags_on_a_heap_record_are_verified_and_kept() -> None:
    rec = IdxRecord(0, 0, 1, FLAG_COMPACTED | 0x1000_0000, entry_checksum(b"a"))
    files = Files(encode_records([rec]), b"a", encode_timestamps([5]))
    p = plan(files)
    assert live(p) == [rec]
    assert not p.changes_files
    bad = attrs.evolve(rec, checksum=rec.checksum ^ 1)
    assert plan(attrs.evolve(files, idx=encode_records([bad]))).dropped_corrupt == 1


# -- records tombstoned earlier ---------------------------------------------------------------


def test_existing_tombstones_are_skipped_and_not_verified() -> None:
    # A tombstone with a *valid* checksum, a heap tombstone past dat, an inline tombstone
    # with a bad checksum: none is verified, none is live, none is tombstoned again.
    recs = [
        heap_record(0, 0, 1, b"a"),
        tombstoned(heap_record(1, 1, 1, b"b")),
        tombstoned(heap_record(2, 500, 4, b"zzzz")),
        tombstoned(attrs.evolve(inline_record(3, b"INLINE01"), checksum=0)),
        heap_record(4, 2, 1, b"c"),
    ]
    files = Files(encode_records(recs), b"abc", encode_timestamps([10, 11, 12, 13, 14]))
    p = plan(files)
    assert live(p) == [recs[0], recs[4]]
    assert list(p.positions) == [0, 4]
    assert p.tombstones == ((1, 11), (2, 12), (3, 13))
    assert p.tombstone_writes == ()
    assert p.dropped_corrupt == 0
    assert not p.changes_files
    assert p.next_seq == 5


def test_a_tombstoned_heap_record_holds_its_dat_bytes() -> None:
    recs = [heap_record(0, 0, 1, b"a"), tombstoned(heap_record(1, 1, 2, b"bc"))]
    files = Files(encode_records(recs), b"abc!", encode_timestamps([1, 2]))
    p = plan(files)
    assert live(p) == recs[:1]
    assert p.dat_len == 3
    assert p.dat_truncate_to == 3
    assert p.next_seq == 2
    assert_fixed_point(files, p)


def test_torn_rule_ignores_the_tombstone_flag() -> None:
    # Like the reference: a tombstoned heap record at the tail past the end of dat is cut
    # (and its seq no longer counts); a tombstoned inline record is skipped by the walk.
    recs = [
        heap_record(0, 0, 1, b"a"),
        tombstoned(inline_record(1, b"INLINE01")),
        tombstoned(heap_record(2, 1, 5, b"bcdef")),
        inline_record(3, b"INLINE02"),
    ]
    files = Files(encode_records(recs), b"abc", encode_timestamps([1, 2, 3, 4]))
    p = plan(files)
    assert live(p) == recs[:1]
    assert p.tombstones == ((1, 2),)
    assert p.idx_truncate_to == 40
    assert p.dropped_torn == 2
    assert p.next_seq == 2
    assert_fixed_point(files, p)


# -- next_seq ---------------------------------------------------------------------------------


def test_next_seq_is_past_the_highest_seq_that_remains() -> None:
    recs = [heap_record(5, 0, 1, b"a"), heap_record(3, 1, 1, b"b")]
    p = plan(Files(encode_records(recs), b"ab", encode_timestamps([1, 2])))
    assert p.next_seq == 6


def test_highest_seq_counts_even_when_tombstoned() -> None:
    recs = [heap_record(9, 0, 1, b"a"), heap_record(3, 1, 1, b"b")]
    files = Files(encode_records(recs), flip(b"ab", 0), encode_timestamps([1, 2]))
    p = plan(files)
    assert [r.seq for r in live(p)] == [3]
    assert p.next_seq == 10
    assert plan(apply(files, p)).next_seq == 10


@pytest.mark.parametrize(
    ("last_seq", "next_seq", "exhausted"),
    [(MAX_SEQ - 1, MAX_SEQ, False), (MAX_SEQ, MAX_SEQ, True)],
)
def test_seq_space_exhaustion_is_flagged(last_seq: int, next_seq: int, exhausted: bool) -> None:
    recs = [heap_record(0, 0, 1, b"a"), heap_record(last_seq, 1, 1, b"b")]
    files = Files(encode_records(recs), b"ab", encode_timestamps([1, 2]))
    p = plan(files)
    assert (p.next_seq, p.seq_space_exhausted) == (next_seq, exhausted)
    # Also when the record with the highest seq is tombstoned.
    corrupt = plan(attrs.evolve(files, dat=b"aX"))
    assert (corrupt.next_seq, corrupt.seq_space_exhausted) == (next_seq, exhausted)


# -- timestamps ----------------------------------------------------------------------------


def test_missing_ts_file_gets_now_and_is_created() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, ts=None, dat=flip(w.files.dat, 0))
    p = plan(files)
    assert list(p.timestamps) == [NOW, NOW]
    assert p.tombstones == ((0, NOW),)
    assert p.timestamps_filled == 3
    assert p.ts_truncate_to is None
    assert p.ts_append == encode_timestamps([NOW] * 3)
    assert_fixed_point(files, p)


def test_short_ts_keeps_the_present_entries_and_appends_the_rest() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, ts=encode_timestamps(w.stamps[:1]) + b"\x01\x02")
    p = plan(files)
    assert list(p.timestamps) == [w.stamps[0], NOW, NOW]
    assert p.timestamps_filled == 2
    # The torn partial entry goes first, then the missing entries are appended.
    assert p.ts_truncate_to == 8
    assert p.ts_append == encode_timestamps([NOW, NOW])
    repaired = assert_fixed_point(files, p)
    assert repaired.ts == encode_timestamps([w.stamps[0], NOW, NOW])


def test_short_ts_without_partial_entry_is_only_appended() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, ts=encode_timestamps(w.stamps[:2]))
    p = plan(files)
    assert p.ts_truncate_to is None
    assert p.ts_append == encode_timestamps([NOW])
    assert_fixed_point(files, p)


def test_long_ts_is_truncated() -> None:
    w = build(THREE)
    assert w.files.ts is not None
    files = attrs.evolve(w.files, ts=w.files.ts + encode_timestamps([5]) + b"\x00")
    p = plan(files)
    assert list(p.timestamps) == w.stamps
    assert p.ts_truncate_to == 24
    assert p.ts_append is None
    assert p.timestamps_filled == 0
    assert_fixed_point(files, p)


def test_reference_misaligned_files_are_repaired() -> None:
    # What the reference leaves after dropping a corrupt record: idx N, ts N-1.
    w = build(THREE)
    files = Files(w.files.idx, flip(w.files.dat, 6), encode_timestamps([w.stamps[0], w.stamps[2]]))
    p = plan(files)
    assert live(p) == [w.records[0], w.records[2]]
    # ts is read as aligned with idx: the missing tail entry gets now, and from then on
    # the files stay one-to-one.
    assert list(p.timestamps) == [w.stamps[0], NOW]
    assert p.tombstones == ((1, w.stamps[2]),)
    assert p.ts_append == encode_timestamps([NOW])
    assert_fixed_point(files, p)


# -- inputs and helpers ----------------------------------------------------------------------


def test_any_bytes_like_input(tmp_path: Path) -> None:
    w = build([*THREE, (b"INLINE01", True)])
    files = attrs.evolve(w.files, dat=flip(w.files.dat, 0) + b"junk")
    expected = plan(files)
    assert files.ts is not None
    assert same_outcome(
        plan_recovery(
            bytearray(files.idx),
            memoryview(bytearray(files.dat)),
            memoryview(files.ts).cast("Q"),
            now_ns=NOW,
        ),
        expected,
    )
    path = tmp_path / "dat"
    path.write_bytes(files.dat)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        from_map = plan_recovery(files.idx, mapped, files.ts, now_ns=NOW)
    # The planner released the mapping (mmap.close() would have failed otherwise).
    assert same_outcome(from_map, expected)
    assert from_map.dat_truncate_to == expected.dat_truncate_to


def test_apply_plan_to_bytes_order() -> None:
    w = build(THREE)
    files = Files(w.files.idx + b"x", flip(w.files.dat, 0) + b"y", b"\x01" * 12)
    p = plan(files)
    idx, dat, ts = apply_plan_to_bytes(files.idx, files.dat, files.ts, p)
    assert len(idx) == 60
    assert decode_records(idx)[0].flags == FLAG_TOMBSTONE
    assert dat == files.dat[:-1]
    assert ts == b"\x01" * 8 + encode_timestamps([NOW, NOW])


# -- hypothesis ----------------------------------------------------------------------------

entries = st.lists(
    st.one_of(
        st.tuples(st.binary(max_size=12), st.just(False)),
        st.tuples(st.binary(min_size=8, max_size=8), st.just(True)),
    ),
    max_size=10,
)


@attrs.frozen
class Damage:
    """A valid file set and the damage done to it."""

    written: Written
    idx_len: int
    dat_len: int
    dat_flip: int | None
    inline_flip: int | None
    ts: bytes | None

    @property
    def files(self) -> Files:
        files = self.written.files
        idx = files.idx
        if self.inline_flip is not None:
            idx = flip(idx, self.inline_flip * IDX_RECORD_SIZE + 8)
        dat = files.dat if self.dat_flip is None else flip(files.dat, self.dat_flip)
        return Files(idx[: self.idx_len], dat[: self.dat_len], self.ts)


@st.composite
def damaged(draw: st.DrawFn) -> Damage:
    w = build(draw(entries), first_seq=draw(st.integers(0, 2**40)))
    idx, dat, ts = w.files.idx, w.files.dat, w.files.ts
    assert ts is not None
    idx_len = draw(st.one_of(st.just(len(idx)), st.integers(0, len(idx))))
    dat_len = draw(st.one_of(st.just(len(dat)), st.integers(0, len(dat))))
    dat_flip = draw(st.one_of(st.none(), st.integers(0, len(dat) - 1))) if dat else None
    inline = [i for i, r in enumerate(w.records) if r.is_inline]
    inline_flip = draw(st.one_of(st.none(), st.sampled_from(inline))) if inline else None
    ts_damaged = draw(
        st.one_of(
            st.just(ts),
            st.none(),
            st.integers(0, len(ts)).map(lambda n: ts[:n]),
            st.binary(min_size=1, max_size=20).map(lambda extra: ts + extra),
        )
    )
    return Damage(w, idx_len, dat_len, dat_flip, inline_flip, ts_damaged)


def expected_outcome(d: Damage) -> tuple[int, int, list[int]]:
    """(whole records, records kept by the torn rules, intact indices), from the spec."""
    records = d.written.records
    complete = d.idx_len // IDX_RECORD_SIZE
    # Heap payloads are laid out in order, so the torn-dat cut is at the first heap record
    # that ends past the end of dat.
    torn = (i for i, r in enumerate(records[:complete]) if r.payload_end > d.dat_len)
    keep = next((i for i in torn if not records[i].is_inline), complete)

    def intact(i: int) -> bool:
        rec = records[i]
        if rec.is_inline:
            return i != d.inline_flip
        return d.dat_flip is None or not rec.offset <= d.dat_flip < rec.payload_end

    return complete, keep, [i for i in range(keep) if intact(i)]


@given(damaged())
def test_recovery_of_damaged_files(d: Damage) -> None:
    files = d.files
    p = plan(files)
    records = d.written.records
    complete, keep, intact = expected_outcome(d)
    dead = [i for i in range(keep) if i not in intact]
    present = len(d.ts) // 8 if d.ts is not None else 0

    def stamp(i: int) -> int:
        return d.written.stamps[i] if i < present else NOW

    # Live records are exactly the kept records whose payloads are intact.
    assert live(p) == [records[i] for i in intact]
    assert list(p.positions) == intact
    assert list(p.timestamps) == [stamp(i) for i in intact]
    assert p.tombstones == tuple((records[i].seq, stamp(i)) for i in dead)
    assert p.timestamps_filled == max(keep - present, 0)
    assert p.dropped_corrupt == len(dead)
    assert p.dropped_torn == complete - keep + (1 if d.idx_len % IDX_RECORD_SIZE else 0)
    seqs = [r.seq for r in records[:keep]]
    assert p.next_seq == (max(seqs) + 1 if seqs else 0)
    assert not p.seq_space_exhausted
    assert_fixed_point(files, p)


@given(
    st.binary(max_size=120),
    st.binary(max_size=40),
    st.one_of(st.none(), st.binary(max_size=60)),
)
def test_recovery_of_arbitrary_bytes(idx: bytes, dat: bytes, ts: bytes | None) -> None:
    files = Files(idx, dat, ts)
    p = plan(files)
    assert len(p.timestamps) == len(p.seqs) == len(p.positions)
    for rec in live(p):
        if not rec.is_inline:
            assert rec.payload_end <= p.dat_len
        assert entry_checksum(payload_of(rec, dat)) == rec.checksum
    whole = decode_records(idx[: len(idx) - len(idx) % IDX_RECORD_SIZE])
    kept = whole[: len(p.seqs) + len(p.tombstones)]
    expected = max((r.seq + 1 for r in kept), default=0)
    assert p.next_seq == min(expected, MAX_SEQ)
    assert p.seq_space_exhausted == (expected > MAX_SEQ)
    assert p.dropped_torn + len(kept) >= len(whole)
    assert_fixed_point(files, p)


@st.composite
def corruption(draw: st.DrawFn, files: Files) -> Files:
    """Flip payload bytes (dat or inline) or checksum bits, never a length or offset."""
    idx, dat = bytearray(files.idx), bytearray(files.dat)
    records = decode_records(files.idx)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["dat", "inline", "checksum"]))
        if kind == "dat" and dat:
            dat[draw(st.integers(0, len(dat) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "inline" and any(r.is_inline for r in records):
            i = draw(st.sampled_from([i for i, r in enumerate(records) if r.is_inline]))
            idx[i * IDX_RECORD_SIZE + draw(st.integers(8, 15))] ^= draw(st.integers(1, 255))
        elif kind == "checksum" and records:
            i = draw(st.integers(0, len(records) - 1))
            at = i * IDX_RECORD_SIZE + 16
            word = int.from_bytes(idx[at : at + 4], "little")
            word ^= 1 << draw(st.integers(0, 27))
            idx[at : at + 4] = word.to_bytes(4, "little")
    return Files(bytes(idx), bytes(dat), files.ts)


def append(files: Files, p: RecoveryPlan, entries: list[tuple[bytes, bool]]) -> Files:
    """Append entries after ``p`` was applied, the way the file layer would."""
    assert files.ts is not None
    records: list[IdxRecord] = []
    dat = bytearray(files.dat)
    for seq, (payload, inline) in enumerate(entries, start=p.next_seq):
        if inline:
            records.append(inline_record(seq, payload))
        else:
            records.append(heap_record(seq, len(dat), len(payload), payload))
            dat += payload
    stamps = encode_timestamps(range(len(records)))
    return Files(files.idx + encode_records(records), bytes(dat), files.ts + stamps)


@settings(max_examples=60)
@given(st.data(), entries)
def test_repeated_plan_apply_corrupt_cycles(
    data: st.DataObject, first: list[tuple[bytes, bool]]
) -> None:
    files = build(first).files
    last_next = 0
    tombstoned_seqs: set[int] = set()
    for _ in range(4):
        files = data.draw(corruption(files))
        p = plan(files)
        assert p.next_seq >= last_next
        last_next = p.next_seq
        # Once tombstoned, always tombstoned; live payloads are intact.
        now_dead = {seq for seq, _ in p.tombstones}
        assert tombstoned_seqs <= now_dead
        tombstoned_seqs = now_dead
        assert len(p.tombstones) + len(p.seqs) == len(files.idx) // IDX_RECORD_SIZE
        for rec in live(p):
            assert entry_checksum(payload_of(rec, files.dat)) == rec.checksum
        files = assert_fixed_point(files, p)
        files = append(files, p, data.draw(entries))


# -- oracle ----------------------------------------------------------------------------------


def write_generation(base: Path, channel: str, files: Files) -> Path:
    channel_dir = base / channel
    gen = channel_dir / generation_dir_name(1)
    gen.mkdir(parents=True)
    (gen / "idx").write_bytes(files.idx)
    (gen / "dat").write_bytes(files.dat)
    # The reference wants all three files for a complete generation.
    (gen / "ts").write_bytes(files.ts or b"")
    (channel_dir / "manifest").write_bytes(Manifest(1).encode())
    return gen


def reference_read(base: Path, channel: str) -> list[tuple[int, bytes, bool]]:
    assert reference is not None
    file = reference.Redex(persistent_dir=str(base)).open_file(channel, persistent=True)
    try:
        events = file.read_range(0, 2**63)
    finally:
        file.close()
    return [(e.seq, bytes(e.payload), e.is_inline) for e in events]


def ours(p: RecoveryPlan, dat: bytes) -> list[tuple[int, bytes, bool]]:
    return [(r.seq, payload_of(r, dat), r.is_inline) for r in live(p)]


@pytest.mark.oracle
@needs_reference
@settings(max_examples=60)
@given(damaged())
def test_oracle_reference_keeps_the_same_records(d: Damage) -> None:
    files = d.files
    p = plan(files)
    with tempfile.TemporaryDirectory() as tmp:
        write_generation(Path(tmp), "c", files)
        assert reference_read(Path(tmp), "c") == ours(p, files.dat)


@pytest.mark.oracle
@needs_reference
@settings(max_examples=60)
@given(damaged())
def test_oracle_reference_reads_our_repaired_files(d: Damage) -> None:
    files = d.files
    p = plan(files)
    repaired = apply(files, p)
    with tempfile.TemporaryDirectory() as tmp:
        write_generation(Path(tmp), "c", repaired)
        assert reference_read(Path(tmp), "c") == ours(p, repaired.dat)


@pytest.mark.oracle
@needs_reference
def test_oracle_reference_written_channel_with_a_corrupt_middle_record(tmp_path: Path) -> None:
    assert reference is not None
    written = tmp_path / "written"
    file = reference.Redex(persistent_dir=str(written)).open_file("chan", persistent=True)
    payloads = [f"event-{i}-payload".encode() for i in range(5)]
    for payload in payloads:
        file.append(payload)
    file.close()
    gen = written / "chan" / generation_dir_name(1)
    dat = (gen / "dat").read_bytes()
    middle = decode_records((gen / "idx").read_bytes())[2]
    files = Files(
        (gen / "idx").read_bytes(), flip(dat, middle.offset + 3), (gen / "ts").read_bytes()
    )

    p = plan(files)
    assert [r.seq for r in live(p)] == [0, 1, 3, 4]
    assert [seq for seq, _ in p.tombstones] == [2]
    assert p.next_seq == 5
    idx, dat, ts = apply_plan_to_bytes(files.idx, files.dat, files.ts, p)
    (gen / "idx").write_bytes(idx)
    (gen / "dat").write_bytes(dat)
    (gen / "ts").write_bytes(ts)

    # The reference ignores the tombstone flag, and drops the record by its checksum.
    assert reference_read(written, "chan") == ours(p, dat)
    assert [payload for _, payload, _ in ours(p, dat)] == [payloads[i] for i in (0, 1, 3, 4)]


@pytest.mark.oracle
@needs_reference
def test_oracle_reference_defects_that_we_fix(tmp_path: Path) -> None:
    assert reference is not None
    w = build(THREE)

    # (a) mid-file corruption: the reference keeps 3 idx records but only 2 timestamps;
    # with the record tombstoned, ours keeps 3 and 3.
    mid = attrs.evolve(w.files, dat=flip(w.files.dat, 6))
    gen = write_generation(tmp_path, "mid", mid)
    reference.Redex(persistent_dir=str(tmp_path)).open_file("mid", persistent=True).close()
    assert len((gen / "idx").read_bytes()) == 60
    assert len((gen / "ts").read_bytes()) == 16
    repaired = apply(mid, plan(mid))
    assert repaired.ts is not None
    assert (len(repaired.idx), len(repaired.ts)) == (60, 24)

    # (b) corrupt last record: the reference hands seq 2 out again; we never do.
    last = attrs.evolve(w.files, dat=flip(w.files.dat, len(w.files.dat) - 1))
    write_generation(tmp_path, "last", last)
    file = reference.Redex(persistent_dir=str(tmp_path)).open_file("last", persistent=True)
    assert file.append(b"again") == 2
    file.close()
    p = plan(last)
    assert p.next_seq == 3
    assert plan(apply(last, p)).next_seq == 3
