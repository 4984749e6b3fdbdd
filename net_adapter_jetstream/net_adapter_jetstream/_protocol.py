"""The NATS client protocol as a pure codec: bytes in, events out; events in, bytes out.

Theory of operation. A NATS connection is a stream of text control lines ending in
``\\r\\n``, some of them followed by a payload of announced length: ``INFO {json}``,
``MSG <subject> <sid> [reply] <size>``, ``HMSG <subject> <sid> [reply] <hdr> <total>``
(headers then body), ``PING``, ``PONG``, ``+OK`` and ``-ERR '<text>'``. :class:`NatsParser`
buffers what :meth:`~NatsParser.feed` gives it and hands out complete events from
:meth:`~NatsParser.events`; a partial frame stays buffered until the rest arrives, so the
I/O layer may be cancelled between reads without losing anything. Any malformed input
raises :class:`NatsProtocolError` (a :class:`~net_core.errors.DecodeError`) and leaves
the parser unusable, as the stream can no longer be framed.

The encoders build the client's frames (``CONNECT``, ``SUB``, ``PUB``, ``HPUB``,
``PING``/``PONG``) and a header block (``NATS/1.0`` then ``Key: Value`` lines);
:func:`parse_headers` decodes a received header block, including the status line the
server uses for "no responders" (503), "not found" (404) and end of batch (204).

This module does no I/O and must never import anyio, sockets or clocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple, final

import orjson

from net_core.errors import DecodeError

__all__ = [
    "MAX_CONTROL_LINE",
    "Err",
    "Headers",
    "Info",
    "Msg",
    "NatsParser",
    "NatsProtocolError",
    "Ok",
    "Ping",
    "Pong",
    "ProtocolEvent",
    "encode_connect",
    "encode_headers",
    "encode_hpub",
    "encode_pub",
    "encode_sub",
    "parse_headers",
    "valid_subject",
]

#: Longest control line accepted (the server's default ``max_control_line`` is 4 KiB;
#: INFO lines with many URLs can be longer, so allow more before calling it garbage).
MAX_CONTROL_LINE: Final = 64 * 1024
#: Largest message accepted from the server (its ``max_payload`` is at most 64 MiB).
MAX_MESSAGE: Final = 64 * 1024 * 1024

_CRLF: Final = b"\r\n"
_HEADER_VERSION: Final = b"NATS/1.0"
_SUBJECT = re.compile(r"^[^\s.*>]+(\.[^\s.]+)*$")
_TOKEN_OK = re.compile(rb"^[!-~]+$")


class NatsProtocolError(DecodeError):
    """Bytes from the server do not follow the NATS client protocol."""


@final
class Msg(NamedTuple):
    """A delivered message: ``header`` is the raw header block (``None`` for ``MSG``)."""

    subject: str
    sid: int
    reply: str | None
    header: bytes | None
    payload: bytes


@final
class Info(NamedTuple):
    """The server's ``INFO`` document."""

    data: dict[str, Any]


@final
class Err(NamedTuple):
    """A ``-ERR`` line; the server closes the connection after most of them."""

    text: str


@final
class Ping(NamedTuple):
    """The server asks for a ``PONG``."""


@final
class Pong(NamedTuple):
    """The answer to our ``PING``."""


@final
class Ok(NamedTuple):
    """``+OK`` (only in verbose mode, which we do not request; tolerated)."""


ProtocolEvent = Msg | Info | Err | Ping | Pong | Ok

_PING: Final = Ping()
_PONG: Final = Pong()
_OK: Final = Ok()


