"""The open-time recovery walk of a RedEX generation, as a pure planner.

Theory of operation. When a persistent file is opened, its live generation may end in a
torn write (the process died mid-append, or the OS lost unsynced pages) or hold damaged
records. :func:`plan_recovery` reads the three files' bytes and returns a
:class:`RecoveryPlan`: the live records and their timestamps (in columnar form), the
records that are tombstoned, the ``next_seq`` to hand out, and the file edits that make
the files agree with that state. It never touches a file; the file layer applies the
plan (:func:`apply_plan_to_bytes` is the same edit on bytes, for tests and tools).

The walk follows the reference 0.18 (fact sheet section 1.6), with one change: a record
that fails verification is *tombstoned in place* instead of being dropped.

1. An ``idx`` tail that is not a whole 20-byte record is a torn record: cut it.
2. Torn ``dat``: walk the records backwards, skipping INLINE ones. Every heap record that
   ends past the end of ``dat`` is cut, together with everything after the earliest such
   record (INLINE records included); the walk stops at the first heap record that fits.
   Like the reference, this rule looks only at the INLINE flag: a tombstoned record is
   cut or kept by it exactly like a live one, so both implementations cut the same tail.
3. Verification, over the records that remain. A record that already carries
   :data:`FLAG_TOMBSTONE` is skipped (never verified, never live, never un-tombstoned).
   Every other record has its 28-bit checksum recomputed (INLINE from the record, heap
   from ``dat``); a mismatch, or a heap record in the middle that points past the end of
   ``dat``, is *newly tombstoned*: the plan ORs :data:`FLAG_TOMBSTONE` into its on-disk
   flags|checksum word (:attr:`RecoveryPlan.tombstone_writes`). The checksum bits are
   left as they were, so the reference, which ignores the flag on read, still drops the
   record by checksum.
4. ``ts`` keeps one entry per record that remains in ``idx``, live or tombstoned. Entries
   that are present are kept; missing ones are given ``now_ns`` and *appended*
   (:attr:`RecoveryPlan.ts_append`); extra trailing bytes are cut. ``ts`` is never
   rewritten as a whole.
5. ``dat`` is trimmed to the end of the last heap record that remains in ``idx`` (live or
   tombstoned) and fits in ``dat``; a heap record past the end contributes nothing.
   ``dat`` is never extended.

The two reference defects this fixes (section 1.6, "quirks"), durably:

(a) *ts misaligned after a dropped corrupt record.* The reference drops a corrupt record
    from memory only but rewrites ``ts`` with the survivors, so ``idx`` keeps N records
    and ``ts`` N-1 from then on. Here the record stays in ``idx`` (tombstoned) and keeps
    its ``ts`` entry: every record in ``idx``, live or tombstoned, has exactly one ``ts``
    entry, at the same index, after any plan is applied, with no ``idx`` rewrite.
(b) *seq reused after a corrupt last record.* The reference recomputes ``next_seq`` from
    the last *surviving* record, so the seq of a corrupt last record is handed out
    again. Here ``next_seq`` is one past the highest seq of every whole record that
    remains in ``idx`` after the torn-tail cuts, live or tombstoned. A tombstoned
    record's seq stays on disk, so ``next_seq`` is the same on every later open, however
    many there are, until an append persists a higher seq. Records cut by the torn-tail
    rules (steps 1 and 2) do not count: their append never returned, so their seqs were
    never acknowledged. Seqs are trusted as written (not checked for order); when the
    highest one is ``2**64 - 1``, ``next_seq`` is capped at ``2**64 - 1`` and
    :attr:`RecoveryPlan.seq_space_exhausted` is set so the file layer refuses appends.

Applying a plan. The edits are independent of each other, except that
:attr:`RecoveryPlan.ts_truncate_to` must be applied before
:attr:`RecoveryPlan.ts_append`; sync each file once its edits are done. A tombstone
write sets one bit of the word (old word | :data:`FLAG_TOMBSTONE`), so it changes only
the word's top byte and cannot tear into a different checksum. Every edit is idempotent,
and none removes a record that a fresh plan would keep, so after a crash part-way
through, a fresh plan reaches the same live records, tombstones and ``next_seq`` (only
the ``now_ns`` given to still-missing timestamps can differ). Applying a plan and
planning again yields a plan with no edits and the same live records, tombstones and
``next_seq``: the walk is a fixed point.

Interoperability. The reference reads files repaired here exactly like we do: it drops
every tombstoned record by its checksum (or, for a heap record past the end of ``dat``,
as corrupt). One exception (verified against 0.18): a heap record tombstoned for
pointing past the end of ``dat`` is verified by the reference again once appends have
grown ``dat`` over it, and accepted if the checksum matches: certain for a 0-length
payload, probability 2**-28 otherwise. Such a record needs a damaged offset field.
And when the reference drops a record it rewrites ``ts`` with its survivors only (its
defect (a)), so a channel opened by the reference after we tombstoned a record comes
back with ``ts`` short by the number of tombstones; the next plan here treats the tail
entries as missing (keeps the prefix, appends ``now_ns``), which shifts the timestamps
of the records after the first tombstone by one slot. The planner cannot tell that
rewrite from a torn ``ts`` tail, so it does not try to re-align.

Speed. Planning runs on every open, so the columns are cut out of ``idx`` with strided
byte slices and every per-record step (bounds, checksums, comparisons) runs as a chain
of C-level ``map``/``compress`` iterators; no per-record Python object is built unless
a record is damaged or flagged.
"""

