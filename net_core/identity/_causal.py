"""Causal chains: links, the parent-hash rule, and the framing of causal events.

Theory of operation. Every event an origin (a daemon, a publisher) emits carries a
32-byte :class:`CausalLink`, little-endian::

    origin_hash u64 | horizon_encoded u64 | sequence u64 | parent_hash u64

The chain starts at a genesis link (sequence 0, parent 0, empty payload). Each next link
has ``sequence + 1`` and ``parent_hash = xxh3_64(previous link bytes || previous
payload)`` (:func:`compute_parent_hash`), so the chain commits to every earlier event.
The hash is not keyed: it detects gaps, reordering and corruption, not a forger who
rewrites the chain from the start (signatures and tokens cover that).

On the wire a causal event is ``u32 total_len (= 32 + payload length) | link |
payload``. All layouts are byte-identical to the reference (``ai2070-net`` 0.18). This
module is pure: bytes in, values out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, final

import attrs
import xxhash

from net_core.identity._errors import (
    OriginMismatchError,
    ParentHashMismatchError,
    RecordDecodeError,
    SequenceGapError,
)

__all__ = [
    "CAUSAL_LINK_SIZE",
    "MAX_CAUSAL_FRAME_PAYLOAD",
    "CausalChainBuilder",
    "CausalEvent",
    "CausalLink",
    "compute_parent_hash",
    "decode_causal_events",
    "encode_causal_events",
    "validate_chain_link",
]

CAUSAL_LINK_SIZE: Final = 32
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
#: The largest payload a causal frame can carry: total_len is a u32 that includes the link.
MAX_CAUSAL_FRAME_PAYLOAD: Final = _U32_MAX - CAUSAL_LINK_SIZE
_LINK: Final = struct.Struct("<QQQQ")
_LEN: Final = struct.Struct("<I")


def _u64(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"{attribute.name} must be a u64, got {value!r}")


@final
@attrs.frozen
class CausalLink:
    """One position in an origin's causal chain (32 bytes on the wire)."""

    origin_hash: int = attrs.field(validator=_u64)
    horizon_encoded: int = attrs.field(validator=_u64)
    sequence: int = attrs.field(validator=_u64)
    parent_hash: int = attrs.field(validator=_u64)

    @classmethod
    def genesis(cls, origin_hash: int, horizon_encoded: int = 0) -> CausalLink:
        """The first link of ``origin_hash``'s chain: sequence 0, parent 0."""
        return cls(origin_hash, horizon_encoded, 0, 0)

    @property
    def is_genesis(self) -> bool:
        """True for sequence 0 with parent 0."""
        return self.sequence == 0 and self.parent_hash == 0

    def next(self, payload: bytes, horizon_encoded: int = 0) -> CausalLink | None:
        """The link that follows this one, whose own payload is ``payload``.

        Returns None when the sequence would overflow u64.
        """
        if self.sequence == _U64_MAX:
            return None
        return CausalLink(
            self.origin_hash,
            horizon_encoded,
            self.sequence + 1,
            compute_parent_hash(self, payload),
        )

    def to_bytes(self) -> bytes:
        """The 32-byte wire form."""
        return _LINK.pack(self.origin_hash, self.horizon_encoded, self.sequence, self.parent_hash)

    @classmethod
    def from_bytes(cls, data: bytes) -> CausalLink:
        """Decode exactly 32 bytes; anything else raises :class:`RecordDecodeError`."""
        raw = bytes(data)
        if len(raw) != CAUSAL_LINK_SIZE:
            raise RecordDecodeError(
                f"causal link: expected {CAUSAL_LINK_SIZE} bytes, got {len(raw)}"
            )
        return cls(*_LINK.unpack(raw))


def compute_parent_hash(link: CausalLink, payload: bytes) -> int:
    """``xxh3_64(link bytes || payload)``: the parent hash of the link after ``link``."""
    hasher = xxhash.xxh3_64()
    hasher.update(link.to_bytes())
    hasher.update(bytes(payload))
    return hasher.intdigest()


