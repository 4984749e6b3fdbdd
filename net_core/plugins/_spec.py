"""Value objects that travel through the hooks: component specs and lifecycle events."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, final

import attrs

from net_core.config import structure
from net_core.errors import ConfigError

__all__ = ["KINDS", "ComponentSpec", "Kind", "LifecycleEvent", "LifecycleKind"]

T = TypeVar("T")

_NAME = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")


class Kind(enum.StrEnum):
    """The kinds of component a plugin can provide (one hook each)."""

    STORAGE = "storage"
    TRANSPORT = "transport"
    DEDUP = "dedup"
    RETENTION = "retention"
    RULES = "rules"


#: All kinds, in the order ``net plugins`` lists them.
KINDS: tuple[Kind, ...] = tuple(Kind)


def _check_name(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"component name {value!r} must match {_NAME.pattern} "
            "(lowercase letter first, then letters, digits, '_', '.', '-')"
        )


@final
@attrs.frozen(slots=True)
class ComponentSpec(Generic[T]):
    """One named component a plugin provides: a storage backend, a transport, a dedup
    backend, a retention policy or a behavior rule.

    ``factory`` builds the component. When ``config_type`` is set (an attrs class), the
    component's options are structured into it (unknown keys and bad values raise
    :class:`~net_core.errors.ConfigError` with the field path) and ``factory`` is called
    with the config object; without ``config_type`` the factory takes no argument and
    options must be empty.
    """

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., T]
    config_type: type[Any] | None = None
    summary: str = ""

    def build(self, options: Mapping[str, Any] | Any | None = None, *, path: str = "") -> T:
        """Build the component from ``options`` (a mapping, a ready config object, or
        ``None`` for defaults)."""
        if self.config_type is None:
            if options:
                raise ConfigError(f"{self.name!r} takes no options, got {options!r}", path=path)
            return self.factory()
        if isinstance(options, self.config_type):
            config = options
        else:
            config = structure(options, self.config_type, path=path)
        return self.factory(config)


class LifecycleKind(enum.StrEnum):
    """What happened, in a :class:`LifecycleEvent`."""

    BUS_STARTED = "bus_started"
    BUS_STOPPED = "bus_stopped"
    SHARD_ADDED = "shard_added"
    SHARD_REMOVED = "shard_removed"
    FILE_OPENED = "file_opened"
    FILE_CLOSED = "file_closed"
    NODE_STARTED = "node_started"
    NODE_STOPPED = "node_stopped"
    PEER_CONNECTED = "peer_connected"
    PEER_FAILED = "peer_failed"


@final
@attrs.frozen(slots=True)
class LifecycleEvent:
    """A notification for plugins: ``kind`` says what happened, ``source`` which object
    (a bus, a file, a node) and ``data`` the details (shard id, file name, peer id...)."""

    kind: LifecycleKind
    source: str
    data: Mapping[str, Any] = attrs.field(factory=dict)
