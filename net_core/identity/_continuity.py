"""Continuity proofs and fork records: compact statements about a causal chain.

* :class:`ContinuityProof` (40 bytes): "origin O's chain is intact from ``from_seq`` to
  ``to_seq``", carrying the forward hashes (:func:`compute_parent_hash`) of the two end
  events. A verifier re-walks its own copy of the range, bounded by
  :data:`MAX_PROOF_VERIFY_SPAN` so a peer cannot make it walk billions of events.
* :class:`ForkRecord` (65 bytes): "origin F was forked from origin O at sequence S". The
  fork's genesis link carries a sentinel parent hash ``xxh3_64(O LE || S LE || "fork")``
  so the new chain commits to where it came from.

Layouts (little-endian) are byte-identical to the reference (``ai2070-net`` 0.18)::

    ContinuityProof: origin u64 | from_seq u64 | to_seq u64 | from_hash u64 | to_hash u64
    ForkRecord:      original u64 | forked u64 | fork_seq u64 | genesis link 32 |
                     has_snapshot u8 | snapshot_seq u64

Neither record is signed: they are integrity statements for a verifier that holds (or
fetches) the events, not authentication. This module is pure.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from typing import Final, final

import attrs
import xxhash

from net_core.identity._causal import (
    CAUSAL_LINK_SIZE,
    CausalEvent,
    CausalLink,
)
from net_core.identity._errors import (
    ContinuityProofError,
    ForkRecordError,
    RecordDecodeError,
)

__all__ = [
    "CONTINUITY_PROOF_SIZE",
    "FORK_RECORD_SIZE",
    "MAX_PROOF_VERIFY_SPAN",
    "ContinuityProof",
    "ForkRecord",
    "fork_sentinel",
]

CONTINUITY_PROOF_SIZE: Final = 40
FORK_RECORD_SIZE: Final = 65
#: A proof whose span (``to_seq - from_seq``) reaches this is refused unwalked.
MAX_PROOF_VERIFY_SPAN: Final = 100_000

_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_PROOF: Final = struct.Struct("<QQQQQ")
_FORK_HEAD: Final = struct.Struct("<QQQ")
_FORK_TAIL: Final = struct.Struct("<BQ")
_SENTINEL: Final = struct.Struct("<QQ")


def _u64(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"{attribute.name} must be a u64, got {value!r}")


@final
@attrs.frozen
class ContinuityProof:
    """A 40-byte claim that an origin's chain is intact over ``[from_seq, to_seq]``."""

    origin_hash: int = attrs.field(validator=_u64)
    from_seq: int = attrs.field(validator=_u64)
    to_seq: int = attrs.field(validator=_u64)
    from_hash: int = attrs.field(validator=_u64)
    to_hash: int = attrs.field(validator=_u64)

    @classmethod
    def from_events(cls, events: Sequence[CausalEvent]) -> ContinuityProof:
        """The proof over a non-empty, ordered run of one origin's events."""
        if not events:
            raise ContinuityProofError("continuity proof: no events to prove")
        first, last = events[0], events[-1]
        return cls(
            origin_hash=first.link.origin_hash,
            from_seq=first.link.sequence,
            to_seq=last.link.sequence,
            from_hash=first.forward_hash,
            to_hash=last.forward_hash,
        )

    def verify_against(self, events: Sequence[CausalEvent]) -> None:
        """Raise :class:`ContinuityProofError` unless ``events`` bear the proof out.

        ``events`` is the verifier's own ordered copy of the origin's events covering
        the range (extra events before or after it are ignored). Every event in the range
        is walked: the sequences must be consecutive, each parent hash must match its
        predecessor, and the two end hashes must equal the proof's. A reversed range or a
        span of :data:`MAX_PROOF_VERIFY_SPAN` or more is refused before any walking.
        """
        if self.from_seq > self.to_seq:
            raise ContinuityProofError(
                f"continuity proof: reversed range [{self.from_seq}, {self.to_seq}]"
            )
        if self.to_seq - self.from_seq >= MAX_PROOF_VERIFY_SPAN:
            raise ContinuityProofError(
                f"continuity proof: span [{self.from_seq}, {self.to_seq}] exceeds the cap "
                f"of {MAX_PROOF_VERIFY_SPAN}"
            )
        in_range = [e for e in events if self.from_seq <= e.link.sequence <= self.to_seq]
        for event in in_range:
            if event.link.origin_hash != self.origin_hash:
                raise ContinuityProofError(
                    f"continuity proof: event {event.link.sequence} has origin "
                    f"{event.link.origin_hash:#018x}, proof is for {self.origin_hash:#018x}"
                )
        if not in_range or in_range[0].link.sequence != self.from_seq:
            raise ContinuityProofError(f"continuity proof: missing event {self.from_seq}")
        first = in_range[0]
        if first.forward_hash != self.from_hash:
            raise ContinuityProofError(
                f"continuity proof: hash mismatch at the first event {self.from_seq}"
            )
        for prev, curr in itertools.pairwise(in_range):
            if curr.link.sequence != prev.link.sequence + 1:
                raise ContinuityProofError(
                    f"continuity proof: missing event {prev.link.sequence + 1}"
                )
            if curr.link.parent_hash != prev.forward_hash:
                raise ContinuityProofError(
                    f"continuity proof: parent hash mismatch at event {curr.link.sequence}"
                )
        last = in_range[-1]
        if last.link.sequence != self.to_seq:
            raise ContinuityProofError(f"continuity proof: missing event {self.to_seq}")
        if last.forward_hash != self.to_hash:
            raise ContinuityProofError(
                f"continuity proof: hash mismatch at the last event {self.to_seq}"
            )

    def to_bytes(self) -> bytes:
        """The 40-byte wire form."""
        return _PROOF.pack(
            self.origin_hash, self.from_seq, self.to_seq, self.from_hash, self.to_hash
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ContinuityProof:
        """Decode exactly 40 bytes; anything else raises :class:`RecordDecodeError`."""
        raw = bytes(data)
        if len(raw) != CONTINUITY_PROOF_SIZE:
            raise RecordDecodeError(
                f"continuity proof: expected {CONTINUITY_PROOF_SIZE} bytes, got {len(raw)}"
            )
        return cls(*_PROOF.unpack(raw))


def fork_sentinel(original_origin: int, fork_seq: int) -> int:
    """``xxh3_64(original LE || fork_seq LE || b"fork")``: a fork genesis's parent hash."""
    return xxhash.xxh3_64_intdigest(_SENTINEL.pack(original_origin, fork_seq) + b"fork")


@final
@attrs.frozen
class ForkRecord:
    """A 65-byte record that ``forked_origin`` was forked from ``original_origin``.

    ``snapshot_seq`` is None when the fork did not start from a snapshot.
    """

    original_origin: int = attrs.field(validator=_u64)
    forked_origin: int = attrs.field(validator=_u64)
    fork_seq: int = attrs.field(validator=_u64)
    genesis: CausalLink
    snapshot_seq: int | None = attrs.field(default=None, validator=attrs.validators.optional(_u64))

    @classmethod
    def create(
        cls,
        original_origin: int,
        forked_origin: int,
        fork_seq: int,
        *,
        snapshot_seq: int | None = None,
        horizon_encoded: int = 0,
    ) -> ForkRecord:
        """A verified record whose genesis carries the fork sentinel.

        Raises :class:`ForkRecordError` when the two origins are equal.
        """
        genesis = CausalLink(
            forked_origin, horizon_encoded, 0, fork_sentinel(original_origin, fork_seq)
        )
        record = cls(original_origin, forked_origin, fork_seq, genesis, snapshot_seq)
        record.verify()
        return record

    def verify(self) -> None:
        """Raise :class:`ForkRecordError` unless the record is self-consistent.

        The genesis must belong to the forked origin, have sequence 0 and carry the
        sentinel of (original origin, fork sequence); the two origins must differ.
        """
        if self.original_origin == self.forked_origin:
            raise ForkRecordError("fork record: the forked origin equals the original")
        if self.genesis.origin_hash != self.forked_origin:
            raise ForkRecordError("fork record: the genesis is not the forked origin's")
        if self.genesis.sequence != 0:
            raise ForkRecordError("fork record: the genesis sequence is not 0")
        if self.genesis.parent_hash != fork_sentinel(self.original_origin, self.fork_seq):
            raise ForkRecordError("fork record: the genesis does not carry the fork sentinel")

    def to_bytes(self) -> bytes:
        """The 65-byte wire form (``snapshot_seq`` 0 and flag 0 when absent)."""
        has = 0 if self.snapshot_seq is None else 1
        return (
            _FORK_HEAD.pack(self.original_origin, self.forked_origin, self.fork_seq)
            + self.genesis.to_bytes()
            + _FORK_TAIL.pack(has, self.snapshot_seq or 0)
        )

    @classmethod
    def from_bytes_unchecked(cls, data: bytes) -> ForkRecord:
        """Decode exactly 65 bytes without :meth:`verify`.

        Raises :class:`RecordDecodeError` on a wrong length, a snapshot flag other than
        0/1, or a non-zero snapshot sequence with the flag clear.
        """
        raw = bytes(data)
        if len(raw) != FORK_RECORD_SIZE:
            raise RecordDecodeError(
                f"fork record: expected {FORK_RECORD_SIZE} bytes, got {len(raw)}"
            )
        original, forked, fork_seq = _FORK_HEAD.unpack_from(raw, 0)
        link_end = _FORK_HEAD.size + CAUSAL_LINK_SIZE
        genesis = CausalLink.from_bytes(raw[_FORK_HEAD.size : link_end])
        has, snapshot_seq = _FORK_TAIL.unpack_from(raw, link_end)
        if has not in (0, 1):
            raise RecordDecodeError(f"fork record: snapshot flag {has} is not 0 or 1")
        if has == 0 and snapshot_seq != 0:
            raise RecordDecodeError("fork record: snapshot sequence set without the flag")
        return cls(original, forked, fork_seq, genesis, snapshot_seq if has else None)

    @classmethod
    def from_bytes(cls, data: bytes) -> ForkRecord:
        """Decode and :meth:`verify`; a record that fails verification raises
        :class:`RecordDecodeError` (its cause is the :class:`ForkRecordError`)."""
        record = cls.from_bytes_unchecked(data)
        try:
            record.verify()
        except ForkRecordError as exc:
            raise RecordDecodeError(str(exc)) from exc
        return record
