"""The hook specifications of net-core: every extension point a plugin can implement.

A plugin is a module (or object) with functions named like the specs below, decorated
with :data:`net_core.plugins.hookimpl`. The collection hooks (``net_*``) take no
arguments and return a list of :class:`~net_core.plugins.ComponentSpec`; each spec names
one component and says how to build it from its options. Names are unique per kind across
all loaded plugins. ``net_lifecycle_event`` is a notification: it must return quickly and
its exceptions are caught, logged and counted, never propagated into the caller.

Keep this module free of implementation: one bare function per hook with a docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

from net_core.plugins._spec import ComponentSpec, LifecycleEvent

PROJECT = "net_core"

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def net_storage_backends() -> Sequence[ComponentSpec[Any]]:  # type: ignore[empty-body]
    """Return the storage backends (bus adapters) this plugin provides."""


@hookspec
def net_transports() -> Sequence[ComponentSpec[Any]]:  # type: ignore[empty-body]
    """Return the mesh transports (datagram sockets) this plugin provides."""


@hookspec
def net_dedup_backends() -> Sequence[ComponentSpec[Any]]:  # type: ignore[empty-body]
    """Return the dedup backends (seen-id windows) this plugin provides."""


@hookspec
def net_retention_policies() -> Sequence[ComponentSpec[Any]]:  # type: ignore[empty-body]
    """Return the retention policies (head-eviction rules for logs) this plugin provides."""


@hookspec
def net_behavior_rules() -> Sequence[ComponentSpec[Any]]:  # type: ignore[empty-body]
    """Return the behavior-rule operators and actions this plugin provides."""


@hookspec
def net_lifecycle_event(event: LifecycleEvent) -> None:
    """Be told that a bus, shard, file, node or peer changed state."""
