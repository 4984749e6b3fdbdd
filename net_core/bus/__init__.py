"""The event bus: sharded ingest, batching, dispatch to pluggable storage, scaling, poll.

Quick start::

    from net_core.bus import Bus

    async with Bus.open({"shards": 4, "storage": {"backend": "redex",
                                                   "options": {"data_dir": "data"}}}) as bus:
        bus.ingest({"type": "token", "text": "hi"})
        await bus.flush()
        page = await bus.poll(100)
        more = await bus.poll(100, cursor=page.next_cursor)

Storage backends are plugins (``net_storage_backends`` hook); ``memory`` and ``redex`` are
built in. The consumer side (cursors, filters, merging shards) lives in
:mod:`net_core.consumer`.
"""

from net_core.bus._bus import Bus, BusStats
from net_core.bus._config import BatchConfig, BusConfig, ScalingConfig, StorageConfig
from net_core.bus._errors import Backpressure, IngestError, Sampled, ShuttingDown, Unrouted
from net_core.bus._memory import MemoryStorage, MemoryStorageConfig
from net_core.bus._storage import (
    Batch,
    ShardPollResult,
    StorageBackend,
    StoredEvent,
    compare_positions,
    dedup_id,
)

__all__ = [
    "Backpressure",
    "Batch",
    "BatchConfig",
    "Bus",
    "BusConfig",
    "BusStats",
    "IngestError",
    "MemoryStorage",
    "MemoryStorageConfig",
    "Sampled",
    "ScalingConfig",
    "ShardPollResult",
    "ShuttingDown",
    "StorageBackend",
    "StorageConfig",
    "StoredEvent",
    "Unrouted",
    "compare_positions",
    "dedup_id",
]
