"""The ``net`` console script, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import net_core
from net_core.plugins import KINDS
from tests.kernel.fakedist import GOOD_RETENTION, FakeDists

NET = Path(sys.executable).with_name("net")


def run_net(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(NET), *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


def test_version() -> None:
    result = run_net("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"net-core {net_core.__version__}"


def test_plugins_json_lists_builtins_and_the_first_party_plugin() -> None:
    result = run_net("plugins", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    builtin = by_name["builtin"]
    assert builtin["distribution"] == "net-core"
    assert builtin["version"] == net_core.__version__
    assert list(builtin["provides"]) == [k.value for k in KINDS]
    assert builtin["provides"]["retention"] == ["count", "bytes", "age"]
    assert builtin["provides"]["dedup"] == ["memory"]
    extras = by_name["retention_extras"]
    assert extras["distribution"] == "net-retention-extras"
    assert extras["version"] == "0.1.0"
    assert extras["provides"]["retention"] == ["count_watermark", "bytes_watermark", "calendar"]
    assert doc["failed"] == []


def test_plugins_text_output() -> None:
    result = run_net("plugins")
    assert result.returncode == 0
    assert "builtin  (built-in, net-core" in result.stdout
    assert "retention  count, bytes, age" in result.stdout
    assert "retention_extras  (plugin, net-retention-extras 0.1.0)" in result.stdout


def test_plugins_reports_a_broken_plugin_and_keeps_the_rest(fake_dists: FakeDists) -> None:
    fake_dists.add("acme-broken", version="0.3", plugins={"broken": "import no_such_module_x\n"})
    env = {"PYTHONPATH": str(fake_dists.root)}
    result = run_net("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    [failure] = doc["failed"]
    assert failure["distribution"] == "acme-broken"
    assert failure["version"] == "0.3"
    assert failure["stage"] == "import"
    assert "no_such_module_x" in failure["error"]
    assert {"builtin", "retention_extras"} <= {p["name"] for p in doc["plugins"]}
    text = run_net("plugins", env=env)
    assert "broken  (FAILED, acme-broken 0.3): import: ModuleNotFoundError" in text.stdout


def test_plugins_allow_list_and_duplicates(fake_dists: FakeDists) -> None:
    fake_dists.add("acme-dup", plugins={"dup": GOOD_RETENTION.format(name="calendar")})
    env = {"PYTHONPATH": str(fake_dists.root)}
    result = run_net("plugins", "--json", env=env)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "DuplicatePluginError"
    assert "'acme-dup' and 'net-retention-extras'" in error["message"]
    text = run_net("plugins", env=env)
    assert text.returncode == 1
    assert text.stderr.startswith("net: error: retention 'calendar' is provided by both")

    allowed = run_net("plugins", "--json", env={**env, "NET_CORE_PLUGINS": "acme-dup"})
    assert allowed.returncode == 0, allowed.stdout
    doc = json.loads(allowed.stdout)
    assert [p["name"] for p in doc["plugins"]] == ["builtin", "dup"]
    assert {"name": "retention_extras", "distribution": "net-retention-extras"} in doc["skipped"]


def test_trace_env_writes_hook_calls_to_stderr() -> None:
    result = run_net("plugins", env={"NET_CORE_TRACE_HOOKS": "1"})
    assert result.returncode == 0
    assert "[net-core hooks] net_retention_policies <- retention_extras" in result.stderr


@pytest.mark.parametrize("argv", [[], ["nope"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert run_net(*argv).returncode == 2
