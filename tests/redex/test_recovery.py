"""Tests of the pure recovery planner: the reference's walk, our two fixes, fuzzing, oracle."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from net_core.redex._format import (
    IDX_RECORD_SIZE,
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
from net_core.redex._recovery import RecoveryPlan, plan_recovery

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
    dat = files.dat
    return plan_recovery(
        files.idx, len(dat), files.ts, lambda r: dat[r.offset : r.payload_end], now_ns=now
    )


def apply(files: Files, p: RecoveryPlan) -> Files:
    """Apply a plan's edits the way the file layer does."""
    idx = files.idx
    if p.idx_rewrite is not None:
        idx = p.idx_rewrite
    elif p.idx_truncate_to is not None:
        idx = idx[: p.idx_truncate_to]
    dat = files.dat if p.dat_truncate_to is None else files.dat[: p.dat_truncate_to]
    ts = files.ts if p.ts_rewrite is None else p.ts_rewrite
    return Files(idx, dat, ts)


def payload_of(rec: IdxRecord, dat: bytes) -> bytes:
    return rec.inline_payload if rec.is_inline else dat[rec.offset : rec.payload_end]


def flip(buf: bytes, position: int) -> bytes:
    out = bytearray(buf)
    out[position] ^= 0xFF
    return bytes(out)


def assert_fixed_point(files: Files, p: RecoveryPlan) -> Files:
    """Applying ``p`` leaves aligned files that a second walk does not change."""
    repaired = apply(files, p)
    assert repaired.ts is not None
    assert len(repaired.idx) == IDX_RECORD_SIZE * len(p.records)
    assert len(repaired.ts) == 8 * len(p.records)
    assert len(repaired.dat) == p.dat_len
    assert tuple(decode_records(repaired.idx)) == p.records
    assert tuple(decode_timestamps(repaired.ts, len(p.records)) or ()) == p.timestamps
    again = plan(repaired, now=NOW + 1)
    assert not again.changes_files
    assert again.records == p.records
    assert again.timestamps == p.timestamps
    assert again.dropped_corrupt == again.dropped_torn == 0
    assert not again.timestamps_missing
    return repaired


THREE = [(b"alpha", False), (b"beta", False), (b"gamma", False)]


# -- the reference walk ----------------------------------------------------------------------


def test_clean_files_need_nothing() -> None:
    w = build([*THREE, (b"inline!!", True), (b"", False)], first_seq=7)
    p = plan(w.files)
    assert p.records == tuple(w.records)
    assert p.timestamps == tuple(w.stamps)
    assert p.next_seq == 12
    assert p.dat_len == len(w.files.dat)
    assert not p.changes_files
    assert (p.dropped_corrupt, p.dropped_torn, p.timestamps_missing) == (0, 0, False)


def test_empty_generation() -> None:
    p = plan(Files(b"", b"", b""))
    assert p.records == ()
    assert p.next_seq == 0
    assert not p.changes_files
    # A missing ts file is (re)created.
    assert plan(Files(b"", b"", None)).ts_rewrite == b""


def test_partial_idx_tail_is_cut() -> None:
    w = build(THREE)
    p = plan(attrs.evolve(w.files, idx=w.files.idx + b"garbage"))
    assert p.idx_truncate_to == 60
    assert p.idx_rewrite is None
    assert p.dropped_torn == 1
    assert p.records == tuple(w.records)
    assert p.ts_rewrite is None
    assert p.next_seq == 3


def test_torn_dat_cuts_the_last_event() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, dat=w.files.dat[:-2])
    p = plan(files)
    assert p.records == tuple(w.records[:2])
    assert p.idx_truncate_to == 40
    assert p.dat_truncate_to == len(b"alphabeta")
    assert p.ts_rewrite == encode_timestamps(w.stamps[:2])
    assert p.dropped_torn == 1
    assert p.dropped_corrupt == 0
    assert p.next_seq == 3  # seq 2 reached idx; it is not handed out again
    assert_fixed_point(files, p)


def test_trailing_dat_garbage_is_trimmed() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, dat=w.files.dat + b"junk")
    p = plan(files)
    assert p.dat_truncate_to == len(w.files.dat)
    assert p.records == tuple(w.records)
    assert p.idx_truncate_to is None
    assert p.idx_rewrite is None
    assert p.ts_rewrite is None


def test_torn_rule_skips_inline_records_but_cuts_those_after() -> None:
    w = build([(b"aa", False), (b"INLINE01", True), (b"bbbb", False), (b"INLINE02", True)])
    files = attrs.evolve(w.files, dat=w.files.dat[:3])
    p = plan(files)
    assert p.records == tuple(w.records[:2])
    assert p.dropped_torn == 2
    assert p.idx_truncate_to == 40
    assert p.dat_truncate_to == 2
    assert_fixed_point(files, p)


