"""``net node`` and ``net mesh ping`` as real processes on 127.0.0.1.

Two ``net node`` processes connect (one with ``--connect``, the other ``--allow``-ing
its identity) and print the session events; ``net mesh ping`` handshakes with a running
node and gets its pings echoed; SIGINT and SIGTERM stop a node cleanly; bad PSK files,
peer specs and unreachable or unwilling peers give typed errors and the promised exit
statuses. Every wait has a deadline, so a broken node fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from net_core.cli._main import main
from net_core.cli._mesh import (
    PING_STREAM_ID,
    PeerSpec,
    UsageError,
    parse_node_id,
    parse_peer_spec,
    read_psk,
)
from net_core.errors import ConfigError
from net_core.identity import EntityKeypair

pytestmark = pytest.mark.timeout(60)

NET = Path(sys.executable).with_name("net")
FAST = ["--handshake-timeout", "0.3", "--handshake-retries", "1"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}


class Node:
    """A running ``net node`` process whose stdout lines are read by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(NET), "node", "--bind", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def line(self, predicate: Any, seconds: float = 10.0) -> str:
        """The next line satisfying ``predicate`` (earlier lines are kept in ``seen``)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line; saw {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line

    def event(self, kind: str, seconds: float = 10.0) -> dict[str, Any]:
        """The next JSON line whose ``event`` is ``kind`` (``--json`` nodes)."""
        line = self.line(lambda s: s.startswith("{") and json.loads(s)["event"] == kind, seconds)
        doc: dict[str, Any] = json.loads(line)
        return doc

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.kill()


@pytest.fixture
def psk_file(tmp_path: Path) -> str:
    path = tmp_path / "mesh.psk"
    path.write_text(os.urandom(32).hex() + "\n")
    return str(path)


def _seed_file(tmp_path: Path, name: str) -> tuple[str, int]:
    keypair = EntityKeypair.generate()
    path = tmp_path / name
    path.write_text(keypair.seed().hex() + "\n")
    return str(path), keypair.node_id


def _spec(started: dict[str, Any]) -> str:
    return f"{started['address']},{started['public_key']},{started['node_id']}"


def _net(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NET), *args], capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )


def test_two_nodes_connect_print_events_and_stop_cleanly(
    nodes: list[Node], psk_file: str, tmp_path: Path
) -> None:
    seed_b, id_b = _seed_file(tmp_path, "b.seed")
    a = Node("--psk-file", psk_file, "--allow", hex(id_b), "--json")
    nodes.append(a)
    started_a = a.event("started")
    assert len(bytes.fromhex(started_a["public_key"])) == 32
    assert started_a["address"].startswith("127.0.0.1:")

    b = Node("--psk-file", psk_file, "--seed-file", seed_b, "--connect", _spec(started_a))
    nodes.append(b)
    assert b.line(lambda s: s.startswith("node_id:")) == f"node_id:    {id_b:#018x} ({id_b})"
    b_address = b.line(lambda s: s.startswith("address:")).split()[-1]
    b.line(lambda s: s.startswith("connect with: --connect 127.0.0.1:"))
    connected_b = b.line(lambda s: s.startswith("connected "))
    assert f"node {started_a['node_id']:#018x} at {started_a['address']}" in connected_b
    handshake = b.line(lambda s: s.startswith("handshake "))
    assert handshake.endswith(" ms")

    connected_a = a.event("connected")
    assert connected_a["node_id"] == id_b
    assert connected_a["address"] == b_address
    # Both ends name the same session.
    assert f"session {connected_a['session_id']:#018x}" in connected_b

    assert b.stop(signal.SIGTERM) == 0
    assert b.line(lambda s: s.startswith("stopped: ")).startswith("stopped: 1 peers")
    assert a.stop(signal.SIGINT) == 0
    stopped = a.event("stopped")
    assert (stopped["peers"], stopped["handshakes_completed"]) == (1, 1)
    assert stopped["drops"] == {}
    assert a.proc.stderr is not None
    assert a.proc.stderr.read() == ""


def test_ping_a_running_node(nodes: list[Node], psk_file: str, tmp_path: Path) -> None:
    seed, node_id = _seed_file(tmp_path, "pinger.seed")
    a = Node("--psk-file", psk_file, "--allow", str(node_id), "--json")
    nodes.append(a)
    spec = _spec(a.event("started"))
    base = ["mesh", "ping", "--bind", "127.0.0.1:0", "--psk-file", psk_file]
    base += ["--seed-file", seed, "--peer", spec, "--interval", "0"]

    done = _net(*base, "--count", "4", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["sent"], report["received"], report["loss_percent"]) == (4, 4, 0.0)
    assert report["local"]["node_id"] == node_id
    assert report["peer"] == {"node_id": int(spec.rsplit(",", 1)[1]), "address": spec.split(",")[0]}
    assert report["handshake_ms"] > 0
    rtt = report["rtt_ms"]
    assert set(rtt) == {"min", "avg", "p50", "max", "stdev"}
    assert 0 < rtt["min"] <= rtt["p50"] <= rtt["max"]
    assert rtt["min"] <= rtt["avg"] <= rtt["max"]
    assert a.event("connected")["node_id"] == node_id

    text = _net(*base, "--count", "2", "--size", "200")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    peer_id = int(spec.rsplit(",", 1)[1])
    assert lines[0].startswith(f"PING node {peer_id:#018x} at {spec.split(',')[0]} from 127.0.0.1:")
    assert ": handshake " in lines[0]
    assert [ln.split()[0] for ln in lines[1:3]] == ["seq=0", "seq=1"]
    assert "2 sent, 2 received, 0.0% loss" in text.stdout
    assert "rtt min/avg/p50/max/stdev = " in text.stdout
    # The second ping's handshake replaced the first one's session.
    assert a.event("replaced")["node_id"] == node_id

    assert a.stop() == 0
    stopped = a.event("stopped")
    assert stopped["events_received"] == stopped["events_echoed"] == 6


def test_ping_without_echo_or_without_allow_fails(
    nodes: list[Node], psk_file: str, tmp_path: Path
) -> None:
    seed, node_id = _seed_file(tmp_path, "pinger.seed")
    quiet = Node("--psk-file", psk_file, "--allow", str(node_id), "--no-echo", "--json")
    stranger = Node("--psk-file", psk_file, "--json")  # does not --allow the pinger
    nodes.extend([quiet, stranger])
    base = ["mesh", "ping", "--bind", "127.0.0.1:0", "--psk-file", psk_file, "--seed-file", seed]

    no_echo = _net(*base, "--peer", _spec(quiet.event("started")), "--count", "1",
                   "--timeout", "0.2", "--json")  # fmt: skip
    assert no_echo.returncode == 1
    report = json.loads(no_echo.stdout)
    assert (report["sent"], report["received"], report["rtt_ms"]) == (1, 0, None)
    assert report["error"]["type"] == "NoEchoError"

    refused = _net(*base, *FAST, "--peer", _spec(stranger.event("started")))
    assert refused.returncode == 1
    assert refused.stderr.startswith("net: error: handshake with node ")
    assert "failed after 1 attempts" in refused.stderr

    other_psk = tmp_path / "other.psk"
    other_psk.write_bytes(os.urandom(32))  # the raw 32-byte form
    wrong_key = _net(
        "mesh", "ping", "--bind", "127.0.0.1:0", "--psk-file", str(other_psk),
        "--seed-file", seed, "--peer", _spec_text(quiet), *FAST, "--json",
    )  # fmt: skip
    assert wrong_key.returncode == 1
    assert json.loads(wrong_key.stdout)["error"]["type"] == "HandshakeTimeoutError"


def _spec_text(node: Node) -> str:
    started = next(json.loads(s) for s in node.seen if '"started"' in s)
    return _spec(started)


def test_a_failed_connect_is_reported_and_the_node_keeps_running(
    nodes: list[Node], psk_file: str
) -> None:
    dead = f"127.0.0.1:9,{'11' * 32},0x1234"  # the discard port: nobody answers
    node = Node("--psk-file", psk_file, "--connect", dead, *FAST, "--json")
    nodes.append(node)
    node.event("started")
    failed = node.event("connect_failed")
    assert failed["node_id"] == 0x1234
    assert failed["error"]["type"] == "HandshakeTimeoutError"
    assert node.proc.poll() is None  # still serving
    assert node.stop(signal.SIGTERM) == 0
    assert node.event("stopped")["peers"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "--bind", "127.0.0.1:0"], "--psk-file is required"),
        (["node", "--bind", "127.0.0.1:0", "--psk-file", "P", "--connect", "1.2.3.4:5,ab,1"],
         "a peer public key is 64 hex digits"),
        (["node", "--bind", "127.0.0.1:0", "--psk-file", "P", "--allow", "0x1,banana"],
         "a node id is a decimal or 0x-hex u64"),
        (["mesh", "ping", "--psk-file", "P", "--peer", "nowhere"],
         "a peer is ADDR,PUBKEY,NODEID"),
        (["mesh", "ping", "--psk-file", "P", "--peer", f"h:1,{'00' * 32},1", "--count", "0"],
         "--count must be >= 1"),
        (["mesh", "ping", "--psk-file", "P", "--peer", f"h:1,{'00' * 32},1", "--size", "4"],
         "--size must be in 12..8112"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(
    args: list[str], message: str, psk_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [psk_file if a == "P" else a for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert main([*args, "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "UsageError"
    assert message in error["message"]


def _json_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main([*args, "--json"]) == 1
    error: dict[str, Any] = json.loads(capsys.readouterr().out)["error"]
    return error


def test_library_errors_exit_1(
    tmp_path: Path, psk_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.psk"
    bad.write_text("not a key\n")
    error = _json_error(["node", "--bind", "127.0.0.1:0", "--psk-file", str(bad)], capsys)
    assert error["type"] == "ConfigError"
    assert "32 raw bytes or 64 hex digits" in error["message"]
    assert "not a key" not in error["message"]  # never echo the file's content

    assert main(["node", "--bind", "127.0.0.1:0", "--psk-file", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("net: error: ")
    assert "No such file" in err

    unbindable = ["node", "--bind", "not-an-address", "--psk-file", psk_file]
    assert _json_error(unbindable, capsys)["type"] == "TransportError"

    bad_seed = tmp_path / "bad.seed"
    bad_seed.write_text("xyz")
    seeded = ["node", "--bind", "127.0.0.1:0", "--psk-file", psk_file, "--seed-file", str(bad_seed)]
    assert _json_error(seeded, capsys)["type"] == "InvalidSeedError"


def test_read_psk_forms(tmp_path: Path) -> None:
    key = os.urandom(32)
    raw = tmp_path / "raw"
    raw.write_bytes(key)
    text = tmp_path / "hex"
    text.write_text(f"  {key.hex().upper()}\n")
    assert read_psk(str(raw)) == read_psk(str(text)) == key
    for content in (key[:31], key + b"\n\n", b"zz" * 32, b""):
        path = tmp_path / "bad"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="32 raw bytes or 64 hex digits"):
            read_psk(str(path))


def test_peer_spec_and_node_id_parsing() -> None:
    key = bytes(range(32))
    spec = parse_peer_spec(f"127.0.0.1:9000,{key.hex()},0x10")
    assert spec == PeerSpec("127.0.0.1:9000", key, 16)
    assert parse_peer_spec(str(spec)) == spec
    assert parse_peer_spec(f"[::1]:9000,{key.hex()},16").address == "[::1]:9000"
    assert parse_node_id(str(2**64 - 1)) == 2**64 - 1
    for bad in ("-1", str(2**64), "0xZZ", ""):
        with pytest.raises(UsageError):
            parse_node_id(bad)
    for bad in (f"127.0.0.1,{key.hex()},1", f"h:99999,{key.hex()},1", "a:1,b,c,d"):
        with pytest.raises(UsageError):
            parse_peer_spec(bad)
    assert PING_STREAM_ID.to_bytes(8, "big") == b"net-ping"
