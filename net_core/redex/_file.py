"""One RedEX file: appends, reads, retention, compaction, fsync policy, tails.

Theory of operation. A file keeps its retained events in memory as parallel columns
(``_seqs`` and ``_ts`` as ``array('Q')``, ``_payloads`` as a list of ``bytes``), oldest
first; a persistent file also writes every append through its
:class:`~net_core.redex._store.ChannelStore` before the append returns. One
``threading.Lock`` guards the columns, the next seq and the tail registrations, so
appends from several threads are safe and every batch gets contiguous seqs.

Appends are synchronous and never wait for anything but the disk write: they check
capacity first (no seq is used by a refused append), allocate the seq, write, then
update memory and hand the event to live tails. Retention is evaluated every
``retention_check_every`` appends, by :meth:`RedexFile.sweep_retention`, or by the
manager's background sweep; eviction drops a prefix of the columns, and on a persistent
file it first compacts the files into a new generation (see ``_store``), so memory and
disk always agree.

Tails read history from the columns in chunks and switch to live delivery under the lock
once they have caught up, so no event is missed or repeated (see ``_tail``).

This module must not import the manager; the manager builds files.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, final, overload

from net_core.errors import RedexError
from net_core.redex._config import RedexFileConfig
from net_core.redex._errors import (
    FsyncError,
    PayloadTooLargeError,
    PoisonedError,
    RedexClosedError,
    RedexIOError,
    SegmentOffsetOverflowError,
    SeqOutOfRangeError,
    SeqSpaceExhaustedError,
)
from net_core.redex._format import (
    CHECKSUM_MASK,
    FLAG_INLINE,
    INLINE_PAYLOAD_SIZE,
    MAX_HEAP_BYTES,
    MAX_SEQ,
    MAX_U32,
    entry_checksum,
)
from net_core.redex._store import (
    ChannelStore,
    encode_entries,
    encode_idx_columns,
    tombstone_record,
)
from net_core.retention import ENTRY_OVERHEAD, CombinedRetention, RetentionView

if TYPE_CHECKING:
    from net_core.redex._tail import AppendWatcher, RedexTail, _TailSub, _WatchSub

import xxhash

__all__ = ["OrderedAppender", "RedexEvent", "RedexEvents", "RedexFile"]

log = logging.getLogger("net_core.redex")

_IDX = struct.Struct("<QIII")
_TS = struct.Struct("<Q")
_INLINE = struct.Struct("<II")
_xxh3 = xxhash.xxh3_64_intdigest
_time_ns = time.time_ns
_MASK: Final = CHECKSUM_MASK


@final
class RedexEvent:
    """One event read from a RedEX file.

    ``seq`` is its position in the file, ``payload`` its bytes, ``ts`` the wall-clock unix
    nanoseconds of its append, ``is_inline`` whether it is stored in its index record.
    ``checksum`` (the 28-bit XXH3 entry checksum) is computed on first use.
    """

    __slots__ = ("is_inline", "payload", "seq", "ts")

    def __init__(self, seq: int, payload: bytes, ts: int, is_inline: bool = False) -> None:
        self.seq = seq
        self.payload = payload
        self.ts = ts
        self.is_inline = is_inline

    @property
    def checksum(self) -> int:
        """The 28-bit entry checksum of the payload."""
        return entry_checksum(self.payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RedexEvent):
            return NotImplemented
        return (self.seq, self.payload, self.ts, self.is_inline) == (
            other.seq,
            other.payload,
            other.ts,
            other.is_inline,
        )

    def __hash__(self) -> int:
        return hash((self.seq, self.payload, self.ts))

    def __repr__(self) -> str:
        return (
            f"RedexEvent(seq={self.seq}, payload=<{len(self.payload)} bytes>, "
            f"checksum={self.checksum:#010x}, is_inline={str(self.is_inline).lower()})"
        )


_NO_INLINE: frozenset[int] = frozenset()


@final
class RedexEvents(Sequence[RedexEvent]):
    """A snapshot of events from :meth:`RedexFile.read_range`, materialized lazily.

    Indexing and iterating build :class:`RedexEvent` objects on demand; ``seqs``,
    ``payloads`` and ``timestamps`` give the raw columns without building any. Compares
    equal to any sequence of the same events (``list(events) == [...]``).
    """

    __slots__ = ("_inline", "payloads", "seqs", "timestamps")

    def __init__(
        self,
        seqs: array[int],
        payloads: list[bytes],
        timestamps: array[int],
        inline: frozenset[int],
    ) -> None:
        self.seqs = seqs
        self.payloads = payloads
        self.timestamps = timestamps
        self._inline = inline

    def __len__(self) -> int:
        return len(self.payloads)

    @overload
    def __getitem__(self, index: int) -> RedexEvent: ...
    @overload
    def __getitem__(self, index: slice) -> RedexEvents: ...
    def __getitem__(self, index: int | slice) -> RedexEvent | RedexEvents:
        if isinstance(index, slice):
            return RedexEvents(
                self.seqs[index], self.payloads[index], self.timestamps[index], self._inline
            )
        seq = self.seqs[index]
        return RedexEvent(seq, self.payloads[index], self.timestamps[index], seq in self._inline)

    def __iter__(self) -> Iterator[RedexEvent]:
        if not self._inline:
            return map(RedexEvent, self.seqs, self.payloads, self.timestamps)
        inline = self._inline
        return map(
            RedexEvent, self.seqs, self.payloads, self.timestamps, [s in inline for s in self.seqs]
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RedexEvents):
            return (
                self.seqs == other.seqs
                and self.payloads == other.payloads
                and self.timestamps == other.timestamps
                and self._inline == other._inline
            )
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not self.payloads:
            return "RedexEvents([])"
        return f"RedexEvents(seqs {self.seqs[0]}..{self.seqs[-1]}, {len(self)} events)"


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise TypeError(f"a RedEX payload must be bytes-like, got {type(payload).__name__}")


class _Sizes(Sequence[int]):
    """Accounted sizes of the retained entries, computed on access (retention view)."""

    __slots__ = ("_inline", "_payloads", "_seqs")

    def __init__(self, payloads: list[bytes], seqs: array[int], inline: set[int]) -> None:
        self._payloads = payloads
        self._seqs = seqs
        self._inline = inline

    def __len__(self) -> int:
        return len(self._payloads)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._inline and self._seqs[index] in self._inline:
            return ENTRY_OVERHEAD
        return ENTRY_OVERHEAD + len(self._payloads[index])


class RedexFile:
    """An append-only log of events with gap-free sequence numbers.

    Build files with :meth:`net_core.redex.Redex.open_file`. All methods are synchronous
    and thread-safe; ``tail`` returns an async iterator. After :meth:`close`, appends
    raise :class:`RedexClosedError` while reads keep working.
    """

    __slots__ = (
        "_check_every",
        "_closed",
        "_compacting",
        "_evicted_below",
        "_fsync_error",
        "_fsync_every",
        "_fsync_max_bytes",
        "_fsync_thread",
        "_fsync_wake",
        "_inline",
        "_lock",
        "_next_seq",
        "_payload_bytes",
        "_payloads",
        "_retention",
        "_retention_pending",
        "_seqs",
        "_since_check",
        "_store",
        "_tails",
        "_ts",
        "_unsynced",
        "background_retention",
        "compactions",
        "config",
        "evicted",
        "name",
        "on_close",
    )

    def __init__(
        self,
        name: str,
        config: RedexFileConfig,
        retention: CombinedRetention,
        store: ChannelStore | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._retention = retention
        self._store = store
        # Re-entrant: code inside an OrderedAppender block may call the file's methods.
        self._lock = threading.RLock()
        self._seqs: array[int] = array("Q")
        self._ts: array[int] = array("Q")
        self._payloads: list[bytes] = []
        self._inline: set[int] = set()
        self._payload_bytes = 0
        self._next_seq = 0
        # Seqs below this were evicted by retention (a tail asking for them has lagged).
        self._evicted_below = 0
        self._closed = False
        self._tails: list[_TailSub | _WatchSub] = []
        self._check_every = config.retention_check_every if retention.policies else 0
        self._since_check = 0
        self._retention_pending = False
        self._compacting = False
        self._fsync_error: BaseException | None = None
        self._fsync_every = config.fsync_every_n or 0
        self._fsync_max_bytes = config.fsync_max_bytes or 0
        self._unsynced = 0
        self._fsync_wake = threading.Event()
        self._fsync_thread: threading.Thread | None = None
        #: When True, appends only flag retention as due; the manager's sweeper compacts.
        self.background_retention = False
        #: Events evicted by retention, and compactions run, since open.
        self.evicted = 0
        self.compactions = 0
        #: Called once when the file closes (the manager forgets it).
        self.on_close: Callable[[RedexFile], None] | None = None
        if store is not None and config.fsync_policy != "never":
            self._start_fsync_worker()

    # -- state loading (manager) -----------------------------------------------------

    def _load(
        self,
        seqs: array[int],
        timestamps: array[int],
        payloads: list[bytes],
        inline: set[int],
        next_seq: int,
    ) -> None:
        self._seqs = seqs
        self._ts = timestamps
        self._payloads = payloads
        self._inline = inline
        self._payload_bytes = sum(map(len, payloads))
        self._next_seq = next_seq
        self._evicted_below = seqs[0] if seqs else next_seq

    # -- appends ---------------------------------------------------------------------

    def append(self, payload: bytes | bytearray | memoryview) -> int:
        """Append one event; returns its seq.

        Raises :class:`PayloadTooLargeError` / :class:`SegmentOffsetOverflowError` before
        any seq is used, :class:`RedexClosedError` after close, :class:`RedexIOError` if
        the disk write failed (rolled back: no seq used) and :class:`PoisonedError` if
        even the rollback failed.
        """
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        # acquire/try/finally rather than `with`: measurably cheaper on this hot path.
        lock = self._lock
        lock.acquire()
        try:
            if self._store is not None or self._closed or self._fsync_error is not None:
                seq = self._append_locked(payload, False)
            else:
                # The heap fast path: the general path inlined for the common case.
                total = self._payload_bytes + len(payload)
                if total > MAX_HEAP_BYTES:
                    raise PayloadTooLargeError(len(payload), MAX_HEAP_BYTES - self._payload_bytes)
                seq = self._next_seq
                ts = _time_ns()
                self._seqs.append(seq)
                self._ts.append(ts)
                self._payloads.append(payload)
                self._payload_bytes = total
                self._next_seq = seq + 1
                if self._tails:
                    self._publish(seq, ts, (payload,), False)
                if self._check_every:
                    self._since_check += 1
                    if self._since_check >= self._check_every:
                        self._since_check = 0
                        self._retention_pending = True
        finally:
            lock.release()
        if self._retention_pending and not self.background_retention:
            self._run_due_retention()
        return seq

    def append_inline(self, payload: bytes | bytearray | memoryview) -> int:
        """Append an exactly-8-byte payload stored in its index record (no ``dat`` bytes)."""
        payload = _as_bytes(payload)
        if len(payload) != INLINE_PAYLOAD_SIZE:
            raise ValueError(f"an inline payload is exactly 8 bytes, got {len(payload)}")
        with self._lock:
            seq = self._append_locked(payload, True)
        if self._retention_pending and not self.background_retention:
            self._run_due_retention()
        return seq

    def _append_locked(self, payload: bytes, inline: bool) -> int:
        if self._closed:
            raise RedexClosedError("append")
        if self._store is not None:
            self._store.check_writable()
        if self._fsync_error is not None:
            self._raise_fsync_error()
        n = len(payload)
        if self._payload_bytes + n > MAX_HEAP_BYTES:
            raise PayloadTooLargeError(n, MAX_HEAP_BYTES - self._payload_bytes)
        seq = self._next_seq
        if seq > MAX_SEQ:
            raise SeqSpaceExhaustedError(f"{self.name!r} has used every u64 seq")
        ts = _time_ns()
        store = self._store
        if store is not None:
            store.check_writable()
            if inline:
                lo, hi = _INLINE.unpack(payload)
                store.append(
                    b"",
                    _IDX.pack(seq, lo, hi, FLAG_INLINE | (_xxh3(payload) & _MASK)),
                    _TS.pack(ts),
                )
            else:
                offset = store.dat_len
                if offset > MAX_U32:
                    raise SegmentOffsetOverflowError(offset)
                store.append(
                    payload, _IDX.pack(seq, offset, n, _xxh3(payload) & _MASK), _TS.pack(ts)
                )
            if self._fsync_every:
                self._unsynced += 1
                if self._unsynced >= self._fsync_every:
                    self._unsynced = 0
                    self._fsync_wake.set()
            elif self._fsync_max_bytes and store.bytes_since_sync >= self._fsync_max_bytes:
                self._fsync_wake.set()
        self._seqs.append(seq)
        self._ts.append(ts)
        self._payloads.append(payload)
        if inline:
            self._inline.add(seq)
        self._payload_bytes += n
        self._next_seq = seq + 1
        if self._tails:
            self._publish(seq, ts, (payload,), inline)
        if self._check_every:
            self._since_check += 1
            if self._since_check >= self._check_every:
                self._since_check = 0
                self._retention_pending = True
        return seq

    def append_batch(self, payloads: Iterable[bytes | bytearray | memoryview]) -> int | None:
        """Append several events with contiguous seqs and one shared timestamp.

        Returns the first seq, or ``None`` for an empty batch (nothing is written). The
        batch is all-or-nothing: a refused or failed batch uses no seq.
        """
        given = payloads if type(payloads) is list else list(payloads)
        if not given:
            return None
        # One C-level pass decides whether every item is already immutable bytes.
        items: list[bytes] = (
            given if set(map(type, given)) == {bytes} else [_as_bytes(p) for p in given]  # type: ignore[assignment]
        )
        lock = self._lock
        lock.acquire()
        try:
            first = self._append_batch_locked(items)
        finally:
            lock.release()
        if self._retention_pending and not self.background_retention:
            self._run_due_retention()
        return first

    def _append_batch_locked(self, items: list[bytes]) -> int:
        if self._closed:
            raise RedexClosedError("append_batch")
        if self._store is not None:
            self._store.check_writable()
        if self._fsync_error is not None:
            self._raise_fsync_error()
        count = len(items)
        store = self._store
        lengths = array("I", list(map(len, items))) if store is not None else None
        total = sum(lengths) if lengths is not None else sum(map(len, items))
        if self._payload_bytes + total > MAX_HEAP_BYTES:
            raise PayloadTooLargeError(total, MAX_HEAP_BYTES - self._payload_bytes)
        first = self._next_seq
        if first + count - 1 > MAX_SEQ:
            raise SeqSpaceExhaustedError(f"{self.name!r} has too few u64 seqs left")
        seqs = array("Q", list(range(first, first + count)))
        ts = _time_ns()
        if store is not None and lengths is not None:
            store.check_writable()
            base = store.dat_len
            last_offset = base + total - lengths[-1]
            if last_offset > MAX_U32:
                raise SegmentOffsetOverflowError(last_offset)
            idx = encode_idx_columns(seqs, base, lengths, items)
            store.append(b"".join(items), idx, _TS.pack(ts) * count)
            if self._fsync_every:
                self._unsynced += count
                if self._unsynced >= self._fsync_every:
                    self._unsynced = 0
                    self._fsync_wake.set()
            elif self._fsync_max_bytes and store.bytes_since_sync >= self._fsync_max_bytes:
                self._fsync_wake.set()
        self._seqs.extend(seqs)
        self._ts.extend(array("Q", (ts,)) * count)
        self._payloads.extend(items)
        self._payload_bytes += total
        self._next_seq = first + count
        if self._tails:
            self._publish(first, ts, items, False)
        if self._check_every:
            self._since_check += count
            if self._since_check >= self._check_every:
                self._since_check = 0
                self._retention_pending = True
        return first

    def ordered(self) -> OrderedAppender:
        """An appender that keeps the file locked, so its appends are contiguous.

        ``with file.ordered() as app: app.append(a); app.append_batch(bs)``: no other
        thread's append lands in between. Keep the block short.
        """
        return OrderedAppender(self)

    # -- reads -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._payloads)

    @property
    def next_seq(self) -> int:
        """The seq the next append gets (every seq ever used is below it)."""
        with self._lock:
            return self._next_seq

    def len_and_next_seq(self) -> tuple[int, int]:
        """``(len, next_seq)`` read atomically."""
        with self._lock:
            return len(self._payloads), self._next_seq

    @property
    def lowest_retained_seq(self) -> int | None:
        """Seq of the oldest retained event, ``None`` when nothing is retained."""
        with self._lock:
            return self._seqs[0] if self._seqs else None

    @property
    def retained_bytes(self) -> int:
        """Sum of the retained payload lengths."""
        return self._payload_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def poisoned(self) -> bool:
        """Whether a failed rollback poisoned the file (re-open it to recover)."""
        return self._store is not None and self._store.poisoned is not None

    @property
    def persistent(self) -> bool:
        """Whether the file is stored on disk."""
        return self._store is not None

    @property
    def generation(self) -> int | None:
        """The live on-disk generation of a persistent file (``None`` for heap files)."""
        return self._store.generation if self._store is not None else None

    def _index_of(self, seq: int) -> int:
        seqs = self._seqs
        n = len(seqs)
        if not n:
            return 0
        lo = seqs[0]
        if seq <= lo:
            return 0
        if seqs[-1] - lo + 1 == n:
            return min(seq - lo, n)
        return bisect_left(seqs, seq)

    def read_range(self, start: int, end: int) -> RedexEvents:
        """Retained events with ``start <= seq < end``, in seq order (evicted seqs skipped).

        Returns a :class:`RedexEvents` snapshot: a sequence that builds each
        :class:`RedexEvent` when it is iterated or indexed, so a large read does not
        allocate (and make the garbage collector walk) one object per event up front.
        """
        if end <= start:
            return RedexEvents(array("Q"), [], array("Q"), frozenset())
        lock = self._lock
        lock.acquire()
        try:
            i = self._index_of(start)
            j = self._index_of(end)
            seqs = self._seqs[i:j]
            payloads = self._payloads[i:j]
            stamps = self._ts[i:j]
            inline = frozenset(self._inline) if self._inline else _NO_INLINE
        finally:
            lock.release()
        return RedexEvents(seqs, payloads, stamps, inline)

    def read_payloads(self, start: int, end: int) -> tuple[array[int], list[bytes]]:
        """``(seqs, payloads)`` for ``start <= seq < end``: the cheapest bulk read."""
        if end <= start:
            return array("Q"), []
        with self._lock:
            i = self._index_of(start)
            j = self._index_of(end)
            return self._seqs[i:j], self._payloads[i:j]

    def read_one(self, seq: int) -> RedexEvent:
        """The event at ``seq``; :class:`SeqOutOfRangeError` if it is not retained."""
        with self._lock:
            i = self._index_of(seq)
            if i >= len(self._seqs) or self._seqs[i] != seq:
                lo = self._seqs[0] if self._seqs else self._next_seq
                raise SeqOutOfRangeError(seq, lo, self._next_seq)
            return RedexEvent(seq, self._payloads[i], self._ts[i], seq in self._inline)

    def __iter__(self) -> Iterator[RedexEvent]:
        """Iterate over a snapshot of the retained events."""
        return iter(self.read_range(0, MAX_SEQ + 1))

    # -- tails -----------------------------------------------------------------------

    def tail(self, from_seq: int = 0, *, overflow: Literal["lag", "catch_up"] = "lag") -> RedexTail:
        """An async iterator over events with ``seq >= from_seq``: history, then live.

        History is read from the file (no size limit); once caught up the tail receives
        appends live through a buffer of ``tail_buffer_size`` events. If that buffer
        overflows, ``overflow="lag"`` ends the tail with :class:`LaggedError` after the
        buffered events, while ``"catch_up"`` quietly goes back to reading the file.
        Asking for history that retention already evicted raises :class:`LaggedError`.
        Closing the file ends every tail (``StopAsyncIteration``).
        """
        from net_core.redex._tail import RedexTail  # noqa: PLC0415 - cycle

        return RedexTail(self, from_seq, self.config.tail_buffer_size, overflow)

    def watch_appends(self) -> AppendWatcher:
        """A notification-only subscription: ``await watcher.wait(next_seq)`` returns
        when the file has grown past ``next_seq`` (or ``False`` once it is closed).
        Pair it with :meth:`read_payloads` to consume by range without a tail buffer."""
        from net_core.redex._tail import AppendWatcher  # noqa: PLC0415 - cycle

        return AppendWatcher(self)

    @property
    def evicted_below(self) -> int:
        """Every seq below this that is not retained was evicted by retention (or
        compaction); a missing seq at or above it was never stored (a tombstone)."""
        return self._evicted_below

    def _publish(self, first: int, ts: int, payloads: Sequence[bytes], inline: bool) -> None:
        dead = None
        for sub in self._tails:
            if not sub.push(first, ts, payloads, inline):
                if dead is None:
                    dead = [sub]
                else:
                    dead.append(sub)
        if dead:
            for sub in dead:
                self._tails.remove(sub)

    # -- retention & compaction ------------------------------------------------------

    def retention_view(self) -> RetentionView:
        """The retained entries as retention policies see them (a snapshot-free view)."""
        n = len(self._payloads)
        inline = self._inline
        total = ENTRY_OVERHEAD * n + self._payload_bytes - INLINE_PAYLOAD_SIZE * len(inline)
        return RetentionView(
            timestamps=self._ts,
            sizes=_Sizes(self._payloads, self._seqs, inline),
            total_bytes=total,
        )

    def _run_due_retention(self) -> None:
        # Runs after an append that already succeeded: a failing sweep (a close racing
        # it, a poisoned or full disk) must not turn that success into an error.
        self._retention_pending = False
        try:
            self.sweep_retention()
        except RedexError as exc:
            log.warning("retention sweep of %r failed: %s", self.name, exc)

    def sweep_retention(self, now_ns: int | None = None) -> int:
        """Apply the retention policies now; returns how many events were evicted.

        A persistent file compacts into a new generation first and only then drops the
        events from memory; if compaction fails, nothing changes and the error is
        raised (:class:`RedexIOError` / :class:`PoisonedError`).
        """
        now = _time_ns() if now_ns is None else now_ns
        self._retention_pending = False
        with self._lock:
            if self._closed or not self._retention.policies:
                return 0
            count = self._retention.eviction_count(self.retention_view(), now)
            if count <= 0:
                return 0
            if self._store is None:
                self._evict_locked(count)
                return count
            if self._compacting:
                return 0
            self._store.check_writable()
            self._compacting = True
            n0 = len(self._payloads)
            seqs = self._seqs[count:n0]
            stamps = self._ts[count:n0]
            payloads = self._payloads[count:n0]
            inline = {s for s in self._inline if s >= (seqs[0] if seqs else self._next_seq)}
            high = self._next_seq - 1
        try:
            return self._compact(count, n0, seqs, stamps, payloads, inline, high, now)
        finally:
            self._compacting = False

    def compact(self) -> int:
        """Rewrite a persistent file into a new generation without evicting (drops
        tombstones and bytes of evicted events). Returns the new generation."""
        with self._lock:
            if self._store is None:
                raise RedexIOError(f"{self.name!r} is heap-only; nothing to compact")
            if self._closed:
                raise RedexClosedError("compact")
            if self._compacting:
                raise RedexIOError(f"{self.name!r} is already compacting")
            self._store.check_writable()
            self._compacting = True
            n0 = len(self._payloads)
            seqs = self._seqs[:n0]
            stamps = self._ts[:n0]
            payloads = self._payloads[:n0]
            inline = set(self._inline)
            high = self._next_seq - 1
        try:
            self._compact(0, n0, seqs, stamps, payloads, inline, high, _time_ns())
        finally:
            self._compacting = False
        return self._store.generation

    def _compact(
        self,
        count: int,
        n0: int,
        seqs: array[int],
        stamps: array[int],
        payloads: list[bytes],
        inline: set[int],
        high: int,
        now: int,
    ) -> int:
        store = self._store
        assert store is not None
        idx, dat, ts, _ = encode_entries(seqs, payloads, stamps, inline, 0)
        if high >= 0 and (not seqs or seqs[-1] < high):
            # Keep the highest seq ever used on disk so a reopen never reuses it.
            idx += tombstone_record(high)
            ts += _TS.pack(now)
        prep = store.prepare(idx, dat, ts)
        with self._lock:
            if self._closed:
                store.abort(prep)
                raise RedexClosedError("compact")
            n = len(self._payloads)
            late = slice(n0, n)
            d_idx, d_dat, d_ts, _ = encode_entries(
                self._seqs[late], self._payloads[late], self._ts[late], self._inline, prep.dat_len
            )
            store.commit(prep, d_dat, d_idx, d_ts)
            self._evict_locked(count)
            self.compactions += 1
        return count

    def _evict_locked(self, count: int) -> None:
        count = min(count, len(self._payloads))
        if count <= 0:
            return
        gone = self._payloads[:count]
        self._payload_bytes -= sum(map(len, gone))
        del self._payloads[:count]
        del self._seqs[:count]
        del self._ts[:count]
        lowest = self._seqs[0] if self._seqs else self._next_seq
        if self._inline:
            self._inline = {s for s in self._inline if s >= lowest}
        self._evicted_below = lowest
        self.evicted += count

    # -- durability ------------------------------------------------------------------

    def sync(self) -> None:
        """fsync a persistent file (``dat``, ``idx``, ``ts``); no-op for heap files.

        Raises a background fsync failure that was not yet reported, after retrying.
        """
        store = self._store
        if store is None or store.closed:
            return
        pending = self._fsync_error
        self._fsync_error = None
        store.sync()
        if pending is not None:
            raise FsyncError(f"an earlier background fsync of {self.name!r} failed: {pending}")

    def _raise_fsync_error(self) -> None:
        err = self._fsync_error
        self._fsync_error = None
        raise FsyncError(f"background fsync of {self.name!r} failed: {err}") from err

    def _start_fsync_worker(self) -> None:
        interval = (self.config.fsync_interval_ms or 0) / 1000 or None
        thread = threading.Thread(
            target=self._fsync_loop, args=(interval,), name=f"redex-fsync:{self.name}", daemon=True
        )
        self._fsync_thread = thread
        thread.start()

    def _fsync_loop(self, interval: float | None) -> None:
        store = self._store
        assert store is not None
        wake = self._fsync_wake
        while True:
            wake.wait(interval)
            wake.clear()
            if self._closed:
                return
            try:
                store.sync()
            except PoisonedError:
                return  # every append and sync already raises PoisonedError
            except Exception as exc:  # surfaced by the next append/sync/close
                log.error("background fsync of %r failed: %s", self.name, exc)
                self._fsync_error = exc

    # -- close -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the file: end every tail, stop the fsync worker, fsync. Idempotent.

        Reads keep working afterwards; appends raise :class:`RedexClosedError`. A final
        fsync that fails, or a background fsync failure nobody was told about yet, is
        raised (:class:`RedexIOError` / :class:`FsyncError`) after the file is closed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            tails, self._tails = self._tails, []
        for sub in tails:
            sub.close()
        if self._fsync_thread is not None:
            self._fsync_wake.set()
            self._fsync_thread.join()
        failure: BaseException | None = None
        if self._store is not None:
            try:
                self._store.close()
            except RedexIOError as exc:
                failure = exc
        if self.on_close is not None:
            with contextlib.suppress(Exception):
                self.on_close(self)
        if failure is not None:
            raise failure
        if self._fsync_error is not None:
            self._raise_fsync_error()

    def __enter__(self) -> RedexFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Lock-free on purpose: a repr must never block (or deadlock inside a lock).
        kind = "persistent" if self._store is not None else "heap"
        state = "closed" if self._closed else "open"
        return (
            f"RedexFile({self.name!r}, {kind}, {state}, next_seq={self._next_seq}, "
            f"len={len(self._payloads)})"
        )


@final
class OrderedAppender:
    """Appends that no other thread can interleave with (see :meth:`RedexFile.ordered`)."""

    __slots__ = ("_file", "_held")

    def __init__(self, file: RedexFile) -> None:
        self._file = file
        self._held = False

    def __enter__(self) -> OrderedAppender:
        self._file._lock.acquire()
        self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._held = False
        self._file._lock.release()
        file = self._file
        if file._retention_pending and not file.background_retention:
            file._run_due_retention()

    def _require(self) -> None:
        if not self._held:
            raise RuntimeError("use the OrderedAppender inside a `with` block")

    def append(self, payload: bytes | bytearray | memoryview) -> int:
        """Append one event."""
        self._require()
        return self._file._append_locked(_as_bytes(payload), False)

    def append_inline(self, payload: bytes | bytearray | memoryview) -> int:
        """Append an exactly-8-byte inline event."""
        self._require()
        payload = _as_bytes(payload)
        if len(payload) != INLINE_PAYLOAD_SIZE:
            raise ValueError(f"an inline payload is exactly 8 bytes, got {len(payload)}")
        return self._file._append_locked(payload, True)

    def append_batch(self, payloads: Iterable[bytes | bytearray | memoryview]) -> int | None:
        """Append a batch (contiguous seqs); ``None`` for an empty batch."""
        self._require()
        items = [_as_bytes(p) for p in payloads]
        if not items:
            return None
        return self._file._append_batch_locked(items)
