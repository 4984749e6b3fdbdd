"""The errors of the mesh's sans-I/O core, one class per failure a caller can act on.

Two families:

* decoders (packet header, event frames, control payloads, routing header, pingwave,
  handshake messages) raise only :class:`MeshDecodeError` subclasses, which are
  :class:`~net_core.errors.DecodeError` and :class:`~net_core.errors.MeshError` at once;
* the handshake raises :class:`HandshakeError` subclasses that name the failure: an
  authentication failure (wrong PSK, wrong responder static key or a tampered message
  are cryptographically indistinguishable, so they share one class), a replayed
  message, a message out of order, or a routed message whose claimed identity does not
  match its routing header.

Encoders raise :class:`MeshEncodeError` subclasses (also ``ValueError``) when asked to
build something the wire cannot carry: too many events, a payload over the packet
limit, a field that does not fit its width. They never truncate.
"""

from __future__ import annotations

from net_core.errors import BackpressureError, DecodeError, MeshError

__all__ = [
    "ControlDecodeError",
    "CounterExhaustedError",
    "EventTooLargeError",
    "FrameDecodeError",
    "HandshakeAuthError",
    "HandshakeDecodeError",
    "HandshakeError",
    "HandshakeIdentityError",
    "HandshakeOrderError",
    "HandshakeReplayError",
    "MeshBackpressureError",
    "MeshDecodeError",
    "MeshEncodeError",
    "PacketAuthError",
    "PacketDecodeError",
    "PacketReplayError",
    "PingwaveDecodeError",
    "RoutingHeaderDecodeError",
    "TooManyEventsError",
]


# -- decoding ----------------------------------------------------------------------------


class MeshDecodeError(DecodeError, MeshError):
    """Base class of every mesh decoder failure: bytes that do not follow the wire format."""


class PacketDecodeError(MeshDecodeError):
    """A Net packet (64-byte header + body) is malformed: short, bad magic or version,
    a length or count over the limits, or a body that does not match ``payload_len``."""


class FrameDecodeError(MeshDecodeError):
    """The length-prefixed event frames of a payload do not match the header: a frame runs
    past the end, fewer or more frames than ``event_count``, or trailing bytes."""


class ControlDecodeError(MeshDecodeError):
    """A fixed-size control payload (credit grant, NACK, keep-alive) has the wrong length."""


class RoutingHeaderDecodeError(MeshDecodeError):
    """An 18-byte routing header is short, has a bad magic or reserved bits set."""


class PingwaveDecodeError(MeshDecodeError):
    """A 72-byte EnhancedPingwave has the wrong length or an unknown health byte."""


class HandshakeDecodeError(MeshDecodeError):
    """A handshake message has the wrong length or shape (before any cryptography)."""


# -- encoding ----------------------------------------------------------------------------


class MeshEncodeError(MeshError, ValueError):
    """Base class of requests to build something the wire format cannot carry."""


class TooManyEventsError(MeshEncodeError):
    """More events than one packet may carry (``MAX_EVENTS_PER_PACKET``, 2028).

    The reference's builder panicked here (0.9: silently truncated); we refuse.
    """

    def __init__(self, count: int, maximum: int) -> None:
        self.count = count
        self.maximum = maximum
        super().__init__(f"too many events for one packet: {count} (max {maximum})")


class EventTooLargeError(MeshEncodeError):
    """A payload (one event, or a batch's frames) exceeds ``MAX_PAYLOAD_SIZE`` (8112).

    The reference sent such an event as one oversize datagram that every receiver
    dropped; we refuse to build it.
    """

    def __init__(self, size: int, maximum: int) -> None:
        self.size = size
        self.maximum = maximum
        super().__init__(f"payload too large for one packet: {size} bytes (max {maximum})")


class CounterExhaustedError(MeshError):
    """The session's TX nonce counter reached 2^64 - 1; the session must be replaced
    by a new handshake (reusing a nonce under the same key would break the cipher)."""


# -- packets -----------------------------------------------------------------------------


class PacketAuthError(MeshError):
    """A packet failed AEAD verification: wrong session key, tampered header or body."""


class PacketReplayError(MeshError):
    """A packet's nonce counter was already seen, is too old for the 1024-bit window,
    is too far ahead (more than 1024), or is the reserved value 2^64 - 1."""

    def __init__(self, counter: int) -> None:
        self.counter = counter
        super().__init__(f"packet counter {counter} rejected by the anti-replay window")


# -- handshake ---------------------------------------------------------------------------


class HandshakeError(MeshError):
    """Base class of handshake failures (the decode failures are :class:`HandshakeDecodeError`)."""


class HandshakeAuthError(HandshakeError):
    """A handshake message failed authentication.

    NKpsk0 cannot tell these apart, so one class covers them: the peers use different
    PSKs, the initiator used the wrong responder static key, the prologues differ (node
    ids), or a byte of the message was changed in transit.
    """


class HandshakeReplayError(HandshakeError):
    """A msg1 whose initiator ephemeral key was already accepted was presented again."""


class HandshakeOrderError(HandshakeError):
    """A handshake step was called out of order (e.g. msg2 read before msg1 was written,
    or a second msg1 fed to a responder that already answered)."""


class HandshakeIdentityError(HandshakeError):
    """A routed msg1 claims a node id whose low 32 bits differ from the routing header's
    ``src_id``."""


# -- flow control ------------------------------------------------------------------------


class MeshBackpressureError(MeshError, BackpressureError):
    """The stream's send credit cannot cover the packet; nothing was sent or consumed.

    Retry after the receiver's next credit grant (or apply your own drop policy).
    """

    def __init__(self, needed: int, remaining: int) -> None:
        self.needed = needed
        self.remaining = remaining
        super().__init__(
            f"stream would block: packet needs {needed} bytes of credit, {remaining} remain"
        )
