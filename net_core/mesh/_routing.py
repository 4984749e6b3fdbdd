"""The 18-byte routing header of relayed packets, and datagram classification.

Theory of operation. A packet that must cross a relay is a complete Net packet (header
+ ciphertext, end-to-end encrypted for the final destination) prefixed with a
:class:`RoutingHeader` (``mesh.md`` §1.8): magic ``b"RT"``, ttl, hop count, flags (low
nibble), a reserved zero byte, the low 32 bits of the sender's node id and the full
64-bit destination node id. A relay never decrypts; it decrements ``ttl`` and bumps
``hop_count`` (saturating at 255) with :meth:`RoutingHeader.forwarded`.

:func:`classify_datagram` applies the receiver's dispatch order (§1.1) to a raw datagram
so the I/O layer can hand it to the right decoder without guessing.

Sans-I/O: bytes in, values out; the decoder raises only
:class:`RoutingHeaderDecodeError`.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, final

import attrs

from net_core.mesh._errors import MeshEncodeError, RoutingHeaderDecodeError
from net_core.mesh._header import HEADER_SIZE

__all__ = [
    "DEFAULT_HANDSHAKE_TTL",
    "MAX_HOPS",
    "ROUTED_DATA_TTL",
    "ROUTING_HEADER_SIZE",
    "ROUTING_MAGIC",
    "DatagramKind",
    "RoutingFlags",
    "RoutingHeader",
    "classify_datagram",
    "routing_id",
    "split_routed",
]

ROUTING_MAGIC: Final = 0x5452
"""``b"RT"`` on the wire (the reference's comment says 0x5254; the bytes say 0x5452)."""
ROUTING_HEADER_SIZE: Final = 18
DEFAULT_HANDSHAKE_TTL: Final = 16
ROUTED_DATA_TTL: Final = 8
MAX_HOPS: Final = 16

_HDR: Final = struct.Struct("<HBBBBIQ")
_U32: Final = 0xFFFF_FFFF
_U64: Final = 2**64 - 1
_PINGWAVE_SIZE: Final = 72
_KEEPALIVE_SIZE: Final = 14
_NET_PREFIX: Final = b"\x45\x4e"  # 0x4E45 LE
_ROUTED_PREFIX: Final = b"RT"
_KEEPALIVE_PREFIX: Final = b"PH"


def routing_id(node_id: int) -> int:
    """The 32-bit routing id of a node: ``node_id & 0xFFFFFFFF``."""
    return node_id & _U32


class RoutingFlags(enum.IntFlag):
    """Routing-header flag bits (low nibble of byte 4)."""

    NONE = 0
    CONTROL = 1
    REQUIRES_ACK = 2
    PRIORITY = 4
    END_OF_STREAM = 8


_FLAG_MASK: Final = 0x0F


@final
@attrs.frozen(slots=True)
class RoutingHeader:
    """The 18-byte prefix of a relayed packet."""

    src_id: int
    dest_id: int
    ttl: int = ROUTED_DATA_TTL
    hop_count: int = 0
    flags: int = 0

    def forwarded(self) -> RoutingHeader | None:
        """The header a relay sends on: ttl - 1 and hop_count + 1 (saturating at 255).

        Returns None when ``ttl`` is already 0: the packet must be dropped, not forwarded.
        """
        if self.ttl == 0:
            return None
        return attrs.evolve(self, ttl=self.ttl - 1, hop_count=min(self.hop_count + 1, 0xFF))

    def encode(self) -> bytes:
        """Return the 18 wire bytes."""
        if not 0 <= self.ttl <= 0xFF or not 0 <= self.hop_count <= 0xFF:
            raise MeshEncodeError(f"ttl={self.ttl}/hop_count={self.hop_count} must fit u8")
        if not 0 <= self.flags <= _FLAG_MASK:
            raise MeshEncodeError(f"routing flags {self.flags:#x} outside the low nibble")
        if not 0 <= self.src_id <= _U32:
            raise MeshEncodeError(f"src_id={self.src_id} does not fit u32 (use routing_id())")
        if not 0 <= self.dest_id <= _U64:
            raise MeshEncodeError(f"dest_id={self.dest_id} does not fit u64")
        return _HDR.pack(
            ROUTING_MAGIC, self.ttl, self.hop_count, self.flags, 0, self.src_id, self.dest_id
        )

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> RoutingHeader:
        """Decode exactly 18 bytes: magic ``RT``, flags in the low nibble, reserved 0."""
        if len(buf) != ROUTING_HEADER_SIZE:
            raise RoutingHeaderDecodeError(
                f"routing header must be {ROUTING_HEADER_SIZE} bytes, got {len(buf)}"
            )
        magic, ttl, hops, flags, reserved, src, dest = _HDR.unpack(buf)
        if magic != ROUTING_MAGIC:
            raise RoutingHeaderDecodeError(f"bad routing magic {magic:#06x}")
        if flags & ~_FLAG_MASK:
            raise RoutingHeaderDecodeError(f"routing flags {flags:#04x} use the high nibble")
        if reserved:
            raise RoutingHeaderDecodeError(f"routing reserved byte is {reserved}, not 0")
        return cls(src, dest, ttl, hops, flags)


def split_routed(datagram: bytes | bytearray | memoryview) -> tuple[RoutingHeader, bytes]:
    """Split a routed datagram into its routing header and the inner Net packet bytes.

    The inner packet must be at least a full 64-byte header (the receiver's own rule);
    decoding it is the caller's next step (:func:`~net_core.mesh.split_packet`).
    """
    if len(datagram) < ROUTING_HEADER_SIZE + HEADER_SIZE:
        raise RoutingHeaderDecodeError(
            f"routed datagram of {len(datagram)} bytes is shorter than "
            f"{ROUTING_HEADER_SIZE + HEADER_SIZE}"
        )
    view = memoryview(datagram)
    header = RoutingHeader.decode(view[:ROUTING_HEADER_SIZE])
    return header, bytes(view[ROUTING_HEADER_SIZE:])


class DatagramKind(enum.Enum):
    """What a raw datagram is, by the receiver's dispatch order (``mesh.md`` §1.1)."""

    KEEPALIVE = "keepalive"
    PINGWAVE = "pingwave"
    ROUTED = "routed"
    PACKET = "packet"
    UNKNOWN = "unknown"


def classify_datagram(datagram: bytes | bytearray | memoryview) -> DatagramKind:
    """Classify a datagram without decoding it, in the reference's order:

    1. exactly 14 bytes starting ``PH``: NAT keep-alive;
    2. exactly 72 bytes not starting ``NE``: EnhancedPingwave;
    3. starting ``RT`` and at least 18 + 64 bytes: routed packet;
    4. starting ``NE``: direct Net packet;
    5. anything else: unknown (to be dropped and counted).
    """
    size = len(datagram)
    prefix = bytes(datagram[:2])
    if size == _KEEPALIVE_SIZE and prefix == _KEEPALIVE_PREFIX:
        return DatagramKind.KEEPALIVE
    if size == _PINGWAVE_SIZE and prefix != _NET_PREFIX:
        return DatagramKind.PINGWAVE
    if prefix == _ROUTED_PREFIX and size >= ROUTING_HEADER_SIZE + HEADER_SIZE:
        return DatagramKind.ROUTED
    if prefix == _NET_PREFIX:
        return DatagramKind.PACKET
    return DatagramKind.UNKNOWN
