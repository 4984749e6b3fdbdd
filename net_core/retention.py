"""Retention policies: how many of the oldest log entries to evict.

A policy looks at a :class:`RetentionView` of the retained entries (oldest first) and
answers one question: how many entries at the head should go. Policies never pick
entries from the middle; the log drops a prefix. Several policies combine by taking the
largest eviction count, so every policy's limit holds afterwards
(:class:`CombinedRetention`).

The built-ins are registered through the ``net_retention_policies`` hook like any
third-party policy:

* ``count`` (:class:`CountRetention`): keep the newest ``max_events`` entries.
* ``bytes`` (:class:`BytesRetention`): keep the longest newest run whose accounted size
  is at most ``max_bytes``; each entry accounts for :data:`ENTRY_OVERHEAD` bytes (its
  index record) plus its payload, an inline entry for the overhead alone.
* ``age`` (:class:`AgeRetention`): evict the leading run of entries older than
  ``max_age_ms``. An entry exactly at the cutoff is kept (the ``>=`` boundary).

This module is pure: no clocks (``now_ns`` is passed in), no I/O, no plugin imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, final, runtime_checkable

import attrs

from net_core.config import positive
from net_core.errors import NetError

__all__ = [
    "ENTRY_OVERHEAD",
    "AgeRetention",
    "BytesRetention",
    "CombinedRetention",
    "CountRetention",
    "RetentionPolicy",
    "RetentionPolicyError",
    "RetentionView",
    "accounted_size",
]

#: Bytes accounted per entry besides its payload: the size of its 20-byte index record.
ENTRY_OVERHEAD = 20

_NS_PER_MS = 1_000_000


class RetentionPolicyError(NetError):
    """A retention policy returned something other than a count in ``[0, len(view)]``."""


def accounted_size(payload_len: int, *, inline: bool = False) -> int:
    """Bytes an entry counts for under byte retention (same rule as the reference)."""
    return ENTRY_OVERHEAD if inline else ENTRY_OVERHEAD + payload_len


@final
@attrs.frozen(slots=True)
class RetentionView:
    """The retained entries of one log, oldest first, as a policy sees them.

    ``timestamps`` are unix-epoch nanoseconds at append (wall clock; not guaranteed to
    be monotonic), ``sizes`` are accounted sizes (:func:`accounted_size`), and
    ``total_bytes`` is their sum, kept by the log so that byte retention costs
    O(evicted) instead of O(retained).
    """

    timestamps: Sequence[int]
    sizes: Sequence[int]
    total_bytes: int

    @classmethod
    def of(cls, timestamps: Sequence[int], sizes: Sequence[int]) -> RetentionView:
        """Build a view, computing ``total_bytes`` from ``sizes``."""
        if len(timestamps) != len(sizes):
            raise ValueError("timestamps and sizes must have the same length")
        return cls(timestamps=timestamps, sizes=sizes, total_bytes=sum(sizes))

    def __len__(self) -> int:
        return len(self.timestamps)


@runtime_checkable
class RetentionPolicy(Protocol):
    """What a retention policy implements (built-in or from a plugin)."""

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """Return how many of the oldest entries of ``view`` to evict, in ``[0, len(view)]``."""
        ...


@final
@attrs.frozen(slots=True)
class CountRetention:
    """Keep the newest ``max_events`` entries."""

    max_events: int = attrs.field(validator=positive)

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """Evict ``len - max_events`` entries when the log holds more than ``max_events``."""
        return max(0, len(view) - self.max_events)


@final
@attrs.frozen(slots=True)
class BytesRetention:
    """Keep the newest entries whose accounted sizes add up to at most ``max_bytes``.

    Walking from the newest entry back, the first entry that would push the total over
    ``max_bytes`` is evicted together with everything older. An entry larger than
    ``max_bytes`` on its own is therefore evicted too.
    """

    max_bytes: int = attrs.field(validator=positive)

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """Drop from the head until the remaining total fits (sizes are positive)."""
        total = view.total_bytes
        if total <= self.max_bytes:
            return 0
        sizes = view.sizes
        evicted = 0
        n = len(sizes)
        while evicted < n and total > self.max_bytes:
            total -= sizes[evicted]
            evicted += 1
        return evicted


@final
@attrs.frozen(slots=True)
class AgeRetention:
    """Evict the leading run of entries older than ``max_age_ms``.

    The cutoff is ``now - max_age``; an entry whose timestamp equals the cutoff is kept.
    Only the leading run is evicted: an old entry behind a newer one (a wall-clock step
    backwards) stays until everything before it has gone, so the log stays a prefix-cut.
    """

    max_age_ms: int = attrs.field(validator=positive)

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """Count leading entries with ``timestamp < now_ns - max_age``."""
        cutoff = now_ns - self.max_age_ms * _NS_PER_MS
        timestamps = view.timestamps
        evicted = 0
        n = len(timestamps)
        while evicted < n and timestamps[evicted] < cutoff:
            evicted += 1
        return evicted


@final
@attrs.frozen(slots=True)
class CombinedRetention:
    """Several policies at once: evict the largest count any of them asks for.

    After eviction every policy's limit holds, and an entry that every policy keeps is
    never evicted. Each policy's answer is checked: anything that is not an integer in
    ``[0, len(view)]`` raises :class:`RetentionPolicyError` naming the policy, so a buggy
    plugin cannot wipe a log.
    """

    policies: tuple[RetentionPolicy, ...] = attrs.field(converter=tuple)

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """The maximum of the policies' counts (0 with no policies)."""
        n = len(view)
        worst = 0
        for policy in self.policies:
            count = policy.eviction_count(view, now_ns)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= n:
                raise RetentionPolicyError(
                    f"retention policy {policy!r} returned {count!r}; expected an integer "
                    f"in [0, {n}]"
                )
            worst = max(worst, count)
        return worst
