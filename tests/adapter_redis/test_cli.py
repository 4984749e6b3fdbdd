"""The installed plugin seen from the ``net`` command: listing, bus ingest/poll on Redis,
and the error when the plugin is not loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NET = Path(sys.executable).with_name("net")


def run_net(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(NET), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_net_plugins_lists_the_redis_plugin() -> None:
    result = run_net("plugins", "--json")
    assert result.returncode == 0, result.stderr
    by_name = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    redis = by_name["redis"]
    assert redis["distribution"] == "net-adapter-redis"
    assert redis["provides"]["storage"] == ["redis"]
    assert redis["provides"]["dedup"] == ["redis"]


def test_bus_ingest_and_poll_through_redis(redis_url: str, redis_prefix: str) -> None:
    storage = ["--storage", "redis", "--storage-option", f"url={redis_url}"]
    storage += ["--storage-option", f"prefix={redis_prefix}"]
    lines = "".join(json.dumps({"i": i}) + "\n" for i in range(25))
    ingested = run_net("bus", "ingest", *storage, "--json", stdin=lines)
    assert ingested.returncode == 0, ingested.stderr
    polled = run_net("bus", "poll", *storage, "--limit", "100", "--json")
    assert polled.returncode == 0, polled.stderr
    doc = json.loads(polled.stdout)
    assert sorted(e["event"]["i"] for e in doc["events"]) == list(range(25))
    assert all(e["dedup_id"] for e in doc["events"])
    assert doc["has_more"] is False


def test_without_the_plugin_the_backend_is_unknown(redis_url: str) -> None:
    result = run_net(
        "bus",
        "poll",
        "--storage",
        "redis",
        "--storage-option",
        f"url={redis_url}",
        env={"NET_CORE_PLUGINS": "retention_extras"},
    )
    assert result.returncode != 0
    assert "unknown storage 'redis'; available: memory, redex" in result.stderr


def test_a_bad_option_names_the_field() -> None:
    result = run_net(
        "bus",
        "poll",
        "--storage",
        "redis",
        "--storage-option",
        "url=http://nowhere",
        "--json",
    )
    assert result.returncode != 0
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError"
    assert "url" in error["message"]
    assert "scheme" in error["message"]
