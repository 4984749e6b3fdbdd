"""Smoke run of ``net bench jetstream`` with tiny sizes (figures mean nothing here)."""

from __future__ import annotations

import io

import attrs
import pytest
from net_adapter_jetstream.bench import NATS_URL_ENV, JetStreamSizes, run_jetstream_suite

from net_core.bench import available_suites


def test_suite_is_registered_through_the_entry_point() -> None:
    assert available_suites()["jetstream"] is run_jetstream_suite


def test_tiny_run_has_the_shape_of_the_other_suites(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NATS_URL_ENV, nats_url)
    progress = io.StringIO()
    report = run_jetstream_suite(
        quick=True, progress=progress, sizes=JetStreamSizes(ingest=300, poll=300, repeats=1)
    )
    doc = attrs.asdict(report)
    assert doc["suite"] == "jetstream"
    rows = {r["name"]: r for r in doc["results"]}
    assert list(rows) == ["ingest_to_store", "ingest_to_store_vs_raw", "poll_from_store"]
    assert all(r["unit"] == "events/s" and r["value"] > 0 for r in rows.values())
    assert rows["ingest_to_store"]["reference"] is None
    assert rows["poll_from_store"]["reference"] is None
    assert rows["ingest_to_store_vs_raw"]["reference"] > 0
    assert rows["ingest_to_store_vs_raw"]["ratio"] > 0
    assert doc["meta"]["server"] == nats_url
    assert "no JetStream adapter" in doc["meta"]["reference_note"]
    assert "ingest_to_store_vs_raw" in progress.getvalue()
