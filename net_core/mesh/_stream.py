"""Streams of the mesh node: handles, received events, per-stream state and statistics.

A stream is identified by (peer node id, u64 stream id) within one session, and is
bidirectional: what the peer sends on stream 7 arrives on our stream 7 with that peer.
:meth:`MeshNode.open_stream <net_core.mesh.MeshNode.open_stream>` returns a
:class:`MeshStream` handle; opening is idempotent (the first configuration wins) and each
fresh open (after a close, or on a new session) gets a new *epoch*, so a stale handle
raises :class:`~net_core.mesh.NotConnectedError`.

Where received events go: to the stream's own queue (:meth:`MeshStream.events`) while a
handle is open for that (peer, stream id), otherwise to the node-wide queue
(:meth:`MeshNode.events <net_core.mesh.MeshNode.events>`). Credit is granted back to the
sender when the application *takes* an event out of a queue (per packet, when its last
event is taken), so a slow consumer applies backpressure to the sender instead of losing
events. Each queue is bounded (``inbox_limit`` events); a fire-and-forget packet that does
not fit is dropped and counted, a reliable one is refused and retransmitted later.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final, final

import anyio
import attrs

from net_core.mesh._node_errors import NotConnectedError
from net_core.mesh._reliable import ReliableReceiver, ReliableSender
from net_core.mesh._replay import ReplayWindow
from net_core.mesh._window import StreamReceiveWindow, StreamSendWindow

if TYPE_CHECKING:
    from net_core.mesh._node import MeshNode, _Peer

__all__ = [
    "MeshEvent",
    "MeshStream",
    "Reliability",
    "StreamStats",
]

SEND_RETRY_INITIAL: Final = 0.005
SEND_RETRY_CAP: Final = 0.2
SEND_BLOCKING_RETRIES: Final = 4096


class Reliability(enum.StrEnum):
    """Delivery mode of a stream (as sent; the receiver follows the packet flags)."""

    FIRE_AND_FORGET = "fire_and_forget"
    RELIABLE = "reliable"


@final
@attrs.frozen(slots=True)
class MeshEvent:
    """One received event: who sent it, on which stream, packet sequence and position."""

    peer_node_id: int
    stream_id: int
    sequence: int
    index: int
    payload: bytes
    reliable: bool = False


@final
@attrs.frozen(slots=True)
class StreamStats:
    """Counters of one stream (the reference's ``StreamStats`` fields, then ours).

    ``tx_seq`` is the next sequence to send, ``rx_seq`` the next expected (reliable) or
    one past the highest seen; ``inbound_pending`` events wait in the stream's queue (or
    in the node queue when no handle is open); times are monotonic nanoseconds.
    """

    tx_seq: int
    rx_seq: int
    inbound_pending: int
    last_activity_ns: int
    active: bool
    backpressure_events: int
    tx_credit_remaining: int
    tx_window: int
    credit_grants_received: int
    credit_grants_sent: int
    events_sent: int
    events_received: int
    packets_sent: int
    packets_received: int
    retransmits: int
    unacked_packets: int
    duplicates_dropped: int
    reorder_buffered: int
    overflow_dropped: int


@attrs.define(slots=True, eq=False)
class _Credit:
    """Credit of one received packet, returned to the sender once its events are taken."""

    peer: _Peer
    state: _StreamState
    cost: int


@final
class _Inbox:
    """A bounded FIFO of received events shared by any number of waiting consumers."""

    __slots__ = ("_closed", "_items", "_wake", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[tuple[MeshEvent, _Credit | None]] = deque()
        self._wake = anyio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def room(self, count: int) -> bool:
        return len(self._items) + count <= self.limit

    def put_packet(self, events: list[MeshEvent], credit: _Credit | None) -> None:
        last = len(events) - 1
        for i, event in enumerate(events):
            self._items.append((event, credit if i == last else None))
        if last < 0 and credit is not None:  # an empty packet still returns its credit
            self._items.append((_EMPTY, credit))
        self._wake.set()

    async def get(self) -> tuple[MeshEvent, _Credit | None] | None:
        """The next item, or None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._wake = anyio.Event()
            await self._wake.wait()
        return self._items.popleft()

    def close(self) -> list[_Credit]:
        self._closed = True
        credits = [c for _, c in self._items if c is not None]
        self._items.clear()
        self._wake.set()
        return credits


