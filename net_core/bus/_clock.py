"""Monotonic per-shard counters: insertion timestamps and never-reused ids.

:class:`ShardClock` stamps each event a shard accepts with a nanosecond timestamp that is
strictly greater than the previous one of the same shard. Values count from the clock's
construction (the baseline is captured there, never assumed to be 0), so they are small,
relative and not comparable across shards or processes, exactly like the reference's
per-shard ``TimestampGenerator``. :class:`SaturatingIdAllocator` hands out increasing
ids and refuses once its space is spent, instead of wrapping back to 0.

Neither class locks: the caller serialises access (the bus calls ``ShardClock.now`` with
the shard lock held). This module does no I/O and starts no tasks; reading the monotonic
clock in :meth:`ShardClock.now` is its only contact with the outside world, and that
source can be replaced for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, final

__all__ = ["TIMESTAMP_LIMIT", "SaturatingIdAllocator", "ShardClock"]

#: Timestamps stay strictly below this value (the reference's ``u64::MAX``).
TIMESTAMP_LIMIT: Final = (1 << 64) - 1


@final
class ShardClock:
    """Strictly increasing nanosecond timestamps for one shard.

    ``now()`` returns ``max(source() - baseline, previous + 1)``: the monotonic clock's
    reading since construction, nudged forward by 1 ns when two calls land in the same
    tick (or the source stalls), so no two events of a shard share a timestamp. The
    first value is at least 1.

    Raises :class:`OverflowError` instead of ever returning ``2**64 - 1`` (the reference
    panics there rather than stalling). Not thread-safe: hold the shard lock.

    ``source`` (default :func:`time.monotonic_ns`) must not go backwards; tests pass a
    fake one.
    """

    __slots__ = ("_base", "_last", "_source")

    def __init__(self, source: Callable[[], int] = time.monotonic_ns, *, last: int = 0) -> None:
        if not 0 <= last < TIMESTAMP_LIMIT:
            raise ValueError(f"last must be in [0, 2**64 - 1), got {last}")
        self._source = source
        self._base = source()
        self._last = last

    def now(self) -> int:
        """The next timestamp of this shard (ns since the clock was created)."""
        t = self._source() - self._base
        nxt = self._last + 1
        if t < nxt:  # noqa: PLR1730 - hot path: a branch costs ~8 ns, max() ~70 ns
            t = nxt
        if t >= TIMESTAMP_LIMIT:
            raise OverflowError("shard timestamp would reach 2**64 - 1")
        self._last = t
        return t

    @property
    def last(self) -> int:
        """The most recent timestamp returned (0 before the first call)."""
        return self._last

    def __repr__(self) -> str:
        return f"ShardClock(last={self._last})"


@final
class SaturatingIdAllocator:
    """Hands out ``start, start + 1, ..., limit`` once each, then refuses.

    The reference's partition ``next_id`` wrapped to 0 at ``u64::MAX`` and re-issued ids;
    this allocator never wraps and never re-issues: once ``limit`` has been handed out,
    :meth:`allocate` raises :class:`OverflowError` forever. Not thread-safe.
    """

    __slots__ = ("_limit", "_next")

    def __init__(self, start: int = 0, limit: int = TIMESTAMP_LIMIT) -> None:
        if start < 0 or limit < 0:
            raise ValueError(f"start and limit must be >= 0, got {start} and {limit}")
        self._next = start
        self._limit = limit

    @property
    def next_id(self) -> int:
        """The id the next :meth:`allocate` returns (``limit + 1`` once exhausted)."""
        return self._next

    @property
    def limit(self) -> int:
        """The largest id this allocator hands out."""
        return self._limit

    @property
    def remaining(self) -> int:
        """How many ids are left."""
        return max(0, self._limit - self._next + 1)

    def allocate(self, count: int = 1) -> range:
        """Take ``count`` consecutive ids, all or none.

        Raises :class:`OverflowError` (taking nothing) when fewer than ``count`` are left.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count > self.remaining:
            raise OverflowError(
                f"id space exhausted: {count} requested, {self.remaining} left "
                f"(limit {self._limit})"
            )
        first = self._next
        self._next = first + count
        return range(first, first + count)

    def __repr__(self) -> str:
        return f"SaturatingIdAllocator(next_id={self._next}, limit={self._limit})"
