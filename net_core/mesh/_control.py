"""Fixed-size control payloads: the stream-window credit grant, the NACK, the NAT keep-alive.

* :class:`StreamWindowGrant` (16 bytes, ``u64 stream_id, u64 total_consumed``) is the one
  event of a subprotocol ``0x0B00`` packet on the control stream ``u64::MAX``; the
  packet's plaintext is therefore 20 bytes (4-byte frame prefix) and its datagram 100.
* :class:`NackPayload` (16 bytes, ``u64 next_expected, u64 missing_bitmap``; bit *i* means
  sequence ``next_expected + 1 + i`` is missing). Defined by the reference; its mesh never
  sends one. Our reliable streams may.
* :class:`NatKeepalive` (14 bytes, ``"PH" | u64 sender | u32 punch_id``), a raw datagram
  that is never encrypted.

Every decoder requires the exact length (trailing bytes are an error) and raises only
:class:`ControlDecodeError`. Sans-I/O.
"""

from __future__ import annotations

import struct
from typing import Final, final

import attrs

from net_core.mesh._errors import ControlDecodeError, MeshEncodeError

__all__ = [
    "KEEPALIVE_MAGIC",
    "KEEPALIVE_SIZE",
    "NACK_SIZE",
    "STREAM_WINDOW_SIZE",
    "NackPayload",
    "NatKeepalive",
    "StreamWindowGrant",
]

STREAM_WINDOW_SIZE: Final = 16
NACK_SIZE: Final = 16
KEEPALIVE_SIZE: Final = 14
KEEPALIVE_MAGIC: Final = 0x4850
"""``b"PH"`` on the wire."""

_U64: Final = 2**64 - 1
_U32: Final = 0xFFFF_FFFF
_TWO_U64: Final = struct.Struct("<QQ")
_KEEPALIVE: Final = struct.Struct("<HQI")


def _check_u64(name: str, value: int) -> None:
    if not 0 <= value <= _U64:
        raise MeshEncodeError(f"{name}={value} does not fit u64")


@final
@attrs.frozen(slots=True)
class StreamWindowGrant:
    """A receiver's authoritative, cumulative credit report for one stream.

    ``total_consumed`` is every wire byte the receiver accepted on ``stream_id`` so far;
    the sender applies it monotonically (see :class:`~net_core.mesh.StreamSendWindow`).
    """

    stream_id: int
    total_consumed: int

    def encode(self) -> bytes:
        """Return the 16 wire bytes."""
        _check_u64("stream_id", self.stream_id)
        _check_u64("total_consumed", self.total_consumed)
        return _TWO_U64.pack(self.stream_id, self.total_consumed)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> StreamWindowGrant:
        """Decode exactly 16 bytes (shorter is truncated, longer is oversize: both errors)."""
        if len(buf) != STREAM_WINDOW_SIZE:
            what = "truncated" if len(buf) < STREAM_WINDOW_SIZE else "oversize"
            raise ControlDecodeError(
                f"stream window grant {what}: {len(buf)} bytes (want {STREAM_WINDOW_SIZE})"
            )
        stream_id, total = _TWO_U64.unpack(buf)
        return cls(stream_id, total)


@final
@attrs.frozen(slots=True)
class NackPayload:
    """Selective negative acknowledgement: the receiver expects ``next_expected``; bit *i*
    of ``missing_bitmap`` says sequence ``next_expected + 1 + i`` is missing too."""

    next_expected: int
    missing_bitmap: int = 0

    def missing(self) -> list[int]:
        """Every sequence number this NACK asks for, ``next_expected`` first."""
        seqs = [self.next_expected]
        bits = self.missing_bitmap
        i = 0
        while bits:
            if bits & 1:
                seqs.append(self.next_expected + 1 + i)
            bits >>= 1
            i += 1
        return [s for s in seqs if s <= _U64]

    def encode(self) -> bytes:
        """Return the 16 wire bytes."""
        _check_u64("next_expected", self.next_expected)
        _check_u64("missing_bitmap", self.missing_bitmap)
        return _TWO_U64.pack(self.next_expected, self.missing_bitmap)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> NackPayload:
        """Decode exactly 16 bytes."""
        if len(buf) != NACK_SIZE:
            raise ControlDecodeError(f"nack payload must be {NACK_SIZE} bytes, got {len(buf)}")
        nxt, bitmap = _TWO_U64.unpack(buf)
        return cls(nxt, bitmap)


@final
@attrs.frozen(slots=True)
class NatKeepalive:
    """The 14-byte hole-punch keep-alive (``"PH"``, sender node id, punch id)."""

    sender_node_id: int
    punch_id: int

    def encode(self) -> bytes:
        """Return the 14 wire bytes."""
        _check_u64("sender_node_id", self.sender_node_id)
        if not 0 <= self.punch_id <= _U32:
            raise MeshEncodeError(f"punch_id={self.punch_id} does not fit u32")
        return _KEEPALIVE.pack(KEEPALIVE_MAGIC, self.sender_node_id, self.punch_id)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> NatKeepalive:
        """Decode exactly 14 bytes starting with ``"PH"``."""
        if len(buf) != KEEPALIVE_SIZE:
            raise ControlDecodeError(
                f"nat keep-alive must be {KEEPALIVE_SIZE} bytes, got {len(buf)}"
            )
        magic, sender, punch = _KEEPALIVE.unpack(buf)
        if magic != KEEPALIVE_MAGIC:
            raise ControlDecodeError(f"bad nat keep-alive magic {magic:#06x}")
        return cls(sender, punch)
