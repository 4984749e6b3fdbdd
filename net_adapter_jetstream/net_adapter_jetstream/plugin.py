"""The net-core plugin: registers the ``jetstream`` storage backend."""

from __future__ import annotations

from typing import Any

from net_adapter_jetstream._config import JetStreamStorageConfig
from net_adapter_jetstream._storage import JetStreamStorage
from net_core.plugins import ComponentSpec, hookimpl


@hookimpl
def net_storage_backends() -> list[ComponentSpec[Any]]:
    """The NATS JetStream backend."""
    return [
        ComponentSpec(
            name="jetstream",
            factory=JetStreamStorage,
            config_type=JetStreamStorageConfig,
            summary="one NATS JetStream stream per shard, server-side dedup by Nats-Msg-Id",
        )
    ]
