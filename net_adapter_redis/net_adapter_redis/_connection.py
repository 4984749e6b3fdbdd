"""Connections to a Redis server over anyio streams, and a small pool of them.

A :class:`RedisConnection` owns one byte stream (TCP, TLS or a Unix socket) and one
:class:`~net_adapter_redis._resp.ReplyReader`. :meth:`RedisConnection.request` writes a
buffer holding any number of commands and reads exactly as many replies back. If
anything goes wrong in between (an I/O error, a protocol error, a timeout, a
cancellation) the connection no longer knows where the reply stream stands, so it marks
itself *broken*; the pool closes broken connections instead of reusing them, and the
next request dials a new one. That is the whole reconnect logic: a lost connection costs
the requests that were on it and nothing else. A connection idle for more than
:data:`IDLE_CHECK_S` is asked for a ``PING`` before it is reused, so one that a server
timeout or a middlebox dropped while idle is replaced instead of failing a real command.

:class:`ConnectionPool` hands out at most ``max_connections`` connections, each to one
task at a time, so several shards' batches can be in flight together (the server works
on one while this process encodes the next).

This module knows RESP framing and sockets, nothing about streams or events. It uses
anyio only.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, Final, final

import anyio
import anyio.abc
import attrs

from net_adapter_redis._resp import ReplyReader, ServerError, encode_command
from net_core.errors import ConfigError, DecodeError

__all__ = ["IDLE_CHECK_S", "ConnectionPool", "RedisAddress", "RedisConnection"]

_RECEIVE_SIZE: Final = 1 << 18
#: A connection idle longer than this (seconds) is checked with a PING before reuse.
IDLE_CHECK_S: Final = 10.0
_SCHEMES: Final = ("redis", "rediss", "unix")


@final
@attrs.frozen(slots=True)
class RedisAddress:
    """Where and how to connect, parsed from a URL by :meth:`parse`.

    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
    ``unix:///path/to/socket[?db=N]``; the password of a URL without a user is sent as
    ``AUTH password``.
    """

    host: str = ""
    port: int = 6379
    unix_path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    db: int = 0

    @classmethod
    def parse(cls, url: str, *, path: str = "url") -> RedisAddress:
        """Parse ``url``; :class:`~net_core.errors.ConfigError` (at ``path``) if invalid."""
        if not isinstance(url, str) or not url:
            raise ConfigError(f"must be a non-empty redis:// URL, got {url!r}", path=path)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"invalid URL {url!r}: {exc}", path=path) from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"scheme must be one of {', '.join(s + '://' for s in _SCHEMES)}, got {url!r}",
                path=path,
            )
        query = urllib.parse.parse_qs(parts.query)
        username = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        db_text = query.get("db", [""])[0]
        if scheme != "unix" and parts.path not in ("", "/"):
            db_text = parts.path.lstrip("/")
        db = 0
        if db_text:
            if not db_text.isdigit() or not db_text.isascii():
                raise ConfigError(
                    f"database must be a number, got {db_text!r} in {url!r}", path=path
                )
            db = int(db_text)
        if scheme == "unix":
            if not parts.path:
                raise ConfigError(f"a unix:// URL needs a socket path, got {url!r}", path=path)
            return cls(unix_path=parts.path, username=username or None, password=password, db=db)
        if not parts.hostname:
            raise ConfigError(f"the URL has no host: {url!r}", path=path)
        return cls(
            host=parts.hostname,
            port=port if port is not None else 6379,
            tls=scheme == "rediss",
            username=username or None,
            password=password,
            db=db,
        )

    def describe(self) -> str:
        """The address without credentials, for messages."""
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


_ACCEPTED: dict[int, bytes] = {}


def _accepted_prefix(queued: int) -> bytes:
    """``+OK`` then ``queued`` x ``+QUEUED``: the start of a transaction's replies."""
    prefix = _ACCEPTED.get(queued)
    if prefix is None:
        prefix = b"+OK\r\n" + b"+QUEUED\r\n" * queued
        if len(_ACCEPTED) < 64:
            _ACCEPTED[queued] = prefix
    return prefix


