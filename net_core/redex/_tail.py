"""Live tails of a RedEX file: history first, then appends as they happen.

Theory of operation. A :class:`RedexTail` owns one :class:`_TailSub`, whose deque is the
tail's buffer. The sub moves through four states:

* ``HISTORY``: the tail fills its buffer from the file's retained columns, at most one
  buffer at a time, under the file lock. When a fill reaches the end of the file, the
  sub is registered with the file *in the same critical section* and becomes ``LIVE``:
  no append can fall between the last history event and the first live one.
* ``LIVE``: every append pushes its events into the buffer (under the file lock). A full
  buffer means the consumer cannot keep up: with ``overflow="lag"`` the sub becomes
  ``LAGGED`` and is unregistered; with ``"catch_up"`` it goes back to ``HISTORY`` at the
  first event it could not take.
* ``LAGGED``: the consumer gets the events already buffered, then :class:`LaggedError`.
  History evicted by retention before the tail read it lags the same way.
* ``CLOSED``: the file or the tail was closed; buffered events are still delivered, then
  iteration stops.

Waking: an append on the consumer's own thread sets the consumer's ``anyio.Event``; an
append on another thread cannot touch that event safely, so the consumer also re-checks
its buffer every :data:`POLL_INTERVAL` seconds while it waits.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Final, Literal, final

import anyio

from net_core.redex._errors import LaggedError
from net_core.redex._file import RedexEvent

if TYPE_CHECKING:
    from net_core.redex._file import RedexFile

__all__ = ["POLL_INTERVAL", "AppendWatcher", "RedexTail"]

#: How often a waiting tail re-checks its buffer for events appended by other threads.
POLL_INTERVAL: Final = 0.02

HISTORY: Final = 0
LIVE: Final = 1
LAGGED: Final = 2
CLOSED: Final = 3

_get_ident = threading.get_ident

_Item = tuple[int, bytes, int, bool]


@final
class _TailSub:
    """A tail's buffer and state, shared with the file (mutated under the file lock)."""

    __slots__ = (
        "buf",
        "cap",
        "detail",
        "from_seq",
        "next_seq",
        "overflow",
        "state",
        "thread",
        "waiter",
    )

    def __init__(self, from_seq: int, cap: int, overflow: str) -> None:
        self.buf: deque[_Item] = deque()
        self.cap = cap
        self.from_seq = from_seq
        self.next_seq = from_seq  # next seq to read from the file while in HISTORY
        self.overflow = overflow
        self.state = HISTORY
        self.detail = ""
        self.waiter: anyio.Event | None = None
        self.thread = 0

    def push(self, first: int, ts: int, payloads: Sequence[bytes], inline: bool) -> bool:
        """Take live events; returns False when the sub must be unregistered."""
        buf = self.buf
        n = len(payloads)
        if first >= self.from_seq and len(buf) + n <= self.cap:
            # The common case: everything fits; one C-level extend for the whole batch.
            if n == 1:
                buf.append((first, payloads[0], ts, inline))
            else:
                buf.extend(zip(range(first, first + n), payloads, repeat(ts), repeat(inline)))
            waiter = self.waiter
            if waiter is not None and self.thread == _get_ident():
                waiter.set()
            return True
        seq = first
        for payload in payloads:
            if seq >= self.from_seq:
                if len(buf) >= self.cap:
                    if self.overflow == "catch_up":
                        self.state = HISTORY
                        self.next_seq = seq
                    else:
                        self.state = LAGGED
                        self.detail = f"more than {self.cap} events behind"
                    self._wake()
                    return False
                buf.append((seq, payload, ts, inline))
            seq += 1
        self._wake()
        return True

    def close(self) -> None:
        self.state = CLOSED
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and self.thread == _get_ident():
            waiter.set()


