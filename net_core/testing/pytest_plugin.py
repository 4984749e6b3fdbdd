"""pytest fixtures over real ``redis-server`` and ``nats-server -js`` processes.

Load it from a ``conftest.py`` with ``pytest_plugins = ["net_core.testing.pytest_plugin"]``.

Fixtures:

* ``redis_server`` / ``nats_server`` (session): one shared server each, started on first
  use and closed (data deleted) at the end of the session. Redis runs with
  ``appendonly=True, appendfsync="always"`` so that tests may ``kill()`` and ``restart()``
  it without losing acknowledged writes; NATS keeps JetStream on disk.
* ``redis_url`` / ``nats_url`` (function): the URL of the shared server. Requesting one
  also guarantees the server is running when the test starts and again when it ends: a
  test that killed or stopped the shared server and did not restart it cannot break the
  tests after it.
* ``redis_prefix`` / ``nats_prefix`` (function): a prefix unique to the test (``t`` and
  12 hex digits, only ``[A-Za-z0-9_]`` so it is also a valid JetStream stream name). Tests
  share the servers and isolate themselves by naming every key, subject and stream with it.
* ``redis_server_factory`` / ``nats_server_factory`` (function): start private servers for
  tests that need their own instance; every server made is closed after the test.

Every test using one of these fixtures gets the ``services`` marker, so
``pytest -m "not services"`` runs without the servers.

Binaries are found by :func:`net_core.testing.services.find_redis_server` and
:func:`~net_core.testing.services.find_nats_server`; when none is available the fixtures
error with :class:`~net_core.testing.services.ServiceUnavailable` saying what to install.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Protocol

import pytest

from net_core.testing.services import NatsServer, RedisServer

__all__ = [
    "NatsServerFactory",
    "RedisServerFactory",
    "nats_prefix",
    "nats_server",
    "nats_server_factory",
    "nats_url",
    "redis_prefix",
    "redis_server",
    "redis_server_factory",
    "redis_url",
]

_SERVICE_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "redis_server_factory",
        "nats_server",
        "nats_url",
        "nats_server_factory",
    }
)


class RedisServerFactory(Protocol):
    """Makes a private :class:`RedisServer`, started unless ``start=False``."""

    def __call__(
        self, *, appendonly: bool = False, appendfsync: str = "everysec", start: bool = True
    ) -> RedisServer:
        """Return a new server, closed by the fixture after the test."""
        ...


class NatsServerFactory(Protocol):
    """Makes a private :class:`NatsServer`, started unless ``start=False``."""

    def __call__(self, *, start: bool = True) -> NatsServer:
        """Return a new server, closed by the fixture after the test."""
        ...


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``services`` marker (for projects that do not declare it)."""
    config.addinivalue_line("markers", "services: needs the real redis-server / nats-server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-service fixture with ``services``."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if _SERVICE_FIXTURES.intersection(names):
            item.add_marker(pytest.mark.services)


def _unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _ensure_running(server: RedisServer | NatsServer) -> None:
    if not server.is_running:
        server.restart()


# -- redis -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The shared redis-server (AOF on, fsync always), closed at session end.

    Tests may ``stop()``, ``kill()`` and ``restart()`` it; request ``redis_url`` too so the
    server is brought back for the next test if a test leaves it down.
    """
    server = RedisServer(appendonly=True, appendfsync="always")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """``redis://127.0.0.1:PORT`` of the shared server, running before and after the test."""
    _ensure_running(redis_server)
    yield redis_server.url
    _ensure_running(redis_server)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to this test, e.g. ``t3f9c0a1b2d4e``."""
    return _unique_prefix()


@pytest.fixture
def redis_server_factory() -> Iterator[RedisServerFactory]:
    """Start private redis servers for this test; all are closed after it."""
    made: list[RedisServer] = []

    def make(
        *, appendonly: bool = False, appendfsync: str = "everysec", start: bool = True
    ) -> RedisServer:
        server = RedisServer(appendonly=appendonly, appendfsync=appendfsync)
        made.append(server)
        if start:
            server.start()
        return server

    yield make
    _close_all(made)


# -- nats --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """The shared nats-server with JetStream on disk, closed at session end.

    Tests may ``stop()``, ``kill()`` and ``restart()`` it; request ``nats_url`` too so the
    server is brought back for the next test if a test leaves it down.
    """
    server = NatsServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> Iterator[str]:
    """``nats://127.0.0.1:PORT`` of the shared server, running before and after the test."""
    _ensure_running(nats_server)
    yield nats_server.url
    _ensure_running(nats_server)


@pytest.fixture
def nats_prefix() -> str:
    """A subject/stream prefix unique to this test, only ``[A-Za-z0-9_]`` characters."""
    return _unique_prefix()


@pytest.fixture
def nats_server_factory() -> Iterator[NatsServerFactory]:
    """Start private nats servers for this test; all are closed after it."""
    made: list[NatsServer] = []

    def make(*, start: bool = True) -> NatsServer:
        server = NatsServer()
        made.append(server)
        if start:
            server.start()
        return server

    yield make
    _close_all(made)


def _close_all(servers: list[RedisServer] | list[NatsServer]) -> None:
    """Close every server, even if closing one fails; re-raise the first failure."""
    first: BaseException | None = None
    for server in reversed(servers):
        try:
            server.close()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first
