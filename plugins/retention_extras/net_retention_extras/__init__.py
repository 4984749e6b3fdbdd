"""Chunked retention policies for Net logs: watermark (hysteresis) and calendar windows.

Registered with net-core through the ``net_core.plugins`` entry point
``retention_extras`` (see :mod:`net_retention_extras.plugin`).
"""

from net_retention_extras.policies import (
    BytesWatermark,
    CalendarRetention,
    CountWatermark,
)

__all__ = ["BytesWatermark", "CalendarRetention", "CountWatermark"]
__version__ = "0.1.0"