def _size(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > 12:
        raise NatsProtocolError(f"invalid {what} {raw[:32]!r} in a NATS frame")
    return int(raw)


def _text(raw: bytes, what: str) -> str:
    if not _TOKEN_OK.match(raw):
        raise NatsProtocolError(f"invalid {what} {raw[:64]!r} in a NATS frame")
    return raw.decode("ascii")


@final
class NatsParser:
    """Frames the server's byte stream into :data:`ProtocolEvent` values (see module docs).

    ``feed(data)`` appends bytes; ``events()`` returns every complete event buffered so
    far, in order. After a :class:`NatsProtocolError` every later call raises it again.
    """

    __slots__ = ("_buf", "_error", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._error: NatsProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet framed into an event."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append ``data`` received from the server."""
        if self._error is not None:
            raise self._error
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def events(self) -> list[ProtocolEvent]:
        """Every complete event in the buffer (possibly none)."""
        if self._error is not None:
            raise self._error
        out: list[ProtocolEvent] = []
        try:
            while True:
                event = self._next()
                if event is None:
                    return out
                out.append(event)
        except NatsProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> ProtocolEvent | None:
        buf, pos = self._buf, self._pos
        end = buf.find(_CRLF, pos)
        if end < 0:
            if len(buf) - pos > MAX_CONTROL_LINE:
                raise NatsProtocolError("NATS control line too long (no CRLF)")
            return None
        if end - pos > MAX_CONTROL_LINE:
            raise NatsProtocolError("NATS control line too long")
        line = bytes(buf[pos:end])
        head, _, rest = line.partition(b" ")
        op = head.upper()
        if op in {b"MSG", b"HMSG"}:
            parts = rest.split()
            headers = op == b"HMSG"
            if len(parts) not in ((4, 5) if headers else (3, 4)):
                raise NatsProtocolError(f"malformed {op.decode()} line {line[:120]!r}")
            total = _size(parts[-1], "size")
            hdr = _size(parts[-2], "header size") if headers else 0
            if total > MAX_MESSAGE or hdr > total:
                raise NatsProtocolError(f"message sizes out of range in {line[:120]!r}")
            start = end + 2
            if len(buf) < start + total + 2:
                return None
            if buf[start + total : start + total + 2] != _CRLF:
                raise NatsProtocolError("message body not followed by CRLF")
            body = bytes(buf[start : start + total])
            self._pos = start + total + 2
            fixed = 4 if headers else 3
            reply = _text(parts[2], "reply subject") if len(parts) == fixed + 1 else None
            return Msg(
                _text(parts[0], "subject"),
                _size(parts[1], "subscription id"),
                reply,
                body[:hdr] if headers else None,
                body[hdr:] if headers else body,
            )
        self._pos = end + 2
        if op == b"PING" and not rest:
            return _PING
        if op == b"PONG" and not rest:
            return _PONG
        if op == b"+OK" and not rest:
            return _OK
        if op == b"-ERR":
            return Err(rest.strip().strip(b"'").decode("utf-8", "replace"))
        if op == b"INFO":
            try:
                data = orjson.loads(rest)
            except orjson.JSONDecodeError as exc:
                raise NatsProtocolError(f"INFO is not JSON: {rest[:120]!r}") from exc
            if not isinstance(data, dict):
                raise NatsProtocolError("INFO is not a JSON object")
            return Info(data)
        raise NatsProtocolError(f"unknown NATS operation {line[:80]!r}")


@final
class Headers(NamedTuple):
    """A decoded header block: ``status`` (``None`` for a plain message), its
    description, and the fields (the last value wins for a repeated key)."""

    status: int | None
    description: str
    fields: dict[str, str]


def parse_headers(block: bytes) -> Headers:
    """Decode a header block (``NATS/1.0[ code[ text]]\\r\\nKey: Value\\r\\n...\\r\\n``).

    Raises:
        NatsProtocolError: the block is not a NATS header block.
    """
    if not block.startswith(_HEADER_VERSION):
        raise NatsProtocolError(f"header block does not start with NATS/1.0: {block[:40]!r}")
    if not block.endswith(b"\r\n\r\n") and block != _HEADER_VERSION + b"\r\n":
        raise NatsProtocolError("header block not terminated by an empty line")
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NatsProtocolError("header block is not UTF-8") from exc
    lines = text.split("\r\n")
    first = lines[0][len("NATS/1.0") :].strip()
    status: int | None = None
    description = ""
    if first:
        code, _, description = first.partition(" ")
        if not (code.isdigit() and code.isascii() and len(code) == 3):
            raise NatsProtocolError(f"invalid status in header block: {first[:40]!r}")
        status = int(code)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not key:
            raise NatsProtocolError(f"invalid header line {line[:80]!r}")
        fields[key] = value.strip()
    return Headers(status, description.strip(), fields)


def valid_subject(subject: str) -> bool:
    """Whether ``subject`` is a publishable NATS subject (no wildcards, no spaces)."""
    return bool(_SUBJECT.match(subject))


def encode_connect(options: Mapping[str, Any]) -> bytes:
    """The ``CONNECT`` frame followed by a ``PING`` (whose ``PONG`` confirms it)."""
    return b"CONNECT " + orjson.dumps(dict(options)) + b"\r\nPING\r\n"


def encode_sub(subject: str, sid: int) -> bytes:
    """Subscribe ``sid`` to ``subject`` (wildcards allowed)."""
    return f"SUB {subject} {sid}\r\n".encode()


def encode_pub(subject: str, reply: str | None, payload: bytes) -> bytes:
    """A ``PUB`` frame without headers."""
    head = (
        f"PUB {subject} {reply} {len(payload)}\r\n"
        if reply
        else f"PUB {subject} {len(payload)}\r\n"
    )
    return head.encode() + payload + _CRLF


def encode_headers(fields: Iterable[tuple[str, str]]) -> bytes:
    """A header block for ``HPUB`` (``NATS/1.0``, one ``Key: Value`` line each, blank line).

    Raises:
        ValueError: a key or value contains CR, LF or (keys) a colon or space.
    """
    parts = ["NATS/1.0\r\n"]
    for key, value in fields:
        if not key or any(c in key for c in ":\r\n ") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid NATS header {key!r}: {value!r}")
        parts.append(f"{key}: {value}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


def encode_hpub(subject: str, reply: str | None, header: bytes, payload: bytes) -> bytes:
    """An ``HPUB`` frame: ``header`` is a block from :func:`encode_headers`."""
    hlen = len(header)
    total = hlen + len(payload)
    head = (
        f"HPUB {subject} {reply} {hlen} {total}\r\n"
        if reply
        else f"HPUB {subject} {hlen} {total}\r\n"
    )
    return b"".join((head.encode(), header, payload, _CRLF))
