"""A small NATS client over anyio: one connection, request/reply, acked publishes.

Theory of operation. The connection subscribes once to a private inbox wildcard
(``_INBOX.<random>.>``); every request gets a token, and its replies come back on
``<inbox>.<token>[.<index>]``, where a :class:`_Waiter` collects them. There is no
background task (a storage backend owns no task group): the task that waits for a reply
reads the socket itself, and dispatches whatever it reads, replies for other tasks
included. One waiting task at a time is the reader (the *leader*); the others sleep on
their waiter's event until their replies are dispatched, or until the leader leaves and
one of them takes over. A cancelled read loses nothing (the parser keeps partial frames),
so cancellation and timeouts are safe at any await.

Writes go through one lock and are shielded from cancellation (a half-written frame
would corrupt the stream) but bounded by the I/O timeout. When the socket fails, the
server sends ``-ERR`` or the stream cannot be framed, the connection is *broken*: every
waiter fails with :class:`NatsConnectionLost` and the next call connects again (a new
inbox, so late replies of the old connection can never be mistaken for new ones).

nats-py is not used here: it runs only on asyncio, and this library must run on trio too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import anyio
import anyio.abc

from net_adapter_jetstream._config import ServerAddress
from net_adapter_jetstream._protocol import (
    Err,
    Info,
    Msg,
    NatsParser,
    NatsProtocolError,
    Ping,
    Pong,
    encode_connect,
    encode_pub,
    encode_sub,
)
from net_core.errors import TransientAdapterError

__all__ = ["NatsClient", "NatsConnectionError", "NatsConnectionLost", "NatsTimeout"]

log = logging.getLogger("net_adapter_jetstream")

_INBOX_SID: Final = 1
_READ_SIZE: Final = 1 << 18
_CRLF: Final = b"\r\n"


class NatsConnectionError(TransientAdapterError):
    """The NATS server could not be reached, or refused the connection."""


class NatsConnectionLost(TransientAdapterError):
    """The connection broke while a call was under way (the server may have acted on it)."""


class NatsTimeout(TransientAdapterError):
    """No (complete) reply within the request timeout."""


@final
class _Waiter:
    """Replies of one request: done at ``target`` replies or when ``stop`` says so."""

    __slots__ = ("error", "event", "replies", "stop", "stopped", "target")

    def __init__(self, target: int, stop: Callable[[Msg], bool] | None = None) -> None:
        self.replies: list[Msg] = []
        self.target = target
        self.stop = stop
        self.stopped = False
        self.error: BaseException | None = None
        self.event: anyio.Event | None = None

    @property
    def done(self) -> bool:
        return self.stopped or self.error is not None or len(self.replies) >= self.target

    def add(self, msg: Msg) -> None:
        self.replies.append(msg)
        if self.stop is not None and self.stop(msg):
            self.stopped = True
        if self.done:
            self.wake()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()


@final
class _Connection:
    """One TCP connection to the server and its reply routing (see the module docs)."""

    __slots__ = (
        "error",
        "followers",
        "inbox",
        "info",
        "io_timeout",
        "leading",
        "next_token",
        "parser",
        "send_lock",
        "stream",
        "waiters",
    )

    def __init__(
        self, stream: anyio.abc.ByteStream, info: dict[str, Any], io_timeout: float
    ) -> None:
        self.stream = stream
        self.info = info
        self.io_timeout = io_timeout
        self.parser = NatsParser()
        self.inbox = f"_INBOX.{secrets.token_hex(11)}"
        self.waiters: dict[str, _Waiter] = {}
        self.next_token = 0
        self.send_lock = anyio.Lock()
        self.leading = False
        self.followers: set[_Waiter] = set()
        self.error: NatsConnectionLost | None = None

    # -- failure ----------------------------------------------------------------------

    def broken(self, why: str, cause: BaseException | None = None) -> NatsConnectionLost:
        """Mark the connection broken; fail every waiter; return the error to raise."""
        if self.error is None:
            err = NatsConnectionLost(f"NATS connection lost: {why}")
            err.__cause__ = cause
            self.error = err
            if cause is not None or not why.startswith("closed by the client"):
                log.warning("NATS connection to %s broken: %s", self.info.get("host", "?"), why)
            for waiter in self.waiters.values():
                waiter.error = err
                waiter.wake()
            self.waiters.clear()
            for waiter in self.followers:
                waiter.wake()
        return self.error

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self.stream)

    # -- sending ----------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        async with self.send_lock:
            if self.error is not None:
                raise self.error
            try:
                # Shielded: a frame cut in half by a cancellation would corrupt the
                # stream for every other caller. Bounded by the I/O timeout instead.
                with anyio.CancelScope(shield=True), anyio.fail_after(self.io_timeout):
                    await self.stream.send(data)
            except TimeoutError as exc:
                raise self.broken("send timed out", exc) from exc
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise self.broken(f"send failed: {exc!r}", exc) from exc

    # -- receiving --------------------------------------------------------------------

    def register(self, waiter: _Waiter) -> str:
        """A fresh token for ``waiter``; replies go to ``{inbox}.{token}[.{i}]``."""
        self.next_token += 1
        token = str(self.next_token)
        self.waiters[token] = waiter
        return token

    def forget(self, token: str) -> None:
        self.waiters.pop(token, None)

    async def wait(self, waiter: _Waiter) -> None:
        """Until ``waiter`` is done, reading the socket when no other task does."""
        while not waiter.done:
            if self.error is not None:
                raise self.error
            if not self.leading:
                self.leading = True
                try:
                    while not waiter.done:
                        await self._read_some()
                finally:
                    self.leading = False
                    for follower in self.followers:
                        follower.wake()
            else:
                waiter.event = anyio.Event()
                self.followers.add(waiter)
                try:
                    await waiter.event.wait()
                finally:
                    self.followers.discard(waiter)
                    waiter.event = None
        if waiter.error is not None:
            raise waiter.error

    async def _read_some(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            data = await self.stream.receive(_READ_SIZE)
        except anyio.EndOfStream as exc:
            raise self.broken("closed by the server", exc) from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise self.broken(f"receive failed: {exc!r}", exc) from exc
        try:
            self.parser.feed(data)
            events = self.parser.events()
        except NatsProtocolError as exc:
            raise self.broken(f"protocol error: {exc}", exc) from exc
        prefix = self.inbox
        cut = len(prefix) + 1
        for event in events:
            if type(event) is Msg:
                subject = event.subject
                if subject.startswith(prefix):
                    token = subject[cut:].partition(".")[0]
                    waiter = self.waiters.get(token)
                    if waiter is not None:
                        waiter.add(event)
            elif type(event) is Ping:
                await self.send(b"PONG\r\n")
            elif type(event) is Err:
                raise self.broken(f"server error: {event.text}")
            elif type(event) is Info:
                self.info = {**self.info, **event.data}


@final
class NatsClient:
    """A NATS connection that reconnects on demand (see the module docstring).

    ``connect_timeout`` bounds a connection attempt and every socket write.
    """

    __slots__ = ("_address", "_closed", "_conn", "_connect_lock", "_connect_timeout", "_name")

    def __init__(self, address: ServerAddress, *, connect_timeout: float, name: str) -> None:
        self._address = address
        self._connect_timeout = connect_timeout
        self._name = name
        self._conn: _Connection | None = None
        self._connect_lock = anyio.Lock()
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether a live connection exists right now (no I/O)."""
        return self._conn is not None and self._conn.error is None

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO document of the current connection (empty when not connected)."""
        return dict(self._conn.info) if self._conn is not None else {}

    async def connection(self) -> _Connection:
        """The live connection, connecting (again) when there is none or it broke."""
        if self._closed:
            raise NatsConnectionError("the NATS client is closed")
        conn = self._conn
        if conn is not None and conn.error is None:
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.error is None:
                return conn
            if conn is not None:
                self._conn = None
                await conn.aclose()
            if self._closed:
                raise NatsConnectionError("the NATS client is closed")
            self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> _Connection:
        addr = self._address
        where = f"nats://{addr.host}:{addr.port}"
        stream: anyio.abc.ByteStream | None = None
        try:
            with anyio.fail_after(self._connect_timeout):
                stream = await anyio.connect_tcp(addr.host, addr.port)
                parser = NatsParser()
                info = await _read_until(stream, parser, Info, where)
                assert isinstance(info, Info)
                if not info.data.get("headers", False):
                    raise NatsConnectionError(f"{where} does not support message headers")
                options: dict[str, Any] = {
                    "verbose": False,
                    "pedantic": False,
                    "headers": True,
                    "no_responders": True,
                    "protocol": 1,
                    "lang": "python-anyio",
                    "version": "net-adapter-jetstream",
                    "name": self._name,
                }
                if addr.user is not None:
                    options["user"] = addr.user
                    options["pass"] = addr.password or ""
                if addr.token is not None:
                    options["auth_token"] = addr.token
                await stream.send(encode_connect(options))
                await _read_until(stream, parser, None, where)
                conn = _Connection(stream, info.data, self._connect_timeout)
                conn.parser = parser
                await stream.send(encode_sub(f"{conn.inbox}.>", _INBOX_SID))
        except TimeoutError as exc:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            raise NatsConnectionError(
                f"could not connect to {where} within {self._connect_timeout:g} s"
            ) from exc
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            raise NatsConnectionError(f"could not connect to {where}: {exc}") from exc
        except BaseException:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            raise
        return conn

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        wait_s: float,
        stop: Callable[[Msg], bool] | None = None,
        max_replies: int = 1,
    ) -> list[Msg]:
        """Publish ``payload`` to ``subject`` and collect replies until ``max_replies``
        arrived or ``stop(reply)`` is true for one (that reply included)."""
        conn = await self.connection()
        waiter = _Waiter(max_replies, stop)
        token = conn.register(waiter)
        try:
            with anyio.fail_after(wait_s):
                await conn.send(encode_pub(subject, f"{conn.inbox}.{token}", payload))
                await conn.wait(waiter)
        except TimeoutError:
            raise NatsTimeout(f"no complete reply on {subject} within {wait_s:g} s") from None
        finally:
            conn.forget(token)
        return waiter.replies

    async def request_each(
        self, subject: str, payloads: Sequence[bytes], *, wait_s: float
    ) -> list[Msg | None]:
        """Send every request in one write (a pipeline) and wait for one reply each;
        the replies come back in request order."""
        conn = await self.connection()
        waiter = _Waiter(len(payloads))
        token = conn.register(waiter)
        reply = f"{conn.inbox}.{token}"
        try:
            with anyio.fail_after(wait_s):
                await conn.send(
                    b"".join(encode_pub(subject, f"{reply}.{i}", p) for i, p in enumerate(payloads))
                )
                await conn.wait(waiter)
        except TimeoutError:
            raise NatsTimeout(
                f"{len(waiter.replies)} of {len(payloads)} replies on {subject} within {wait_s:g} s"
            ) from None
        finally:
            conn.forget(token)
        ordered: list[Msg | None] = [None] * len(payloads)
        cut = len(reply) + 1
        for msg in waiter.replies:
            index = msg.subject[cut:]
            if index.isdigit() and int(index) < len(ordered):
                ordered[int(index)] = msg
        return ordered

    async def publish_acked(
        self,
        subject: str,
        headers: Sequence[bytes],
        payloads: Sequence[bytes],
        *,
        max_in_flight: int,
        wait_s: float,
    ) -> list[Msg]:
        """Publish each ``(header, payload)`` to ``subject`` with a reply inbox, at most
        ``max_in_flight`` awaiting their acks at any time; return every ack reply.

        ``wait_s`` bounds each wait for acks (each window), not the whole call.
        """
        conn = await self.connection()
        total = len(payloads)
        waiter = _Waiter(0)
        token = conn.register(waiter)
        head = f"HPUB {subject} {conn.inbox}.{token} ".encode()
        sent = 0
        try:
            while sent < total:
                end = min(total, len(waiter.replies) + max_in_flight)
                if end > sent:
                    parts: list[bytes] = []
                    append = parts.append
                    for i in range(sent, end):
                        header = headers[i]
                        payload = payloads[i]
                        hlen = len(header)
                        append(head + b"%d %d\r\n" % (hlen, hlen + len(payload)))
                        append(header)
                        append(payload)
                        append(_CRLF)
                    await conn.send(b"".join(parts))
                    sent = end
                # Wait until a quarter of the window is free before sending more.
                waiter.target = total if sent >= total else max(1, sent - (max_in_flight * 3) // 4)
                with anyio.fail_after(wait_s):
                    await conn.wait(waiter)
            if len(waiter.replies) < total:
                waiter.target = total
                with anyio.fail_after(wait_s):
                    await conn.wait(waiter)
        except TimeoutError:
            raise NatsTimeout(
                f"{len(waiter.replies)} of {total} publish acks on {subject} within {wait_s:g} s"
            ) from None
        finally:
            conn.forget(token)
        return waiter.replies

    async def ping(self, *, wait_s: float) -> None:
        """A round trip through the server (a request nobody answers: 503 comes back)."""
        conn = await self.connection()
        waiter = _Waiter(1)
        token = conn.register(waiter)
        try:
            with anyio.fail_after(wait_s):
                # Publishing to our own inbox echoes back once the server processed it.
                await conn.send(encode_pub(f"{conn.inbox}.{token}", None, b""))
                await conn.wait(waiter)
        except TimeoutError:
            raise NatsTimeout(f"no round trip within {wait_s:g} s") from None
        finally:
            conn.forget(token)

    async def aclose(self) -> None:
        """Close the connection; later calls raise :class:`NatsConnectionError`."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.broken("closed by the client")
            await conn.aclose()


async def _read_until(
    stream: anyio.abc.ByteStream, parser: NatsParser, kind: type | None, where: str
) -> Info | None:
    """Read events during the handshake: the first ``Info`` (``kind=Info``) or ``PONG``."""
    while True:
        try:
            data = await stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            raise NatsConnectionError(
                f"{where} closed the connection during the handshake"
            ) from None
        parser.feed(data)
        try:
            events = parser.events()
        except NatsProtocolError as exc:
            raise NatsConnectionError(f"{where} does not speak NATS: {exc}") from exc
        for event in events:
            if isinstance(event, Err):
                raise NatsConnectionError(f"{where} refused the connection: {event.text}")
            if kind is Info:
                if isinstance(event, Info):
                    return event
                raise NatsConnectionError(f"{where} did not start with INFO")
            if isinstance(event, Ping):
                await stream.send(b"PONG\r\n")
            elif isinstance(event, Pong):
                return None
