"""Composite cursors: where a consumer stands in every shard, as one opaque token.

Theory of operation. A poll reads each shard from an *exclusive* position (the id of the
last event the consumer has seen there) and hands back a new position per shard. The
client keeps them all in one :class:`CompositeCursor`, which travels as text: standard
base64 (``+/`` alphabet, canonical ``=`` padding) of a compact JSON object mapping the
decimal shard id to the position string, e.g. ``{"0":"1795386842739-2"}`` ->
``eyIwIjoiMTc5NTM4Njg0MjczOS0yIn0=``. That is the reference's format byte for byte, so a
cursor handed out by a Rust node resumes on a Python node and back. The reference writes
keys in hash-map order; we write them in ascending shard order (deterministic tokens) and
accept any order.

Decoding is strict and mirrors the reference (base64 crate ``STANDARD`` engine, serde
``HashMap<String, String>``, ``u16`` shard keys in canonical decimal form): anything
malformed raises :class:`InvalidCursor` with the reference's message where it has one
(``invalid cursor: Invalid padding``, ``invalid cursor: shard key "a" is not a valid
u16``...). Encoding never degrades: a cursor that cannot be written raises instead of
returning the empty cursor (the reference's silent-rewind bug).

This module is a pure codec: no I/O, no clocks, no tasks.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, final

import orjson

from net_core.bus._storage import StoredEvent, compare_positions
from net_core.errors import ConsumerError, DecodeError

__all__ = ["MAX_SHARD_ID", "CompositeCursor", "InvalidCursor"]

#: Shard ids are ``u16`` in the reference (cursor keys included).
MAX_SHARD_ID = 65_535


class InvalidCursor(ConsumerError, DecodeError):
    """A cursor token (or a position put into a cursor) is malformed.

    ``reason`` is the text after ``invalid cursor:``; the low-level cause, when there is
    one, rides in ``__cause__``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid cursor: {reason}")


# -- base64, exactly as strict as the reference's decoder --------------------------------

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SYMBOL = [-1] * 256
for _value, _byte in enumerate(_ALPHABET):
    _SYMBOL[_byte] = _value
_PAD = 0x3D  # "="
_CANONICAL_SHAPE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _b64decode(data: bytes) -> bytes:
    # Fast path: the shape is right and re-encoding gives the same text (so no stray
    # trailing bits); that is exactly the set of inputs the reference accepts.
    if _CANONICAL_SHAPE.fullmatch(data):
        decoded = binascii.a2b_base64(data, strict_mode=True)
        if base64.b64encode(decoded) == data:
            return decoded
    raise InvalidCursor(_b64_error(data))


