"""The CortEX ``EventMeta`` header and the sealing of CortEX payloads.

Every CortEX payload stored in RedEX is a 24-byte little-endian header followed by a
type-specific tail::

    offset  size  field
    0       1     dispatch (u8)
    1       1     flags (u8)
    2       2     pad (written as zero, ignored on read)
    4       8     origin_hash (u64)
    12      8     seq_or_ts (u64)
    20      4     checksum (u32)

The checksum is the low 32 bits of XXH3-64. Version 2 (written by the reference since
0.11) covers the header with its checksum slot zeroed followed by the tail; version 1
("legacy") covers the tail only. Readers accept v2 first, then v1. The checksum detects
corruption only; it is not tamper protection.

This module is a pure codec: it never does I/O and never interprets the tail.
"""

from __future__ import annotations

import struct
from typing import Final, Literal, final

import attrs
import xxhash

from net_core.errors import CortexError, DecodeError

__all__ = [
    "APPLICATION_DISPATCH_START",
    "DISPATCH_MEMORY_DELETED",
    "DISPATCH_MEMORY_PINNED",
    "DISPATCH_MEMORY_RETAGGED",
    "DISPATCH_MEMORY_STORED",
    "DISPATCH_MEMORY_UNPINNED",
    "DISPATCH_RAW",
    "DISPATCH_TASK_COMPLETED",
    "DISPATCH_TASK_CREATED",
    "DISPATCH_TASK_DELETED",
    "DISPATCH_TASK_RENAMED",
    "EVENT_META_SIZE",
    "FLAG_CAUSAL",
    "FLAG_CONTINUITY_PROOF",
    "ChecksumMismatch",
    "EventMeta",
    "EventMetaError",
    "checksum_v1",
    "checksum_v2",
    "is_application_dispatch",
    "open_event",
    "open_raw",
    "seal",
]

EVENT_META_SIZE: Final = 24
"""Size in bytes of the ``EventMeta`` header that prefixes every CortEX payload."""

DISPATCH_RAW: Final = 0x00
"""Untyped payload; codes 0x00-0x7F are reserved to CortEX itself."""
APPLICATION_DISPATCH_START: Final = 0x80
"""First dispatch code of the application/vendor range 0x80-0xFF."""

DISPATCH_TASK_CREATED: Final = 0x01
DISPATCH_TASK_RENAMED: Final = 0x02
DISPATCH_TASK_COMPLETED: Final = 0x03
DISPATCH_TASK_DELETED: Final = 0x04

DISPATCH_MEMORY_STORED: Final = 0x10
DISPATCH_MEMORY_RETAGGED: Final = 0x11
DISPATCH_MEMORY_PINNED: Final = 0x12
DISPATCH_MEMORY_UNPINNED: Final = 0x13
DISPATCH_MEMORY_DELETED: Final = 0x14

FLAG_CAUSAL: Final = 0x01
FLAG_CONTINUITY_PROOF: Final = 0x02

_HEADER = struct.Struct("<BBxxQQI")
_U8_MAX = 0xFF
_U32_MASK = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
_ZERO_CHECKSUM = bytes(4)
_xxh3 = xxhash.xxh3_64_intdigest


class EventMetaError(DecodeError, CortexError):
    """A CortEX payload header could not be decoded (for example, it is too short)."""


class ChecksumMismatch(EventMetaError):
    """The stored checksum matches neither the v2 nor the v1 checksum of the payload."""


