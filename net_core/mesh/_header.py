"""The 64-byte Net packet header, its flags, the AEAD associated data and the packet split.

Theory of operation. Every mesh datagram that is not a pingwave or a NAT keep-alive is a
*Net packet*: a 64-byte :class:`NetHeader` (all integers little-endian) followed by a
body. For a handshake packet (flag ``HANDSHAKE``) the body is the raw Noise message and
``payload_len`` is its length. For every other packet the body is the ChaCha20-Poly1305
ciphertext of ``payload_len`` plaintext bytes followed by the 16-byte tag; the AEAD's
associated data is :meth:`NetHeader.aad`, the header without its nonce and with
``hop_count`` zeroed (relays may bump ``hop_count`` without breaking the tag).

The layout is byte-identical to the reference 0.18 (``../shared/reference/mesh.md``
§1.2-1.6). This module is sans-I/O: bytes in, values out; it never touches sockets,
clocks or keys. Decoders raise only :class:`PacketDecodeError`; encoders raise
:class:`MeshEncodeError` for a field that does not fit its width.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, final

import attrs

from net_core.mesh._errors import MeshEncodeError, PacketDecodeError

__all__ = [
    "AAD_SIZE",
    "CONTROL_STREAM_ID",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_EVENTS_PER_PACKET",
    "MAX_PACKET_SIZE",
    "MAX_PAYLOAD_SIZE",
    "NONCE_SIZE",
    "PACKET_OVERHEAD",
    "TAG_SIZE",
    "VERSION",
    "NetHeader",
    "PacketFlags",
    "Subprotocol",
    "split_packet",
]

MAGIC: Final = 0x4E45
"""``b"NE"`` on the wire."""
VERSION: Final = 1
HEADER_SIZE: Final = 64
TAG_SIZE: Final = 16
NONCE_SIZE: Final = 12
AAD_SIZE: Final = 52
MAX_PACKET_SIZE: Final = 8192
MAX_PAYLOAD_SIZE: Final = MAX_PACKET_SIZE - HEADER_SIZE - TAG_SIZE  # 8112
MAX_EVENTS_PER_PACKET: Final = MAX_PAYLOAD_SIZE // 4  # 2028
PACKET_OVERHEAD: Final = HEADER_SIZE + TAG_SIZE
"""Bytes an encrypted packet adds to its plaintext (80); also the per-packet credit cost."""

CONTROL_STREAM_ID: Final = 2**64 - 1
"""The stream id credit grants travel on (``u64::MAX``)."""

_U8: Final = 0xFF
_U16: Final = 0xFFFF
_U32: Final = 0xFFFF_FFFF
_U64: Final = 2**64 - 1

# magic, version, flags, priority, hop_ttl, hop_count, frag_flags, subprotocol,
# channel_hash, nonce, session, stream, sequence, subnet, origin, frag_id, frag_off,
# payload_len, event_count
_HEADER: Final = struct.Struct("<HBBBBBBHH12sQQQIIHHHH")
# the same without the nonce; hop_count is always written as 0
_AAD: Final = struct.Struct("<HBBBBBBHHQQQIIHHHH")
_NO_NONCE: Final = bytes(NONCE_SIZE)


class PacketFlags(enum.IntFlag):
    """Bits of header byte 3. The mesh emits only HANDSHAKE, HEARTBEAT and RELIABLE;
    0x40 and 0x80 are unused (kept as-is when decoded)."""

    NONE = 0
    RELIABLE = 0x01
    NACK = 0x02
    PRIORITY = 0x04
    FIN = 0x08
    HANDSHAKE = 0x10
    HEARTBEAT = 0x20


class Subprotocol(enum.IntEnum):
    """Well-known ``subprotocol_id`` values (header bytes 8-9). 0 is the event path;
    unknown ids are legal on the wire and land on the event path of the reference."""

    EVENTS = 0x0000
    CAUSAL = 0x0400
    SNAPSHOT = 0x0401
    MIGRATION = 0x0500
    NEGOTIATION = 0x0600
    CONTINUITY = 0x0700
    FORK_ANNOUNCE = 0x0701
    PROOF_TRANSFER = 0x0702
    PARTITION = 0x0800
    RECONCILE = 0x0801
    REPLICA_GROUP = 0x0900
    MEMBERSHIP = 0x0A00
    STREAM_WINDOW = 0x0B00
    CAPABILITY = 0x0C00
    REFLEX = 0x0D00
    RENDEZVOUS = 0x0D01
    REDEX = 0x0E00
    MESHDB = 0x0F00


_WIDTHS: Final = (
    ("flags", _U8),
    ("priority", _U8),
    ("hop_ttl", _U8),
    ("hop_count", _U8),
    ("frag_flags", _U8),
    ("subprotocol_id", _U16),
    ("channel_hash", _U16),
    ("session_id", _U64),
    ("stream_id", _U64),
    ("sequence", _U64),
    ("subnet_id", _U32),
    ("origin_hash", _U32),
    ("fragment_id", _U16),
    ("fragment_offset", _U16),
    ("payload_len", _U16),
    ("event_count", _U16),
)


@final
@attrs.frozen(slots=True)
class NetHeader:
    """One 64-byte Net packet header (``mesh.md`` §1.2).

    Fields are plain ints; ``nonce`` is the 12 bytes the sender used (4-byte session
    prefix + u64 LE counter, see :func:`~net_core.mesh.packet_nonce`). ``payload_len``
    is the *plaintext* length (the ciphertext adds a 16-byte tag), or the Noise message
    length of a handshake packet. Construction does not validate, so decoding stays
    cheap; :meth:`encode` checks every width and the limits.
    """

    flags: int = 0
    priority: int = 0
    hop_ttl: int = 0
    hop_count: int = 0
    frag_flags: int = 0
    subprotocol_id: int = 0
    channel_hash: int = 0
    nonce: bytes = _NO_NONCE
    session_id: int = 0
    stream_id: int = 0
    sequence: int = 0
    subnet_id: int = 0
    origin_hash: int = 0
    fragment_id: int = 0
    fragment_offset: int = 0
    payload_len: int = 0
    event_count: int = 0
    magic: int = MAGIC
    version: int = VERSION

    # -- flags -------------------------------------------------------------------------

    @property
    def is_handshake(self) -> bool:
        """True for a handshake packet (raw Noise bytes follow, no AEAD tag)."""
        return bool(self.flags & PacketFlags.HANDSHAKE)

    @property
    def is_heartbeat(self) -> bool:
        """True for an authenticated heartbeat (empty plaintext, 16-byte tag)."""
        return bool(self.flags & PacketFlags.HEARTBEAT)

    @property
    def is_reliable(self) -> bool:
        """True when the sender marked the packet as belonging to a reliable stream."""
        return bool(self.flags & PacketFlags.RELIABLE)

    @property
    def nonce_counter(self) -> int:
        """The u64 LE counter in nonce bytes 4..12."""
        return int.from_bytes(self.nonce[4:12], "little")

    # -- codec -------------------------------------------------------------------------

    def encode(self) -> bytes:
        """Return the 64 wire bytes, after checking every field width and limit."""
        self._check_limits()
        try:
            return _HEADER.pack(
                self.magic,
                self.version,
                self.flags,
                self.priority,
                self.hop_ttl,
                self.hop_count,
                self.frag_flags,
                self.subprotocol_id,
                self.channel_hash,
                self.nonce,
                self.session_id,
                self.stream_id,
                self.sequence,
                self.subnet_id,
                self.origin_hash,
                self.fragment_id,
                self.fragment_offset,
                self.payload_len,
                self.event_count,
            )
        except struct.error as exc:
            raise self._width_error() from exc

    def aad(self) -> bytes:
        """Return the 52-byte AEAD associated data: the header without the nonce
        (bytes 12..24) and with ``hop_count`` (byte 6) forced to 0."""
        self._check_limits()
        try:
            return _AAD.pack(
                self.magic,
                self.version,
                self.flags,
                self.priority,
                self.hop_ttl,
                0,
                self.frag_flags,
                self.subprotocol_id,
                self.channel_hash,
                self.session_id,
                self.stream_id,
                self.sequence,
                self.subnet_id,
                self.origin_hash,
                self.fragment_id,
                self.fragment_offset,
                self.payload_len,
                self.event_count,
            )
        except struct.error as exc:
            raise self._width_error() from exc

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> NetHeader:
        """Decode and validate exactly 64 bytes.

        Validation is the reference's ``validate()``: magic ``0x4E45``, version 1,
        ``payload_len`` <= 8112 and ``event_count`` <= 2028.
        """
        if len(buf) != HEADER_SIZE:
            raise PacketDecodeError(f"net header must be {HEADER_SIZE} bytes, got {len(buf)}")
        (
            magic,
            version,
            flags,
            priority,
            hop_ttl,
            hop_count,
            frag_flags,
            subprotocol_id,
            channel_hash,
            nonce,
            session_id,
            stream_id,
            sequence,
            subnet_id,
            origin_hash,
            fragment_id,
            fragment_offset,
            payload_len,
            event_count,
        ) = _HEADER.unpack(buf)
        if magic != MAGIC:
            raise PacketDecodeError(f"bad net header magic {magic:#06x} (want {MAGIC:#06x})")
        if version != VERSION:
            raise PacketDecodeError(f"unsupported net header version {version} (want {VERSION})")
        if payload_len > MAX_PAYLOAD_SIZE:
            raise PacketDecodeError(f"payload_len {payload_len} exceeds {MAX_PAYLOAD_SIZE}")
        if event_count > MAX_EVENTS_PER_PACKET:
            raise PacketDecodeError(
                f"event_count {event_count} exceeds {MAX_EVENTS_PER_PACKET} per packet"
            )
        return cls(
            flags,
            priority,
            hop_ttl,
            hop_count,
            frag_flags,
            subprotocol_id,
            channel_hash,
            nonce,
            session_id,
            stream_id,
            sequence,
            subnet_id,
            origin_hash,
            fragment_id,
            fragment_offset,
            payload_len,
            event_count,
        )

    def _check_limits(self) -> None:
        # struct catches out-of-range ints; these it would not (12s pads, limits are ours)
        if len(self.nonce) != NONCE_SIZE:
            raise MeshEncodeError(f"nonce must be {NONCE_SIZE} bytes, got {len(self.nonce)}")
        if self.payload_len > MAX_PAYLOAD_SIZE:
            raise MeshEncodeError(f"payload_len {self.payload_len} exceeds {MAX_PAYLOAD_SIZE}")
        if self.event_count > MAX_EVENTS_PER_PACKET:
            raise MeshEncodeError(
                f"event_count {self.event_count} exceeds {MAX_EVENTS_PER_PACKET} per packet"
            )
        if self.magic != MAGIC or self.version != VERSION:
            raise MeshEncodeError(
                f"net header magic/version must be {MAGIC:#06x}/{VERSION}, "
                f"got {self.magic:#x}/{self.version}"
            )

    def _width_error(self) -> MeshEncodeError:
        for name, limit in _WIDTHS:
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= limit:
                return MeshEncodeError(f"net header field {name}={value!r} does not fit 0..{limit}")
        return MeshEncodeError("net header fields do not fit their widths")


def split_packet(datagram: bytes | bytearray | memoryview) -> tuple[NetHeader, bytes]:
    """Split a Net packet into its validated header and its body.

    The body must be exactly ``payload_len`` bytes for a handshake packet (raw Noise
    message) and exactly ``payload_len + 16`` (ciphertext + tag) for every other packet;
    anything else, trailing bytes included, is a :class:`PacketDecodeError`.
    """
    if len(datagram) < HEADER_SIZE:
        raise PacketDecodeError(f"packet shorter than the {HEADER_SIZE}-byte header")
    view = memoryview(datagram)
    header = NetHeader.decode(view[:HEADER_SIZE])
    body = bytes(view[HEADER_SIZE:])
    want = header.payload_len if header.is_handshake else header.payload_len + TAG_SIZE
    if len(body) != want:
        kind = "handshake" if header.is_handshake else "encrypted"
        raise PacketDecodeError(
            f"{kind} packet body is {len(body)} bytes, header says {want} "
            f"(payload_len {header.payload_len})"
        )
    return header, body
