"""``net bench bus``: the suite runs end to end with ``--quick`` and reports well-formed figures.

Benchmarks are not tests: nothing here asserts anything about speed.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import net_core
from net_core.bench import REFERENCE_MISSING, SUITES, Reference, format_table, run_bus_suite
from net_core.bench._bus import BusSizes, synthetic_events
from net_core.bench._harness import ratio_of

NET = Path(sys.executable).with_name("net")

BUS_SCENARIOS = {
    "ingest_raw": "events/s",
    "ingest_raw_batch_1000": "events/s",
    "ingest_dict": "events/s",
    "end_to_end_redex": "events/s",
}
#: Scenarios the reference cannot run (its Python API has no local-disk bus backend).
OURS_ONLY = {"end_to_end_redex"}


def has_reference() -> bool:
    try:
        import net  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_results(results: list[dict[str, Any]], *, reference_expected: bool) -> None:
    assert [r["name"] for r in results] == list(BUS_SCENARIOS)
    for r in results:
        assert set(r) == {"name", "unit", "value", "reference", "ratio"}, r
        assert r["unit"] == BUS_SCENARIOS[r["name"]], r
        assert positive_finite(r["value"]), r
        assert (r["reference"] is None) == (r["ratio"] is None), r
        if reference_expected and r["name"] not in OURS_ONLY:
            assert positive_finite(r["reference"]), r
            assert r["ratio"] == pytest.approx(ratio_of(r["unit"], r["value"], r["reference"]))
        else:
            assert r["reference"] is None, r


def test_bench_bus_quick_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    done = subprocess.run(
        [str(NET), "bench", "bus", "--quick", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"suite", "results", "meta"}
    assert doc["suite"] == "bus"
    meta = doc["meta"]
    assert meta["quick"] is True
    assert meta["net_core_version"] == net_core.__version__
    assert meta["shards"] == 4
    assert meta["ring_capacity"] == 1 << 20
    assert meta["backpressure"] == "drop_oldest"
    assert "no local-disk bus backend" in meta["end_to_end_redex"]
    assert set(meta["spread"]) == set(BUS_SCENARIOS)
    assert (meta["reference_version"] != REFERENCE_MISSING) == has_reference()
    check_results(doc["results"], reference_expected=has_reference())
    # Progress goes to stderr, never into the JSON document.
    assert "ingest_raw" in done.stderr


def test_bench_bus_without_reference_reports_none() -> None:
    progress = io.StringIO()
    tiny = BusSizes(
        ingest_raw=500, ingest_raw_batch=2000, ingest_dict=500, end_to_end=500, repeats=1
    )
    report = run_bus_suite(
        progress=progress, reference=Reference(None, REFERENCE_MISSING), sizes=tiny
    )
    results = [
        {
            "name": r.name,
            "unit": r.unit,
            "value": r.value,
            "reference": r.reference,
            "ratio": r.ratio,
        }
        for r in report.results
    ]
    check_results(results, reference_expected=False)
    assert REFERENCE_MISSING in format_table(report)
    assert "end_to_end_redex" in progress.getvalue()


def test_bus_suite_is_registered() -> None:
    assert SUITES["bus"] is run_bus_suite


def test_synthetic_events_are_deterministic_and_varied() -> None:
    events = synthetic_events(3, 0, 2000)
    assert events == synthetic_events(3, 0, 2000)
    # Chunking does not matter: event i is a function of (run, i).
    assert synthetic_events(3, 500, 100) == events[500:600]
    assert synthetic_events(4, 0, 10) != events[:10]
    assert [e["demo_seq"] for e in events] == list(range(2000))
    assert {e["demo_run"] for e in events} == {3}
    kinds = Counter(e["type"] for e in events)
    assert set(kinds) == {"token", "tool_call", "state_change"}
    assert kinds["token"] > kinds["tool_call"] > kinds["state_change"]
    assert len({e["id"] for e in events}) == 2000
    assert len({e["agent_id"] for e in events}) == 16
    for event in events:
        size = len(json.dumps(event, separators=(",", ":")))
        assert 100 < size < 400, event
