"""The first-party example plugin ``net-retention-extras``, loaded as users load it."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md

import pytest
from hypothesis import given
from hypothesis import strategies as st
from net_retention_extras import BytesWatermark, CalendarRetention, CountWatermark

from net_core.errors import ConfigError
from net_core.plugins import ENTRY_POINT_GROUP, PluginManager
from net_core.retention import RetentionView, accounted_size

NS = 1_000_000_000


def utc_ns(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * NS


def view(timestamps: list[int], payload_len: int = 0) -> RetentionView:
    return RetentionView.of(timestamps, [accounted_size(payload_len)] * len(timestamps))


def test_loaded_through_its_entry_point() -> None:
    eps = [
        ep
        for ep in md.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist and ep.dist.name == "net-retention-extras"
    ]
    assert [ep.name for ep in eps] == ["retention_extras"]
    pm = PluginManager(entry_points=eps, allow=None)
    assert pm.provider("retention", "calendar").distribution == "net-retention-extras"
    combined = pm.retention_from_config(
        {"calendar": {"period": "day", "keep": 2}, "count_watermark": {"high": 10, "low": 5}}
    )
    assert combined.policies == (
        CalendarRetention(period="day", keep=2),
        CountWatermark(high=10, low=5),
    )


def test_count_watermark_hysteresis() -> None:
    policy = CountWatermark(high=5, low=2)
    assert policy.eviction_count(view(list(range(5))), 0) == 0
    assert policy.eviction_count(view(list(range(6))), 0) == 4
    assert policy.eviction_count(view(list(range(3))), 0) == 0


def test_bytes_watermark_hysteresis() -> None:
    size = accounted_size(80)  # 100 bytes each
    policy = BytesWatermark(high=500, low=250)
    assert policy.eviction_count(view([0] * 5, 80), 0) == 0
    assert policy.eviction_count(view([0] * 6, 80), 0) == 4  # 600 -> 200
    assert size == 100


@pytest.mark.parametrize("cls", [CountWatermark, BytesWatermark])
def test_watermarks_validate_low_below_high(cls: type) -> None:
    with pytest.raises(ConfigError, match=r"^low: must be < high \(5\), got 5$"):
        cls(high=5, low=5)
    with pytest.raises(ConfigError, match=r"^high: must be >= 1, got 0$"):
        cls(high=0, low=0)


def test_calendar_day_aligned_with_offset() -> None:
    policy = CalendarRetention(period="day", keep=2)
    now = utc_ns(2026, 11, 23, 15, 0)
    stamps = [
        utc_ns(2026, 11, 21, 23, 59),
        utc_ns(2026, 11, 22, 0, 0),  # start of yesterday: kept
        utc_ns(2026, 11, 23, 1, 0),
    ]
    assert policy.cutoff_ns(now) == utc_ns(2026, 11, 22)
    assert policy.eviction_count(view(stamps), now) == 1
    # UTC+2: local midnight is 22:00 UTC the day before.
    shifted = CalendarRetention(period="day", keep=1, utc_offset_minutes=120)
    assert shifted.cutoff_ns(now) == utc_ns(2026, 11, 22, 22, 0)


def test_calendar_weeks_start_on_monday() -> None:
    policy = CalendarRetention(period="week", keep=1)
    # 2026-11-23 is a Monday.
    assert policy.cutoff_ns(utc_ns(2026, 11, 29, 23, 59)) == utc_ns(2026, 11, 23)
    assert policy.cutoff_ns(utc_ns(2026, 11, 23, 0, 0)) == utc_ns(2026, 11, 23)


def test_calendar_validation() -> None:
    with pytest.raises(ConfigError, match="period: must be one of"):
        CalendarRetention(period="fortnight", keep=1)
    with pytest.raises(ConfigError, match=r"keep: must be in \[1, 100000\], got 0"):
        CalendarRetention(period="day", keep=0)


@given(
    st.sampled_from(["minute", "hour", "day", "week"]),
    st.integers(1, 30),
    st.integers(-1440, 1440),
    st.integers(0, 4 * 10**18),
)
def test_calendar_cutoff_is_a_period_boundary_and_evicts_whole_periods(
    period: str, keep: int, offset: int, now: int
) -> None:
    policy = CalendarRetention(period=period, keep=keep, utc_offset_minutes=offset)
    cutoff = policy.cutoff_ns(now)
    length = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}[period] * NS
    assert now - keep * length < cutoff <= now - (keep - 1) * length
    # The cutoff does not move while `now` stays inside the same period.
    assert policy.cutoff_ns(cutoff + (keep - 1) * length + length - 1) == cutoff


@given(st.integers(1, 50), st.integers(0, 49), st.integers(0, 120))
def test_count_watermark_property(high: int, low_seed: int, n: int) -> None:
    low = low_seed % high
    evicted = CountWatermark(high=high, low=low).eviction_count(view([0] * n), 0)
    remaining = n - evicted
    assert remaining <= high
    assert evicted == 0 or remaining == low
