"""``net bench``: the suites run end to end with ``--quick`` and report well-formed figures.

Benchmarks are not tests: nothing here asserts anything about speed.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import net_core
from net_core.bench import REFERENCE_MISSING, Reference, format_table, run_redex_suite
from net_core.bench._harness import ratio_of

NET = Path(sys.executable).with_name("net")

REDEX_SCENARIOS = {
    "heap_append": "events/s",
    "heap_append_batch_1000": "events/s",
    "disk_append": "events/s",
    "disk_append_batch_1000": "events/s",
    "disk_append_1k": "events/s",
    "read_range": "events/s",
    "tail": "events/s",
    "heap_memory_per_event": "bytes/event",
    "heap_rss_per_event": "bytes/event",
}


def run_net(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    return subprocess.run(
        [str(NET), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_results(results: list[dict[str, Any]], *, reference_expected: bool | None) -> None:
    names = {r["name"] for r in results}
    assert [r["name"] for r in results] == [n for n in REDEX_SCENARIOS if n in names]
    # heap_rss_per_event needs /proc; every other scenario always runs.
    assert set(REDEX_SCENARIOS) - {"heap_rss_per_event"} <= names <= set(REDEX_SCENARIOS)
    for r in results:
        assert set(r) == {"name", "unit", "value", "reference", "ratio"}, r
        assert r["unit"] == REDEX_SCENARIOS[r["name"]], r
        assert positive_finite(r["value"]), r
        # reference and ratio are both numbers or both null.
        assert (r["reference"] is None) == (r["ratio"] is None), r
        if r["reference"] is not None:
            assert positive_finite(r["reference"]), r
            assert positive_finite(r["ratio"]), r
            assert r["ratio"] == pytest.approx(ratio_of(r["unit"], r["value"], r["reference"]))
        if reference_expected is False:
            assert r["reference"] is None, r
    if reference_expected:
        # tracemalloc cannot see the reference's Rust memory; every other figure has one.
        with_ref = {r["name"] for r in results if r["reference"] is not None}
        assert with_ref == names - {"heap_memory_per_event"}


def test_bench_redex_quick_json() -> None:
    done = run_net("bench", "redex", "--quick", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"suite", "results", "meta"}
    assert doc["suite"] == "redex"
    meta = doc["meta"]
    assert meta["quick"] is True
    assert meta["net_core_version"] == net_core.__version__
    assert meta["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"platform", "reference_version", "sizes", "repeats"} <= set(meta)
    try:
        import net  # noqa: F401, PLC0415
    except ImportError:
        has_reference = False
    else:
        has_reference = True
    assert (meta["reference_version"] != REFERENCE_MISSING) == has_reference
    check_results(doc["results"], reference_expected=has_reference)
    # Progress goes to stderr, never into the JSON document.
    assert "heap_append" in done.stderr


def test_bench_without_reference_reports_none() -> None:
    progress = io.StringIO()
    report = run_redex_suite(
        quick=True, progress=progress, reference=Reference(None, REFERENCE_MISSING)
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
    assert report.meta["reference_version"] == REFERENCE_MISSING
    assert REFERENCE_MISSING in format_table(report)
    assert "read_range" in progress.getvalue()


def test_bench_unknown_suite_lists_the_suites() -> None:
    done = run_net("bench", "no-such-suite")
    assert done.returncode == 2
    assert "no-such-suite" in done.stderr
    assert "redex" in done.stderr
    done = run_net("bench", "--json", "no-such-suite")
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert {"bus", "cortex", "redex"} <= set(doc["suites"])  # installed adapters add more
    assert "no-such-suite" in doc["error"]["message"]


def test_ratio_means_at_least_as_good_at_one() -> None:
    assert ratio_of("events/s", 200.0, 100.0) == 2.0  # twice the rate
    assert ratio_of("bytes/event", 50.0, 100.0) == 2.0  # half the size
    assert ratio_of("events/s", 1.0, None) is None
