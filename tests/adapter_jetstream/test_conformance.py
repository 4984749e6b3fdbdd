"""The storage-backend conformance suite against real nats-servers, in every read mode."""

from __future__ import annotations

from typing import ClassVar

import pytest

from net_adapter_jetstream import JetStreamStorage, JetStreamStorageConfig
from net_core.bus import StorageBackend
from net_core.testing.storage_conformance import StorageBackendConformance


class _JetStreamConformance(StorageBackendConformance):
    supports_restart = True
    bulk_events = 400
    read_mode: ClassVar[str] = "auto"
    url: str
    prefix: str

    async def open_backend(self) -> StorageBackend:
        backend = JetStreamStorage(
            JetStreamStorageConfig(url=self.url, prefix=self.prefix, read_mode=self.read_mode)
        )
        await backend.open()
        return backend


class TestJetStreamConformance(_JetStreamConformance):
    """The fixtures' server (whatever version is installed), read mode chosen by it."""

    @pytest.fixture(autouse=True)
    def _server(self, nats_url: str, nats_prefix: str) -> None:
        self.url, self.prefix = nats_url, nats_prefix


class TestJetStreamConformanceBatch(_JetStreamConformance):
    """A server >= 2.11, reading with batched direct gets."""

    read_mode = "batch"

    @pytest.fixture(autouse=True)
    def _server(self, nats_url_new: str, nats_prefix: str) -> None:
        self.url, self.prefix = nats_url_new, nats_prefix


class TestJetStreamConformancePipelined(_JetStreamConformance):
    """A server >= 2.11, reading with pipelined direct gets."""

    read_mode = "pipelined"

    @pytest.fixture(autouse=True)
    def _server(self, nats_url_new: str, nats_prefix: str) -> None:
        self.url, self.prefix = nats_url_new, nats_prefix