from __future__ import annotations

import mmap
import sys
from array import array
from itertools import compress, repeat
from operator import add, and_, ge, ne, not_
from typing import Final, final

import attrs
import xxhash

from net_core.redex._format import (
    CHECKSUM_MASK,
    FLAG_INLINE,
    FLAG_TOMBSTONE,
    FLAGS_MASK,
    IDX_RECORD_SIZE,
    INLINE_PAYLOAD_SIZE,
    MAX_SEQ,
    TS_RECORD_SIZE,
    IdxRecord,
)

__all__ = ["BytesLike", "RecoveryPlan", "apply_plan_to_bytes", "live_records", "plan_recovery"]

#: What the planner accepts as file content.
BytesLike = bytes | bytearray | memoryview | mmap.mmap

_BIG_ENDIAN: Final = sys.byteorder == "big"
#: Offset, within an idx record, of the u32 flags|checksum word and of its top byte.
_WORD_AT: Final = 16
_FLAG_BYTE_AT: Final = 19
_INLINE_BIT: Final = FLAG_INLINE >> 24
_TOMBSTONE_BIT: Final = FLAG_TOMBSTONE >> 24
_FLAG_NIBBLE: Final = FLAGS_MASK >> 24

# Tables over a record's top word byte, for bytes.translate: 1 where the record is ...
#: ... a heap record to verify (neither INLINE nor TOMBSTONE);
_VERIFY_HEAP: Final = bytes(int(not b & (_INLINE_BIT | _TOMBSTONE_BIT)) for b in range(256))
#: ... an INLINE record to verify (not TOMBSTONE);
_VERIFY_INLINE: Final = bytes(
    int(b & (_INLINE_BIT | _TOMBSTONE_BIT) == _INLINE_BIT) for b in range(256)
)
#: ... already tombstoned.
_TOMBSTONED: Final = bytes(int(bool(b & _TOMBSTONE_BIT)) for b in range(256))
#: Top-byte values without any flag bit, deleted to test "does any record carry a flag".
_NO_FLAGS: Final = bytes(b for b in range(256) if not b & _FLAG_NIBBLE)

if array("I").itemsize != 4:  # pragma: no cover - every supported platform has a 4-byte C int
    raise ImportError("array typecode 'I' is not 4 bytes on this platform")


