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


def _server_error(reply: Any) -> Any:
    """hiredis's ReplyError (top level or nested in arrays) as our ServerError."""
    if isinstance(reply, hiredis.ReplyError):
        return ServerError(str(reply))
    if type(reply) is list:
        for i, item in enumerate(reply):
            if isinstance(item, hiredis.ReplyError) or type(item) is list:
                reply[i] = _server_error(item)
    return reply


@final
class ReplyReader:
    """Incremental RESP2 reply parser: :meth:`feed` bytes, :meth:`get` replies.

    Replies are ``bytes`` (simple and bulk strings), ``int``, ``None`` (null bulk or
    array), ``list`` (arrays, nested) or :class:`ServerError` (error replies, also inside
    arrays). Malformed input raises :class:`RespProtocolError`, after which the reader
    must not be used again.
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
        if type(reply) is bytes or type(reply) is int:
            return reply
        return _server_error(reply)

    def get_many(self, count: int) -> list[Any]:
        """Up to ``count`` complete replies (fewer when more bytes are needed)."""
        out: list[Any] = []
        gets = self._reader.gets
        try:
            while len(out) < count:
                reply = gets()
                if reply is False:
                    break
                if type(reply) is bytes:
                    out.append(reply)
                else:
                    out.append(_server_error(reply))
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