@final
class RedisConnection:
    """One connection: a byte stream plus a reply parser (see the module docstring)."""

    __slots__ = ("_reader", "_stream", "broken", "last_used")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._reader = ReplyReader()
        self.broken = False
        self.last_used = time.monotonic()

    @classmethod
    async def connect(cls, address: RedisAddress) -> RedisConnection:
        """Dial ``address`` and authenticate / select the database if the URL says so.

        Raises ``OSError`` when the server cannot be reached and
        :class:`~net_adapter_redis._resp.ServerError` when it refuses the handshake.
        """
        stream: anyio.abc.ByteStream
        if address.unix_path is not None:
            stream = await anyio.connect_unix(address.unix_path)
        elif address.tls:
            stream = await anyio.connect_tcp(
                address.host, address.port, tls=True, ssl_context=ssl.create_default_context()
            )
        else:
            stream = await anyio.connect_tcp(address.host, address.port)
        conn = cls(stream)
        try:
            handshake = []
            if address.password is not None:
                if address.username is not None:
                    handshake.append(encode_command("AUTH", address.username, address.password))
                else:
                    handshake.append(encode_command("AUTH", address.password))
            if address.db:
                handshake.append(encode_command("SELECT", address.db))
            if handshake:
                for reply in await conn.request(b"".join(handshake), len(handshake)):
                    if isinstance(reply, ServerError):
                        raise reply
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def request(self, buffer: bytes, replies: int) -> list[Any]:
        """Send ``buffer`` (``replies`` commands) and return their replies, in order.

        Any exception, cancellation included, leaves the connection broken.
        """
        if self.broken:
            raise anyio.BrokenResourceError("the connection is broken")
        try:
            await self._stream.send(buffer)
            reader = self._reader
            out = reader.get_many(replies)
            while len(out) < replies:
                reader.feed(await self._stream.receive(_RECEIVE_SIZE))
                out.extend(reader.get_many(replies - len(out)))
            return out
        except BaseException:
            self.broken = True
            raise

    async def transaction(self, buffer: bytes, queued: int) -> tuple[list[Any] | None, Any]:
        """Send a ``MULTI``, ``queued`` commands, ``EXEC`` buffer; return
        ``(None, exec_reply)`` when ``MULTI`` and every command were accepted, else
        ``(all_replies, exec_reply)`` so the caller can find the refusal.

        The common case is checked without parsing: the server's first bytes must be
        exactly ``+OK`` and ``queued`` times ``+QUEUED``, compared as they arrive; only
        the EXEC reply goes through the parser. Any deviation falls back to parsing
        every reply. Any exception, cancellation included, leaves the connection broken.
        """
        if self.broken:
            raise anyio.BrokenResourceError("the connection is broken")
        expected = _accepted_prefix(queued)
        size = len(expected)
        try:
            await self._stream.send(buffer)
            received = bytearray()
            matched = True
            while len(received) < size:
                start = len(received)
                received += await self._stream.receive(_RECEIVE_SIZE)
                end = min(len(received), size)
                if received[start:end] != expected[start:end]:
                    matched = False
                    break
            reader = self._reader
            if matched:
                reader.feed(bytes(received[size:]))
                out = reader.get_many(1)
                while not out:
                    reader.feed(await self._stream.receive(_RECEIVE_SIZE))
                    out = reader.get_many(1)
                return None, out[0]
            reader.feed(bytes(received))
            replies = queued + 2
            everything = reader.get_many(replies)
            while len(everything) < replies:
                reader.feed(await self._stream.receive(_RECEIVE_SIZE))
                everything.extend(reader.get_many(replies - len(everything)))
            return everything, everything[-1]
        except BaseException:
            self.broken = True
            raise

    async def command(self, *args: bytes | str | int) -> Any:
        """Send one command and return its reply."""
        (reply,) = await self.request(encode_command(*args), 1)
        return reply

    async def aclose(self) -> None:
        """Close the stream (cancellation-safe, never raises for a dead peer)."""
        self.broken = True
        await anyio.aclose_forcefully(self._stream)


@final
class ConnectionPool:
    """At most ``max_connections`` connections to ``address``, each used by one task at a
    time; idle ones are reused, broken ones closed (see the module docstring)."""

    __slots__ = (
        "_address",
        "_closed",
        "_connect_timeout",
        "_idle",
        "_limit",
        "_limit_size",
        "opened",
    )

    def __init__(
        self, address: RedisAddress, *, max_connections: int, connect_timeout: float
    ) -> None:
        self._address = address
        self._connect_timeout = connect_timeout
        self._limit: anyio.Semaphore | None = None
        self._idle: list[RedisConnection] = []
        self._closed = False
        self.opened = 0  # connections dialled so far (reconnects included)
        self._limit_size = max_connections

    @property
    def address(self) -> RedisAddress:
        """Where the connections go."""
        return self._address

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[RedisConnection]:
        """A connection for the duration of the block."""
        if self._closed:
            raise anyio.ClosedResourceError("the connection pool is closed")
        if self._limit is None:
            self._limit = anyio.Semaphore(self._limit_size)
        async with self._limit:
            conn = self._idle.pop() if self._idle else None
            if conn is not None and time.monotonic() - conn.last_used > IDLE_CHECK_S:
                conn = await self._still_alive(conn)
            if conn is None:
                with anyio.fail_after(self._connect_timeout):
                    conn = await RedisConnection.connect(self._address)
                self.opened += 1
            try:
                yield conn
            finally:
                if conn.broken or self._closed:
                    with anyio.CancelScope(shield=True):
                        await conn.aclose()
                else:
                    conn.last_used = time.monotonic()
                    self._idle.append(conn)

    async def _still_alive(self, conn: RedisConnection) -> RedisConnection | None:
        """``conn`` if it answers a PING, else ``None`` (and it is closed): a server or a
        middlebox may have dropped a long-idle connection, and finding that out with a
        real command would fail the command."""
        try:
            with anyio.fail_after(self._connect_timeout):
                if await conn.command("PING") == b"PONG":
                    return conn
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, DecodeError, TimeoutError):
            pass
        with anyio.CancelScope(shield=True):
            await conn.aclose()
        return None

    async def aclose(self) -> None:
        """Close every idle connection; busy ones are closed when they are handed back."""
        self._closed = True
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for conn in idle:
                await conn.aclose()
