"""The ``memory`` storage backend: bounded per-shard lists in this process."""

from __future__ import annotations

from bisect import bisect_right
from typing import ClassVar, final

import attrs

from net_core.bus._storage import Batch, ShardPollResult, StorageBackend, StoredEvent
from net_core.config import in_range

__all__ = ["MemoryStorage", "MemoryStorageConfig"]


@final
@attrs.frozen(slots=True)
class MemoryStorageConfig:
    """Options of the ``memory`` backend."""

    #: Events kept per shard; the oldest are dropped beyond it (counted in ``evicted``).
    max_events_per_shard: int = attrs.field(default=1_000_000, validator=in_range(1, 2**40))


class _Shard:
    __slots__ = ("events", "ids", "next_id", "written")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.events: list[StoredEvent] = []
        self.next_id = 1
        # nonce -> next sequence number already stored (idempotent retries)
        self.written: dict[int, int] = {}


@final
class MemoryStorage(StorageBackend):
    """Keeps every shard as a list; positions are decimal counters from 1.

    Writes are idempotent: a batch whose ``(nonce, sequence)`` range was already stored
    is skipped (the part not yet stored is appended), so retries never duplicate.
    """

    name: ClassVar[str] = "memory"
    dedups: ClassVar[bool] = True

    def __init__(self, config: MemoryStorageConfig | None = None) -> None:
        self.config = config or MemoryStorageConfig()
        self._shards: dict[int, _Shard] = {}
        self.evicted = 0
        self.closed = False

    def _shard(self, shard_id: int) -> _Shard:
        shard = self._shards.get(shard_id)
        if shard is None:
            shard = self._shards[shard_id] = _Shard()
        return shard

    async def write_batch(self, batch: Batch) -> None:
        """Append the batch's events not stored yet."""
        shard = self._shard(batch.shard_id)
        done = shard.written.get(batch.nonce, 0)
        skip = max(0, min(len(batch.events), done - batch.sequence_start))
        nonce = f"{batch.nonce:x}"
        for i in range(skip, len(batch.events)):
            pos = shard.next_id
            shard.next_id += 1
            shard.ids.append(pos)
            shard.events.append(
                StoredEvent(
                    str(pos),
                    bytes(batch.events[i]),
                    batch.timestamps[i],
                    batch.shard_id,
                    f"{nonce}:{batch.shard_id}:{batch.sequence_start}:{i}",
                )
            )
        shard.written[batch.nonce] = max(done, batch.sequence_start + len(batch.events))
        overflow = len(shard.ids) - self.config.max_events_per_shard
        if overflow > 0:
            del shard.ids[:overflow]
            del shard.events[:overflow]
            self.evicted += overflow

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        """Events with position > ``after``."""
        shard = self._shards.get(shard_id)
        if shard is None or limit <= 0:
            return ShardPollResult([], None, False)
        start = 0 if after is None else bisect_right(shard.ids, _position(after))
        events = shard.events[start : start + limit]
        has_more = start + limit < len(shard.events)
        return ShardPollResult(events, events[-1].id if events else None, has_more)

    async def resume_sequence(self, shard_id: int, nonce: int) -> int:
        """One past the last stored sequence of ``nonce`` on ``shard_id``."""
        shard = self._shards.get(shard_id)
        return 0 if shard is None else shard.written.get(nonce, 0)

    async def known_shards(self) -> list[int]:
        """Shards that were written to."""
        return sorted(self._shards)

    async def close(self) -> None:
        """Mark closed (data stays readable for tests)."""
        self.closed = True


def _position(after: str) -> int:
    try:
        return int(after)
    except ValueError:
        from net_core.errors import FatalAdapterError  # noqa: PLC0415

        raise FatalAdapterError(f"memory backend: invalid position {after!r}") from None
