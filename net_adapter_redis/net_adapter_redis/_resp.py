"""RESP2, the Redis wire protocol, without I/O: commands to bytes, bytes to replies.

Theory of operation. A request is any number of commands encoded back to back into one
buffer (:func:`encode_command`, or the batch encoder of :mod:`net_adapter_redis._entry`),
written to the server in one go; the replies come back in the same order. A
:class:`ReplyReader` is fed the bytes received, in chunks of any size, and hands out
complete replies one at a time. Parsing is done by hiredis (C); this module wraps it so
that malformed input raises :class:`RespProtocolError` (a
:class:`~net_core.errors.DecodeError`) and nothing else, and keeps server error replies
(``-ERR ...``) as :class:`ServerError` *values*: inside a transaction's reply one command
may fail while the others succeed, and the caller decides what that means.

After a protocol error the reader is unusable (the stream has lost its framing); the
connection that owns it must be closed. This module must never do I/O.
"""

from __future__ import annotations

from typing import Any, Final, final

import hiredis

from net_core.errors import DecodeError

__all__ = [
    "NO_REPLY",
    "ReplyReader",
    "RespProtocolError",
    "ServerError",
    "encode_command",
    "first_error",
]


class RespProtocolError(DecodeError):
    """The bytes from the server are not valid RESP (the connection must be dropped)."""


@final
class ServerError(Exception):
    """An error reply from the server (``-ERR ...``, ``-WRONGTYPE ...``), held as a value.

    ``code`` is its first word (``ERR``, ``WRONGTYPE``, ``LOADING``, ``BUSY`` ...).
    """

    __slots__ = ("code", "message")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0] if message else ""


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_REPLY"


#: What :meth:`ReplyReader.get` returns while no complete reply is buffered.
NO_REPLY: Final = _NoReply()


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    raise TypeError(f"a RESP argument must be bytes, str or int, got {type(value).__name__}")


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings (``str`` as UTF-8, ``int`` decimal)."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for value in args:
        data = _arg(value)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def first_error(items: list[Any]) -> ServerError | None:
    """The first error reply among ``items`` (one level, e.g. an EXEC reply), or ``None``.

    Error replies nested in arrays are left as hiredis produced them; this finds them
    with a C-speed type scan first, and walks the list only when there is one.
    """
    kinds = set(map(type, items))
    if hiredis.ReplyError not in kinds and ServerError not in kinds:
        return None
    for item in items:
        if isinstance(item, hiredis.ReplyError):
            return ServerError(str(item))
        if isinstance(item, ServerError):
            return item
    return None  # pragma: no cover - the type scan said there is one


@final
class ReplyReader:
    """Incremental RESP2 reply parser: :meth:`feed` bytes, :meth:`get` replies.

    Replies are ``bytes`` (simple and bulk strings), ``int``, ``None`` (null bulk or
    array), ``list`` (arrays, nested) or :class:`ServerError` (an error reply). Error
    replies *inside* arrays (only an EXEC reply has them) stay hiredis ``ReplyError``
    values: converting them would mean walking every array in Python; find them with
    :func:`first_error`. Malformed input raises :class:`RespProtocolError`, after which
    the reader must not be used again.
    """

    __slots__ = ("_broken", "_reader")

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._broken = False

    def feed(self, data: bytes) -> None:
        """Add received bytes (any chunking)."""
        if self._broken:
            raise RespProtocolError("the reply stream is broken by an earlier protocol error")
        self._reader.feed(data)

    def get(self) -> Any:
        """The next complete reply, or :data:`NO_REPLY` if more bytes are needed."""
        if self._broken:
            raise RespProtocolError("the reply stream is broken by an earlier protocol error")
        try:
            reply = self._reader.gets()
        except hiredis.ProtocolError as exc:
            self._broken = True
            raise RespProtocolError(f"malformed reply from the server: {exc}") from exc
        except (hiredis.HiredisError, ValueError, TypeError, MemoryError, OverflowError) as exc:
            self._broken = True
            raise RespProtocolError(f"malformed reply from the server: {exc!r}") from exc
        if reply is False:
            return NO_REPLY
        if isinstance(reply, hiredis.ReplyError):
            return ServerError(str(reply))
        return reply

    def get_many(self, count: int) -> list[Any]:
        """Up to ``count`` complete replies (fewer when more bytes are needed)."""
        out: list[Any] = []
        gets = self._reader.gets
        try:
            while len(out) < count:
                reply = gets()
                if reply is False:
                    break
                if isinstance(reply, hiredis.ReplyError):
                    out.append(ServerError(str(reply)))
                else:
                    out.append(reply)
        except hiredis.ProtocolError as exc:
            self._broken = True
            raise RespProtocolError(f"malformed reply from the server: {exc}") from exc
        except (hiredis.HiredisError, ValueError, TypeError, MemoryError, OverflowError) as exc:
            self._broken = True
            raise RespProtocolError(f"malformed reply from the server: {exc!r}") from exc
        return out

    @property
    def broken(self) -> bool:
        """Whether a protocol error made the reader unusable."""
        return self._broken
