"""Configuration of one RedEX file (:class:`RedexFileConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import attrs

from net_core.config import ConfigError, in_range, positive

__all__ = ["RedexFileConfig"]


def _freeze_retention(value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"expected a table of policy name -> options, got {type(value).__name__}",
            path="retention",
        )
    out: dict[str, dict[str, Any]] = {}
    for name, given in value.items():
        options = {} if given is None else given
        if not isinstance(name, str) or not isinstance(options, Mapping):
            raise ConfigError(
                f"policy {name!r}: options must be a table, got {type(options).__name__}",
                path="retention",
            )
        out[name] = dict(options)
    return out


@final
@attrs.frozen(slots=True)
class RedexFileConfig:
    """How a RedEX file stores, syncs and retains its events.

    * ``persistent``: keep the file on disk under the manager's base directory (the
      manager must have one). Heap-only otherwise.
    * Fsync policy (persistent files; appends always reach the OS before they return,
      fsync decides when they reach the disk): with none of the three fields set, only
      ``sync()`` and ``close()`` fsync. ``fsync_every_n``: after every N appended events.
      ``fsync_interval_ms``: every interval, by a background thread.
      ``fsync_max_bytes``: whenever that many bytes were written since the last sync
      (alone, or together with ``fsync_interval_ms``: whichever comes first).
      ``fsync_every_n`` excludes the other two.
    * ``retention``: ``{policy name: options}`` of retention plugins, e.g.
      ``{"count": {"max_events": 100_000}, "age": {"max_age_ms": 86_400_000}}``. They
      combine: the largest eviction wins.
    * ``retention_check_every``: evaluate retention after this many appended events
      (0: only on an explicit ``sweep_retention()`` or the manager's background sweep).
    * ``tail_buffer_size``: how many events a tail subscriber may fall behind before it
      gets :class:`~net_core.redex.LaggedError`.
    """

    persistent: bool = False
    fsync_every_n: int | None = attrs.field(default=None, validator=positive)
    fsync_interval_ms: int | None = attrs.field(default=None, validator=positive)
    fsync_max_bytes: int | None = attrs.field(default=None, validator=positive)
    retention: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_freeze_retention
    )
    retention_check_every: int = attrs.field(default=1024, validator=in_range(0, 2**32))
    tail_buffer_size: int = attrs.field(default=1024, validator=in_range(1, 2**24))

    def __attrs_post_init__(self) -> None:
        if self.fsync_every_n is not None and (
            self.fsync_interval_ms is not None or self.fsync_max_bytes is not None
        ):
            raise ConfigError(
                "fsync_every_n cannot be combined with fsync_interval_ms or fsync_max_bytes",
                path="fsync_every_n",
            )

    @property
    def fsync_policy(self) -> str:
        """``never``, ``every_n``, ``interval``, ``bytes`` or ``interval_or_bytes``."""
        if self.fsync_every_n is not None:
            return "every_n"
        if self.fsync_interval_ms is not None and self.fsync_max_bytes is not None:
            return "interval_or_bytes"
        if self.fsync_interval_ms is not None:
            return "interval"
        if self.fsync_max_bytes is not None:
            return "bytes"
        return "never"
