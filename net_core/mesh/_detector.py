"""The failure detector: healthy / suspected / failed from heartbeat silence (``mesh.md`` §3.5).

Theory of operation. Every authenticated packet from a peer (heartbeat or data) is a
*heartbeat* for the detector. :meth:`FailureDetector.check` looks at the silence since the
last one: ``missed = floor(elapsed / timeout)``, evaluated only when ``elapsed > timeout``;
``missed >= failure_threshold`` (3) makes the peer FAILED, ``>= suspicion_threshold`` (2)
SUSPECTED. A heartbeat makes the peer HEALTHY again; if it had been FAILED this is a
*recovery*. :meth:`check` returns the transitions so the node can publish them as events.

Pure: times are monotonic nanoseconds passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import enum
from typing import final

import attrs

__all__ = ["FailureDetector", "HealthTransition", "PeerStatus"]


class PeerStatus(enum.Enum):
    """A peer's liveness as the failure detector sees it."""

    HEALTHY = "healthy"
    SUSPECTED = "suspected"
    FAILED = "failed"


@final
@attrs.frozen(slots=True)
class HealthTransition:
    """A peer moved from ``before`` to ``after``."""

    node_id: int
    before: PeerStatus
    after: PeerStatus


@attrs.define(slots=True)
class _Entry:
    last_heard_ns: int
    status: PeerStatus = PeerStatus.HEALTHY


@final
class FailureDetector:
    """Per-peer liveness from heartbeat silence (see the module docstring)."""

    __slots__ = ("_entries", "failure_threshold", "suspicion_threshold", "timeout_ns")

    def __init__(
        self, timeout_ns: int, *, suspicion_threshold: int = 2, failure_threshold: int = 3
    ) -> None:
        if timeout_ns <= 0:
            raise ValueError(f"timeout_ns must be > 0, got {timeout_ns}")
        if not 1 <= suspicion_threshold <= failure_threshold:
            raise ValueError("need 1 <= suspicion_threshold <= failure_threshold")
        self.timeout_ns = timeout_ns
        self.suspicion_threshold = suspicion_threshold
        self.failure_threshold = failure_threshold
        self._entries: dict[int, _Entry] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def status(self, node_id: int) -> PeerStatus | None:
        """The peer's status (None for a peer the detector does not track)."""
        entry = self._entries.get(node_id)
        return None if entry is None else entry.status

    def last_heard_ns(self, node_id: int) -> int | None:
        """When the peer was last heard from (None when untracked)."""
        entry = self._entries.get(node_id)
        return None if entry is None else entry.last_heard_ns

    def heartbeat(self, node_id: int, now_ns: int) -> HealthTransition | None:
        """Record a sign of life; returns the transition back to HEALTHY, if any."""
        entry = self._entries.get(node_id)
        if entry is None:
            self._entries[node_id] = _Entry(now_ns)
            return None
        entry.last_heard_ns = max(entry.last_heard_ns, now_ns)
        if entry.status is PeerStatus.HEALTHY:
            return None
        before, entry.status = entry.status, PeerStatus.HEALTHY
        return HealthTransition(node_id, before, PeerStatus.HEALTHY)

    def check(self, now_ns: int) -> list[HealthTransition]:
        """Re-evaluate every peer; return the status changes."""
        changes: list[HealthTransition] = []
        for node_id, entry in self._entries.items():
            elapsed = now_ns - entry.last_heard_ns
            if elapsed <= self.timeout_ns:
                continue
            missed = elapsed // self.timeout_ns
            if missed >= self.failure_threshold:
                status = PeerStatus.FAILED
            elif missed >= self.suspicion_threshold:
                status = PeerStatus.SUSPECTED
            else:
                continue
            if status is not entry.status:
                changes.append(HealthTransition(node_id, entry.status, status))
                entry.status = status
        return changes

    def remove(self, node_id: int) -> None:
        """Stop tracking the peer."""
        self._entries.pop(node_id, None)