@final
@attrs.frozen(slots=True)
class RecoveryPlan:
    """What recovery decided for one generation, and the file edits that realize it.

    Live records are columns of equal length, in file order: element ``k`` of every
    column describes the same record. For an INLINE record ``offsets`` and ``lengths``
    hold the raw u32 words that carry its payload (see :class:`IdxRecord`). An edit
    field is ``None`` (or empty) when that file needs no such change.
    """

    #: Live records' seqs ('Q').
    seqs: array[int]
    #: Live records' offset words ('Q').
    offsets: array[int]
    #: Live records' length words ('Q').
    lengths: array[int]
    #: Live records' on-disk flags|checksum words ('I', 4 bytes each).
    words: array[int]
    #: Live records' unix-nanosecond timestamps ('Q').
    timestamps: array[int]
    #: Live records' record numbers in ``idx`` (0-based index, not byte offset) ('Q').
    positions: array[int]
    #: ``(seq, timestamp)`` of every record tombstoned once the plan is applied, old and
    #: new, in file order.
    tombstones: tuple[tuple[int, int], ...]
    #: ``(byte offset in idx of the flags|checksum word, new u32 value)`` for each record
    #: this plan tombstones; the value is the old word with :data:`FLAG_TOMBSTONE` set.
    tombstone_writes: tuple[tuple[int, int], ...]
    #: The seq the next append gets: past every record that remains in ``idx``.
    next_seq: int
    #: True when a record has seq ``2**64 - 1``: ``next_seq`` is capped there and no
    #: append may happen.
    seq_space_exhausted: bool
    #: Length of ``dat`` once the plan is applied (where the next heap payload goes).
    dat_len: int
    idx_truncate_to: int | None = None
    dat_truncate_to: int | None = None
    #: Applied before :attr:`ts_append` when both are set (a torn partial ts entry).
    ts_truncate_to: int | None = None
    #: Entries to append to ``ts`` (``now_ns`` for each record without a timestamp).
    #: Never ``None`` when the file is missing: ``b""`` then means "create it empty".
    ts_append: bytes | None = None
    #: Records this plan tombstones (checksum mismatch or a mid-file heap record past
    #: the end of ``dat``); records tombstoned before are not counted.
    dropped_corrupt: int = 0
    #: Records cut by the torn-tail rules (a partial ``idx`` tail counts as one).
    dropped_torn: int = 0
    #: How many ``ts`` entries the plan appends (records, live or tombstoned, that had
    #: no timestamp and were given ``now_ns``).
    timestamps_filled: int = 0

    @property
    def changes_files(self) -> bool:
        """True when applying the plan edits at least one file."""
        return not (
            self.idx_truncate_to is None
            and self.dat_truncate_to is None
            and self.ts_truncate_to is None
            and self.ts_append is None
            and not self.tombstone_writes
        )


def live_records(plan: RecoveryPlan) -> list[IdxRecord]:
    """The plan's live records as :class:`IdxRecord` values (for tests and tools)."""
    return [
        IdxRecord(seq, offset, length, word & FLAGS_MASK, word & CHECKSUM_MASK)
        for seq, offset, length, word in zip(
            plan.seqs, plan.offsets, plan.lengths, plan.words, strict=True
        )
    ]


def plan_recovery(
    idx: BytesLike, dat: BytesLike, ts: BytesLike | None, *, now_ns: int
) -> RecoveryPlan:
    """Plan the recovery of one generation from its files' whole contents.

    ``ts`` is ``None`` when the file is missing. ``now_ns`` is the timestamp given to
    records whose timestamp is missing. Never raises on malformed content: any bytes
    yield a valid plan.
    """
    idx_view = memoryview(idx).cast("B")
    whole = len(idx_view) - len(idx_view) % IDX_RECORD_SIZE
    idx_len = len(idx_view)
    raw = bytes(idx_view[:whole])
    idx_view.release()
    count = whole // IDX_RECORD_SIZE
    dat_view = memoryview(dat).cast("B")
    try:
        return _plan(raw, count, idx_len=idx_len, dat=dat_view, ts=ts, now_ns=now_ns)
    finally:
        dat_view.release()