def _b64_error(data: bytes) -> str:
    """The reference decoder's message for ``data`` (which it rejects).

    The order of the checks is the base64 crate's: a stray last byte first, then any
    invalid byte in the complete quads before the last one, then the last (possibly
    padded) quad, its length, its padding, and finally its unused trailing bits.
    """
    size = len(data)
    rem = size % 4
    if rem == 1 and data[-1] != _PAD and _SYMBOL[data[-1]] < 0:
        return f"Invalid symbol {data[-1]}, offset {size - 1}."
    body = max(0, size - rem - (4 if rem == 0 else 0))
    for offset in range(body):
        if _SYMBOL[data[offset]] < 0:
            return f"Invalid symbol {data[offset]}, offset {offset}."
    morsels: list[int] = []
    pads = 0
    first_pad = 0
    last_symbol = 0
    for index, byte in enumerate(data[body:]):
        if byte == _PAD:
            if index < 2:
                return f"Invalid symbol {byte}, offset {body + index}."
            if pads == 0:
                first_pad = index
            pads += 1
            continue
        if pads:
            return f"Invalid symbol {_PAD}, offset {body + first_pad}."
        if _SYMBOL[byte] < 0:
            return f"Invalid symbol {byte}, offset {body + index}."
        last_symbol = byte
        morsels.append(_SYMBOL[byte])
    if size and len(morsels) < 2:
        return f"Invalid input length: {body + len(morsels)}"
    if (pads + len(morsels)) % 4:
        return "Invalid padding"
    packed = 0
    for index, morsel in enumerate(morsels):
        packed |= morsel << (26 - 6 * index)
    unused = 0xFFFF_FFFF >> (len(morsels) * 6 // 8 * 8)
    if packed & unused:
        return f"Invalid last symbol {last_symbol}, offset {body + len(morsels) - 1}."
    return "Invalid padding"  # not reached: canonical input takes the fast path


# -- JSON ---------------------------------------------------------------------------------

_SERDE_TEXT = {
    "unexpected character, expected a JSON value": "expected value",
    "unexpected content after document": "trailing characters",
    "unexpected character, expected ':' after key": "expected `:`",
    "unexpected character, expected a string key": "key must be a string",
}
_EOF_TEXTS = (
    "unexpected end of data",
    "input data is empty",
    "Input is a zero-length, empty document",
)


def _json_error(payload: bytes, exc: orjson.JSONDecodeError) -> str:
    """A serde_json-style message for orjson's failure on ``payload``."""
    if exc.msg in _EOF_TEXTS:
        # serde_json points just past the last character for an early end.
        line = payload.count(b"\n") + 1
        column = len(payload) - (payload.rfind(b"\n") + 1)
        return f"EOF while parsing a value at line {line} column {column}"
    if "UTF-8" in exc.msg:
        text = "expected value" if payload[:1] >= b"\x80" else "invalid unicode code point"
        return f"{text} at line {exc.lineno} column {exc.colno}"
    text = _SERDE_TEXT.get(exc.msg, exc.msg)
    return f"{text} at line {exc.lineno} column {exc.colno}"


def _unexpected(value: object) -> str:
    """serde's name for the JSON value ``value`` in an ``invalid type`` message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {_rust_debug(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


_DEBUG_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


def _rust_debug(text: str) -> str:
    """``text`` quoted the way Rust's ``{:?}`` prints a string."""
    out = []
    for char in text:
        escaped = _DEBUG_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char.isprintable() or char == " ":
            out.append(char)
        else:
            out.append(f"\\u{{{ord(char):x}}}")
    return '"' + "".join(out) + '"'


def _shard_key(key: str) -> int:
    """The shard id a cursor key names: a ``u16`` written in canonical decimal."""
    digits = key[1:] if key.startswith("+") else key
    significant = digits.lstrip("0")
    if (
        not digits
        or not (digits.isascii() and digits.isdigit())
        or len(significant) > 5
        or (significant and int(significant) > MAX_SHARD_ID)
    ):
        raise InvalidCursor(f"shard key {_rust_debug(key)} is not a valid u16")
    shard = int(significant or "0")
    if str(shard) != key:
        raise InvalidCursor(
            f"non-canonical shard key {_rust_debug(key)} "
            f"(parses to {shard}, canonical form is {shard})"
        )
    return shard


def _check_shard(shard: object) -> int:
    if isinstance(shard, bool) or not isinstance(shard, int):
        raise InvalidCursor(f"shard id must be an integer, got {type(shard).__name__}")
    if not 0 <= shard <= MAX_SHARD_ID:
        raise InvalidCursor(f"shard id {shard} is not a valid u16")
    return shard


def _check_position(shard: int, position: object) -> str:
    if not isinstance(position, str):
        raise InvalidCursor(
            f"position of shard {shard} must be a string, got {type(position).__name__}"
        )
    return position


@final
class CompositeCursor(Mapping[int, str]):
    """An immutable mapping of shard id to the exclusive position read up to there.

    Build one from a mapping or from ``(shard, position)`` pairs; derive new ones with
    :meth:`advance` / :meth:`update_from_events` (which never move a shard backwards)
    or :meth:`without`. :meth:`encode` / :meth:`decode` convert to and from the token
    that travels to clients.
    """

    __slots__ = ("_positions",)

    def __init__(self, positions: Mapping[int, str] | Iterable[tuple[int, str]] = ()) -> None:
        items = positions.items() if isinstance(positions, Mapping) else positions
        checked: dict[int, str] = {}
        for shard, position in items:
            checked[_check_shard(shard)] = _check_position(shard, position)
        self._positions = checked

    # -- Mapping ----------------------------------------------------------------------

    def __getitem__(self, shard: int) -> str:
        return self._positions[shard]

    def __iter__(self) -> Iterator[int]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)

    def __contains__(self, shard: object) -> bool:
        return shard in self._positions

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CompositeCursor):
            return self._positions == other._positions
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(frozenset(self._positions.items()))

    def __repr__(self) -> str:
        return f"CompositeCursor({dict(sorted(self._positions.items()))!r})"

    # -- derivation -------------------------------------------------------------------

    def advance(self, shard: int, position: str) -> CompositeCursor:
        """This cursor with ``shard`` moved to ``position``, unless that is not ahead of
        where it stands (:func:`~net_core.bus._storage.compare_positions` decides)."""
        _check_position(_check_shard(shard), position)
        current = self._positions.get(shard)
        if current is not None and compare_positions(position, current) <= 0:
            return self
        return _from_trusted({**self._positions, shard: position})

    def update_from_events(self, events: Iterable[StoredEvent]) -> CompositeCursor:
        """This cursor moved past ``events`` (each shard only ever moves forward)."""
        positions = dict(self._positions)
        for event in events:
            shard = _check_shard(event.shard_id)
            current = positions.get(shard)
            if current is None or compare_positions(event.id, current) > 0:
                positions[shard] = _check_position(shard, event.id)
        return _from_trusted(positions)

    def without(self, shard: int) -> CompositeCursor:
        """This cursor with no position for ``shard`` (it restarts from the beginning)."""
        if shard not in self._positions:
            return self
        positions = dict(self._positions)
        del positions[shard]
        return _from_trusted(positions)

    # -- codec ------------------------------------------------------------------------

    def encode(self) -> str:
        """The token: base64 of ``{"<shard>":"<position>",...}``, shards ascending.

        Raises :class:`InvalidCursor` when a position cannot be written as JSON text
        (a lone surrogate); never returns the empty cursor instead.
        """
        document = {str(shard): self._positions[shard] for shard in sorted(self._positions)}
        try:
            payload = orjson.dumps(document)
        except orjson.JSONEncodeError as exc:
            raise InvalidCursor(f"cannot encode positions as JSON: {exc}") from exc
        return base64.b64encode(payload).decode("ascii")

    @classmethod
    def decode(cls, token: str | bytes | bytearray | memoryview) -> CompositeCursor:
        """Parse a token made by :meth:`encode` or by the reference.

        Accepts exactly what the reference accepts; anything else raises
        :class:`InvalidCursor`.
        """
        if isinstance(token, str):
            try:
                data = token.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidCursor("cursor is not valid UTF-8 text") from exc
        elif isinstance(token, bytes | bytearray | memoryview):
            data = bytes(token)
        else:
            raise InvalidCursor(f"expected text, got {type(token).__name__}")
        payload = _b64decode(data)
        try:
            document: Any = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidCursor(_json_error(payload, exc)) from exc
        if not isinstance(document, dict):
            raise InvalidCursor(f"invalid type: {_unexpected(document)}, expected a map")
        for value in document.values():
            if not isinstance(value, str):
                raise InvalidCursor(f"invalid type: {_unexpected(value)}, expected a string")
        return _from_trusted({_shard_key(key): value for key, value in document.items()})


def _from_trusted(positions: dict[int, str]) -> CompositeCursor:
    cursor = CompositeCursor.__new__(CompositeCursor)
    cursor._positions = positions
    return cursor
