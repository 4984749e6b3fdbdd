"""The generic CortEX fold: follow a RedEX file and fold its events into a state.

Theory of operation. A :class:`CortexAdapter` owns one task (in the task group of its
``async with`` block) that reads a :class:`~net_core.redex.RedexFile` in batches and
hands every event to a user :class:`Fold`. Each payload is a CortEX event: a 24-byte
``EventMeta`` header with a checksum (v2 written, v1 accepted) and a tail; the adapter
verifies it and gives the fold a :class:`CortexEvent`. A malformed payload is a
*decode* error: it is counted and skipped under every policy.

Never falling behind. The fold reads the file by range from its watermark
(:meth:`~net_core.redex.RedexFile.read_payloads`, up to ``batch_limit`` events at a
time) and, once caught up, sleeps on an :class:`~net_core.redex.AppendWatcher` until the
file grows. There is no per-subscriber buffer that producers could overflow, so the fold
keeps running under any producer rate, however far behind it is (the reference's fold
stops for good when outrun by more than its tail buffer). The only history it can miss is
history evicted by retention before it was folded: under ``stop`` that halts the fold,
under ``log_and_continue`` the fold counts the lost seqs in
:attr:`CortexAdapter.events_evicted` and goes on from the oldest retained event. Seqs
recovery tombstoned are processed without being applied (they end the strict prefix).

Batch kernels. A fold may provide :attr:`Fold.fold_batch`, which folds a run of
well-formed events in one call (the Tasks fold has one in C); the adapter falls back to
the per-event path, with the full rules and errors, at the first event the kernel leaves.

Watermarks. ``folded_through_seq`` is progress: the highest seq processed (applied, or
skipped as the policy allowed). ``applied_through_seq`` is the *strict prefix*: it
advances only when an event was applied successfully **and** is the immediate successor
of the previous applied seq; the first skipped or missing seq freezes it for the rest of
the adapter's life. Snapshots carry the strict prefix, so restoring one re-attempts the
events after it (including any that were skipped). Both watermarks are ``None`` until
something was folded.

Errors. ``stop`` (the default) halts on the first non-decode error: the fold task ends,
the halting seq advances no watermark and is never emitted on the changes stream, and
waiters get :class:`FoldStoppedError`. ``log_and_continue`` skips any error.

Threads. The fold runs on the event loop of the ``async with`` block; waits, change
streams and watches must be used from that loop. Appends may come from any thread
(they are seen within the watcher's 20 ms poll interval). The state is mutated only while
:attr:`CortexAdapter.state_lock` is held, a batch at a time, so another thread reading
the state under that lock sees it between events, never halfway through one.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Final, Generic, NamedTuple, TypeVar, final

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import xxhash

from net_core.cortex._errors import (
    AdapterClosedError,
    FoldStoppedError,
    FoldTimeoutError,
    SnapshotAheadError,
    SnapshotMismatchError,
    SnapshotUnsupportedError,
)
from net_core.cortex._meta import _HEADER, EVENT_META_SIZE, open_raw, seal
from net_core.cortex._snapshot import Snapshot
from net_core.errors import DecodeError
from net_core.redex._file import RedexFile
from net_core.redex._tail import AppendWatcher

__all__ = [
    "Change",
    "ChangeStream",
    "CortexAdapter",
    "CortexAdapterConfig",
    "CortexEvent",
    "Fold",
    "FoldErrorPolicy",
]

S = TypeVar("S")

_log = logging.getLogger("net_core.cortex")

_META_SIZE: Final = EVENT_META_SIZE
_ZERO4: Final = bytes(4)
_MASK32: Final = 0xFFFF_FFFF
_xxh3 = xxhash.xxh3_64_intdigest

#: Default capacity of a :meth:`CortexAdapter.changes` subscriber (as the reference's).
DEFAULT_CHANGE_BUFFER: Final = 64


class FoldErrorPolicy(enum.StrEnum):
    """What the fold does when :meth:`Fold.apply` raises something other than a
    :class:`~net_core.errors.DecodeError` (decode errors are always skipped)."""

    STOP = "stop"
    """Halt the fold at the failing event (default): state stays as it was before it."""
    LOG_AND_CONTINUE = "log_and_continue"
    """Log and count the error, skip the event and go on."""


class CortexEvent(NamedTuple):
    """One verified CortEX event as a fold sees it: the RedEX seq, the header fields and
    the type-specific tail."""

    seq: int
    dispatch: int
    flags: int
    origin_hash: int
    seq_or_ts: int
    tail: bytes


class Fold(ABC, Generic[S]):
    """A deterministic function from events to state, plus (optionally) a state codec.

    Subclass it and implement :meth:`apply`, which mutates ``state`` in place. Raise a
    :class:`~net_core.errors.DecodeError` for an event that cannot be understood (it is
    skipped under every policy); any other exception is a fold error handled by the
    adapter's :class:`FoldErrorPolicy`. ``apply`` must not leave the state half-changed
    when it raises: check first, then mutate.

    To support snapshots, override :meth:`encode_state` and :meth:`decode_state` and set
    :attr:`name` (checked on restore) and :attr:`snapshot_version` (bump it whenever
    the state encoding changes; :meth:`decode_state` is only called with versions listed
    in :attr:`readable_versions`, anything else is discarded and the log replayed).
    """

    #: Identifies the kind of state in snapshots.
    name: ClassVar[str] = "custom"
    #: The state-encoding version :meth:`encode_state` writes.
    snapshot_version: ClassVar[int] = 1
    #: The versions :meth:`decode_state` can read (defaults to the current one only).
    readable_versions: ClassVar[frozenset[int] | None] = None

    @abstractmethod
    def apply(self, event: CortexEvent, state: S) -> None:
        """Fold one event into ``state``."""

    def apply_fields(
        self,
        seq: int,
        dispatch: int,
        flags: int,
        origin_hash: int,
        seq_or_ts: int,
        tail: bytes,
        state: S,
    ) -> None:
        """What the adapter calls: :meth:`apply` with the fields as a :class:`CortexEvent`.

        A fold on a hot path may override this instead (same contract, no event object
        to build); :meth:`apply` must then do the same thing.
        """
        self.apply(CortexEvent(seq, dispatch, flags, origin_hash, seq_or_ts, tail), state)

    #: Optional batch kernel: ``fold_batch(payloads, start, state) -> index``. It folds
    #: ``payloads[start:]`` (the payloads of increasing seqs, none folded yet) for as
    #: long as every event is well formed *and* applies successfully, and returns the
    #: index of the first event it did not fold;
    #: the adapter handles that one with :meth:`apply_fields` and the full rules, then
    #: calls the kernel again. Nothing may be changed for an event it does not fold.
    #: ``None``: no kernel (the Tasks fold has one in C).
    fold_batch: Callable[[list[bytes], int, S], int] | None = None

    def encode_state(self, state: S) -> bytes:
        """Encode ``state`` for a snapshot (override to support snapshots)."""
        raise SnapshotUnsupportedError(f"fold {self.name!r} has no state codec")

    def decode_state(self, data: bytes, version: int) -> S:
        """Decode a state written by :meth:`encode_state` with format ``version``."""
        raise SnapshotUnsupportedError(f"fold {self.name!r} has no state codec")

    def can_read(self, version: int) -> bool:
        """Whether :meth:`decode_state` understands snapshots of ``version``."""
        versions = self.readable_versions
        return version == self.snapshot_version if versions is None else version in versions


@final
@attrs.frozen
class CortexAdapterConfig:
    """Options of a :class:`CortexAdapter`."""

    error_policy: FoldErrorPolicy = attrs.field(
        default=FoldErrorPolicy.STOP, converter=FoldErrorPolicy
    )
    """See :class:`FoldErrorPolicy`."""
    batch_limit: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    """Most events folded per step before the fold yields to other tasks."""
    origin_hash: int = attrs.field(
        default=0, validator=[attrs.validators.ge(0), attrs.validators.le(2**64 - 1)]
    )
    """The producer id :meth:`CortexAdapter.ingest` stamps by default."""


class Change(NamedTuple):
    """One entry of a :class:`ChangeStream`: a seq folded successfully, and how many such
    seqs this subscriber missed just before it because it fell behind (usually 0)."""

    seq: int
    missed: int = 0


@final
class ChangeStream:
    """Async iterator over the seqs a fold applied successfully (see
    :meth:`CortexAdapter.changes`).

    It never carries a seq whose event was skipped or halted the fold. A subscriber that
    falls more than ``buffer`` seqs behind loses the oldest ones; the next :class:`Change`
    says how many (``missed``) and :attr:`missed` keeps the total. Iteration ends after
    the fold task ends and the buffered seqs are delivered; check
    :attr:`CortexAdapter.is_running` / :attr:`CortexAdapter.stop_reason` then.
    """

    __slots__ = ("_adapter", "_buf", "_cap", "_closed", "_event", "_pending_missed", "missed")

    def __init__(self, adapter: CortexAdapter[Any], buffer: int) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        self._adapter = adapter
        self._buf: deque[int] = deque()
        self._cap = buffer
        self._closed = False
        self._event = anyio.Event()
        self._pending_missed = 0
        self.missed = 0

    def _push(self, seqs: list[int]) -> None:
        buf = self._buf
        buf.extend(seqs)
        over = len(buf) - self._cap
        if over > 0:
            for _ in range(over):
                buf.popleft()
            self._pending_missed += over
            self.missed += over
        self._event.set()

    def _end(self) -> None:
        self._closed = True
        self._event.set()

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        while True:
            if self._buf:
                missed, self._pending_missed = self._pending_missed, 0
                return Change(self._buf.popleft(), missed)
            if self._closed:
                raise StopAsyncIteration
            self._event = anyio.Event()
            await self._event.wait()

    def close(self) -> None:
        """Unsubscribe; iteration ends. Idempotent."""
        self._adapter._unsubscribe(self)
        self._buf.clear()
        self._end()

    async def aclose(self) -> None:
        """Same as :meth:`close`."""
        self.close()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class CortexAdapter(Generic[S]):
    """A running fold of one RedEX file into a state (see the module docstring).

    Open it with :meth:`open` (from the beginning of the retained log) or
    :meth:`open_from_snapshot`, both async context managers::

        async with CortexAdapter.open(file, MyFold(), {}) as adapter:
            seq = adapter.ingest(0x80, b"payload")
            await adapter.wait_for_seq(seq)
            print(adapter.state)

    Leaving the block stops the fold task; the RedEX file stays open (its owner closes
    it) and the state stays readable.
    """

    def __init__(
        self,
        file: RedexFile,
        fold: Fold[S],
        state: S,
        start_seq: int,
        config: CortexAdapterConfig,
        restored_through: int | None = None,
    ) -> None:
        self._file = file
        self._fold = fold
        self._state = state
        self._config = config
        self._stop_on_error = config.error_policy is FoldErrorPolicy.STOP
        self.start_seq = start_seq
        """The first seq this adapter folds (0, the oldest retained seq, or the seq after a
        snapshot's watermark)."""
        # Watermarks at or below the floor read as None: a plain open starts with nothing
        # folded; a restore starts at the snapshot's watermark (floor -1).
        self._floor = start_seq - 1 if restored_through is None else -1
        self._folded = start_seq - 1
        self._applied = start_seq - 1
        self._prefix_intact = True
        self._running = False
        self._closed = False
        self._stop_reason = ""
        self._fold_errors = 0
        self._events_evicted = 0
        self._last_error: BaseException | None = None
        self._version = 0
        self._changed = anyio.Event()
        self._waiters: list[tuple[int, int, anyio.Event]] = []
        self._applied_waiters: list[tuple[int, int, anyio.Event]] = []
        self._tiebreak = itertools.count()
        self._subscribers: list[ChangeStream] = []
        self._cancel: anyio.CancelScope | None = None
        self.state_lock = threading.RLock()
        """Held while the fold mutates the state (a batch at a time)."""
        self._fast_batch = fold.fold_batch
        self.snapshot_discarded: str | None = None
        """Why a snapshot given to :meth:`open_from_snapshot` was discarded (its format
        version is unknown to the fold) and the log replayed instead; ``None`` if not."""

    # -- opening ---------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        file: RedexFile,
        fold: Fold[S],
        state: S,
        config: CortexAdapterConfig | None = None,
        *,
        wait_caught_up: bool = True,
    ) -> AsyncIterator[CortexAdapter[S]]:
        """Fold ``file`` from its oldest retained event into ``state``.

        With ``wait_caught_up`` (the default) the block is entered only once the fold has
        processed every event appended before the call (or has stopped).
        """
        lowest = file.lowest_retained_seq
        start = lowest if lowest is not None else file.next_seq
        # "From the beginning" of a file whose head retention already evicted means from
        # its oldest retained event; the strict prefix starts there.
        if file.next_seq == 0:
            start = 0
        adapter = cls(file, fold, state, start, config or CortexAdapterConfig())
        async with adapter._running_in_task_group(wait_caught_up):
            yield adapter

    @classmethod
    @asynccontextmanager
    async def open_from_snapshot(
        cls,
        file: RedexFile,
        fold: Fold[S],
        snapshot: Snapshot,
        initial_state: Callable[[], S],
        config: CortexAdapterConfig | None = None,
        *,
        wait_caught_up: bool = True,
    ) -> AsyncIterator[CortexAdapter[S]]:
        """Restore ``snapshot`` and fold the events after its watermark.

        The snapshot's ``applied_through_seq`` is the strict prefix of the log it
        contains; the fold resumes at the next seq, so an event the snapshotting adapter
        skipped is attempted again. A snapshot whose format version the fold cannot read
        is discarded: the adapter starts from ``initial_state()`` and replays the log from
        the beginning (:attr:`snapshot_discarded` says so). Raises
        :class:`SnapshotMismatchError` if the snapshot belongs to another kind of fold,
        :class:`SnapshotAheadError` if it covers seqs the file does not have, and
        :class:`SnapshotDecodeError` if its state does not decode.
        """
        if snapshot.fold != fold.name:
            raise SnapshotMismatchError(
                f"snapshot of fold {snapshot.fold!r} cannot restore fold {fold.name!r}"
            )
        discarded: str | None = None
        if not fold.can_read(snapshot.version):
            discarded = (
                f"snapshot format version {snapshot.version} is unknown to fold "
                f"{fold.name!r} (writes version {fold.snapshot_version}); replaying the log"
            )
            _log.warning("%s", discarded)
            async with cls.open(
                file, fold, initial_state(), config, wait_caught_up=wait_caught_up
            ) as adapter:
                adapter.snapshot_discarded = discarded
                yield adapter
            return
        last = snapshot.applied_through_seq
        if last is not None and last >= file.next_seq:
            raise SnapshotAheadError(last, file.next_seq)
        state = fold.decode_state(snapshot.state, snapshot.version)
        if last is None:
            async with cls.open(file, fold, state, config, wait_caught_up=wait_caught_up) as a:
                yield a
            return
        adapter = cls(file, fold, state, last + 1, config or CortexAdapterConfig(), last)
        async with adapter._running_in_task_group(wait_caught_up):
            yield adapter

    @asynccontextmanager
    async def _running_in_task_group(self, wait_caught_up: bool) -> AsyncIterator[None]:
        head = self._file.next_seq
        async with anyio.create_task_group() as tg:
            await tg.start(self._run)
            try:
                if wait_caught_up and head > self.start_seq:
                    # A fold that stops while catching up is entered stopped (is_running).
                    with contextlib.suppress(FoldStoppedError):
                        await self.wait_for_seq(head - 1)
                yield
            finally:
                self.close()

    # -- the fold task ---------------------------------------------------------------

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._cancel = scope
            self._running = True
            watcher = self._file.watch_appends()
            task_status.started()
            try:
                await self._loop(watcher)
            finally:
                watcher.close()
                self._running = False
                if not self._stop_reason:
                    self._stop_reason = "adapter closed" if self._closed else "file closed"
                self._wake_all()
        self._cancel = None

    async def _loop(self, watcher: AppendWatcher) -> None:
        """Read the file by range from the next unfolded seq, fold, repeat; sleep on the
        watcher when caught up. Reading by range means there is no buffer to overflow:
        the fold can be any distance behind and still catches up."""
        file = self._file
        limit = self._config.batch_limit
        checkpoint = anyio.lowlevel.checkpoint
        while True:
            start = self._folded + 1
            head = file.next_seq
            if start >= head:
                # A closed file: fold what was appended before the close, then stop.
                if not await watcher.wait(head) and file.next_seq <= self._folded + 1:
                    return
                continue
            if start < file.evicted_below:
                lowest = file.lowest_retained_seq
                if lowest is None or lowest > start:
                    if not self._after_eviction(start, lowest if lowest is not None else head):
                        return
                    continue
            end = min(head, start + limit)
            seqs, payloads = file.read_payloads(start, end)
            if seqs and not self._fold_items(seqs, payloads):
                return
            if self._folded < end - 1:
                # Seqs at the end of the range are not stored (recovery tombstoned them):
                # processed, never applied, so the strict prefix ends before them.
                self._folded = end - 1
                self._prefix_intact = False
                self._wake_waiters()
            # A producer that keeps appending would otherwise starve other tasks.
            await checkpoint()

    def _after_eviction(self, resume: int, new_start: int) -> bool:
        """Seqs ``resume..new_start-1`` were evicted before they were folded; returns
        False when the fold must halt (policy ``stop``)."""
        lost = new_start - resume
        self._events_evicted += lost
        self._prefix_intact = False
        if self._stop_on_error:
            self._stop_reason = (
                f"{lost} events (seqs {resume}..{new_start - 1}) were evicted by retention "
                "before they were folded"
            )
            _log.error("cortex fold %r halted: %s", self._fold.name, self._stop_reason)
            return False
        _log.warning(
            "cortex fold %r skipped %d events evicted by retention before they were folded",
            self._fold.name,
            lost,
        )
        self._folded = new_start - 1
        self._wake_waiters()
        return True

    def _fold_items(self, seqs: Sequence[int], payloads: list[bytes]) -> bool:
        """Fold a batch; returns False when the fold halted."""
        apply = self._fold.apply_fields
        fast = self._fast_batch
        state = self._state
        folded = self._folded
        applied = self._applied
        intact = self._prefix_intact
        stop = self._stop_on_error
        ok: list[int] | None = [] if self._subscribers else None
        n_ok = 0
        halted = False
        unpack_header = _HEADER.unpack_from
        xxh3 = _xxh3
        zero4, mask32, meta_size = _ZERO4, _MASK32, _META_SIZE
        i = 0
        n = len(seqs)
        while i < n and seqs[i] <= folded:
            i += 1  # already folded
        with self.state_lock:
            while i < n:
                if fast is not None:
                    # The fold's batch kernel takes every well-formed event it can and
                    # stops at the first one that needs the full rules (below).
                    try:
                        j = fast(payloads, i, state)
                    except Exception:
                        _log.exception("cortex fold %r: batch kernel failed", self._fold.name)
                        fast = self._fast_batch = None
                        continue
                    if j > i:
                        first, last = seqs[i], seqs[j - 1]
                        if intact:
                            if first == applied + 1 and last - first == j - 1 - i:
                                applied = last
                            else:
                                for k in range(i, j):
                                    if seqs[k] != applied + 1:
                                        intact = False  # a seq is missing from the log
                                        break
                                    applied += 1
                        folded = last
                        n_ok += j - i
                        if ok is not None:
                            ok.extend(seqs[i:j])
                        i = j
                        if i == n:
                            break
                seq, payload = seqs[i], payloads[i]
                i += 1
                try:
                    # open_raw() inlined for the common case (a v2 record); anything
                    # else takes the full path, which verifies v1/pad or raises.
                    if len(payload) >= meta_size:
                        dispatch, flags, origin, seq_or_ts, checksum = unpack_header(payload)
                        tail = payload[meta_size:]
                        if xxh3(payload[:20] + zero4 + tail) & mask32 != checksum:
                            dispatch, flags, origin, seq_or_ts, tail = open_raw(payload)
                    else:
                        dispatch, flags, origin, seq_or_ts, tail = open_raw(payload)
                    apply(seq, dispatch, flags, origin, seq_or_ts, tail, state)
                except DecodeError as exc:
                    self._note_error(seq, exc, recoverable=True)
                    intact = False
                    folded = seq
                    continue
                except Exception as exc:  # any fold failure is handled by the policy
                    self._note_error(seq, exc, recoverable=False)
                    if stop:
                        halted = True
                        break
                    intact = False
                    folded = seq
                    continue
                folded = seq
                if intact:
                    if seq == applied + 1:
                        applied = seq
                    else:
                        intact = False  # a seq is missing from the log: the prefix ends
                n_ok += 1
                if ok is not None:
                    ok.append(seq)
        self._folded = folded
        self._applied = applied
        self._prefix_intact = intact
        if n_ok:
            self._version += 1
            self._changed.set()
            self._changed = anyio.Event()
            if ok:
                for sub in self._subscribers:
                    sub._push(ok)
        self._wake_waiters()
        return not halted

    def _note_error(self, seq: int, exc: Exception, *, recoverable: bool) -> None:
        self._fold_errors += 1
        self._last_error = exc
        n = self._fold_errors
        if not recoverable and self._stop_on_error:
            self._stop_reason = f"seq {seq}: {type(exc).__name__}: {exc}"
            _log.error("cortex fold %r halted at seq %d: %r", self._fold.name, seq, exc)
        elif n <= 10 or n & (n - 1) == 0:
            # Logged for the first ten errors, then at powers of two: a corrupt region
            # must not flood the log; fold_errors has the exact count.
            _log.warning(
                "cortex fold %r skipped seq %d (%s error #%d): %r",
                self._fold.name,
                seq,
                "decode" if recoverable else "fold",
                n,
                exc,
            )

    def _wake_waiters(self) -> None:
        for heap, mark in ((self._waiters, self._folded), (self._applied_waiters, self._applied)):
            while heap and heap[0][0] <= mark:
                heapq.heappop(heap)[2].set()

    def _wake_all(self) -> None:
        for heap in (self._waiters, self._applied_waiters):
            for _, _, ev in heap:
                ev.set()
            heap.clear()
        self._changed.set()
        for sub in self._subscribers:
            sub._end()

    # -- state and progress ----------------------------------------------------------

    @property
    def state(self) -> S:
        """The folded state (read it from the adapter's event loop, or under
        :attr:`state_lock` from another thread)."""
        return self._state

    @property
    def file(self) -> RedexFile:
        """The RedEX file being folded."""
        return self._file

    @property
    def fold(self) -> Fold[S]:
        """The fold."""
        return self._fold

    @property
    def config(self) -> CortexAdapterConfig:
        """The adapter's options."""
        return self._config

    @property
    def is_running(self) -> bool:
        """Whether the fold task is running."""
        return self._running

    @property
    def stop_reason(self) -> str:
        """Why the fold task stopped ("" while it runs)."""
        return "" if self._running else self._stop_reason

    @property
    def fold_errors(self) -> int:
        """Events that failed to decode or to apply (each counted once)."""
        return self._fold_errors

    @property
    def last_error(self) -> BaseException | None:
        """The most recent decode or fold error, for diagnostics."""
        return self._last_error

    @property
    def events_evicted(self) -> int:
        """Events retention evicted before the fold could read them."""
        return self._events_evicted

    @property
    def folded_through_seq(self) -> int | None:
        """Highest seq processed (applied or skipped); ``None`` before the first."""
        return self._folded if self._folded > self._floor else None

    @property
    def applied_through_seq(self) -> int | None:
        """End of the strict prefix of successfully applied seqs; ``None`` if empty."""
        return self._applied if self._applied > self._floor else None

    @property
    def state_version(self) -> int:
        """A counter bumped after every batch that applied at least one event."""
        return self._version

    async def wait_changed(self, since_version: int) -> int:
        """Wait until :attr:`state_version` differs from ``since_version`` (or the fold
        stops) and return the current version."""
        while self._version == since_version and self._running:
            await self._changed.wait()
        return self._version

    # -- waiting ---------------------------------------------------------------------

    async def wait_for_seq(self, seq: int, timeout: float | None = None) -> None:
        """Wait until the fold has processed ``seq`` (``folded_through_seq >= seq``).

        Returns at once for a seq before :attr:`start_seq`. Raises
        :class:`FoldStoppedError` if the fold stops first and :class:`FoldTimeoutError`
        after ``timeout`` seconds. Processed means applied *or* skipped by the policy:
        use :meth:`wait_for_applied_seq` to wait for the strict prefix.
        """
        await self._wait("wait_for_seq", seq, timeout, applied=False)

    async def wait_for_applied_seq(self, seq: int, timeout: float | None = None) -> None:
        """Like :meth:`wait_for_seq`, on ``applied_through_seq`` (the strict prefix).

        If an event at or before ``seq`` was skipped, the prefix can never reach
        ``seq``: this waits until the timeout, or raises :class:`FoldStoppedError` when
        the fold stops.
        """
        await self._wait("wait_for_applied_seq", seq, timeout, applied=True)

    async def _wait(self, op: str, seq: int, timeout: float | None, *, applied: bool) -> None:
        if seq < self.start_seq:
            return
        if (self._applied if applied else self._folded) >= seq:
            return
        if not self._running:
            raise self._stopped_error(op)
        ev = anyio.Event()
        heapq.heappush(
            self._applied_waiters if applied else self._waiters, (seq, next(self._tiebreak), ev)
        )
        if timeout is None:
            await ev.wait()
        else:
            with anyio.move_on_after(timeout):
                await ev.wait()
        if (self._applied if applied else self._folded) >= seq:
            return
        if not self._running:
            raise self._stopped_error(op)
        reached = self.applied_through_seq if applied else self.folded_through_seq
        raise FoldTimeoutError(op, seq, timeout if timeout is not None else 0.0, reached)

    def _stopped_error(self, op: str) -> FoldStoppedError:
        return FoldStoppedError(
            op,
            folded_through_seq=self.folded_through_seq,
            applied_through_seq=self.applied_through_seq,
            reason=self._stop_reason or "not running",
        )

    # -- changes ---------------------------------------------------------------------

    def changes(self, buffer: int = DEFAULT_CHANGE_BUFFER) -> ChangeStream:
        """Subscribe to the seqs folded successfully from now on (see :class:`ChangeStream`)."""
        stream = ChangeStream(self, buffer)
        if self._running:
            self._subscribers.append(stream)
        else:
            stream._end()
        return stream

    def _unsubscribe(self, stream: ChangeStream) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    # -- writing ---------------------------------------------------------------------

    def ingest(
        self,
        dispatch: int,
        tail: bytes,
        *,
        seq_or_ts: int = 0,
        flags: int = 0,
        origin_hash: int | None = None,
    ) -> int:
        """Seal ``tail`` behind an ``EventMeta`` header (v2 checksum) and append it;
        returns the RedEX seq. Raises :class:`AdapterClosedError` after :meth:`close`."""
        if self._closed:
            raise AdapterClosedError("ingest")
        origin = self._config.origin_hash if origin_hash is None else origin_hash
        return self._file.append(seal(dispatch, origin, seq_or_ts, tail, flags))

    def ingest_payload(self, payload: bytes) -> int:
        """Append an already sealed CortEX payload; returns its seq."""
        if self._closed:
            raise AdapterClosedError("ingest")
        return self._file.append(payload)

    # -- snapshots -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The state and its strict-prefix watermark, taken consistently.

        Raises :class:`SnapshotUnsupportedError` if the fold has no state codec.
        """
        with self.state_lock:
            data = self._fold.encode_state(self._state)
            last = self.applied_through_seq
        return Snapshot(
            fold=self._fold.name,
            version=self._fold.snapshot_version,
            applied_through_seq=last,
            state=data,
        )

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the fold task (idempotent). The file stays open; the state readable."""
        if self._closed:
            return
        self._closed = True
        if self._cancel is not None:
            self._cancel.cancel()
        if not self._running:
            self._wake_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"CortexAdapter(fold={self._fold.name!r}, file={self._file.name!r}, "
            f"running={self._running}, folded_through={self.folded_through_seq}, "
            f"applied_through={self.applied_through_seq}, fold_errors={self._fold_errors})"
        )
