"""Fold snapshots: a state's bytes plus the strict-prefix watermark they contain.

A :class:`Snapshot` is what :meth:`CortexAdapter.snapshot` returns and what
:meth:`CortexAdapter.open_from_snapshot` restores. ``state`` holds the fold's own
encoding (for the Tasks and Memories models, exactly the reference's postcard bytes,
so a reference snapshot can be wrapped in a :class:`Snapshot` and restored here).
:meth:`Snapshot.to_bytes` adds a self-describing, checksummed envelope for storage::

    offset  size  field
    0       4     magic "NCXS"
    4       1     envelope version (1)
    5       1     fold name length N (1..255)
    6       N     fold name (UTF-8)
    6+N     4     state format version (u32 LE)
    10+N    1     1 if a watermark follows as a seq, 0 if there is none
    11+N    8     applied_through_seq (u64 LE; 0 when there is none)
    19+N    4     state length L (u32 LE)
    23+N    L     state
    23+N+L  4     low 32 bits of XXH3-64 over every byte before it

Decoding is exact: a short, long or corrupt buffer raises :class:`SnapshotDecodeError`.
This module does no I/O.
"""

from __future__ import annotations

import struct
from typing import Final, final

import attrs
import xxhash

from net_core.cortex._errors import SnapshotDecodeError

__all__ = ["SNAPSHOT_MAGIC", "Snapshot"]

SNAPSHOT_MAGIC: Final = b"NCXS"
_ENVELOPE_VERSION: Final = 1
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_TAIL = struct.Struct("<IBQI")


def _name(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    size = len(value.encode())
    if not 1 <= size <= 255:
        raise ValueError(f"fold name must be 1..255 UTF-8 bytes, got {size}")


def _version(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"snapshot version must be in 0..={_U32_MAX}, got {value}")


def _seq(_inst: object, _attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 0 <= value < _U64_MAX:
        # u64::MAX cannot be resumed from (the next seq would overflow).
        raise ValueError(f"applied_through_seq must be in 0..{_U64_MAX}, got {value}")


@final
@attrs.frozen
class Snapshot:
    """A fold's state (``state``, in the fold's encoding ``version``) containing exactly
    the events through ``applied_through_seq`` (``None``: no event)."""

    fold: str = attrs.field(validator=_name)
    """The :attr:`Fold.name` of the fold that wrote it."""
    version: int = attrs.field(validator=_version)
    """The fold's state-encoding version."""
    applied_through_seq: int | None = attrs.field(validator=_seq)
    """The strict-prefix watermark the state contains."""
    state: bytes = attrs.field(converter=bytes)
    """The encoded state."""

    def to_bytes(self) -> bytes:
        """The checksummed envelope described in the module docstring."""
        name = self.fold.encode()
        if len(self.state) > _U32_MAX:
            raise ValueError(f"snapshot state of {len(self.state)} bytes does not fit u32")
        has_seq = self.applied_through_seq is not None
        body = (
            SNAPSHOT_MAGIC
            + bytes((_ENVELOPE_VERSION, len(name)))
            + name
            + _TAIL.pack(self.version, int(has_seq), self.applied_through_seq or 0, len(self.state))
            + self.state
        )
        return body + struct.pack("<I", xxhash.xxh3_64_intdigest(body) & _U32_MAX)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Snapshot:
        """Decode :meth:`to_bytes` output; raises :class:`SnapshotDecodeError`."""
        buf = bytes(data)
        if len(buf) < 6 or buf[:4] != SNAPSHOT_MAGIC:
            raise SnapshotDecodeError("not a net-core snapshot (bad magic)")
        if buf[4] != _ENVELOPE_VERSION:
            raise SnapshotDecodeError(f"unknown snapshot envelope version {buf[4]}")
        n = buf[5]
        fixed = 6 + n + _TAIL.size
        if n == 0 or len(buf) < fixed + 4:
            raise SnapshotDecodeError(f"snapshot truncated ({len(buf)} bytes)")
        version, has_seq, seq, size = _TAIL.unpack_from(buf, 6 + n)
        if len(buf) != fixed + size + 4:
            raise SnapshotDecodeError(
                f"snapshot length {len(buf)} does not match its header ({fixed + size + 4})"
            )
        (checksum,) = struct.unpack_from("<I", buf, fixed + size)
        if xxhash.xxh3_64_intdigest(buf[: fixed + size]) & _U32_MAX != checksum:
            raise SnapshotDecodeError("snapshot checksum mismatch")
        if has_seq not in (0, 1) or (not has_seq and seq):
            raise SnapshotDecodeError(f"bad watermark field ({has_seq}, {seq})")
        if has_seq and seq == _U64_MAX:
            raise SnapshotDecodeError("snapshot watermark at u64::MAX; cannot resume")
        try:
            name = buf[6 : 6 + n].decode()
        except UnicodeDecodeError as exc:
            raise SnapshotDecodeError(f"fold name is not UTF-8: {exc}") from exc
        return cls(
            fold=name,
            version=version,
            applied_through_seq=seq if has_seq else None,
            state=buf[fixed : fixed + size],
        )
