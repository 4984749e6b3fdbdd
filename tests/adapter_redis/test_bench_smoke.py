"""Smoke run of ``net bench redis`` (tiny sizes: the shape of the report, not speed)."""

from __future__ import annotations

import pytest
from net_adapter_redis.bench import URL_ENV, RedisBenchSizes, run_redis_suite

from net_core.bench import available_suites


def test_the_suite_is_registered_through_the_entry_point() -> None:
    assert available_suites()["redis"] is run_redis_suite


def test_tiny_run_reports_every_scenario(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, redis_url)
    report = run_redis_suite(sizes=RedisBenchSizes(ingest=1500, poll=1500, repeats=1))
    assert report.suite == "redis"
    names = [r.name for r in report.results]
    assert names == ["ingest_to_store", "ingest_to_store_vs_raw", "poll_from_store"]
    for result in report.results:
        assert result.unit == "events/s"
        assert result.value > 0
    assert report.meta["server_source"] == URL_ENV
    assert report.meta["event_bytes"] == 64
    assert "redis-py" in report.meta["ingest_to_store_vs_raw_reference"]
    raw = report.results[1]
    assert raw.reference is not None
    assert raw.reference > 0
    assert set(report.meta["spread"]) == set(names)
