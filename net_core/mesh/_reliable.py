"""Reliable streams: in-order, exactly-once delivery by cumulative ACK, NACK and retransmit.

The reference marks reliable packets with a flag and never retransmits. Ours really
delivers. The guarantee, stated once and relied on by the node and the docs:

    **every event sent on a reliable stream is delivered to the receiving application
    exactly once and in send order, as long as the session between the two nodes
    lives.** When the session ends (peer evicted, session replaced, node closed) the
    events not yet acknowledged are lost with it, and the sender's stream is closed.

How (pure state machines here; the node does the I/O and the clock):

* Data packets of a reliable stream carry ``RELIABLE | NACK`` flags: RELIABLE as the
  reference does, NACK meaning "this sender retransmits; send me feedback". Each packet
  has a per-stream sequence number (header ``sequence``) allocated once; a retransmission
  re-seals the same events under the same sequence (with a fresh nonce).
* :class:`ReliableReceiver` delivers packets strictly in sequence order. A packet ahead
  of ``next_expected`` is buffered (bounded: at most :data:`MAX_REORDER_PACKETS` ahead;
  further ones are dropped and will be retransmitted); a sequence below
  ``next_expected`` or already buffered is a duplicate and is dropped (and, as the core
  requires, mints no credit grant). After every packet the receiver sends feedback: a
  :class:`~net_core.mesh.NackPayload` whose ``next_expected`` is the cumulative ACK and
  whose bitmap names the gaps among the next 64 sequences; the feedback packet's header
  ``sequence`` is 1 when it reports gaps (``next_expected`` itself is missing) and 0 for
  a pure cumulative ACK.
* :class:`ReliableSender` keeps every unacknowledged packet. Its size is bounded by the
  stream's credit window: a packet's credit is only returned by a grant, and grants are
  minted for packets the receiver *accepted*, so unacknowledged bytes never exceed
  ``window_bytes`` (reliable streams therefore require a window > 0). Feedback frees
  everything below ``next_expected`` and retransmits the named gaps at once; a packet
  whose feedback never comes is retransmitted when its retransmission timeout expires
  (initial ``rto_ns``, doubling to ``max_rto_ns``), with no retry limit: the failure
  detector, not the stream, decides when the peer is gone.

Packets from a reference sender carry RELIABLE without NACK: the receiver then only
de-duplicates (what the reference itself does), since such a sender never retransmits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import attrs

from net_core.mesh._control import NackPayload

__all__ = [
    "FEEDBACK_SUBPROTOCOL",
    "MAX_REORDER_PACKETS",
    "ReliableReceiver",
    "ReliableSender",
]

FEEDBACK_SUBPROTOCOL: Final = 0xF0A0
"""Subprotocol id (experimental range) of reliable-stream feedback packets: one 16-byte
:class:`~net_core.mesh.NackPayload` event, flag NACK, on the data stream's id."""
MAX_REORDER_PACKETS: Final = 4096
_BITMAP_BITS: Final = 64


@attrs.define(slots=True)
class _Pending:
    events: list[bytes]
    cost: int
    sent_ns: int
    rto_ns: int
    retransmits: int = 0


