"""The plugin manager: registration, entry-point discovery, isolation, lookup by name.

Theory of operation: a :class:`PluginManager` wraps one :class:`pluggy.PluginManager`.
Registering a plugin (the built-ins first, then every allowed entry point of the
``net_core.plugins`` group) validates its hook signatures, calls its collection hooks one
by one and merges the returned :class:`ComponentSpec` objects into a per-kind catalog.
A plugin that fails at any of these steps is unregistered as a whole and recorded as a
:class:`PluginFailure`; the others carry on. Two plugins providing the same name for the
same kind is a configuration conflict and raises :class:`DuplicatePluginError` naming
both distributions.

Environment:

* ``NET_CORE_PLUGINS``: allow-list of third-party plugins, comma-separated entry-point
  names or distribution names. Unset: load all. Empty: load none (built-ins only).
* ``NET_CORE_TRACE_HOOKS``: when set to a non-empty value other than ``0``, every hook
  call is written to stderr with the plugin, its distribution, the result and the time.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any, Final, final

import attrs
import pluggy

from net_core._version import __version__
from net_core.dedup import Dedup
from net_core.errors import ConfigError, DuplicatePluginError, PluginLoadError, UnknownPluginError
from net_core.plugins import hookspecs
from net_core.plugins._spec import KINDS, ComponentSpec, Kind, LifecycleEvent
from net_core.retention import CombinedRetention, RetentionPolicy

__all__ = [
    "ALLOW_ENV",
    "ENTRY_POINT_GROUP",
    "TRACE_ENV",
    "PluginFailure",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "reset_plugin_manager",
]

log = logging.getLogger("net_core.plugins")

#: Entry-point group third-party plugins register under.
ENTRY_POINT_GROUP: Final = "net_core.plugins"
#: Allow-list environment variable (see the module docstring).
ALLOW_ENV: Final = "NET_CORE_PLUGINS"
#: Hook-tracing environment variable (see the module docstring).
TRACE_ENV: Final = "NET_CORE_TRACE_HOOKS"

CORE_DISTRIBUTION: Final = "net-core"

_COLLECTION_HOOKS: Final[dict[Kind, str]] = {
    Kind.STORAGE: "net_storage_backends",
    Kind.TRANSPORT: "net_transports",
    Kind.DEDUP: "net_dedup_backends",
    Kind.RETENTION: "net_retention_policies",
    Kind.RULES: "net_behavior_rules",
}

_UNSET: Final = object()


@final
@attrs.frozen(slots=True)
class PluginInfo:
    """A loaded plugin: its name, where it comes from and what it provides."""

    name: str
    distribution: str
    version: str
    builtin: bool
    provides: Mapping[str, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``net plugins --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "provides": {kind.value: list(self.provides.get(kind, ())) for kind in KINDS},
        }


@final
@attrs.frozen(slots=True)
class PluginFailure:
    """A plugin that could not be loaded, and why (it is not registered)."""

    name: str
    distribution: str
    version: str
    stage: str
    error: str

    def to_json(self) -> dict[str, Any]:
        """JSON shape used by ``net plugins --json`` under ``"failed"``."""
        return attrs.asdict(self)

    def as_error(self) -> PluginLoadError:
        """The failure as an exception (what ``strict`` mode raises)."""
        return PluginLoadError(self.name, self.distribution, f"{self.stage}: {self.error}")


@attrs.define(slots=True)
class _Meta:
    distribution: str
    version: str
    builtin: bool
    provides: dict[Kind, list[str]] = attrs.field(factory=dict)


def _parse_allow(raw: str | None) -> frozenset[str] | None:
    if raw is None:
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _trace_enabled() -> bool:
    value = os.environ.get(TRACE_ENV, "")
    return value not in ("", "0", "false", "no")


@final
class PluginManager:
    """Registry of plugins and the components they provide.

    Most code uses the process-wide manager from :func:`get_plugin_manager`; tests and
    embedders can build their own (``PluginManager(discover=False)`` has the built-ins
    only). Lookups raise :class:`UnknownPluginError` listing the available names.
    """

    __slots__ = (
        "_catalog",
        "_failures",
        "_lock",
        "_meta",
        "_pm",
        "_skipped",
        "_trace",
        "_trace_stream",
        "notify_errors",
    )

    def __init__(
        self,
        *,
        builtins: bool = True,
        discover: bool = True,
        entry_points: Iterable[md.EntryPoint] | None = None,
        allow: str | object | None = _UNSET,
        trace: bool | None = None,
        trace_stream: IO[str] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._meta: dict[str, _Meta] = {}
        self._catalog: dict[Kind, dict[str, tuple[ComponentSpec[Any], str]]] = {
            kind: {} for kind in KINDS
        }
        self._failures: list[PluginFailure] = []
        self._skipped: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._trace = _trace_enabled() if trace is None else trace
        self._trace_stream = trace_stream
        #: Exceptions raised by lifecycle-notification hooks (caught and logged).
        self.notify_errors = 0
        if builtins:
            from net_core.plugins import _builtins  # noqa: PLC0415 - avoids an import cycle

            self.register(_builtins, name="builtin", distribution=CORE_DISTRIBUTION)
        if entry_points is not None or discover:
            if allow is _UNSET:
                allow = os.environ.get(ALLOW_ENV)
            eps = (
                list(entry_points)
                if entry_points is not None
                else list(md.entry_points(group=ENTRY_POINT_GROUP))
            )
            self._load_entry_points(eps, _parse_allow(allow if isinstance(allow, str) else None))

    # -- registration ----------------------------------------------------------------

    def register(
        self,
        plugin: object,
        *,
        name: str,
        distribution: str = "<local>",
        version: str | None = None,
    ) -> None:
        """Register ``plugin`` (a module or object with hook implementations).

        Raises :class:`PluginLoadError` when its hooks are invalid or raise, and
        :class:`DuplicatePluginError` when it provides a name another plugin already
        provides; in both cases nothing of it stays registered.
        """
        if version is None:
            version = __version__ if distribution == CORE_DISTRIBUTION else ""
        with self._lock:
            if self._pm.has_plugin(name) or name in self._meta:
                raise PluginLoadError(name, distribution, "a plugin with this name is registered")
            try:
                self._pm.register(plugin, name=name)
            except (pluggy.PluginValidationError, ValueError) as exc:
                raise PluginLoadError(name, distribution, f"invalid hooks: {exc}") from exc
            try:
                unknown = sorted(
                    caller.name
                    for caller in self._pm.get_hookcallers(plugin) or ()
                    if not caller.has_spec()
                )
                if unknown:
                    raise PluginLoadError(
                        name, distribution, f"implements unknown hook(s): {', '.join(unknown)}"
                    )
                collected = self._collect(plugin, name, distribution, version)
                self._merge(name, distribution, collected)
            except BaseException:
                self._pm.unregister(plugin)
                raise
            self._meta[name] = _Meta(
                distribution=distribution,
                version=version,
                builtin=distribution == CORE_DISTRIBUTION,
                provides={kind: [spec.name for spec in specs] for kind, specs in collected.items()},
            )

    def unregister(self, name: str) -> None:
        """Remove a registered plugin and every component it provides."""
        with self._lock:
            plugin = self._pm.get_plugin(name)
            if plugin is None:
                raise UnknownPluginError("plugin", name, self.plugin_names())
            self._pm.unregister(plugin)
            del self._meta[name]
            for table in self._catalog.values():
                for component in [c for c, (_, owner) in table.items() if owner == name]:
                    del table[component]

    def _load_entry_points(
        self, eps: Iterable[md.EntryPoint], allow: frozenset[str] | None
    ) -> None:
        seen: set[tuple[str, str]] = set()
        # A stable order (by distribution, then entry point) makes conflicts and hook call
        # order reproducible whatever order the file system lists distributions in.
        ordered = sorted(eps, key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))
        for ep in ordered:
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            if (dist, ep.name) in seen:
                continue  # the same distribution found twice on sys.path
            seen.add((dist, ep.name))
            if allow is not None and ep.name not in allow and dist not in allow:
                self._skipped.append((ep.name, dist))
                log.debug("plugin %s from %s not in %s; skipped", ep.name, dist, ALLOW_ENV)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(ep.name, dist, version, "import", f"{type(exc).__name__}: {exc}")
                continue
            try:
                self.register(plugin, name=ep.name, distribution=dist, version=version)
            except PluginLoadError as exc:
                self._fail(ep.name, dist, version, "register", exc.reason)

    def _fail(self, name: str, dist: str, version: str, stage: str, error: str) -> None:
        failure = PluginFailure(name, dist, version, stage, error)
        self._failures.append(failure)
        log.warning("net-core plugin %r from %r not loaded (%s): %s", name, dist, stage, error)

    def _collect(
        self, plugin: object, name: str, dist: str, version: str
    ) -> dict[Kind, list[ComponentSpec[Any]]]:
        collected: dict[Kind, list[ComponentSpec[Any]]] = {}
        for kind, hookname in _COLLECTION_HOOKS.items():
            caller: pluggy.HookCaller = getattr(self._pm.hook, hookname)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                started = time.perf_counter()
                try:
                    result = impl.function()
                except Exception as exc:
                    raise PluginLoadError(
                        name, dist, f"hook {hookname} raised {type(exc).__name__}: {exc}"
                    ) from exc
                specs = _check_specs(result, name, dist, hookname)
                if self._trace:
                    elapsed = (time.perf_counter() - started) * 1e3
                    listed = ", ".join(s.name for s in specs) or "nothing"
                    self._emit_trace(f"{hookname} <- {name} ({dist} {version}): {listed}", elapsed)
                collected.setdefault(kind, []).extend(specs)
        return collected

    def _merge(
        self, name: str, dist: str, collected: Mapping[Kind, list[ComponentSpec[Any]]]
    ) -> None:
        for kind, specs in collected.items():
            table = self._catalog[kind]
            local: set[str] = set()
            for spec in specs:
                if spec.name in local:
                    raise DuplicatePluginError(kind.value, spec.name, dist, dist)
                local.add(spec.name)
                if spec.name in table:
                    owner = table[spec.name][1]
                    raise DuplicatePluginError(
                        kind.value, spec.name, self._meta[owner].distribution, dist
                    )
        for kind, specs in collected.items():
            for spec in specs:
                self._catalog[kind][spec.name] = (spec, name)

    def _emit_trace(self, line: str, elapsed_ms: float) -> None:
        stream = self._trace_stream or sys.stderr
        stream.write(f"[net-core hooks] {line} ({elapsed_ms:.3f} ms)\n")

    # -- introspection ---------------------------------------------------------------

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order."""
        return list(self._meta)

    def plugins(self) -> list[PluginInfo]:
        """The registered plugins, built-ins first, in registration order."""
        return [
            PluginInfo(
                name=name,
                distribution=meta.distribution,
                version=meta.version,
                builtin=meta.builtin,
                provides={kind: tuple(names) for kind, names in meta.provides.items()},
            )
            for name, meta in self._meta.items()
        ]

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins that were found but could not be loaded."""
        return list(self._failures)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(entry point, distribution)`` pairs left out by the allow-list."""
        return list(self._skipped)

    def names(self, kind: Kind | str) -> list[str]:
        """The component names registered for ``kind``, sorted."""
        return sorted(self._catalog[Kind(kind)])

    def spec(self, kind: Kind | str, name: str) -> ComponentSpec[Any]:
        """The spec registered as ``name`` for ``kind``.

        Raises :class:`UnknownPluginError` (listing the available names) if there is none.
        """
        kind = Kind(kind)
        try:
            return self._catalog[kind][name][0]
        except KeyError:
            raise UnknownPluginError(kind.value, name, list(self._catalog[kind])) from None

    def provider(self, kind: Kind | str, name: str) -> PluginInfo:
        """The plugin that provides component ``name`` of ``kind``."""
        kind = Kind(kind)
        try:
            owner = self._catalog[kind][name][1]
        except KeyError:
            raise UnknownPluginError(kind.value, name, list(self._catalog[kind])) from None
        return next(info for info in self.plugins() if info.name == owner)

    def build(self, kind: Kind | str, name: str, options: Any = None, *, path: str = "") -> Any:
        """Build component ``name`` of ``kind`` from ``options`` (see ComponentSpec.build)."""
        return self.spec(kind, name).build(options, path=path or name)

    # -- typed shortcuts -------------------------------------------------------------

    def storage_backend(self, name: str, options: Any = None) -> Any:
        """Build the storage backend ``name``."""
        return self.build(Kind.STORAGE, name, options)

    def transport(self, name: str, options: Any = None) -> Any:
        """Build the mesh transport ``name``."""
        return self.build(Kind.TRANSPORT, name, options)

    def dedup(self, name: str, options: Any = None) -> Dedup:
        """Build the dedup backend ``name``."""
        backend = self.build(Kind.DEDUP, name, options)
        if not isinstance(backend, Dedup):
            raise PluginLoadError(
                name,
                self.provider(Kind.DEDUP, name).distribution,
                f"dedup factory returned {type(backend).__name__}, not a Dedup",
            )
        return backend

    def retention_policy(self, name: str, options: Any = None) -> RetentionPolicy:
        """Build the retention policy ``name``."""
        policy = self.build(Kind.RETENTION, name, options)
        if not isinstance(policy, RetentionPolicy):
            raise PluginLoadError(
                name,
                self.provider(Kind.RETENTION, name).distribution,
                f"retention factory returned {type(policy).__name__}, not a RetentionPolicy",
            )
        return policy

    def retention_from_config(
        self, config: Mapping[str, Any] | None, *, path: str = "retention"
    ) -> CombinedRetention:
        """Build the combination of policies configured as ``{name: options}``."""
        if config is None:
            return CombinedRetention(())
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"expected a table of policy name -> options, got {type(config).__name__}",
                path=path,
            )
        policies = []
        for name, options in config.items():
            kind_path = f"{path}.{name}"
            try:
                spec = self.spec(Kind.RETENTION, name)
            except UnknownPluginError as exc:
                raise ConfigError(str(exc), path=kind_path) from None
            policies.append(spec.build(options, path=kind_path))
        return CombinedRetention(tuple(policies))

    # -- lifecycle notifications -----------------------------------------------------

    def notify(self, event: LifecycleEvent) -> None:
        """Deliver ``event`` to every ``net_lifecycle_event`` implementation.

        A failing implementation is logged and counted in :attr:`notify_errors`; it
        never breaks the caller or the other plugins.
        """
        caller: pluggy.HookCaller = self._pm.hook.net_lifecycle_event
        for impl in caller.get_hookimpls():
            started = time.perf_counter()
            try:
                impl.function(**({"event": event} if impl.argnames else {}))
            except Exception:
                self.notify_errors += 1
                log.exception(
                    "plugin %r raised in net_lifecycle_event(%s)", impl.plugin_name, event.kind
                )
            if self._trace:
                elapsed = (time.perf_counter() - started) * 1e3
                self._emit_trace(
                    f"net_lifecycle_event({event.kind}, {event.source}) -> {impl.plugin_name}",
                    elapsed,
                )

    def __repr__(self) -> str:
        return f"PluginManager(plugins={self.plugin_names()!r}, failures={len(self._failures)})"


def _check_specs(result: Any, name: str, dist: str, hookname: str) -> list[ComponentSpec[Any]]:
    if result is None:
        return []
    if isinstance(result, ComponentSpec):
        result = [result]
    try:
        specs = list(result)
    except TypeError:
        raise PluginLoadError(
            name, dist, f"hook {hookname} returned {type(result).__name__}, expected a list"
        ) from None
    bad = [s for s in specs if not isinstance(s, ComponentSpec)]
    if bad:
        raise PluginLoadError(
            name, dist, f"hook {hookname} returned {bad[0]!r}, expected ComponentSpec objects"
        )
    return specs


_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide manager: built-ins plus every allowed installed plugin.

    Created on first use from the environment at that moment.
    """
    global _default  # noqa: PLW0603 - process-wide singleton
    with _default_lock:
        if _default is None:
            _default = PluginManager()
        return _default


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (the next use re-discovers plugins)."""
    global _default  # noqa: PLW0603 - process-wide singleton
    with _default_lock:
        _default = None