def test_heap_record_past_dat_in_the_middle_is_corrupt_and_dat_not_extended() -> None:
    good = [heap_record(0, 0, 3, b"abc"), heap_record(2, 3, 2, b"de")]
    stray = heap_record(1, 100, 3, b"zzz")
    idx = encode_records([good[0], stray, good[1]])
    files = Files(idx, b"abcde", encode_timestamps([1, 2, 3]))
    called: list[int] = []

    def source(rec: IdxRecord) -> bytes:
        called.append(rec.seq)
        return files.dat[rec.offset : rec.payload_end]

    p = plan_recovery(files.idx, 5, files.ts, source, now_ns=NOW)
    assert called == [0, 2]
    assert p.records == tuple(good)
    assert p.dropped_corrupt == 1
    assert p.dropped_torn == 0
    assert p.dat_truncate_to is None
    assert p.idx_rewrite == encode_records(good)
    assert p.ts_rewrite == encode_timestamps([1, 3])
    assert_fixed_point(files, p)


def test_short_payload_from_source_is_corrupt() -> None:
    w = build(THREE)
    p = plan_recovery(w.files.idx, len(w.files.dat), w.files.ts, lambda r: b"", now_ns=NOW)
    assert p.records == ()
    assert p.dropped_corrupt == 3


def test_corrupt_inline_record_is_dropped() -> None:
    w = build([(b"INLINE01", True), (b"x", False)])
    files = attrs.evolve(w.files, idx=flip(w.files.idx, 8))
    p = plan(files)
    assert p.records == (w.records[1],)
    assert p.dropped_corrupt == 1
    assert_fixed_point(files, p)


# -- fix (a): a dropped corrupt record leaves idx too, ts stays aligned ----------------------


def test_mid_file_corruption_rewrites_idx_and_ts_aligned() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, dat=flip(w.files.dat, 6))  # inside "beta"
    p = plan(files)
    assert p.records == (w.records[0], w.records[2])
    assert p.timestamps == (w.stamps[0], w.stamps[2])
    assert p.dropped_corrupt == 1
    assert p.idx_rewrite == w.files.idx[:20] + w.files.idx[40:]
    assert p.idx_truncate_to is None
    assert p.ts_rewrite == encode_timestamps([w.stamps[0], w.stamps[2]])
    assert p.dat_truncate_to is None  # "beta"'s bytes stay as dead space
    assert p.next_seq == 3
    repaired = assert_fixed_point(files, p)
    # A later append keeps the files one-to-one.
    assert repaired.ts is not None
    assert len(repaired.idx) // IDX_RECORD_SIZE == len(repaired.ts) // 8


def test_idx_rewrite_keeps_record_bytes_verbatim() -> None:
    recs = [
        IdxRecord(0, 0, 1, 0x4000_0000, entry_checksum(b"a")),
        IdxRecord(1, 1, 1, 0, entry_checksum(b"?")),
        IdxRecord(2, 2, 1, 0x1000_0000, entry_checksum(b"c")),
    ]
    files = Files(encode_records(recs), b"abc", encode_timestamps([1, 2, 3]))
    p = plan(files)
    assert p.idx_rewrite == encode_records([recs[0], recs[2]])
    assert [r.flags for r in p.records] == [0x4000_0000, 0x1000_0000]


def test_reference_misaligned_files_are_repaired() -> None:
    # What the reference leaves after dropping a corrupt record: idx N, ts N-1.
    w = build(THREE)
    files = Files(w.files.idx, flip(w.files.dat, 6), encode_timestamps([w.stamps[0], w.stamps[2]]))
    p = plan(files)
    assert p.records == (w.records[0], w.records[2])
    # ts is read as aligned with idx: the missing tail entry gets now, and from then on
    # the files stay one-to-one.
    assert p.timestamps == (w.stamps[0], NOW)
    assert p.timestamps_missing
    assert_fixed_point(files, p)


# -- fix (b): the seq of a corrupt last record is never handed out again ----------------------


def test_corrupt_last_record_keeps_its_seq_burnt() -> None:
    w = build(THREE, first_seq=10)
    files = attrs.evolve(w.files, dat=flip(w.files.dat, len(w.files.dat) - 1))
    p = plan(files)
    assert p.records == tuple(w.records[:2])
    assert p.next_seq == 13
    assert p.idx_truncate_to == 40  # trailing drops need only a truncation
    assert p.idx_rewrite is None
    assert p.dat_truncate_to == len(b"alphabeta")
    assert_fixed_point(files, p)


def test_next_seq_is_past_the_highest_seq_read() -> None:
    recs = [heap_record(5, 0, 1, b"a"), heap_record(3, 1, 1, b"b")]
    p = plan(Files(encode_records(recs), b"ab", encode_timestamps([1, 2])))
    assert p.next_seq == 6


# -- timestamps ----------------------------------------------------------------------------


def test_missing_ts_file_gets_now_and_is_written() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, ts=None)
    p = plan(files)
    assert p.timestamps == (NOW, NOW, NOW)
    assert p.timestamps_missing
    assert p.timestamps_filled == 3
    assert p.ts_rewrite == encode_timestamps([NOW] * 3)
    assert_fixed_point(files, p)


