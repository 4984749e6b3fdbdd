"""The storage conformance suite run against the built-in backends."""

from __future__ import annotations

from typing import ClassVar

from net_core.bus._memory import MemoryStorage
from net_core.bus._redex_storage import RedexStorage, RedexStorageConfig
from net_core.bus._storage import StorageBackend
from net_core.testing.storage_conformance import StorageBackendConformance


class TestMemoryStorage(StorageBackendConformance):
    async def open_backend(self) -> StorageBackend:
        backend = MemoryStorage()
        await backend.open()
        return backend


class TestRedexStorage(StorageBackendConformance):
    supports_restart: ClassVar[bool] = True

    async def open_backend(self) -> StorageBackend:
        backend = RedexStorage(RedexStorageConfig(data_dir=str(self.tmp_path / "data")))
        await backend.open()
        return backend


class TestRedexStorageWithFsyncAndRetention(StorageBackendConformance):
    """The worker-thread write path (fsync policy + retention that never evicts here)."""

    supports_restart: ClassVar[bool] = True

    async def open_backend(self) -> StorageBackend:
        backend = RedexStorage(
            RedexStorageConfig(
                data_dir=str(self.tmp_path / "data"),
                prefix="events/bus",
                fsync_every_n=64,
                retention={"count": {"max_events": 1_000_000}},
            )
        )
        await backend.open()
        return backend
