"""The shared storage conformance suite against the ``redis`` backend on a real server."""

from __future__ import annotations

from typing import ClassVar

import pytest

from net_adapter_redis import RedisStorage, RedisStorageConfig
from net_core.bus import StorageBackend
from net_core.testing.storage_conformance import StorageBackendConformance


class TestRedisStorage(StorageBackendConformance):
    supports_restart: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def open_backend(self) -> StorageBackend:
        backend = RedisStorage(RedisStorageConfig(url=self.url, prefix=self.prefix))
        await backend.open()
        return backend


class TestRedisStorageTrimmedAndOneConnection(StorageBackendConformance):
    """A stream cap far above what the tests write (MAXLEN ~ on every XADD) and a single
    pooled connection shared by concurrent readers and writers."""

    supports_restart: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def open_backend(self) -> StorageBackend:
        backend = RedisStorage(
            RedisStorageConfig(
                url=self.url,
                prefix=f"{self.prefix}:trimmed",
                max_stream_len=1_000_000,
                max_connections=1,
            )
        )
        await backend.open()
        return backend