def validate_chain_link(prev: CausalLink, prev_payload: bytes, new: CausalLink) -> None:
    """Raise a :class:`~net_core.identity.ChainError` unless ``new`` follows ``prev``.

    Checked in order: same origin (:class:`OriginMismatchError`), sequence + 1
    (:class:`SequenceGapError`), parent hash (:class:`ParentHashMismatchError`).
    """
    if new.origin_hash != prev.origin_hash:
        raise OriginMismatchError(
            f"causal link: origin {new.origin_hash:#018x} does not continue "
            f"origin {prev.origin_hash:#018x}"
        )
    if prev.sequence == _U64_MAX or new.sequence != prev.sequence + 1:
        raise SequenceGapError(
            f"causal link: sequence {new.sequence} does not follow {prev.sequence}"
        )
    expected = compute_parent_hash(prev, prev_payload)
    if new.parent_hash != expected:
        raise ParentHashMismatchError(
            f"causal link: parent hash {new.parent_hash:#018x} at sequence {new.sequence}, "
            f"expected {expected:#018x}"
        )


@final
@attrs.frozen
class CausalEvent:
    """An event with its causal link."""

    link: CausalLink
    payload: bytes

    @property
    def forward_hash(self) -> int:
        """The parent hash the next event of the chain must carry."""
        return compute_parent_hash(self.link, self.payload)


@final
class CausalChainBuilder:
    """Builds an origin's chain one event at a time.

    Starts at genesis (or at a known head, :meth:`from_head`); :meth:`append` returns the
    next event and makes it the head.
    """

    __slots__ = ("_head", "_head_payload")

    def __init__(self, origin_hash: int, horizon_encoded: int = 0) -> None:
        self._head = CausalLink.genesis(origin_hash, horizon_encoded)
        self._head_payload = b""

    @classmethod
    def from_head(cls, head: CausalLink, head_payload: bytes) -> CausalChainBuilder:
        """Continue a chain whose current head is ``head`` with payload ``head_payload``."""
        builder = cls(head.origin_hash)
        builder._head = head
        builder._head_payload = bytes(head_payload)
        return builder

    @property
    def head(self) -> CausalLink:
        """The link of the last event (genesis before the first append)."""
        return self._head

    @property
    def head_payload(self) -> bytes:
        """The payload of the last event."""
        return self._head_payload

    def append(self, payload: bytes, horizon_encoded: int = 0) -> CausalEvent:
        """The next event; raises :class:`SequenceGapError` when the u64 sequence is spent."""
        link = self._head.next(self._head_payload, horizon_encoded)
        if link is None:
            raise SequenceGapError("causal link: sequence space exhausted")
        self._head = link
        self._head_payload = bytes(payload)
        return CausalEvent(link, self._head_payload)


def encode_causal_events(events: Iterable[CausalEvent]) -> bytes:
    """Frame events as ``u32 len | link | payload`` each; ``len`` = 32 + payload length.

    Raises :class:`ValueError` for a payload above :data:`MAX_CAUSAL_FRAME_PAYLOAD`.
    """
    parts: list[bytes] = []
    for event in events:
        if len(event.payload) > MAX_CAUSAL_FRAME_PAYLOAD:
            raise ValueError(
                f"causal event payload of {len(event.payload)} bytes does not fit a frame"
            )
        parts.append(_LEN.pack(CAUSAL_LINK_SIZE + len(event.payload)))
        parts.append(event.link.to_bytes())
        parts.append(event.payload)
    return b"".join(parts)


def decode_causal_events(data: bytes) -> list[CausalEvent]:
    """Decode a buffer of framed causal events.

    Strict: a truncated frame, a length below 32 or trailing bytes raise
    :class:`RecordDecodeError` (nothing is silently skipped).
    """
    raw = memoryview(bytes(data))
    events: list[CausalEvent] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < _LEN.size:
            raise RecordDecodeError(f"causal frame: truncated length at offset {offset}")
        (total,) = _LEN.unpack_from(raw, offset)
        offset += _LEN.size
        if total < CAUSAL_LINK_SIZE:
            raise RecordDecodeError(
                f"causal frame: length {total} is shorter than a link ({CAUSAL_LINK_SIZE})"
            )
        if len(raw) - offset < total:
            raise RecordDecodeError(
                f"causal frame: {total} bytes announced, {len(raw) - offset} left"
            )
        link = CausalLink(*_LINK.unpack_from(raw, offset))
        payload = bytes(raw[offset + CAUSAL_LINK_SIZE : offset + total])
        events.append(CausalEvent(link, payload))
        offset += total
    return events