def _plan(
    raw: bytes, count: int, *, idx_len: int, dat: memoryview, ts: BytesLike | None, now_ns: int
) -> RecoveryPlan:
    dat_size = len(dat)
    offsets = _u64_column(raw, count, 8, 4)
    lengths = _u64_column(raw, count, 12, 4)

    # Step 2: the torn-dat rule, walking back from the end. Usually one step.
    keep = count
    for i in range(count - 1, -1, -1):
        if raw[i * IDX_RECORD_SIZE + _FLAG_BYTE_AT] & _INLINE_BIT:
            continue
        if offsets[i] + lengths[i] <= dat_size:
            break
        keep = i
    if keep < count:
        raw = raw[: keep * IDX_RECORD_SIZE]
        offsets = offsets[:keep]
        lengths = lengths[:keep]
    seqs = _u64_column(raw, keep, 0, 8)
    words = _u32_column(raw, keep, _WORD_AT)
    flag_bytes = raw[_FLAG_BYTE_AT::IDX_RECORD_SIZE]
    any_flags = bool(flag_bytes.translate(None, _NO_FLAGS))

    # Step 3: verification. Heap records first, all in C-level iterator chains.
    bad: list[int] = []
    if any_flags:
        heap_sel = flag_bytes.translate(_VERIFY_HEAP)
        heap_pos: list[int] | range = list(compress(range(keep), heap_sel))
        heap_offs = list(compress(offsets, heap_sel))
        heap_lens = list(compress(lengths, heap_sel))
        stored = list(map(and_, compress(words, heap_sel), repeat(CHECKSUM_MASK)))
    else:
        heap_pos = range(keep)
        heap_offs = offsets.tolist()
        heap_lens = lengths.tolist()
        stored = words.tolist()
    heap_ends = list(map(add, heap_offs, heap_lens))
    if heap_ends and max(heap_ends) > dat_size:
        # Mid-file heap records past the end of dat (trailing ones were cut above).
        fits = list(map(ge, repeat(dat_size), heap_ends))
        bad.extend(compress(heap_pos, map(not_, fits)))
        heap_pos = list(compress(heap_pos, fits))
        heap_offs = list(compress(heap_offs, fits))
        heap_ends = list(compress(heap_ends, fits))
        stored = list(compress(stored, fits))
    digest = xxhash.xxh3_64_intdigest
    computed = list(
        map(
            and_,
            map(digest, map(dat.__getitem__, map(slice, heap_offs, heap_ends))),
            repeat(CHECKSUM_MASK),
        )
    )
    if computed != stored:
        bad.extend(compress(heap_pos, map(ne, computed, stored)))
    dat_len = max(heap_ends, default=0)

    pre_tombstoned: list[int] = []
    if any_flags:
        # INLINE records: the 8 payload bytes are bytes 8..16 of the record itself.
        inline_pos = list(compress(range(keep), flag_bytes.translate(_VERIFY_INLINE)))
        starts = [i * IDX_RECORD_SIZE + 8 for i in inline_pos]
        ends = map(add, starts, repeat(INLINE_PAYLOAD_SIZE))
        computed = list(
            map(
                and_,
                map(digest, map(raw.__getitem__, map(slice, starts, ends))),
                repeat(CHECKSUM_MASK),
            )
        )
        stored = [words[i] & CHECKSUM_MASK for i in inline_pos]
        bad.extend(compress(inline_pos, map(ne, computed, stored)))
        # Records tombstoned earlier: skipped, but a heap one still holds its dat bytes.
        pre_tombstoned = list(compress(range(keep), flag_bytes.translate(_TOMBSTONED)))
        for i in pre_tombstoned:
            if not words[i] & FLAG_INLINE:
                end = offsets[i] + lengths[i]
                if dat_len < end <= dat_size:
                    dat_len = end
    bad.sort()
    dead = sorted(pre_tombstoned + bad) if pre_tombstoned else bad

    # Step 4: timestamps, one per record that remains (live or tombstoned).
    timestamps = array("Q")
    present = 0
    ts_truncate_to: int | None = None
    if ts is not None:
        ts_view = memoryview(ts).cast("B")
        present = min(len(ts_view) // TS_RECORD_SIZE, keep)
        timestamps.frombytes(ts_view[: present * TS_RECORD_SIZE])
        if len(ts_view) > present * TS_RECORD_SIZE:
            ts_truncate_to = present * TS_RECORD_SIZE
        ts_view.release()
        if _BIG_ENDIAN:  # pragma: no cover - CI is little-endian
            timestamps.byteswap()
    filled = keep - present
    ts_append: bytes | None = None
    if filled or ts is None:
        fill = array("Q", [now_ns]) * filled
        timestamps.extend(fill)
        if _BIG_ENDIAN:  # pragma: no cover
            fill.byteswap()
        ts_append = fill.tobytes()

    next_seq = max(seqs) + 1 if keep else 0
    exhausted = next_seq > MAX_SEQ
    return RecoveryPlan(
        seqs=_without(seqs, dead),
        offsets=_without(offsets, dead),
        lengths=_without(lengths, dead),
        words=_without(words, dead),
        timestamps=_without(timestamps, dead),
        positions=_without(array("Q", range(keep)), dead),
        tombstones=tuple((seqs[i], timestamps[i]) for i in dead),
        tombstone_writes=tuple(
            (i * IDX_RECORD_SIZE + _WORD_AT, words[i] | FLAG_TOMBSTONE) for i in bad
        ),
        next_seq=MAX_SEQ if exhausted else next_seq,
        seq_space_exhausted=exhausted,
        dat_len=dat_len,
        idx_truncate_to=keep * IDX_RECORD_SIZE if idx_len != keep * IDX_RECORD_SIZE else None,
        dat_truncate_to=dat_len if dat_len < dat_size else None,
        ts_truncate_to=ts_truncate_to,
        ts_append=ts_append,
        dropped_corrupt=len(bad),
        dropped_torn=count - keep + (1 if idx_len % IDX_RECORD_SIZE else 0),
        timestamps_filled=filled,
    )


def _u64_column(raw: bytes, count: int, start: int, width: int) -> array[int]:
    """Field ``raw[start:start + width]`` of every 20-byte record, zero-extended to u64."""
    buf = bytearray(8 * count)
    for k in range(width):
        buf[k::8] = raw[start + k :: IDX_RECORD_SIZE]
    column = array("Q")
    column.frombytes(buf)
    if _BIG_ENDIAN:  # pragma: no cover
        column.byteswap()
    return column


def _u32_column(raw: bytes, count: int, start: int) -> array[int]:
    """The u32 at ``start`` of every 20-byte record."""
    buf = bytearray(4 * count)
    for k in range(4):
        buf[k::4] = raw[start + k :: IDX_RECORD_SIZE]
    column = array("I")
    column.frombytes(buf)
    if _BIG_ENDIAN:  # pragma: no cover
        column.byteswap()
    return column


def _without(column: array[int], dead: list[int]) -> array[int]:
    """``column`` minus the elements at the sorted indices ``dead``, copied run by run."""
    if not dead:
        return column
    out = array(column.typecode)
    start = 0
    for i in dead:
        out += column[start:i]
        start = i + 1
    out += column[start:]
    return out


def apply_plan_to_bytes(
    idx: bytes, dat: bytes, ts: bytes | None, plan: RecoveryPlan
) -> tuple[bytes, bytes, bytes]:
    """Return the three files' contents once ``plan`` is applied (the file layer's edits).

    A missing ``ts`` (``None``) is created. Edits run in the documented order:
    truncations, tombstone word writes, ``ts`` append.
    """
    new_idx = bytearray(idx if plan.idx_truncate_to is None else idx[: plan.idx_truncate_to])
    new_dat = dat if plan.dat_truncate_to is None else dat[: plan.dat_truncate_to]
    new_ts = b"" if ts is None else ts
    if plan.ts_truncate_to is not None:
        new_ts = new_ts[: plan.ts_truncate_to]
    for at, word in plan.tombstone_writes:
        new_idx[at : at + 4] = word.to_bytes(4, "little")
    if plan.ts_append is not None:
        new_ts += plan.ts_append
    return bytes(new_idx), new_dat, new_ts
