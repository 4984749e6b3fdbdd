"""net-adapter-redis: Redis Streams storage for the Net event bus, and stream dedup.

Install it beside ``net-core`` and name the backend in the bus configuration::

    {"storage": {"backend": "redis", "options": {"url": "redis://127.0.0.1:6379"}}}

* :class:`RedisStorage` (``redis`` storage backend): one stream per shard, one
  MULTI/EXEC transaction per batch, exclusive-cursor reads; at-least-once.
* :class:`RedisStreamDedup` (``redis`` dedup backend): the consumer-side FIFO window that
  drops the copies a retried batch can leave.

See ``docs/adapters.md`` of net-core for configuration, guarantees and tuning.
"""

from net_adapter_redis._connection import RedisAddress
from net_adapter_redis._dedup import (
    DEFAULT_CAPACITY,
    MAX_CAPACITY,
    DedupStateError,
    RedisDedupConfig,
    RedisStreamDedup,
)
from net_adapter_redis._entry import EntryDecodeError
from net_adapter_redis._resp import RespProtocolError
from net_adapter_redis._storage import RedisStorage, RedisStorageConfig

__all__ = [
    "DEFAULT_CAPACITY",
    "MAX_CAPACITY",
    "DedupStateError",
    "EntryDecodeError",
    "RedisAddress",
    "RedisDedupConfig",
    "RedisStorage",
    "RedisStorageConfig",
    "RedisStreamDedup",
    "RespProtocolError",
]

__version__ = "0.1.0"
