"""``net demo`` and ``net bus ingest/poll``, run as the real ``net`` script.

The demo's own checks (every event read back once, order per shard) are what these tests
rely on; they also check resumption across runs and the error conventions of the CLI.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from net_core.bus import Backpressure, Bus, BusConfig, StorageConfig
from net_core.cli._bus import ingest_after_backpressure
from net_core.cli._demo import _ProgressBar

NET = Path(sys.executable).with_name("net")


def run_net(*args: str, stdin: str | None = None, cwd: Path | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    return subprocess.run(
        [str(NET), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def demo(data_dir: Path, *extra: str) -> dict[str, Any]:
    done = run_net("demo", "--data-dir", str(data_dir), "--events", "2000", "--json", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def poll_all(data_dir: Path, *extra: str, limit: int = 7) -> list[dict[str, Any]]:
    """Every event, page by page, following next_cursor until has_more is false."""
    events: list[dict[str, Any]] = []
    cursor: list[str] = []
    for _ in range(1000):
        done = run_net(
            "bus", "poll", "--data-dir", str(data_dir), "--limit", str(limit), "--json",
            *cursor, *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        page = json.loads(done.stdout)
        assert len(page["events"]) <= limit
        events.extend(page["events"])
        if not page["has_more"]:
            return events
        cursor = ["--cursor", page["next_cursor"]]
    raise AssertionError("poll never finished")


# -- net demo -----------------------------------------------------------------------------


def test_demo_twice_resumes_and_checks_pass(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = demo(data)
    assert first["ok"] is True
    assert first["run"] == 1
    assert first["resumed_from_cursor"] is False
    assert first["new_this_run"] == 2000
    assert first["stored_total"] == 2000
    checks = first["checks"]
    assert checks["count_ok"]
    assert checks["order_ok"]
    assert checks["read_this_run"] == 2000
    assert checks["missing"] == checks["duplicates"] == checks["order_violations"] == 0
    assert sum(checks["per_shard"].values()) == 2000
    assert len(checks["per_shard"]) == 4
    assert first["stats"]["events_ingested"] == first["stats"]["events_dispatched"] == 2000
    assert first["stats"]["events_dropped"] == 0
    for name in ("producer.nonce", "consumer.cursor", "demo.run"):
        assert (data / name).is_file()

    second = demo(data)
    assert second["ok"] is True
    assert second["run"] == 2
    assert second["resumed_from_cursor"] is True
    assert second["new_this_run"] == 2000
    assert second["carried_over"] == 0
    assert second["stored_total"] == 4000
    # Same producer across runs: the nonce file keeps it.
    assert second["producer_nonce"] == first["producer_nonce"]
    for key in ("ingest_events_per_s", "poll_events_per_s", "end_to_end_events_per_s"):
        assert first["throughput"][key] > 0
        assert second["throughput"][key] > 0


def test_demo_with_fewer_shards_still_reads_the_old_ones(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    demo(data)
    again = demo(data, "--shards", "2")
    assert again["ok"] is True
    assert again["stored_total"] == 4000
    assert again["new_this_run"] == 2000
    assert again["stats"]["active_shards"] == 2


def test_demo_text_output(tmp_path: Path) -> None:
    done = run_net("demo", "--data-dir", str(tmp_path / "d"), "--events", "500")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "run 1, 500 events" in out
    assert "OK: all 500 events of run 1 read back exactly once" in out
    assert "end to end" in out
    assert "500 events in total, 500 new this run" in out


def test_demo_default_data_dir_is_relative_to_cwd(tmp_path: Path) -> None:
    done = run_net("demo", "--events", "100", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "net-demo-data" / "producer.nonce").is_file()


def test_demo_bad_state_files_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "consumer.cursor").write_text("not a cursor\n")
    done = run_net("demo", "--data-dir", str(data), "--events", "10", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "DemoStateError"
    assert "consumer.cursor" in error["message"]
    (data / "consumer.cursor").unlink()
    (data / "demo.run").write_text("seven\n")
    done = run_net("demo", "--data-dir", str(data), "--events", "10")
    assert done.returncode == 1
    assert done.stderr.startswith("net: error: ")
    assert "demo.run" in done.stderr


def test_demo_unwritable_directory_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_net("demo", "--data-dir", str(blocker / "sub"), "--events", "10", "--json")
    assert done.returncode == 1
    assert "error" in json.loads(done.stdout)


@pytest.mark.parametrize(
    "args",
    [["--events", "0"], ["--events", "x"], ["--shards", "-1"], ["--bogus"]],
)
def test_demo_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    done = run_net("demo", "--data-dir", str(tmp_path), *args)
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_progress_bar_draws_and_finishes() -> None:
    stream = io.StringIO()
    bar = _ProgressBar("ingest", 100, enabled=True, stream=stream)
    bar.update(50)
    bar.finish(100)
    text = stream.getvalue()
    assert text.startswith("\ringest")
    assert "50/100" in text
    assert "100.0% 100/100" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    off = _ProgressBar("ingest", 100, enabled=False, stream=quiet)
    off.update(1)
    off.finish(100)
    assert quiet.getvalue() == ""


def test_a_full_ring_is_waited_out_not_dropped() -> None:
    async def fill_and_wait() -> tuple[int, Any]:
        config = BusConfig(shards=1, ring_capacity=1024, backpressure="fail_producer")
        async with Bus.open(config) as bus:
            for i in range(1024):  # no yield: the worker cannot drain yet
                bus.ingest_raw(b"%d" % i)
            with pytest.raises(Backpressure):
                bus.ingest({"last": True})
            waits = await ingest_after_backpressure(bus, {"last": True})
            await bus.flush()
            return waits, bus.stats()

    waits, stats = anyio.run(fill_and_wait)
    assert waits >= 1
    assert stats.events_refused == waits
    assert stats.events_dispatched == 1025
    assert stats.events_dropped == 0


# -- net bus ingest / poll ----------------------------------------------------------------

LINES = [
    {"type": "token", "run_id": "r1", "text": "Hello"},
    {"type": "tool_call", "run_id": "r1", "tool": "search", "args": {"q": "net"}},
    {"type": "token", "run_id": "r1", "text": " world"},
    {"type": "state_change", "run_id": "r1", "from": "thinking", "to": "acting"},
    {"type": "tool_call", "run_id": "r2", "tool": "read_file", "args": {"path": "a.py"}},
]


def json_lines(*extra: str) -> str:
    return "".join(json.dumps(d) + "\n" for d in LINES) + "".join(extra)


def test_ingest_then_poll_round_trip_with_filter(tmp_path: Path) -> None:
    data = tmp_path / "bus"
    done = run_net("bus", "ingest", "--data-dir", str(data), "--json", stdin=json_lines())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["lines"] == report["ingested"] == len(LINES)
    assert report["invalid"] == 0
    assert report["stats"]["events_dispatched"] == len(LINES)
    assert (data / "producer.nonce").is_file()

    events = poll_all(data, limit=2)
    assert sorted((e["event"] for e in events), key=json.dumps) == sorted(LINES, key=json.dumps)
    for e in events:
        assert set(e) == {"id", "shard_id", "insertion_ts", "dedup_id", "event"}
        assert isinstance(e["shard_id"], int)
        assert isinstance(e["insertion_ts"], int)
        assert e["dedup_id"].split(":")[1] == str(e["shard_id"])

    tools = poll_all(data, "--filter", '{"path": "type", "value": "tool_call"}', limit=1)
    assert sorted(e["event"]["tool"] for e in tools) == ["read_file", "search"]
    nested = poll_all(
        data,
        "--filter",
        '{"$and": [{"path": "type", "value": "tool_call"}, {"path": "args.q", "value": "net"}]}',
    )
    assert [e["event"]["tool"] for e in nested] == ["search"]


def test_ingest_again_continues_the_producer(tmp_path: Path) -> None:
    data = tmp_path / "bus"
    for _ in range(2):
        done = run_net("bus", "ingest", "--data-dir", str(data), stdin=json_lines())
        assert done.returncode == 0, done.stderr
    events = poll_all(data, limit=100)
    assert len(events) == 2 * len(LINES)
    # Every dedup id is distinct: the second run continued each shard's sequence.
    assert len({e["dedup_id"] for e in events}) == len(events)


def test_ingest_reports_invalid_lines(tmp_path: Path) -> None:
    data = tmp_path / "bus"
    stdin = '{"a": 1}\nnot json\n\n{"b": 2}\n[1, 2\n'
    done = run_net("bus", "ingest", "--data-dir", str(data), "--json", stdin=stdin)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["lines"] == 5
    assert report["ingested"] == 2
    assert report["blank"] == 1
    assert report["invalid"] == 2
    assert report["invalid_lines"] == [2, 5]
    done = run_net("bus", "ingest", "--data-dir", str(data), stdin=stdin)
    assert done.returncode == 1
    assert "ingested 2 of 5 lines" in done.stdout
    assert "line 2, 5" in done.stderr
    assert len(poll_all(data)) == 4


def test_poll_text_mode(tmp_path: Path) -> None:
    data = tmp_path / "bus"
    run_net("bus", "ingest", "--data-dir", str(data), stdin=json_lines())
    done = run_net("bus", "poll", "--data-dir", str(data), "--limit", "100")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(LINES)
    shard, position, dedup, raw = lines[0].split(" ", 3)
    assert shard.isdigit()
    assert position.isdigit()
    assert dedup.count(":") == 3
    assert json.loads(raw) in LINES
    assert done.stderr.startswith("next cursor: ")
    assert "no more events now" in done.stderr


def test_poll_shows_non_json_events_as_base64(tmp_path: Path) -> None:
    data = tmp_path / "bus"

    async def write() -> None:
        storage = StorageConfig("redex", {"data_dir": str(data)})
        async with Bus.open(BusConfig(shards=1, storage=storage)) as bus:
            bus.ingest_raw(b"\xff\x00 not json")
            await bus.flush()

    anyio.run(write)
    events = poll_all(data)
    assert len(events) == 1
    assert events[0]["event"] is None
    assert events[0]["raw_base64"] == "/wAgbm90IGpzb24="


def test_poll_while_a_bus_holds_the_shards_exits_1(tmp_path: Path) -> None:
    data = tmp_path / "bus"

    async def hold_and_poll() -> Any:
        storage = StorageConfig("redex", {"data_dir": str(data)})
        async with Bus.open(BusConfig(shards=2, storage=storage)) as bus:
            bus.ingest({"type": "token"})
            await bus.flush()
            # The running bus holds its written shard channel open (one process at a time).
            return await anyio.to_thread.run_sync(
                lambda: run_net("bus", "poll", "--data-dir", str(data), "--json")
            )

    done = anyio.run(hold_and_poll)
    assert done.returncode == 1
    page = json.loads(done.stdout)
    assert page["events"] == []
    assert page["failed_shards"]
    assert "could not be read" in done.stderr
    # Once the bus is gone the event is there.
    assert len(poll_all(data)) == 1


def test_poll_of_a_missing_directory_exits_1(tmp_path: Path) -> None:
    done = run_net("bus", "poll", "--data-dir", str(tmp_path / "nope"), "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error == {"type": "BusDirectoryError", "message": f"no such directory: {tmp_path}/nope"}
    assert not (tmp_path / "nope").exists()  # polling never creates the directory
    done = run_net("bus", "poll", "--data-dir", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert done.stderr == f"net: error: no such directory: {tmp_path}/nope\n"


def test_unknown_storage_and_bad_options_exit_1(tmp_path: Path) -> None:
    done = run_net("bus", "ingest", "--storage", "nope", "--json", stdin="{}\n")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "UnknownPluginError"
    assert "memory" in error["message"]
    assert "redex" in error["message"]
    done = run_net(
        "bus", "ingest", "--data-dir", str(tmp_path), "--storage-option", "bogus=1", stdin="{}\n"
    )
    assert done.returncode == 1
    assert "bogus" in done.stderr


def test_memory_storage_ingest_works(tmp_path: Path) -> None:
    done = run_net("bus", "ingest", "--storage", "memory", "--json", stdin=json_lines())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["storage"] == "memory"
    assert report["data_dir"] is None
    assert report["ingested"] == len(LINES)


@pytest.mark.parametrize(
    "args",
    [
        ["poll", "--filter", '{"nope": 1}'],
        ["poll", "--filter", "{not json"],
        ["poll", "--cursor", "%%%"],
        ["poll", "--limit", "0"],
        ["poll", "--ordering", "random"],
        ["poll", "--data-dir", "x", "--storage", "memory"],
        ["ingest", "--storage-option", "novalue"],
        ["ingest", "--shards", "0"],
        [],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    done = run_net("bus", *args, stdin="", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "usage:" in done.stderr
