"""The net-core plugin of this distribution: the ``redis`` storage and dedup backends."""

from __future__ import annotations

from typing import Any

from net_adapter_redis._dedup import RedisDedupConfig, RedisStreamDedup
from net_adapter_redis._storage import RedisStorage, RedisStorageConfig
from net_core.plugins import ComponentSpec, hookimpl


@hookimpl
def net_storage_backends() -> list[ComponentSpec[Any]]:
    """Redis Streams storage (one stream per shard)."""
    return [
        ComponentSpec(
            name="redis",
            factory=RedisStorage,
            config_type=RedisStorageConfig,
            summary="one Redis stream per shard ({prefix}:shard:{id}), MULTI/EXEC per batch",
        )
    ]


@hookimpl
def net_dedup_backends() -> list[ComponentSpec[Any]]:
    """The FIFO window of stream dedup ids, optionally persisted."""
    return [
        ComponentSpec(
            name="redis",
            factory=RedisStreamDedup.from_config,
            config_type=RedisDedupConfig,
            summary="FIFO window of Redis stream dedup ids (capacity 1..2^24, optional state file)",
        )
    ]
