"""The exception hierarchy of net-core.

Every error the library raises on purpose derives from :class:`NetError`, with one
subclass per failure a caller can act on. Layer bases (:class:`RedexError`,
:class:`BusError`, :class:`MeshError`, ...) are defined here so that the layers and the
plugins that extend them share one vocabulary; each layer adds its specific subclasses.

Two rules hold everywhere:

* Decoders raise only :class:`DecodeError` (or a subclass) on malformed bytes, never
  ``IndexError``, ``struct.error`` or ``UnicodeDecodeError``. The low-level cause, when
  there is one, rides in ``__cause__``.
* "Closed by you" (:class:`ClosedError`) and "broken by something else"
  (:class:`BrokenError`) are different errors.

This module must never import anything from the rest of the package.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "BackpressureError",
    "BrokenError",
    "BusError",
    "ClosedError",
    "ComputeError",
    "ConfigError",
    "ConsumerError",
    "CortexError",
    "DecodeError",
    "DuplicatePluginError",
    "FatalAdapterError",
    "IdentityError",
    "MeshError",
    "NetError",
    "PluginError",
    "PluginLoadError",
    "RedexError",
    "TransientAdapterError",
    "UnknownPluginError",
]


class NetError(Exception):
    """Base class of every error net-core raises on purpose."""


class ConfigError(NetError, ValueError):
    """A configuration value is invalid.

    ``path`` names the field (dotted, e.g. ``bus.ring.capacity``) and the message states
    the bound that was violated and the value that was given.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def at(self, prefix: str) -> ConfigError:
        """Return a copy of this error with ``prefix`` prepended to its field path."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        err = ConfigError(self.message, path=path)
        err.__cause__ = self.__cause__
        return err


class DecodeError(NetError, ValueError):
    """Bytes could not be decoded: wrong length, bad magic, bad checksum, bad field.

    Every decoder in net-core raises this (or a subclass) and nothing else on malformed
    input.
    """


class ClosedError(NetError):
    """The object was closed by its owner; the operation can never succeed again."""


class BrokenError(NetError):
    """The object was broken by something else (a failed peer, a poisoned file)."""


class BackpressureError(NetError):
    """A bounded buffer is full; retry later or apply your own drop policy."""


# -- plugins -----------------------------------------------------------------------------


class PluginError(NetError):
    """Base class of plugin discovery, registration and lookup errors."""


class UnknownPluginError(PluginError, LookupError):
    """No plugin provides the requested component name.

    ``available`` lists the names that are registered for that kind.
    """

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        listed = ", ".join(self.available) if self.available else "(none)"
        super().__init__(f"unknown {kind} {name!r}; available: {listed}")


class DuplicatePluginError(PluginError):
    """Two plugins register a component of the same kind under the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        self.distributions = (first, second)
        super().__init__(
            f"{kind} {name!r} is provided by both {first!r} and {second!r}; "
            "uninstall one of them or exclude one with NET_CORE_PLUGINS"
        )


class PluginLoadError(PluginError):
    """A plugin could not be imported, registered or queried."""

    def __init__(self, plugin: str, distribution: str, reason: str) -> None:
        self.plugin = plugin
        self.distribution = distribution
        self.reason = reason
        super().__init__(f"plugin {plugin!r} from {distribution!r} failed: {reason}")


# -- layer bases (each layer adds its own subclasses) ------------------------------------


class RedexError(NetError):
    """Base class of errors of the RedEX append-only log."""


class CortexError(NetError):
    """Base class of errors of the CortEX fold layer."""


class BusError(NetError):
    """Base class of errors of the event bus (ingest, shards, dispatch)."""


class ConsumerError(NetError):
    """Base class of errors of the consumer side of the bus (poll, cursors, filters)."""


class AdapterError(NetError):
    """Base class of storage-backend errors."""


class TransientAdapterError(AdapterError):
    """A storage-backend failure worth retrying (timeout, lost connection)."""


class FatalAdapterError(AdapterError):
    """A storage-backend failure that retrying cannot fix (bad data, bad request)."""


class IdentityError(NetError):
    """Base class of identity, token and envelope errors."""


class MeshError(NetError):
    """Base class of errors of the encrypted mesh transport."""


class ComputeError(NetError):
    """Base class of errors of compute daemons and migration."""
