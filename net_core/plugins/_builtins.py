"""The built-in components, registered through the same hooks as any plugin.

This module is itself a plugin (distribution ``net-core``, plugin name ``builtin``).
Layers add their built-ins here as they land (memory/RedEX storage, UDP transport).
"""

from __future__ import annotations

from typing import Any

import pluggy

from net_core.bus._memory import MemoryStorage, MemoryStorageConfig
from net_core.bus._redex_storage import RedexStorage, RedexStorageConfig
from net_core.dedup import MemoryDedup, MemoryDedupConfig
from net_core.mesh._transport import MemoryTransportConfig, UdpTransportConfig
from net_core.plugins._spec import ComponentSpec
from net_core.plugins.hookspecs import PROJECT
from net_core.retention import AgeRetention, BytesRetention, CountRetention

hookimpl = pluggy.HookimplMarker(PROJECT)


def _same(config: Any) -> Any:
    return config


@hookimpl
def net_retention_policies() -> list[ComponentSpec[Any]]:
    """count, bytes and age retention."""
    return [
        ComponentSpec(
            name="count",
            factory=_same,
            config_type=CountRetention,
            summary="keep the newest max_events entries",
        ),
        ComponentSpec(
            name="bytes",
            factory=_same,
            config_type=BytesRetention,
            summary="keep the newest entries within max_bytes (20 + payload per entry)",
        ),
        ComponentSpec(
            name="age",
            factory=_same,
            config_type=AgeRetention,
            summary="evict entries older than max_age_ms (an entry at the cutoff is kept)",
        ),
    ]


@hookimpl
def net_dedup_backends() -> list[ComponentSpec[Any]]:
    """The in-memory FIFO dedup window."""
    return [
        ComponentSpec(
            name="memory",
            factory=MemoryDedup.from_config,
            config_type=MemoryDedupConfig,
            summary="bounded FIFO window of seen ids, O(1) per check",
        )
    ]


@hookimpl
def net_storage_backends() -> list[ComponentSpec[Any]]:
    """The in-process ``memory`` backend and the embedded ``redex`` backend."""
    return [
        ComponentSpec(
            name="memory",
            factory=MemoryStorage,
            config_type=MemoryStorageConfig,
            summary="bounded per-shard lists in this process (tests, ephemeral data)",
        ),
        ComponentSpec(
            name="redex",
            factory=RedexStorage,
            config_type=RedexStorageConfig,
            summary="one persistent RedEX channel per shard under data_dir (durable default)",
        ),
    ]


@hookimpl
def net_transports() -> list[ComponentSpec[Any]]:
    """The ``udp`` socket and the in-process ``memory`` network (tests)."""
    return [
        ComponentSpec(
            name="udp",
            factory=_same,
            config_type=UdpTransportConfig,
            summary="one anyio UDP socket (addresses are (host, port))",
        ),
        ComponentSpec(
            name="memory",
            factory=_same,
            config_type=MemoryTransportConfig,
            summary="an in-process MemoryNetwork with seeded loss/reorder/duplication/partitions",
        ),
    ]