def _check_range(name: str, value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in 0..={maximum}, got {value}")
    return value


def _u8(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    _check_range(attr.name, value, _U8_MAX)


def _u32(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    _check_range(attr.name, value, _U32_MASK)


def _u64(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    _check_range(attr.name, value, _U64_MAX)


@final
@attrs.frozen
class EventMeta:
    """The 24-byte header of a CortEX payload.

    ``origin_hash`` identifies the producer; ``seq_or_ts`` is the producer's per-origin
    counter or a unix-ns timestamp and is never interpreted by the fold. Constructing a
    header with an out-of-range field raises ``ValueError``.
    """

    dispatch: int = attrs.field(validator=_u8)
    flags: int = attrs.field(validator=_u8)
    origin_hash: int = attrs.field(validator=_u64)
    seq_or_ts: int = attrs.field(validator=_u64)
    checksum: int = attrs.field(default=0, validator=_u32)

    def encode(self) -> bytes:
        """Return the 24 header bytes; the two pad bytes are written as zero."""
        return _HEADER.pack(
            self.dispatch, self.flags, self.origin_hash, self.seq_or_ts, self.checksum
        )

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> EventMeta:
        """Decode the header from the first 24 bytes of ``buf``.

        Bytes past the header are ignored and so are the pad bytes, as in the reference.
        Raises :class:`EventMetaError` if ``buf`` is shorter than 24 bytes.
        """
        if len(buf) < EVENT_META_SIZE:
            raise EventMetaError(
                f"event meta needs {EVENT_META_SIZE} bytes, payload has {len(buf)}"
            )
        dispatch, flags, origin, seq_or_ts, checksum = _HEADER.unpack_from(buf, 0)
        return cls(dispatch, flags, origin, seq_or_ts, checksum)


def is_application_dispatch(dispatch: int) -> bool:
    """Whether ``dispatch`` is in the application/vendor range 0x80-0xFF."""
    return dispatch >= APPLICATION_DISPATCH_START


def checksum_v1(tail: bytes | bytearray | memoryview) -> int:
    """The legacy (v1) checksum: low 32 bits of XXH3-64 over the tail only."""
    return xxhash.xxh3_64_intdigest(bytes(tail)) & _U32_MASK


def checksum_v2(meta: EventMeta, tail: bytes | bytearray | memoryview) -> int:
    """The v2 checksum: low 32 bits of XXH3-64 over the header (checksum zeroed) and tail.

    The stored ``meta.checksum`` does not influence the result.
    """
    hasher = xxhash.xxh3_64(attrs.evolve(meta, checksum=0).encode())
    hasher.update(bytes(tail))
    return hasher.intdigest() & _U32_MASK


def seal(
    dispatch: int,
    origin_hash: int,
    seq_or_ts: int,
    tail: bytes | bytearray | memoryview,
    flags: int = 0,
) -> bytes:
    """Return a complete CortEX payload: a header carrying a v2 checksum, then ``tail``.

    Raises ``ValueError`` if a header field is out of range.
    """
    body = tail if type(tail) is bytes else bytes(tail)
    try:
        head = _HEADER.pack(dispatch, flags, origin_hash, seq_or_ts, 0)
    except struct.error:
        # Re-run the field checks for a message that names the field.
        EventMeta(dispatch, flags, origin_hash, seq_or_ts)
        raise  # pragma: no cover - EventMeta rejects whatever struct rejected
    checksum = _xxh3(head + body) & _U32_MASK
    return _HEADER.pack(dispatch, flags, origin_hash, seq_or_ts, checksum) + body


def open_raw(payload: bytes) -> tuple[int, int, int, int, bytes]:
    """Verify a payload; returns ``(dispatch, flags, origin_hash, seq_or_ts, tail)``.

    The allocation-light twin of :func:`open_event` used on the fold's hot path: no
    :class:`EventMeta` object, no checksum version. Same errors.
    """
    if len(payload) < EVENT_META_SIZE:
        raise EventMetaError(
            f"event meta needs {EVENT_META_SIZE} bytes, payload has {len(payload)}"
        )
    dispatch, flags, origin, seq_or_ts, checksum = _HEADER.unpack_from(payload, 0)
    tail = payload[EVENT_META_SIZE:]
    if (
        (_xxh3(payload[:20] + _ZERO_CHECKSUM + tail) & _U32_MASK) != checksum
        # The pad is ignored on read (the v2 checksum covers it as written: zero).
        and (
            payload[2:4] == b"\x00\x00"
            or (_xxh3(payload[:2] + bytes(2) + payload[4:20] + _ZERO_CHECKSUM + tail) & _U32_MASK)
            != checksum
        )
        and (_xxh3(tail) & _U32_MASK) != checksum
    ):
        raise ChecksumMismatch(
            f"event checksum {checksum:#010x} matches neither v2 nor v1 "
            f"(dispatch {dispatch:#04x}, origin {origin:#x})"
        )
    return dispatch, flags, origin, seq_or_ts, tail


def open_event(
    payload: bytes | bytearray | memoryview,
) -> tuple[EventMeta, bytes, Literal[1, 2]]:
    """Split and verify a CortEX payload; returns ``(meta, tail, checksum_version)``.

    The v2 checksum is tried first, then the legacy v1 one. Raises
    :class:`EventMetaError` if the payload is too short and :class:`ChecksumMismatch`
    if neither checksum matches.
    """
    meta = EventMeta.decode(payload)
    tail = bytes(payload[EVENT_META_SIZE:])
    if meta.checksum == checksum_v2(meta, tail):
        return meta, tail, 2
    if meta.checksum == checksum_v1(tail):
        return meta, tail, 1
    raise ChecksumMismatch(
        f"event checksum {meta.checksum:#010x} matches neither v2 nor v1 "
        f"(dispatch {meta.dispatch:#04x}, origin {meta.origin_hash:#x})"
    )
