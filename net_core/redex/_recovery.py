"""The open-time recovery walk of a RedEX generation, as a pure planner.

Theory of operation. When a persistent file is opened, its live generation may end in a
torn write (the process died mid-append, or the OS lost unsynced pages) or hold a
damaged payload. :func:`plan_recovery` reads the three files' bytes (``dat`` only through
the ``payload_of`` callback) and returns a :class:`RecoveryPlan`: the records and
timestamps that survive, the ``next_seq`` to hand out, and the file edits that make the
files agree with that state. It never touches a file; the file layer applies the plan.

The walk follows the reference 0.18 (fact sheet section 1.6):

1. An ``idx`` tail that is not a whole 20-byte record is a torn record: cut it.
2. Torn ``dat``: walk the records backwards, skipping INLINE ones. Every heap record that
   ends past the end of ``dat`` is cut, together with everything after the earliest such
   record (INLINE records included); the walk stops at the first heap record that fits.
3. ``ts`` holding fewer entries than records means timestamps are missing; extra
   trailing ``ts`` bytes are ignored and trimmed.
4. Checksum filter: every remaining record's 28-bit checksum is recomputed (INLINE from
   the record, heap from ``dat``); mismatches are dropped. A heap record in the middle
   that points past the end of ``dat`` is dropped here too, as the reference does.
5. ``dat`` is trimmed to the end of the last surviving payload; it is never extended.

Where we knowingly differ from the reference (fixes of its defects):

(a) *ts misaligned after a dropped corrupt record.* The reference drops a corrupt record
    from memory only but rewrites ``ts`` with the survivors, so ``idx`` keeps N records
    and ``ts`` N-1 from then on: every later open finds "ts too short" and stamps every
    event with the current time, and later appends stay misaligned. Here a dropped
    record also leaves ``idx`` (:attr:`RecoveryPlan.idx_rewrite`, or a truncation when
    only trailing records were dropped), and ``ts`` is rewritten aligned with it, so the
    two files stay one-to-one across reopens and appends.
(b) *seq reused after a corrupt last record.* The reference recomputes ``next_seq`` from
    the last *surviving* record, so the seq of a corrupt last record is handed out
    again. Here ``next_seq`` is one past the highest seq of every whole record read from
    ``idx`` (corrupt or cut by the torn-tail rule alike), so no seq that reached the
    disk is reused by this open. The format has no field for a high-water mark, so the
    guarantee holds until the next append persists a higher seq: a second open that
    happens before any append sees only the records that remain.

And one improvement: the reference gives *every* record the current time when ``ts`` is
short and never repairs the file. Here the timestamps that are present are kept, only
the missing ones get ``now_ns``, and ``ts`` is rewritten so the repair sticks.

Applying a plan. The edits should be applied together and durably (each file synced).
``idx`` and ``ts`` cannot be replaced atomically as a pair in place; a crash between the
two rewrites leaves ``ts`` misaligned by the dropped count (records themselves are
unaffected, a later open re-plans). Writing the result as a new generation and flipping
the manifest, as compaction does, makes the repair atomic. Applying a plan and planning
again yields a plan with no edits: the walk is a fixed point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import attrs

from net_core.redex._format import (
    FLAG_INLINE,
    IDX_RECORD_SIZE,
    TS_RECORD_SIZE,
    IdxRecord,
    decode_records,
    decode_timestamps,
    encode_timestamps,
    entry_checksum,
)

__all__ = ["PayloadSource", "RecoveryPlan", "plan_recovery"]

#: Returns the ``dat`` bytes of a heap record (``dat[offset:offset + length]``).
PayloadSource = Callable[[IdxRecord], bytes | bytearray | memoryview]


@final
@attrs.frozen(slots=True)
class RecoveryPlan:
    """What recovery decided for one generation, and the file edits that realize it.

    The edit fields are ``None`` when that file needs no change. ``idx_rewrite`` and
    ``idx_truncate_to`` are never both set: a truncation is used whenever the surviving
    records are a prefix of the file, a rewrite only when a record in the middle was
    dropped.
    """

    #: Surviving records, checksum-valid, in file order.
    records: tuple[IdxRecord, ...]
    #: One unix-nanosecond timestamp per surviving record, aligned with ``records``.
    timestamps: tuple[int, ...]
    #: The seq the next append gets: past every whole record read, corrupt ones included.
    next_seq: int
    #: Length of ``dat`` once the plan is applied (where the next heap payload goes).
    dat_len: int
    idx_truncate_to: int | None = None
    idx_rewrite: bytes | None = None
    dat_truncate_to: int | None = None
    #: New content of ``ts`` (also set when the file was missing, to create it).
    ts_rewrite: bytes | None = None
    #: Records dropped because their payload failed the checksum.
    dropped_corrupt: int = 0
    #: Records cut by the torn-tail rules (a partial ``idx`` tail counts as one).
    dropped_torn: int = 0
    #: True when some surviving records had no timestamp and were given ``now_ns``.
    timestamps_missing: bool = False
    #: How many surviving records were given ``now_ns``.
    timestamps_filled: int = 0

    @property
    def changes_files(self) -> bool:
        """True when applying the plan edits at least one file."""
        return not (
            self.idx_truncate_to is None
            and self.idx_rewrite is None
            and self.dat_truncate_to is None
            and self.ts_rewrite is None
        )


def plan_recovery(
    idx: bytes | bytearray | memoryview,
    dat_len: int,
    ts: bytes | bytearray | memoryview | None,
    payload_of: PayloadSource,
    *,
    now_ns: int,
) -> RecoveryPlan:
    """Plan the recovery of one generation from its files' bytes.

    ``idx`` and ``ts`` are the whole files (``ts`` is ``None`` when the file is missing);
    ``dat_len`` is the size of ``dat``, whose bytes are reached only through
    ``payload_of``, called once per heap record that lies inside ``dat``. ``now_ns`` is
    the timestamp given to records whose timestamp is missing.
    """
    view = memoryview(idx).cast("B")
    whole = len(view) - len(view) % IDX_RECORD_SIZE
    torn_tail = whole != len(view)
    read = decode_records(view[:whole])
    next_seq = max(rec.seq for rec in read) + 1 if read else 0

    # Step 2: a heap record past the end of dat cuts itself and everything after it.
    keep = len(read)
    for i in range(len(read) - 1, -1, -1):
        rec = read[i]
        if rec.flags & FLAG_INLINE:
            continue
        if rec.offset + rec.length > dat_len:
            keep = i
        else:
            break

    # Step 4: checksum filter, by index into the file so timestamps can follow.
    survivors: list[int] = []
    heap_end = 0
    for i in range(keep):
        rec = read[i]
        if rec.flags & FLAG_INLINE:
            if entry_checksum(rec.inline_payload) == rec.checksum:
                survivors.append(i)
            continue
        end = rec.offset + rec.length
        if end > dat_len:
            continue
        payload = payload_of(rec)
        if len(payload) == rec.length and entry_checksum(payload) == rec.checksum:
            survivors.append(i)
            heap_end = max(heap_end, end)
    records = tuple(read[i] for i in survivors)

    # Step 3: timestamps present are kept; only the missing ones get now_ns.
    present = len(ts) // TS_RECORD_SIZE if ts is not None else 0
    known = decode_timestamps(ts, min(present, keep)) if ts is not None else None
    known = known or []
    timestamps = tuple(known[i] if i < present else now_ns for i in survivors)
    filled = sum(1 for i in survivors if i >= present)

    # The edits. Survivors that form a prefix need only a truncation of idx.
    idx_truncate_to: int | None = None
    idx_rewrite: bytes | None = None
    if survivors and survivors[-1] != len(survivors) - 1:
        idx_rewrite = b"".join(
            view[i * IDX_RECORD_SIZE : (i + 1) * IDX_RECORD_SIZE] for i in survivors
        )
    elif len(view) != len(survivors) * IDX_RECORD_SIZE:
        idx_truncate_to = len(survivors) * IDX_RECORD_SIZE

    new_ts = encode_timestamps(timestamps)
    ts_rewrite = None if ts is not None and new_ts == ts else new_ts

    return RecoveryPlan(
        records=records,
        timestamps=timestamps,
        next_seq=next_seq,
        dat_len=heap_end,
        idx_truncate_to=idx_truncate_to,
        idx_rewrite=idx_rewrite,
        dat_truncate_to=heap_end if heap_end < dat_len else None,
        ts_rewrite=ts_rewrite,
        dropped_corrupt=keep - len(survivors),
        dropped_torn=len(read) - keep + (1 if torn_tail else 0),
        timestamps_missing=filled > 0,
        timestamps_filled=filled,
    )