@final
class ReliableSender:
    """The sender half: unacknowledged packets, acknowledgement and retransmission."""

    __slots__ = ("_unacked", "acked_through", "max_rto_ns", "retransmits", "rto_ns")

    def __init__(self, *, rto_ns: int = 50_000_000, max_rto_ns: int = 1_000_000_000) -> None:
        if not 0 < rto_ns <= max_rto_ns:
            raise ValueError("need 0 < rto_ns <= max_rto_ns")
        self.rto_ns = rto_ns
        self.max_rto_ns = max_rto_ns
        self._unacked: dict[int, _Pending] = {}
        self.acked_through = 0
        self.retransmits = 0

    def __len__(self) -> int:
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        """Credit cost of every packet not yet acknowledged."""
        return sum(p.cost for p in self._unacked.values())

    def track(self, seq: int, events: Sequence[bytes], cost: int, now_ns: int) -> None:
        """Remember a packet that has just been sent for the first time."""
        self._unacked[seq] = _Pending(list(events), cost, now_ns, self.rto_ns)

    def events_of(self, seq: int) -> list[bytes] | None:
        """The events of an unacknowledged packet (None once acknowledged)."""
        pending = self._unacked.get(seq)
        return None if pending is None else pending.events

    def on_feedback(self, nack: NackPayload, now_ns: int, *, gaps: bool) -> list[int]:
        """Apply a receiver's feedback; return the sequences to retransmit now.

        ``gaps`` is False for a pure cumulative ACK (``next_expected`` is then not a
        missing packet, just the next one the receiver waits for)."""
        if nack.next_expected > self.acked_through:
            for seq in [s for s in self._unacked if s < nack.next_expected]:
                del self._unacked[seq]
            self.acked_through = nack.next_expected
        if not gaps or not self._unacked:
            return []
        out: list[int] = []
        for seq in nack.missing():
            pending = self._unacked.get(seq)
            # a gap reported again before the retransmission could arrive is not resent
            if pending is not None and now_ns - pending.sent_ns >= min(
                self.rto_ns // 4, pending.rto_ns
            ):
                out.append(seq)
        return out

    def due(self, now_ns: int) -> list[int]:
        """Sequences whose retransmission timeout expired."""
        return [s for s, p in self._unacked.items() if now_ns - p.sent_ns >= p.rto_ns]

    def next_deadline_ns(self) -> int | None:
        """The earliest retransmission deadline (None when nothing is pending)."""
        if not self._unacked:
            return None
        return min(p.sent_ns + p.rto_ns for p in self._unacked.values())

    def retransmitted(self, seq: int, now_ns: int) -> None:
        """Record that ``seq`` was sent again (its timeout doubles, capped)."""
        pending = self._unacked.get(seq)
        if pending is None:
            return
        pending.sent_ns = now_ns
        pending.retransmits += 1
        pending.rto_ns = min(pending.rto_ns * 2, self.max_rto_ns)
        self.retransmits += 1


@final
class ReliableReceiver:
    """The receiver half: in-order release of packets, duplicates dropped."""

    __slots__ = ("_buffer", "duplicates", "next_expected", "too_far_ahead")

    def __init__(self) -> None:
        self.next_expected = 0
        self._buffer: dict[int, tuple[list[bytes], int]] = {}
        self.duplicates = 0
        self.too_far_ahead = 0

    @property
    def buffered(self) -> int:
        """Packets held back waiting for an earlier one."""
        return len(self._buffer)

    def is_duplicate(self, seq: int) -> bool:
        """True for a packet already delivered or already buffered."""
        return seq < self.next_expected or seq in self._buffer

    def on_packet(
        self, seq: int, events: list[bytes], cost: int
    ) -> list[tuple[int, list[bytes], int]]:
        """Accept one packet; return the packets (seq, events, cost) now deliverable in order.

        A duplicate or a packet too far ahead returns ``[]`` and is counted.
        """
        if self.is_duplicate(seq):
            self.duplicates += 1
            return []
        if seq - self.next_expected >= MAX_REORDER_PACKETS:
            self.too_far_ahead += 1
            return []
        if seq != self.next_expected:
            self._buffer[seq] = (events, cost)
            return []
        out = [(seq, events, cost)]
        self.next_expected = seq + 1
        while self.next_expected in self._buffer:
            evs, c = self._buffer.pop(self.next_expected)
            out.append((self.next_expected, evs, c))
            self.next_expected += 1
        return out

    def feedback(self) -> NackPayload:
        """Cumulative ACK plus the gaps among the next 64 sequences."""
        bitmap = 0
        if self._buffer:
            base = self.next_expected + 1
            for i in range(_BITMAP_BITS):
                if base + i not in self._buffer:
                    bitmap |= 1 << i
            # only report gaps below the highest buffered packet
            highest = max(self._buffer)
            limit = highest - base
            if limit < _BITMAP_BITS:
                bitmap &= (1 << max(limit, 0)) - 1
        return NackPayload(self.next_expected, bitmap)

    def has_gap(self) -> bool:
        """True when packets are buffered behind a missing one."""
        return bool(self._buffer)
