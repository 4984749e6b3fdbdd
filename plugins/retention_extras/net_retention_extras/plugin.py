"""The net-core plugin: registers the policies through ``net_retention_policies``."""

from __future__ import annotations

from typing import Any

from net_core.plugins import ComponentSpec, hookimpl
from net_retention_extras.policies import BytesWatermark, CalendarRetention, CountWatermark


def _same(config: Any) -> Any:
    # The config classes are the policies themselves: validated on construction.
    return config


@hookimpl
def net_retention_policies() -> list[ComponentSpec[Any]]:
    """The three chunked retention policies."""
    return [
        ComponentSpec(
            name="count_watermark",
            factory=_same,
            config_type=CountWatermark,
            summary="grow to `high` entries, then evict down to `low`",
        ),
        ComponentSpec(
            name="bytes_watermark",
            factory=_same,
            config_type=BytesWatermark,
            summary="grow to `high` bytes, then evict down to `low`",
        ),
        ComponentSpec(
            name="calendar",
            factory=_same,
            config_type=CalendarRetention,
            summary="keep the current and keep-1 previous calendar periods",
        ),
    ]
