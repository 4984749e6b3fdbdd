"""Event framing inside a Net packet's plaintext payload, and batch splitting.

Theory of operation. A data packet's plaintext is ``event_count`` frames, each a u32 LE
length followed by that many bytes, with no padding and no trailer (``mesh.md`` §1.5):
``"hello", "world!"`` is 19 bytes. One packet carries at most
:data:`~net_core.mesh.MAX_PAYLOAD_SIZE` (8112) plaintext bytes and
:data:`~net_core.mesh.MAX_EVENTS_PER_PACKET` (2028) frames.

Unlike the reference, nothing here truncates or stops silently: the encoder refuses a
batch that does not fit (:class:`TooManyEventsError`, :class:`EventTooLargeError`), and
the decoder requires exactly ``event_count`` whole frames and no trailing byte
(:class:`FrameDecodeError`). A hostile ``event_count`` cannot make the decoder allocate:
it is checked against the payload length (4 bytes per frame at least) first.

Sans-I/O: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from net_core.mesh._errors import EventTooLargeError, FrameDecodeError, TooManyEventsError
from net_core.mesh._header import MAX_EVENTS_PER_PACKET, MAX_PAYLOAD_SIZE

__all__ = [
    "FRAME_PREFIX_SIZE",
    "batch_events",
    "decode_events",
    "encode_events",
    "framed_size",
]

FRAME_PREFIX_SIZE: Final = 4
_LEN: Final = struct.Struct("<I")

Payload = bytes | bytearray | memoryview


def framed_size(events: Sequence[Payload]) -> int:
    """Return the plaintext size of ``events`` once framed (4 bytes + length each)."""
    return sum(len(e) for e in events) + FRAME_PREFIX_SIZE * len(events)


def encode_events(events: Sequence[Payload]) -> bytes:
    """Frame ``events`` into one packet payload.

    Raises :class:`TooManyEventsError` for more than 2028 events and
    :class:`EventTooLargeError` when the framed size exceeds 8112 bytes. An empty
    sequence gives ``b""`` (the reference sends such packets as heartbeats only; a
    caller may still build one).
    """
    if len(events) > MAX_EVENTS_PER_PACKET:
        raise TooManyEventsError(len(events), MAX_EVENTS_PER_PACKET)
    size = framed_size(events)
    if size > MAX_PAYLOAD_SIZE:
        raise EventTooLargeError(size, MAX_PAYLOAD_SIZE)
    pack = _LEN.pack
    parts: list[bytes | bytearray | memoryview] = []
    for event in events:
        parts.append(pack(len(event)))
        parts.append(event)
    return b"".join(parts)


def decode_events(payload: Payload, event_count: int) -> list[bytes]:
    """Parse exactly ``event_count`` frames that fill ``payload`` exactly.

    Raises :class:`FrameDecodeError` when a frame runs past the end, when the payload
    holds more bytes than the declared frames, or when ``event_count`` cannot fit.
    """
    size = len(payload)
    if event_count < 0 or event_count * FRAME_PREFIX_SIZE > size:
        raise FrameDecodeError(
            f"event_count {event_count} cannot fit in a {size}-byte payload "
            f"({FRAME_PREFIX_SIZE} bytes of length prefix each)"
        )
    data = payload if isinstance(payload, bytes) else bytes(payload)
    unpack_from = _LEN.unpack_from
    events: list[bytes] = []
    append = events.append
    pos = 0
    index = 0
    try:
        for index in range(event_count):
            (length,) = unpack_from(data, pos)
            pos += FRAME_PREFIX_SIZE
            end = pos + length
            if end > size:
                raise FrameDecodeError(
                    f"frame {index} of {event_count}: {length} bytes declared, {size - pos} left"
                )
            append(data[pos:end])
            pos = end
    except struct.error as exc:
        raise FrameDecodeError(
            f"frame {index} of {event_count}: length prefix runs past the payload end"
        ) from exc
    if pos != size:
        raise FrameDecodeError(f"{size - pos} trailing bytes after {event_count} frames")
    return events


def batch_events(
    events: Sequence[Payload],
    *,
    max_payload: int = MAX_PAYLOAD_SIZE,
    max_events: int = MAX_EVENTS_PER_PACKET,
) -> list[list[Payload]]:
    """Split ``events`` into consecutive packet-sized batches, preserving order.

    Each batch frames to at most ``max_payload`` bytes and holds at most ``max_events``
    events. An event that alone exceeds ``max_payload`` raises
    :class:`EventTooLargeError` (the reference sent it as an oversize datagram that no
    receiver accepts). The limits may be lowered, never raised above the wire's.
    """
    if not 0 < max_payload <= MAX_PAYLOAD_SIZE:
        raise ValueError(f"max_payload must be in 1..{MAX_PAYLOAD_SIZE}, got {max_payload}")
    if not 0 < max_events <= MAX_EVENTS_PER_PACKET:
        raise ValueError(f"max_events must be in 1..{MAX_EVENTS_PER_PACKET}, got {max_events}")
    batches: list[list[Payload]] = []
    current: list[Payload] = []
    current_size = 0
    for event in events:
        cost = FRAME_PREFIX_SIZE + len(event)
        if cost > max_payload:
            raise EventTooLargeError(cost, max_payload)
        if current and (current_size + cost > max_payload or len(current) >= max_events):
            batches.append(current)
            current = []
            current_size = 0
        current.append(event)
        current_size += cost
    if current:
        batches.append(current)
    return batches
