"""``net bench mesh``: the suite runs end to end with ``--quick`` and reports well-formed
figures, with the loss of each side; a side that loses events is reported as failed.

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
from net_core.bench import (
    REFERENCE_MISSING,
    SUITES,
    Reference,
    available_suites,
    format_table,
    run_mesh_suite,
)
from net_core.bench._harness import SideFailed, load_reference, ratio_of
from net_core.bench._mesh import (
    BATCH,
    EVENT_SIZE,
    MeshSizes,
    _check_ours,
    _LossBook,
    event_payloads,
)
from net_core.mesh import Reliability

pytestmark = pytest.mark.timeout(120)

NET = Path(sys.executable).with_name("net")

MESH_RESULTS = {
    "delivered_events": "events/s",
    "delivered_events_loss": "% lost",
    "reliable_delivered_events": "events/s",
    "reliable_delivered_events_loss": "% lost",
    "handshake": "handshakes/s",
}
SCENARIOS = {"delivered_events", "reliable_delivered_events", "handshake"}
TINY = MeshSizes(delivered_events=640, reliable_delivered_events=640, handshake=3, repeats=1)


def has_reference() -> bool:
    return load_reference().module is not None


def positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_results(results: list[dict[str, Any]], *, reference_expected: bool) -> None:
    assert [r["name"] for r in results] == list(MESH_RESULTS)
    for r in results:
        assert set(r) == {"name", "unit", "value", "reference", "ratio"}, r
        assert r["unit"] == MESH_RESULTS[r["name"]], r
        if r["unit"] == "% lost":
            assert r["value"] == 0.0, r  # our side never loses an event
            if reference_expected:
                assert 0.0 <= r["reference"] <= 100.0, r
            else:
                assert r["reference"] is None, r
            assert r["ratio"] is None, r  # ours is 0: no ratio to a zero
            continue
        assert positive_finite(r["value"]), r
        if reference_expected:
            assert positive_finite(r["reference"]), r
            assert r["ratio"] == pytest.approx(ratio_of(r["unit"], r["value"], r["reference"]))
        else:
            assert r["reference"] is None, r
            assert r["ratio"] is None, r


def check_loss(meta: dict[str, Any], *, reference_expected: bool) -> None:
    loss = meta["loss"]
    assert set(loss) == {"delivered_events", "reliable_delivered_events"}
    for scenario, sides in loss.items():
        assert set(sides) == ({"ours", "reference"} if reference_expected else {"ours"})
        ours = sides["ours"]
        assert ours["lost"] == 0, (scenario, ours)
        assert ours["duplicates"] == 0, (scenario, ours)
        assert ours["sent"] == ours["received"] > 0
        assert ours["rounds"] == meta["repeats"] + 1  # the warm-up counts too
        if reference_expected:
            ref = sides["reference"]
            assert ref["sent"] >= ref["received"] - ref["duplicates"] >= 0
            assert ref["lost"] == ref["sent"] - ref["received"] or ref["lost"] == 0


def test_bench_mesh_quick_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    done = subprocess.run(
        [str(NET), "bench", "mesh", "--quick", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"suite", "results", "meta"}
    assert doc["suite"] == "mesh"
    meta = doc["meta"]
    assert meta["quick"] is True
    assert meta["net_core_version"] == net_core.__version__
    assert (meta["event_size"], meta["batch"], meta["window_bytes"]) == (64, 64, 65536)
    assert set(meta["spread"]) == SCENARIOS
    assert meta["failures"] == {}
    assert (meta["reference_version"] != REFERENCE_MISSING) == has_reference()
    check_results(doc["results"], reference_expected=has_reference())
    check_loss(meta, reference_expected=has_reference())
    # Progress goes to stderr, never into the JSON document.
    assert "reliable_delivered_events" in done.stderr


def test_bench_mesh_without_reference_reports_none() -> None:
    progress = io.StringIO()
    report = run_mesh_suite(
        progress=progress, reference=Reference(None, REFERENCE_MISSING), sizes=TINY
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
    check_loss(report.meta, reference_expected=False)
    assert report.meta["failures"] == {}
    table = format_table(report)
    assert REFERENCE_MISSING in table
    assert "FAILED" not in table
    assert "handshake" in progress.getvalue()


def test_event_payloads_are_distinct_64_byte_ascii() -> None:
    events = event_payloads(0, 1000) + event_payloads(10**9, 3)
    assert all(len(e) == EVENT_SIZE for e in events)
    assert len(set(events)) == len(events)
    assert [int(json.loads(e.decode("ascii"))) for e in events[:2]] == [0, 1]
    assert int(json.loads(events[-1].decode("ascii"))) == 10**9 + 2
    assert BATCH == 64


@pytest.mark.parametrize(
    ("received", "reliability", "message"),
    [
        (event_payloads(0, 9), Reliability.FIRE_AND_FORGET, "9 distinct of 10"),
        (event_payloads(0, 9) + event_payloads(0, 1), Reliability.FIRE_AND_FORGET, "9 distinct"),
        (event_payloads(0, 10)[::-1], Reliability.RELIABLE, "out of order"),
    ],
)
def test_a_round_that_lost_events_fails(
    received: list[bytes], reliability: Reliability, message: str
) -> None:
    book = _LossBook()
    with pytest.raises(SideFailed, match=message):
        _check_ours(book, "delivered_events", 10, received, reliability, {"drops": {}})
    row = book.document()["delivered_events"]["ours"]
    assert row["sent"] == 10
    assert row["lost"] == 10 - len(set(received))


def test_a_complete_round_passes_and_reordering_is_fine_without_reliability() -> None:
    book = _LossBook()
    events = event_payloads(0, 10)
    _check_ours(book, "s", 10, events[::-1], Reliability.FIRE_AND_FORGET, {})
    _check_ours(book, "s", 10, events, Reliability.RELIABLE, {})
    assert book.document() == {
        "s": {"ours": {"rounds": 2, "sent": 20, "received": 20, "lost": 0, "duplicates": 0}}
    }
    assert book.percent_lost("s", "ours") == 0.0
    with pytest.raises(SideFailed):
        book.percent_lost("s", "reference")


def test_a_stalled_sender_fails_the_round() -> None:
    with pytest.raises(SideFailed, match="sender stalled: no credit"):
        _check_ours(
            _LossBook(),
            "s",
            3,
            event_payloads(0, 3),
            Reliability.FIRE_AND_FORGET,
            {"stalled": "no credit"},
        )


def test_mesh_suite_is_registered() -> None:
    assert SUITES["mesh"] is run_mesh_suite
    assert available_suites()["mesh"] is run_mesh_suite
