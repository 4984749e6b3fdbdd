"""``net identity ...`` and ``net token ...``.

Most cases run the parser in-process (fast); one end-to-end case runs the installed
console script in a subprocess, as a user would. Tokens issued through the CLI are
checked by the reference implementation when it is installed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from net_core.cli import main
from net_core.identity import EntityKeypair, PermissionToken, TokenScope, channel_hash

NET = Path(sys.executable).with_name("net")
SEED = bytes(range(32))
SUBJECT = EntityKeypair.from_seed(bytes(32)).entity_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    status, out, _ = run(capsys, *argv, "--json")
    return status, json.loads(out)


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seed"
    path.write_text(SEED.hex() + "\n")
    return path


def test_identity_new_writes_a_private_seed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "id.seed"
    status, document = run_json(capsys, "identity", "new", "--seed-file", str(path))
    assert status == 0
    assert "seed" not in document
    keypair = EntityKeypair.from_seed(bytes.fromhex(path.read_text()))
    assert document["entity_id"] == keypair.entity_id.hex()
    assert document["node_id"] == keypair.node_id
    assert document["origin_hash"] == keypair.origin_hash
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # an existing identity is never overwritten
    before = path.read_bytes()
    status, _, err = run(capsys, "identity", "new", "--seed-file", str(path))
    assert status == 1
    assert "File exists" in err
    assert path.read_bytes() == before


def test_identity_new_without_a_file_prints_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    status, document = run_json(capsys, "identity", "new")
    assert status == 0
    keypair = EntityKeypair.from_seed(bytes.fromhex(document["seed"]))
    assert document["entity_id"] == keypair.entity_id.hex()
    status, out, _ = run(capsys, "identity", "new")
    assert "seed (SECRET):" in out


def test_identity_show(seed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, document = run_json(capsys, "identity", "show", "--seed-file", str(seed_file))
    assert status == 0
    assert document == {
        "entity_id": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
        "node_id": 0xBD826A5D0A6394F5,
        "origin_hash": 0x782A3238801976BF,
    }
    raw = tmp_path / "raw"
    raw.write_bytes(SEED)
    assert run_json(capsys, "identity", "show", "--seed-file", str(raw))[1] == document
    status, out, _ = run(capsys, "identity", "show", "--seed-file", str(seed_file))
    assert "0x782a3238801976bf" in out
    assert SEED.hex() not in out
    bad = tmp_path / "bad"
    bad.write_text("abcd")
    status, out, err = run(capsys, "identity", "show", "--seed-file", str(bad))
    assert status == 1
    assert "seed must be 32 bytes" in err
    status, document = run_json(capsys, "identity", "show", "--seed-file", str(tmp_path / "none"))
    assert status == 1
    assert document["error"]["type"] == "FileNotFoundError"


def issue_args(seed_file: Path, *extra: str) -> list[str]:
    return [
        "token",
        "issue",
        "--seed-file",
        str(seed_file),
        "--subject",
        SUBJECT.hex(),
        *extra,
    ]


def test_token_issue_and_verify(seed_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = issue_args(
        seed_file,
        "--scope",
        "publish,delegate",
        "--channel",
        "lab/x",
        "--ttl",
        "60",
        "--depth",
        "2",
    )
    status, out, _ = run(capsys, *args)
    assert status == 0
    token = PermissionToken.from_bytes(bytes.fromhex(out.strip()))
    token.check_valid()
    assert token.scope == TokenScope.PUBLISH | TokenScope.DELEGATE
    assert token.channel_hash == channel_hash("lab/x")
    assert token.delegation_depth == 2
    assert token.not_after - token.not_before == 60
    assert token.subject == SUBJECT
    status, document = run_json(capsys, "token", "verify", out.strip())
    assert status == 0
    assert document == {
        "valid": True,
        "error": None,
        "issuer": EntityKeypair.from_seed(SEED).entity_id.hex(),
        "subject": SUBJECT.hex(),
        "scope": ["publish", "delegate"],
        "channel_hash": channel_hash("lab/x"),
        "not_before": token.not_before,
        "not_after": token.not_after,
        "delegation_depth": 2,
    }
    status, out_text, _ = run(capsys, "token", "verify", out.strip())
    assert status == 0
    assert out_text.startswith("valid\n")


def test_token_issue_json_and_channel_hash(
    seed_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = issue_args(
        seed_file, "--scope", "subscribe,wildcard", "--channel-hash", "0", "--ttl", "5"
    )
    status, document = run_json(capsys, *args)
    assert status == 0
    token = PermissionToken.from_bytes(bytes.fromhex(document["token"]))
    assert document["scope"] == ["subscribe", "wildcard"]
    assert document["channel_hash"] == 0 == token.channel_hash
    assert document["nonce"] == token.nonce


def test_token_issue_refuses_zero_ttl(seed_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = issue_args(seed_file, "--scope", "publish", "--channel", "a", "--ttl", "0")
    status, document = run_json(capsys, *args)
    assert status == 1
    assert document["error"]["type"] == "ZeroTtlError"
    assert document["error"]["message"].startswith("token: zero_ttl")


@pytest.mark.parametrize(
    "extra",
    [
        ["--scope", "root", "--channel", "a", "--ttl", "5"],
        ["--scope", "publish", "--channel", "a", "--ttl", "-1"],
        ["--scope", "publish", "--channel", "a", "--ttl", "5", "--depth", "256"],
        ["--scope", "publish", "--channel-hash", str(2**32), "--ttl", "5"],
        ["--scope", "publish", "--ttl", "5"],
    ],
)
def test_token_issue_usage_errors(seed_file: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(issue_args(seed_file, *extra))
    assert exit_info.value.code == 2


def test_token_issue_bad_channel_name(seed_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, document = run_json(
        capsys, *issue_args(seed_file, "--scope", "publish", "--channel", "a//b", "--ttl", "5")
    )
    assert status == 1
    assert document["error"]["type"] == "ChannelNameError"


def test_token_verify_reports_why(seed_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = PermissionToken.try_issue(
        EntityKeypair.from_seed(SEED), SUBJECT, TokenScope.PUBLISH, 7, 10, now=1_000
    )
    wire = token.to_bytes().hex()
    cases = {
        "expired": ["--now", "1010"],
        "not_yet_valid": ["--now", "999"],
    }
    for kind, extra in cases.items():
        status, document = run_json(capsys, "token", "verify", wire, *extra)
        assert status == 1
        assert document["valid"] is False
        assert document["error"] == kind
        assert document["not_after"] == 1010
    assert run_json(capsys, "token", "verify", wire, "--now", "1009")[1]["valid"] is True
    tampered = bytearray(token.to_bytes())
    tampered[80] ^= 1
    status, document = run_json(capsys, "token", "verify", bytes(tampered).hex(), "--now", "1005")
    assert (status, document["error"]) == (1, "invalid_signature")
    for bad in ("zz", wire[:-2], wire + "00"):
        status, document = run_json(capsys, "token", "verify", bad)
        assert (status, document["error"], document["issuer"]) == (1, "invalid_format", None)
    status, out, _ = run(capsys, "token", "verify", wire)
    assert status == 1
    assert out.startswith("invalid: expired\n")


def test_end_to_end_console_script(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    seed = tmp_path / "owner.seed"

    def net(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NET), *args],
            capture_output=True,
            text=True,
            env=env,
            input=stdin,
            timeout=60,
            check=False,
        )

    created = net("identity", "new", "--seed-file", str(seed), "--json")
    assert created.returncode == 0, created.stderr
    owner = json.loads(created.stdout)
    issued = net(
        "token", "issue", "--seed-file", str(seed), "--subject", owner["entity_id"],
        "--scope", "admin", "--channel", "ops/control", "--ttl", "3600",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    verified = net("token", "verify", "-", "--json", stdin=issued.stdout)
    assert verified.returncode == 0, verified.stderr
    document = json.loads(verified.stdout)
    assert document["valid"] is True
    assert document["issuer"] == owner["entity_id"]
    assert document["scope"] == ["admin"]


@pytest.mark.oracle
def test_cli_tokens_and_identities_match_the_reference(
    seed_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = pytest.importorskip("net", reason="ai2070-net not installed")
    ref = net.Identity.from_seed(SEED)
    _, document = run_json(capsys, "identity", "show", "--seed-file", str(seed_file))
    assert bytes.fromhex(document["entity_id"]) == ref.entity_id
    assert (document["node_id"], document["origin_hash"]) == (ref.node_id, ref.origin_hash)
    args = issue_args(seed_file, "--scope", "subscribe", "--channel", "sensors/lidar", "--ttl", "9")
    _, out, _ = run(capsys, *args)
    wire = bytes.fromhex(out.strip())
    assert net.verify_token(wire) is True
    assert net.parse_token(wire)["channel_hash"] == net.channel_hash("sensors/lidar")
    ref_token = ref.issue_token(SUBJECT.as_bytes(), ["publish"], "lab/x", 30, 1)
    status, document = run_json(capsys, "token", "verify", ref_token.hex())
    assert status == 0
    assert document["valid"] is True
    assert document["scope"] == ["publish"]
    assert document["delegation_depth"] == 1
