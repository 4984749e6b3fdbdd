"""Stream credit windows (StreamWindow v2, ``mesh.md`` §4): pure accounting, no I/O.

Theory of operation. Credit is counted in *wire bytes*: a packet of events costs
``Σ(4 + len(event)) + 80`` (:func:`packet_credit_cost`). The sender starts with
``window_bytes`` of credit (0 = unbounded: no accounting, no grants).

Sender (:class:`StreamSendWindow`): per packet, :meth:`~StreamSendWindow.try_acquire`
checks and takes the cost at once; when the remaining credit cannot cover it the packet
is refused (:class:`MeshBackpressureError` from :meth:`~StreamSendWindow.acquire`, and
``backpressure_events`` counts it) and nothing is taken. A taken reservation is either
committed once the datagram left (``tx_bytes_sent`` grows) or refunded when the send did
not happen. Grants are *authoritative cumulative totals*: the total is clamped to
``tx_bytes_sent`` (a receiver cannot grant for bytes never sent, and a hostile
``u64::MAX`` cannot lock out later grants), ignored unless it exceeds the largest total
seen so far, and the difference is added back, capped at the window. A lost grant is
healed by the next one.

Receiver (:class:`StreamReceiveWindow`): every accepted data packet adds its cost to
``consumed`` and yields one grant carrying the new total (none when the window is 0).
The caller decides what "accepted" means: a duplicate dropped by a reliable stream must
not mint a grant.

:class:`GrantQuarantine` holds the 2-second rule: grants for a stream closed less than
:data:`GRANT_QUARANTINE_NS` ago are dropped, so a reopened stream never inherits the old
stream's credit. Times are plain integers (monotonic nanoseconds) passed in by the
caller; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

from net_core.mesh._control import StreamWindowGrant
from net_core.mesh._errors import MeshBackpressureError
from net_core.mesh._framing import framed_size
from net_core.mesh._header import PACKET_OVERHEAD

__all__ = [
    "DEFAULT_STREAM_WINDOW_BYTES",
    "GRANT_QUARANTINE_NS",
    "GrantQuarantine",
    "StreamReceiveWindow",
    "StreamSendWindow",
    "packet_credit_cost",
]

DEFAULT_STREAM_WINDOW_BYTES: Final = 65536
GRANT_QUARANTINE_NS: Final = 2_000_000_000
_U64_MAX: Final = 2**64 - 1


def packet_credit_cost(events: Sequence[bytes | bytearray | memoryview]) -> int:
    """Credit one packet of ``events`` costs: framed payload + 80 (header and tag)."""
    return framed_size(events) + PACKET_OVERHEAD


def _check_window(window_bytes: int) -> int:
    if not 0 <= window_bytes <= _U64_MAX:
        raise ValueError(f"window_bytes must be in 0..2**64-1, got {window_bytes}")
    return window_bytes


@final
class StreamSendWindow:
    """The sender's credit for one stream."""

    __slots__ = (
        "_max_consumed_seen",
        "_remaining",
        "_tx_bytes_sent",
        "backpressure_events",
        "credit_grants_received",
        "window_bytes",
    )

    def __init__(self, window_bytes: int = DEFAULT_STREAM_WINDOW_BYTES) -> None:
        self.window_bytes = _check_window(window_bytes)
        self._remaining = window_bytes
        self._tx_bytes_sent = 0
        self._max_consumed_seen = 0
        self.backpressure_events = 0
        self.credit_grants_received = 0

    @property
    def unbounded(self) -> bool:
        """True when the window is 0: no credit accounting at all."""
        return self.window_bytes == 0

    @property
    def remaining(self) -> int:
        """Credit left (always ``window_bytes`` - in flight, never negative)."""
        return self._remaining

    @property
    def tx_bytes_sent(self) -> int:
        """Wire bytes committed as sent on this stream."""
        return self._tx_bytes_sent

    @property
    def max_consumed_seen(self) -> int:
        """The largest (clamped) cumulative total any grant reported."""
        return self._max_consumed_seen

    def would_block(self, cost: int) -> bool:
        """True when a packet of ``cost`` would be refused now (the backpressure signal)."""
        return not self.unbounded and cost > self._remaining

    def try_acquire(self, cost: int) -> bool:
        """Take ``cost`` credit if available; False (and ``backpressure_events`` + 1)
        otherwise. Always True for an unbounded window."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        if self.unbounded:
            return True
        if cost > self._remaining:
            self.backpressure_events += 1
            return False
        self._remaining -= cost
        return True

    def acquire(self, cost: int) -> None:
        """:meth:`try_acquire` that raises :class:`MeshBackpressureError` when refused."""
        if not self.try_acquire(cost):
            raise MeshBackpressureError(cost, self._remaining)

    def commit(self, cost: int) -> None:
        """The packet whose ``cost`` was acquired is being sent.

        Commit *before* handing the datagram to the socket: a receiver may answer (and
        its grant be processed) before the send call returns, and a grant is clamped to
        the bytes committed so far. :meth:`uncommit` undoes it when the send fails.
        """
        self._tx_bytes_sent = min(self._tx_bytes_sent + cost, _U64_MAX)

    def uncommit(self, cost: int) -> None:
        """The committed packet of ``cost`` never left: take it out of ``tx_bytes_sent``
        (no grant can cover it) and give the credit back."""
        self._tx_bytes_sent = max(self._tx_bytes_sent - cost, self._max_consumed_seen, 0)
        self.refund(cost)

    def refund(self, cost: int) -> None:
        """The packet whose ``cost`` was acquired was not sent: give the credit back."""
        if not self.unbounded:
            self._remaining = min(self._remaining + cost, self.window_bytes)

    def apply_grant(self, total_consumed: int) -> int:
        """Apply a receiver's cumulative total; return the credit it restored (0 for a
        stale, duplicate or unbounded-window grant). Every call counts as received."""
        self.credit_grants_received += 1
        if self.unbounded:
            return 0
        total = min(total_consumed, self._tx_bytes_sent)
        if total <= self._max_consumed_seen:
            return 0
        delta = total - self._max_consumed_seen
        self._max_consumed_seen = total
        before = self._remaining
        self._remaining = min(self._remaining + delta, self.window_bytes)
        return self._remaining - before


@final
class StreamReceiveWindow:
    """The receiver's consumption counter for one stream; mints cumulative grants."""

    __slots__ = ("consumed", "credit_grants_sent", "stream_id", "window_bytes")

    def __init__(self, stream_id: int, window_bytes: int = DEFAULT_STREAM_WINDOW_BYTES) -> None:
        self.stream_id = stream_id
        self.window_bytes = _check_window(window_bytes)
        self.consumed = 0
        self.credit_grants_sent = 0

    def on_packet(self, cost: int) -> StreamWindowGrant | None:
        """Account one *accepted* data packet of ``cost`` wire bytes and return the grant
        to send (None when the window is 0: grants are disabled)."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        self.consumed = min(self.consumed + cost, _U64_MAX)
        if self.window_bytes == 0:
            return None
        self.credit_grants_sent += 1
        return StreamWindowGrant(self.stream_id, self.consumed)


@final
class GrantQuarantine:
    """Remembers when streams closed so that late grants for them are dropped."""

    __slots__ = ("_closed", "window_ns")

    def __init__(self, window_ns: int = GRANT_QUARANTINE_NS) -> None:
        self.window_ns = window_ns
        self._closed: dict[int, int] = {}

    def closed(self, stream_id: int, now_ns: int) -> None:
        """Record that ``stream_id`` closed at ``now_ns``."""
        self._closed[stream_id] = now_ns

    def is_quarantined(self, stream_id: int, now_ns: int) -> bool:
        """True when a grant for ``stream_id`` arriving at ``now_ns`` must be dropped."""
        closed_at = self._closed.get(stream_id)
        if closed_at is None:
            return False
        if now_ns - closed_at < self.window_ns:
            return True
        del self._closed[stream_id]
        return False

    def sweep(self, now_ns: int) -> None:
        """Forget closures older than the window."""
        stale = [sid for sid, at in self._closed.items() if now_ns - at >= self.window_ns]
        for sid in stale:
            del self._closed[sid]
