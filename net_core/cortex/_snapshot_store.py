"""A store of the latest snapshot per entity, guarded by a per-entity high-water mark.

Daemon migration stages an entity's state snapshot on its new node; producers may race
and a slow one may try to stage an *older* snapshot after a newer one was consumed and
removed. The store keeps, beside the snapshots, the highest ``through_seq`` ever accepted
per entity, and that mark survives :meth:`SnapshotStore.remove`: a snapshot at or below
it is refused, so state can never be rewound. There is deliberately no public way to
clear a mark.

Thread-safe (one lock); no I/O.
"""

from __future__ import annotations

import threading
from typing import Final, final

import attrs

__all__ = ["ENTITY_ID_SIZE", "SnapshotStore", "StateSnapshot"]

ENTITY_ID_SIZE: Final = 32


def _entity(_inst: object, _attr: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) != ENTITY_ID_SIZE:
        raise ValueError(f"entity_id must be {ENTITY_ID_SIZE} bytes, got {len(value)}")


def _seq(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"through_seq must be a u64, got {value}")


@final
@attrs.frozen
class StateSnapshot:
    """An entity's state as of ``through_seq`` (the entity's own event seq)."""

    entity_id: bytes = attrs.field(converter=bytes, validator=_entity)
    through_seq: int = attrs.field(validator=_seq)
    data: bytes = attrs.field(converter=bytes)


@final
class SnapshotStore:
    """Latest snapshot per entity plus an anti-rewind high-water mark per entity."""

    __slots__ = ("_high_water", "_lock", "_snapshots")

    def __init__(self) -> None:
        self._snapshots: dict[bytes, StateSnapshot] = {}
        self._high_water: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def store(self, snapshot: StateSnapshot) -> bool:
        """Keep ``snapshot`` if it is strictly newer than anything accepted before for
        its entity (removed snapshots included); returns whether it was kept."""
        key = snapshot.entity_id
        with self._lock:
            mark = self._high_water.get(key)
            if mark is not None and snapshot.through_seq <= mark:
                return False
            self._snapshots[key] = snapshot
            self._high_water[key] = snapshot.through_seq
            return True

    def get(self, entity_id: bytes) -> StateSnapshot | None:
        """The stored snapshot of ``entity_id``, if any."""
        with self._lock:
            return self._snapshots.get(bytes(entity_id))

    def remove(self, entity_id: bytes) -> StateSnapshot | None:
        """Drop the entity's snapshot (its high-water mark stays); returns it."""
        with self._lock:
            return self._snapshots.pop(bytes(entity_id), None)

    def high_water(self, entity_id: bytes) -> int | None:
        """The highest ``through_seq`` ever accepted for the entity."""
        with self._lock:
            return self._high_water.get(bytes(entity_id))

    def count(self) -> int:
        """Number of stored snapshots."""
        with self._lock:
            return len(self._snapshots)

    def __len__(self) -> int:
        return self.count()

    def _forget(self, entity_id: bytes) -> None:
        """Clear the entity's snapshot *and* mark. Internal: defeats the anti-rewind
        guarantee, so it is not part of the API (used when an entity is destroyed)."""
        with self._lock:
            key = bytes(entity_id)
            self._snapshots.pop(key, None)
            self._high_water.pop(key, None)
