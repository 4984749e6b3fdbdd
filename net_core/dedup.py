"""Deduplication of event ids: the ``Dedup`` contract and the in-memory backend.

Consumers use a dedup backend to drop redelivered events: the bus gives every event a
stable id (``{producer_nonce}:{shard}:{sequence_start}:{i}``), so a batch retried after a
timeout carries the same ids and the second copy is recognised.

:class:`MemoryDedup` (registered as ``memory`` through the ``net_dedup_backends`` hook) is
a bounded **FIFO** window, not an LRU: it remembers the ``capacity`` most recently
*first-seen* ids. Seeing an id again does not refresh it. Once ``capacity`` newer ids
have arrived, the oldest is forgotten and would be accepted again. Every operation is
O(1).

This module is pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, final, runtime_checkable

import attrs

from net_core.config import in_range

__all__ = ["MAX_DEDUP_CAPACITY", "Dedup", "MemoryDedup", "MemoryDedupConfig"]

#: Upper bound on any dedup window (16,777,216 ids), the reference's limit.
MAX_DEDUP_CAPACITY = 1 << 24

DedupId = str | bytes


@runtime_checkable
class Dedup(Protocol):
    """What a dedup backend implements."""

    @property
    def capacity(self) -> int:
        """How many ids the window holds at most."""
        ...

    def is_duplicate(self, dedup_id: DedupId) -> bool:
        """Return ``True`` if ``dedup_id`` was seen within the window; else record it."""
        ...

    def __contains__(self, dedup_id: object) -> bool:
        """Whether ``dedup_id`` is in the window (does not record it)."""
        ...

    def __len__(self) -> int:
        """Number of ids currently remembered."""
        ...

    def clear(self) -> None:
        """Forget every id."""
        ...


@final
@attrs.frozen(slots=True)
class MemoryDedupConfig:
    """Configuration of the ``memory`` dedup backend."""

    #: Window size in ids, 1..2^24. Memory is roughly 100-150 bytes per id.
    capacity: int = attrs.field(default=4096, validator=in_range(1, MAX_DEDUP_CAPACITY))


@final
class MemoryDedup:
    """Bounded FIFO window of seen ids (see the module docstring for the semantics).

    ``duplicates`` counts ids recognised as repeats, ``evictions`` counts ids forgotten
    to make room; both are cumulative until :meth:`clear`.
    """

    __slots__ = ("_capacity", "_order", "_seen", "duplicates", "evictions")

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = MemoryDedupConfig(capacity=capacity).capacity
        self._seen: set[DedupId] = set()
        self._order: deque[DedupId] = deque()
        self.duplicates = 0
        self.evictions = 0

    @classmethod
    def from_config(cls, config: MemoryDedupConfig) -> MemoryDedup:
        """Build from a validated :class:`MemoryDedupConfig`."""
        return cls(config.capacity)

    @property
    def capacity(self) -> int:
        """How many ids the window holds at most."""
        return self._capacity

    def is_duplicate(self, dedup_id: DedupId) -> bool:
        """Return ``True`` for an id inside the window; otherwise record it, evicting the
        oldest first-seen id when the window is full."""
        seen = self._seen
        if dedup_id in seen:
            self.duplicates += 1
            return True
        if len(seen) >= self._capacity:
            seen.discard(self._order.popleft())
            self.evictions += 1
        seen.add(dedup_id)
        self._order.append(dedup_id)
        return False

    def __contains__(self, dedup_id: object) -> bool:
        return dedup_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def clear(self) -> None:
        """Forget every id and reset the counters."""
        self._seen.clear()
        self._order.clear()
        self.duplicates = 0
        self.evictions = 0

    def __repr__(self) -> str:
        return f"MemoryDedup(capacity={self._capacity}, len={len(self._seen)})"
