"""The plugin kernel: hook specifications, the ``hookimpl`` marker, the plugin manager.

A plugin is a module with functions named after the hooks in
:mod:`net_core.plugins.hookspecs`, each decorated with :data:`hookimpl`, published under
the ``net_core.plugins`` entry-point group::

    # pyproject.toml of your distribution
    [project.entry-points."net_core.plugins"]
    my_plugin = "my_package.plugin"

Built-in components are registered through the very same hooks. See ``docs/plugins.md``.
"""

from __future__ import annotations

import pluggy

from net_core.plugins._manager import (
    ALLOW_ENV,
    ENTRY_POINT_GROUP,
    TRACE_ENV,
    PluginFailure,
    PluginInfo,
    PluginManager,
    get_plugin_manager,
    reset_plugin_manager,
)
from net_core.plugins._spec import KINDS, ComponentSpec, Kind, LifecycleEvent, LifecycleKind
from net_core.plugins.hookspecs import PROJECT, hookspec

#: Decorate your hook implementations with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "ALLOW_ENV",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "TRACE_ENV",
    "ComponentSpec",
    "Kind",
    "LifecycleEvent",
    "LifecycleKind",
    "PluginFailure",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "reset_plugin_manager",
]
