"""Configuration of the event bus (:class:`BusConfig` and its parts)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, final

import attrs

from net_core.config import ConfigError, in_range, one_of, power_of_two

__all__ = ["BatchConfig", "BusConfig", "ScalingConfig", "StorageConfig"]

BACKPRESSURE_MODES = ("drop_newest", "drop_oldest", "fail_producer", "sample")


def _default_shards() -> int:
    return max(1, min(os.cpu_count() or 1, 65_535))


def _finite(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", path=attribute.name)


@final
@attrs.frozen(slots=True)
class BatchConfig:
    """How shard workers form batches: at least ``min_size`` events or ``max_delay_ms``
    since the first pending event, at most ``max_size``. With ``adaptive``, the target
    size follows the observed event rate (rate / 200, smoothed) between the two."""

    min_size: int = attrs.field(default=1000, validator=in_range(1, 10_000_000))
    max_size: int = attrs.field(default=10_000, validator=in_range(1, 10_000_000))
    max_delay_ms: float = attrs.field(default=10.0, validator=[_finite, in_range(0.001, 60_000)])
    adaptive: bool = True
    velocity_window_ms: float = attrs.field(
        default=100.0, validator=[_finite, in_range(0.001, 60_000)]
    )

    def __attrs_post_init__(self) -> None:
        if self.max_size < self.min_size:
            raise ConfigError(
                f"must be >= min_size ({self.min_size}), got {self.max_size}", path="max_size"
            )


@final
@attrs.frozen(slots=True)
class ScalingConfig:
    """Automatic shard scaling: scale up when more than half of the active shards are
    overloaded (ring fill above ``fill_ratio_threshold``), down when more than half are
    idle (fill below ``underutilized_threshold`` and no events in the window); never
    beyond ``[min_shards, max_shards]`` and not within ``cooldown_ms`` of the last change."""

    min_shards: int = attrs.field(default=1, validator=in_range(1, 65_535))
    max_shards: int = attrs.field(default=64, validator=in_range(1, 65_535))
    fill_ratio_threshold: float = attrs.field(default=0.7, validator=[_finite, in_range(0.0001, 1)])
    underutilized_threshold: float = attrs.field(default=0.1, validator=[_finite, in_range(0, 1)])
    cooldown_ms: float = attrs.field(
        default=1000.0, validator=[_finite, in_range(0.001, 3_600_000)]
    )
    metrics_window_ms: float = attrs.field(
        default=100.0, validator=[_finite, in_range(1, 3_600_000)]
    )
    auto_scale: bool = True

    def __attrs_post_init__(self) -> None:
        if self.max_shards < self.min_shards:
            raise ConfigError(
                f"must be >= min_shards ({self.min_shards}), got {self.max_shards}",
                path="max_shards",
            )


@final
@attrs.frozen(slots=True)
class StorageConfig:
    """Which storage backend (a ``net_storage_backends`` plugin name) and its options."""

    backend: str = attrs.field(default="memory", validator=attrs.validators.instance_of(str))
    options: Mapping[str, Any] = attrs.field(factory=dict)


@final
@attrs.frozen(slots=True)
class BusConfig:
    """Configuration of a :class:`~net_core.bus.Bus`.

    * ``shards``: initial shard count (default: CPU count).
    * ``ring_capacity``: events each shard buffers before its backpressure mode applies
      (a power of two, at least 1024).
    * ``backpressure``: ``drop_newest`` (refuse with ``Backpressure``), ``drop_oldest``
      (evict the oldest queued event, counted), ``fail_producer`` (refuse with
      ``Backpressure``; for producers that must see every refusal) or ``sample`` (when
      full, keep each event with probability ``sample_rate``, else ``Sampled``).
    * ``adapter_timeout_ms`` bounds every storage call; ``retries`` is how many times a
      failed batch write is retried (jittered exponential backoff per shard).
    * ``scaling``: automatic scaling policy, or ``None`` for manual scaling only.
    * ``producer_nonce_path``: a file that keeps the producer nonce across restarts, so
      dedup ids stay stable (versioned, written by temp + fsync + rename).
    """

    shards: int = attrs.field(factory=_default_shards, validator=in_range(1, 65_535))
    ring_capacity: int = attrs.field(default=1 << 16, validator=power_of_two(1024))
    backpressure: str = attrs.field(default="drop_newest", validator=one_of(*BACKPRESSURE_MODES))
    sample_rate: float = attrs.field(default=0.5, validator=[_finite, in_range(0.000001, 1.0)])
    batch: BatchConfig = attrs.field(factory=BatchConfig)
    adapter_timeout_ms: float = attrs.field(
        default=30_000.0, validator=[_finite, in_range(1, 3_600_000)]
    )
    retries: int = attrs.field(default=0, validator=in_range(0, 100))
    scaling: ScalingConfig | None = None
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    producer_nonce_path: str | None = None
    #: Upper bound on the shard-id space (ids are never reused).
    max_shard_id: int = attrs.field(default=65_534, validator=in_range(1, 65_534))
    #: Allow ingest from threads other than the bus's event loop (each ingest then
    #: takes its shard's lock; slower). Without it, ingest from the loop thread only.
    thread_safe: bool = False
