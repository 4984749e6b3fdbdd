"""The policies. Pure functions of the retained entries and the time; no state.

Every policy implements net-core's retention contract: given the retained entries
(oldest first) and ``now``, return how many of the oldest to evict. Because the answer
depends only on its inputs, a policy behaves the same after a restart.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from net_core.config import ConfigError, in_range, one_of, positive
from net_core.retention import RetentionView

_NS_PER_MINUTE: Final = 60 * 1_000_000_000
_PERIOD_NS: Final = {
    "minute": _NS_PER_MINUTE,
    "hour": 60 * _NS_PER_MINUTE,
    "day": 24 * 60 * _NS_PER_MINUTE,
    "week": 7 * 24 * 60 * _NS_PER_MINUTE,
}
# 1970-01-01 was a Thursday: ISO weeks (starting Monday) are aligned to 1970-01-05.
_WEEK_ANCHOR_NS: Final = 4 * 24 * 60 * _NS_PER_MINUTE


def _low_below_high(inst: Any, _attr: attrs.Attribute[Any], low: int) -> None:
    if low >= inst.high:
        raise ConfigError(f"must be < high ({inst.high}), got {low}", path="low")


@attrs.frozen(slots=True)
class CountWatermark:
    """Let the log grow to ``high`` entries; once above, evict down to ``low``.

    With ``high = 1_100_000`` and ``low = 1_000_000`` the log compacts once per 100,000
    appends instead of on every append.
    """

    high: int = attrs.field(validator=positive)
    low: int = attrs.field(validator=[in_range(0), _low_below_high])

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """``len - low`` once ``len > high``, else 0."""
        n = len(view)
        return n - self.low if n > self.high else 0


@attrs.frozen(slots=True)
class BytesWatermark:
    """Let the log grow to ``high`` accounted bytes; once above, evict down to ``low``.

    Accounted bytes follow net-core's byte retention (index record + payload per entry).
    """

    high: int = attrs.field(validator=positive)
    low: int = attrs.field(validator=[in_range(0), _low_below_high])

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """Evict from the head until at most ``low`` bytes remain, once above ``high``."""
        total = view.total_bytes
        if total <= self.high:
            return 0
        sizes = view.sizes
        evicted = 0
        while evicted < len(sizes) and total > self.low:
            total -= sizes[evicted]
            evicted += 1
        return evicted


@attrs.frozen(slots=True)
class CalendarRetention:
    """Keep whole calendar periods: the current one and the ``keep - 1`` before it.

    Periods are aligned to the wall clock at ``utc_offset_minutes`` from UTC (weeks start
    on Monday). ``period = "day", keep = 7`` keeps today and the six previous days; at
    local midnight the oldest day leaves in one eviction. As with ``age``, only the
    leading run of old entries is evicted.
    """

    period: str = attrs.field(validator=one_of(*_PERIOD_NS))
    keep: int = attrs.field(validator=in_range(1, 100_000))
    utc_offset_minutes: int = attrs.field(default=0, validator=in_range(-24 * 60, 24 * 60))

    def cutoff_ns(self, now_ns: int) -> int:
        """The first instant (unix ns) that is still retained at ``now_ns``."""
        length = _PERIOD_NS[self.period]
        anchor = _WEEK_ANCHOR_NS if self.period == "week" else 0
        offset = self.utc_offset_minutes * _NS_PER_MINUTE
        local = now_ns + offset
        start_local = (local - anchor) // length * length + anchor
        return start_local - (self.keep - 1) * length - offset

    def eviction_count(self, view: RetentionView, now_ns: int) -> int:
        """Count the leading entries stamped before :meth:`cutoff_ns`."""
        cutoff = self.cutoff_ns(now_ns)
        timestamps = view.timestamps
        evicted = 0
        while evicted < len(timestamps) and timestamps[evicted] < cutoff:
            evicted += 1
        return evicted