@final
class RedexTail:
    """Async iterator over a file's events from a seq on (see :meth:`RedexFile.tail`).

    Use it with ``async for``, optionally inside ``async with`` so that it is closed when
    the block ends. :meth:`aclose` (or :meth:`close`) stops it; a cancelled ``__anext__``
    leaves the tail usable.
    """

    __slots__ = ("_file", "_sub")

    def __init__(
        self, file: RedexFile, from_seq: int, cap: int, overflow: Literal["lag", "catch_up"]
    ) -> None:
        if from_seq < 0:
            raise ValueError(f"from_seq must be >= 0, got {from_seq}")
        if overflow not in ("lag", "catch_up"):
            raise ValueError(f"overflow must be 'lag' or 'catch_up', got {overflow!r}")
        self._file = file
        self._sub = _TailSub(from_seq, cap, overflow)
        if file._closed:
            # A tail opened on a closed file ends at once (as the reference's does); a
            # tail opened before the close reads everything appended before it.
            self._sub.state = CLOSED
            return
        # Fill the first buffer now, so that history lost *before* the call is reported
        # even if the file changes before the first __anext__.
        self._refill()

    def _refill(self) -> None:
        file = self._file
        sub = self._sub
        with file._lock:
            if sub.state != HISTORY:
                return
            # A closed file still serves its history: the tail reads to the end of what
            # was appended before the close, then stops.
            seqs = file._seqs
            lowest = seqs[0] if seqs else file._next_seq
            cursor = sub.next_seq
            if cursor < lowest and cursor < file._evicted_below:
                sub.state = LAGGED
                sub.detail = f"seq {cursor} was evicted (oldest retained is {lowest})"
                return
            i = file._index_of(cursor)
            room = max(1, sub.cap - len(sub.buf))
            j = min(i + room, len(seqs))
            if j > i:
                inline = file._inline
                stamps = file._ts[i:j]
                sub.buf.extend(
                    zip(
                        seqs[i:j],
                        file._payloads[i:j],
                        stamps,
                        [s in inline for s in seqs[i:j]] if inline else [False] * (j - i),
                        strict=True,
                    )
                )
            if j == len(seqs):
                sub.next_seq = max(cursor, file._next_seq)
                if file._closed:
                    sub.state = CLOSED
                else:
                    sub.state = LIVE
                    file._tails.append(sub)
            else:
                sub.next_seq = seqs[j]

    def __aiter__(self) -> RedexTail:
        return self

    async def __anext__(self) -> RedexEvent:
        sub = self._sub
        while True:
            if sub.buf:
                seq, payload, ts, inline = sub.buf.popleft()
                return RedexEvent(seq, payload, ts, inline)
            state = sub.state
            if state == HISTORY:
                self._refill()
                continue
            if state == LAGGED:
                sub.state = CLOSED
                raise LaggedError(sub.detail)
            if state == CLOSED:
                raise StopAsyncIteration
            waiter = anyio.Event()
            sub.thread = _get_ident()
            sub.waiter = waiter
            try:
                if sub.buf or sub.state != LIVE:
                    continue
                with anyio.move_on_after(POLL_INTERVAL):
                    await waiter.wait()
            finally:
                sub.waiter = None

    async def next_batch(self, limit: int = 1024) -> list[RedexEvent]:
        """Wait for events and return up to ``limit`` of them, in seq order.

        Returns as soon as at least one event is available, with everything buffered up
        to ``limit``. Returns an empty list once the tail has ended (the file or the
        tail was closed); raises :class:`LaggedError` where ``__anext__`` would. One
        call replaces up to ``limit`` ``__anext__`` round trips, which is what a
        consumer that works in batches (a CortEX fold, a bridge) wants.
        """
        return [RedexEvent(*item) for item in await self._next_items(limit)]

    async def _next_items(self, limit: int) -> list[_Item]:
        """:meth:`next_batch` without building :class:`RedexEvent` objects."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        sub = self._sub
        while True:
            buf = sub.buf
            if buf:
                # Appends from other threads push under the file lock; taking it makes the
                # copy-and-clear atomic with respect to them.
                with self._file._lock:
                    if len(buf) <= limit:
                        items = list(buf)
                        buf.clear()
                    else:
                        popleft = buf.popleft
                        items = [popleft() for _ in range(limit)]
                return items
            state = sub.state
            if state == HISTORY:
                self._refill()
                continue
            if state == LAGGED:
                sub.state = CLOSED
                raise LaggedError(sub.detail)
            if state == CLOSED:
                return []
            waiter = anyio.Event()
            sub.thread = _get_ident()
            sub.waiter = waiter
            try:
                if sub.buf or sub.state != LIVE:
                    continue
                with anyio.move_on_after(POLL_INTERVAL):
                    await waiter.wait()
            finally:
                sub.waiter = None

    def buffered(self) -> int:
        """Events waiting in the buffer."""
        return len(self._sub.buf)

    @property
    def lagged(self) -> bool:
        """True once the tail has lagged (the error is raised after the buffered events)."""
        return self._sub.state == LAGGED

    def close(self) -> None:
        """Stop the tail: unregister it and drop its buffer. Idempotent."""
        file = self._file
        sub = self._sub
        with file._lock:
            if sub in file._tails:
                file._tails.remove(sub)
            sub.state = CLOSED
            sub.buf.clear()
        sub._wake()

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        self.close()

    async def __aenter__(self) -> RedexTail:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


@final
class _WatchSub:
    """The file-side half of an :class:`AppendWatcher` (mutated under the file lock)."""

    __slots__ = ("closed", "thread", "waiter")

    def __init__(self) -> None:
        self.closed = False
        self.waiter: anyio.Event | None = None
        self.thread = 0

    def push(self, first: int, ts: int, payloads: Sequence[bytes], inline: bool) -> bool:
        waiter = self.waiter
        if waiter is not None and self.thread == _get_ident():
            waiter.set()
        return True

    def close(self) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and self.thread == _get_ident():
            waiter.set()


@final
class AppendWatcher:
    """Wakes a task when a file grows or closes; carries no events (see
    :meth:`RedexFile.watch_appends`).

    For consumers that read the file by range themselves (a CortEX fold reads whole
    columns with :meth:`RedexFile.read_payloads`): no per-event buffer, no lag. Appends
    on the waiting task's thread wake it at once; appends on other threads are noticed
    within :data:`POLL_INTERVAL`.
    """

    __slots__ = ("_file", "_sub")

    def __init__(self, file: RedexFile) -> None:
        self._file = file
        self._sub = _WatchSub()
        with file._lock:
            if file._closed:
                self._sub.closed = True
            else:
                file._tails.append(self._sub)

    async def wait(self, seen_next_seq: int) -> bool:
        """Wait until the file's ``next_seq`` exceeds ``seen_next_seq``; returns False
        (at once, or when it happens) if the file is closed or the watcher was."""
        file = self._file
        sub = self._sub
        while True:
            with file._lock:
                if file._next_seq > seen_next_seq:
                    return True
                if sub.closed:
                    return False
                waiter = anyio.Event()
                sub.waiter = waiter
                sub.thread = _get_ident()
            try:
                with anyio.move_on_after(POLL_INTERVAL):
                    await waiter.wait()
            finally:
                sub.waiter = None

    def close(self) -> None:
        """Unregister (idempotent); a pending :meth:`wait` returns False."""
        file = self._file
        sub = self._sub
        with file._lock:
            if sub in file._tails:
                file._tails.remove(sub)
        sub.close()