def test_short_ts_keeps_the_timestamps_present() -> None:
    w = build(THREE)
    files = attrs.evolve(w.files, ts=encode_timestamps(w.stamps[:1]) + b"\x01\x02")
    p = plan(files)
    assert p.timestamps == (w.stamps[0], NOW, NOW)
    assert p.timestamps_filled == 2
    assert_fixed_point(files, p)


def test_long_ts_is_trimmed() -> None:
    w = build(THREE)
    assert w.files.ts is not None
    files = attrs.evolve(w.files, ts=w.files.ts + encode_timestamps([5]) + b"\x00")
    p = plan(files)
    assert p.timestamps == tuple(w.stamps)
    assert p.ts_rewrite == w.files.ts
    assert not p.timestamps_missing


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


def expected_survivors(d: Damage) -> tuple[int, int, list[int]]:
    """(whole records, records kept by the torn rules, surviving indices), from the spec."""
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
    complete, keep, survivors = expected_survivors(d)

    assert p.records == tuple(records[i] for i in survivors)
    for rec in p.records:
        assert entry_checksum(payload_of(rec, files.dat)) == rec.checksum
    present = len(d.ts) // 8 if d.ts is not None else 0
    assert p.timestamps == tuple(d.written.stamps[i] if i < present else NOW for i in survivors)
    assert p.timestamps_filled == sum(1 for i in survivors if i >= present)
    assert p.dropped_corrupt == keep - len(survivors)
    assert p.dropped_torn == complete - keep + (1 if d.idx_len % IDX_RECORD_SIZE else 0)
    seqs_read = [r.seq for r in records[:complete]]
    assert all(p.next_seq > seq for seq in seqs_read)
    assert p.next_seq == (max(seqs_read) + 1 if seqs_read else 0)
    assert (p.idx_rewrite is None) or (p.idx_truncate_to is None)
    assert_fixed_point(files, p)


@given(
    st.binary(max_size=120),
    st.binary(max_size=40),
    st.one_of(st.none(), st.binary(max_size=60)),
)
def test_recovery_of_arbitrary_bytes(idx: bytes, dat: bytes, ts: bytes | None) -> None:
    files = Files(idx, dat, ts)
    p = plan(files)
    assert len(p.timestamps) == len(p.records)
    for rec in p.records:
        if not rec.is_inline:
            assert rec.payload_end <= p.dat_len
        assert entry_checksum(payload_of(rec, dat)) == rec.checksum
    whole = decode_records(idx[: len(idx) - len(idx) % IDX_RECORD_SIZE])
    assert all(p.next_seq > rec.seq for rec in whole)
    assert p.dropped_corrupt + p.dropped_torn + len(p.records) >= len(whole)
    assert_fixed_point(files, p)


# -- oracle ----------------------------------------------------------------------------------


def write_generation(base: Path, channel: str, files: Files) -> None:
    channel_dir = base / channel
    gen = channel_dir / generation_dir_name(1)
    gen.mkdir(parents=True)
    (gen / "idx").write_bytes(files.idx)
    (gen / "dat").write_bytes(files.dat)
    # The reference wants all three files for a complete generation.
    (gen / "ts").write_bytes(files.ts or b"")
    (channel_dir / "manifest").write_bytes(Manifest(1).encode())


@pytest.mark.oracle
@needs_reference
@settings(max_examples=60)
@given(damaged())
def test_oracle_reference_keeps_the_same_records(d: Damage) -> None:
    assert reference is not None
    files = d.files
    p = plan(files)
    with tempfile.TemporaryDirectory() as tmp:
        write_generation(Path(tmp), "c", files)
        file = reference.Redex(persistent_dir=tmp).open_file("c", persistent=True)
        try:
            events = file.read_range(0, 2**63)
        finally:
            file.close()
    assert [(e.seq, bytes(e.payload), e.is_inline) for e in events] == [
        (r.seq, payload_of(r, files.dat), r.is_inline) for r in p.records
    ]


@pytest.mark.oracle
@needs_reference
def test_oracle_reference_defects_that_we_fix(tmp_path: Path) -> None:
    assert reference is not None
    w = build(THREE)

    # (a) mid-file corruption: the reference keeps 3 idx records but only 2 timestamps.
    mid = attrs.evolve(w.files, dat=flip(w.files.dat, 6))
    write_generation(tmp_path, "mid", mid)
    reference.Redex(persistent_dir=str(tmp_path)).open_file("mid", persistent=True).close()
    gen = tmp_path / "mid" / generation_dir_name(1)
    assert len((gen / "idx").read_bytes()) == 60
    assert len((gen / "ts").read_bytes()) == 16
    p = plan(mid)
    repaired = apply(mid, p)
    assert repaired.ts is not None
    assert (len(repaired.idx), len(repaired.ts)) == (40, 16)

    # (b) corrupt last record: the reference hands seq 2 out again.
    last = attrs.evolve(w.files, dat=flip(w.files.dat, len(w.files.dat) - 1))
    write_generation(tmp_path, "last", last)
    file = reference.Redex(persistent_dir=str(tmp_path)).open_file("last", persistent=True)
    assert file.append(b"again") == 2
    file.close()
    assert plan(last).next_seq == 3