_EMPTY: Final = MeshEvent(0, 0, 0, -1, b"")


@attrs.define(slots=True, eq=False)
class _StreamState:
    """Everything a session knows about one stream id (internal to the node)."""

    stream_id: int
    # -- local open (tx) ---------------------------------------------------------------
    epoch: int = 0
    reliability: Reliability = Reliability.FIRE_AND_FORGET
    fairness_weight: int = 1
    window: StreamSendWindow | None = None
    sender: ReliableSender | None = None
    inbox: _Inbox | None = None
    credit_changed: anyio.Event = attrs.field(factory=anyio.Event)
    tx_seq: int = 0
    events_sent: int = 0
    packets_sent: int = 0
    # -- receive -------------------------------------------------------------------------
    rx_window: StreamReceiveWindow | None = None
    receiver: ReliableReceiver | None = None
    dedup: ReplayWindow | None = None
    rx_seq: int = 0
    events_received: int = 0
    packets_received: int = 0
    duplicates_dropped: int = 0
    overflow_dropped: int = 0
    last_activity_ns: int = 0

    @property
    def is_open(self) -> bool:
        return self.epoch != 0

    def wake_senders(self) -> None:
        self.credit_changed.set()
        self.credit_changed = anyio.Event()


@final
class MeshStream:
    """A handle on one open stream to one peer (returned by ``MeshNode.open_stream``).

    Sending goes through the node (:meth:`send` and friends are shortcuts for
    ``node.send(stream, ...)``); :meth:`events` iterates what the peer sends on this
    stream. A handle is bound to its session and epoch: after :meth:`close`, after the
    session is replaced or the peer evicted, every call raises
    :class:`~net_core.mesh.NotConnectedError`.
    """

    __slots__ = (
        "_node",
        "epoch",
        "fairness_weight",
        "peer_node_id",
        "reliability",
        "session_id",
        "stream_id",
        "window_bytes",
    )

    def __init__(
        self,
        node: MeshNode,
        peer_node_id: int,
        stream_id: int,
        epoch: int,
        session_id: int,
        reliability: Reliability,
        window_bytes: int,
        fairness_weight: int,
    ) -> None:
        self._node = node
        self.peer_node_id = peer_node_id
        self.stream_id = stream_id
        self.epoch = epoch
        self.session_id = session_id
        self.reliability = reliability
        self.window_bytes = window_bytes
        self.fairness_weight = fairness_weight

    def __repr__(self) -> str:
        return (
            f"MeshStream(peer={self.peer_node_id:#x}, stream_id={self.stream_id}, "
            f"epoch={self.epoch}, reliability={self.reliability.value})"
        )

    async def send(self, events: Sequence[bytes | bytearray | memoryview]) -> int:
        """``node.send(self, events)``."""
        return await self._node.send(self, events)

    async def send_with_retry(
        self, events: Sequence[bytes | bytearray | memoryview], *, max_retries: int = 8
    ) -> int:
        """``node.send_with_retry(self, events, max_retries=...)``."""
        return await self._node.send_with_retry(self, events, max_retries=max_retries)

    async def send_blocking(self, events: Sequence[bytes | bytearray | memoryview]) -> int:
        """``node.send_blocking(self, events)``."""
        return await self._node.send_blocking(self, events)

    def events(self) -> AsyncIterator[MeshEvent]:
        """Iterate the events the peer sends on this stream (ends when it closes)."""
        return self._node._stream_events(self)

    def stats(self) -> StreamStats:
        """This stream's counters."""
        stats = self._node.stream_stats(self.peer_node_id, self.stream_id)
        if stats is None:
            raise NotConnectedError(f"stream {self.stream_id} is not open")
        return stats

    async def close(self) -> None:
        """``node.close_stream(self)``."""
        await self._node.close_stream(self)


def retry_delays(max_retries: int) -> list[float]:
    """The waits of ``send_with_retry``: 5 ms doubling, capped at 200 ms."""
    out: list[float] = []
    delay = SEND_RETRY_INITIAL
    for _ in range(max_retries):
        out.append(delay)
        delay = min(delay * 2, SEND_RETRY_CAP)
    return out
