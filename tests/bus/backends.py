"""Storage backends for the bus tests: real :class:`MemoryStorage` subclasses (they store
and read back events exactly like the ``memory`` backend) that additionally record what
the bus did, hold writes behind a gate, fail on purpose or run slowly.

They are not mocks: every batch that a write accepts is stored by ``MemoryStorage`` and
is read back through the normal ``read_shard`` path. Create them inside the async test
(the gate is an :class:`anyio.Event`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import attrs

from net_core.bus import Batch, MemoryStorage, StoredEvent
from net_core.errors import AdapterError, TransientAdapterError

__all__ = [
    "FailingStorage",
    "GatedStorage",
    "RecordedBatch",
    "RecordingStorage",
    "SlowStorage",
    "assert_accounted",
    "stored_events",
    "wait_until",
]


@attrs.frozen
class RecordedBatch:
    """What one successful ``write_batch`` carried."""

    shard_id: int
    sequence_start: int
    nonce: int
    events: tuple[bytes, ...]
    timestamps: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.events)


class RecordingStorage(MemoryStorage):  # type: ignore[misc]  # MemoryStorage is @final for users
    """Stores like ``memory`` and records every batch, attempt and lifecycle call.

    ``batches`` holds the batches that were stored (write returned normally),
    ``attempts`` counts every ``write_batch`` call, failed ones included.
    """

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[RecordedBatch] = []
        self.attempts = 0
        self.calls: Counter[str] = Counter()

    async def open(self) -> None:
        self.calls["open"] += 1
        await super().open()

    async def write_batch(self, batch: Batch) -> None:
        self.attempts += 1
        await self._before_write(batch)
        await super().write_batch(batch)
        self.batches.append(
            RecordedBatch(
                batch.shard_id,
                batch.sequence_start,
                batch.nonce,
                tuple(bytes(e) for e in batch.events),
                tuple(batch.timestamps),
            )
        )

    async def _before_write(self, batch: Batch) -> None:
        """Hook of the subclasses (gate, failure, delay)."""

    async def flush(self) -> None:
        self.calls["flush"] += 1
        await super().flush()

    async def close(self) -> None:
        self.calls["close"] += 1
        await super().close()

    # -- what the tests look at ------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Events in stored batches."""
        return sum(len(b) for b in self.batches)

    def delivered_payloads(self) -> list[bytes]:
        """Every stored event's bytes, batch by batch."""
        return [e for b in self.batches for e in b.events]

    def starts_by_shard(self) -> dict[int, list[tuple[int, int]]]:
        """``shard -> [(sequence_start, len), ...]`` in write order."""
        out: dict[int, list[tuple[int, int]]] = {}
        for b in self.batches:
            out.setdefault(b.shard_id, []).append((b.sequence_start, len(b)))
        return out

    def stored(self) -> list[StoredEvent]:
        """Every event held by the memory backend (all shards, shard order)."""
        return [e for sid in sorted(self._shards) for e in self._shards[sid].events]


class GatedStorage(RecordingStorage):
    """``write_batch`` waits while the gate is closed (it starts closed).

    ``blocked`` is set once a write is waiting at the gate; ``release()`` opens the gate
    for good, ``close_gate()`` closes it again for later writes.
    """

    def __init__(self, *, closed: bool = True) -> None:
        super().__init__()
        self._gate = anyio.Event()
        self.blocked = anyio.Event()
        self.waiting = 0
        if not closed:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    def close_gate(self) -> None:
        if self._gate.is_set():
            self._gate = anyio.Event()
            self.blocked = anyio.Event()

    async def _before_write(self, batch: Batch) -> None:
        gate = self._gate
        if not gate.is_set():
            self.waiting += 1
            self.blocked.set()
            try:
                await gate.wait()
            finally:
                self.waiting -= 1


class FailingStorage(RecordingStorage):
    """The first ``fail_first`` writes raise ``error(...)`` (nothing stored); then the
    backend works. ``fail_first=None`` fails every write."""

    def __init__(
        self, fail_first: int | None, error: type[AdapterError] = TransientAdapterError
    ) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.error = error
        self.failures = 0

    async def _before_write(self, batch: Batch) -> None:
        if self.fail_first is None or self.failures < self.fail_first:
            self.failures += 1
            raise self.error(f"injected failure #{self.failures}")


class SlowStorage(RecordingStorage):
    """Every write sleeps ``delay`` seconds before storing."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def _before_write(self, batch: Batch) -> None:
        await anyio.sleep(self.delay)


async def stored_events(bus: Any, *, page: int = 1000, ordering: str = "none") -> list[StoredEvent]:
    """Every stored event, read through ``bus.poll`` page by page from the start."""
    out: list[StoredEvent] = []
    cursor = None
    while True:
        resp = await bus.poll(page, cursor, ordering=ordering)
        out.extend(resp.events)
        cursor = resp.next_cursor
        if not resp.has_more:
            return out


async def wait_until(predicate: Any, *, within: float = 5.0, interval: float = 0.001) -> None:
    """Poll ``predicate()`` until it is true; fail the test after ``within`` seconds.

    Polling on purpose: the conditions are bus state that has no event to wait on.
    """
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling bus state, see above
            await anyio.sleep(interval)


def assert_accounted(stats: Any) -> None:
    """Every accepted event is dispatched or dropped with a reason (after shutdown).

    The identity follows from the bus's counters: ``events_ingested`` counts every event
    that entered a ring (``drop_oldest``/``sample`` evictions included, since those events
    were accepted first); ``ring_full``, ``sampled`` and ``unrouted`` drops were refused
    at ingest and never entered a ring; the other reasons (``evicted_oldest``,
    ``adapter_rejected``, ``adapter_failed``, ``shutdown``) are accepted events.
    """
    d = stats.dropped
    assert stats.events_dropped == sum(d.values())
    refused_at_ingest = d["ring_full"] + d["sampled"] + d["unrouted"]
    assert stats.events_ingested == stats.events_dispatched + stats.events_dropped - (
        refused_at_ingest
    ), stats
