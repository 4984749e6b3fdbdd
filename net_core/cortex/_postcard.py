"""A minimal postcard codec: the subset of the wire format CortEX tails and snapshots use.

postcard (the Rust serde format the reference uses) writes structs as their fields
concatenated in declaration order, with no names or tags:

* ``u8`` is one raw byte; ``u16``/``u32``/``u64``/``usize`` are unsigned LEB128 varints
  (7 bits per byte, low group first, high bit set on every byte but the last); signed
  integers are zigzag-mapped and then written as varints.
* ``bool`` is ``0x00`` or ``0x01``; any other byte is invalid.
* ``String`` and ``Vec<u8>`` are a varint length and the bytes; strings must be UTF-8.
* ``Vec<T>`` is a varint count and the elements; ``Option<T>`` is ``0x00`` (None) or
  ``0x01`` followed by the value; an enum is its varint variant index and its fields.

:class:`Writer` appends values to a buffer; :class:`Reader` consumes them from bytes and
raises :class:`PostcardError` — and nothing else — on any malformed input, with the
position of the failure in the message. Like the reference, decoding a value does not
require the input to be consumed; :meth:`Reader.finish` checks that when a caller wants
it. This module never does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeVar, final

from net_core.errors import CortexError, DecodeError

__all__ = [
    "U16_MAX",
    "U32_MAX",
    "U64_MAX",
    "PostcardError",
    "Reader",
    "Writer",
]

T = TypeVar("T")

U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFF_FFFF
U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1


class PostcardError(DecodeError, CortexError):
    """Bytes are not a valid postcard encoding of the expected type."""


@final
class Writer:
    """Builds a postcard encoding by appending values in field order.

    Out-of-range values raise ``ValueError`` (a caller bug, not a decode failure).
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        """Return the bytes written so far."""
        return bytes(self._buf)

    def _varint(self, value: int, maximum: int, kind: str) -> None:
        if not 0 <= value <= maximum:
            raise ValueError(f"{kind} out of range: {value}")
        while value >= 0x80:
            self._buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self._buf.append(value)

    def u8(self, value: int) -> None:
        """Write a ``u8`` as one raw byte."""
        if not 0 <= value <= 0xFF:
            raise ValueError(f"u8 out of range: {value}")
        self._buf.append(value)

    def u16(self, value: int) -> None:
        """Write a ``u16`` varint."""
        self._varint(value, U16_MAX, "u16")

    def u32(self, value: int) -> None:
        """Write a ``u32`` varint."""
        self._varint(value, U32_MAX, "u32")

    def u64(self, value: int) -> None:
        """Write a ``u64`` (or ``usize``) varint."""
        self._varint(value, U64_MAX, "u64")

    def i64(self, value: int) -> None:
        """Write an ``i64`` as a zigzag-mapped varint."""
        if not _I64_MIN <= value <= _I64_MAX:
            raise ValueError(f"i64 out of range: {value}")
        self._varint((value << 1) ^ (value >> 63), U64_MAX, "i64")

    def bool(self, value: bool) -> None:
        """Write a ``bool`` as ``0x00`` or ``0x01``."""
        self._buf.append(1 if value else 0)

    def bytes(self, value: bytes | bytearray | memoryview) -> None:
        """Write a ``Vec<u8>``: varint length then the bytes."""
        data = bytes(value)
        self._varint(len(data), U64_MAX, "length")
        self._buf += data

    def str(self, value: str) -> None:
        """Write a ``String``: varint length then the UTF-8 bytes."""
        self.bytes(value.encode("utf-8"))

    def seq(self, items: Iterable[T], write_item: Callable[[T], None]) -> None:
        """Write a ``Vec<T>``: varint count then each item with ``write_item``."""
        materialised = list(items)
        self._varint(len(materialised), U64_MAX, "length")
        for item in materialised:
            write_item(item)

    def option(self, value: T | None, write_value: Callable[[T], None]) -> None:
        """Write an ``Option<T>``: ``0x00`` for None, else ``0x01`` then the value."""
        if value is None:
            self._buf.append(0)
        else:
            self._buf.append(1)
            write_value(value)

    def variant(self, index: int) -> None:
        """Write an enum variant index (a ``u32`` varint); fields follow."""
        self._varint(index, U32_MAX, "variant index")


@final
class Reader:
    """Consumes postcard values from a byte buffer, front to back.

    Every method raises :class:`PostcardError` on malformed or truncated input and
    leaves the position where the failing value started.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._buf = bytes(data)
        self._pos = 0

    @property
    def position(self) -> int:
        """Offset of the next unread byte."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Number of unread bytes."""
        return len(self._buf) - self._pos

    def finish(self) -> None:
        """Raise :class:`PostcardError` unless every byte has been consumed."""
        if self.remaining:
            raise PostcardError(f"{self.remaining} trailing byte(s) at offset {self._pos}")

    def _take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise PostcardError(
                f"{what}: need {n} byte(s) at offset {self._pos}, have {self.remaining}"
            )
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def _varint(self, maximum: int, kind: str) -> int:
        start = self._pos
        value = 0
        # postcard caps a varint at ceil(bits / 7) bytes for its width (3, 5 or 10).
        limit = (maximum.bit_length() + 6) // 7
        for i in range(limit):
            if self._pos >= len(self._buf):
                self._pos = start
                raise PostcardError(f"{kind}: truncated varint at offset {start}")
            byte = self._buf[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value > maximum:
                    self._pos = start
                    raise PostcardError(f"{kind}: varint {value} overflows at offset {start}")
                return value
        self._pos = start
        raise PostcardError(f"{kind}: varint longer than {limit} bytes at offset {start}")

    def u8(self) -> int:
        """Read a raw ``u8`` byte."""
        return self._take(1, "u8")[0]

    def u16(self) -> int:
        """Read a ``u16`` varint."""
        return self._varint(U16_MAX, "u16")

    def u32(self) -> int:
        """Read a ``u32`` varint."""
        return self._varint(U32_MAX, "u32")

    def u64(self) -> int:
        """Read a ``u64`` (or ``usize``) varint."""
        return self._varint(U64_MAX, "u64")

    def i64(self) -> int:
        """Read a zigzag-mapped ``i64`` varint."""
        raw = self._varint(U64_MAX, "i64")
        return (raw >> 1) ^ -(raw & 1)

    def bool(self) -> bool:
        """Read a ``bool``; only ``0x00`` and ``0x01`` are valid."""
        start = self._pos
        byte = self._take(1, "bool")[0]
        if byte > 1:
            self._pos = start
            raise PostcardError(f"bool: invalid byte {byte:#04x} at offset {start}")
        return byte == 1

    def bytes(self) -> bytes:
        """Read a ``Vec<u8>``: varint length then that many bytes."""
        start = self._pos
        length = self._varint(U64_MAX, "length")
        try:
            return self._take(length, "bytes")
        except PostcardError:
            self._pos = start
            raise

    def str(self) -> str:
        """Read a ``String``; invalid UTF-8 raises :class:`PostcardError`."""
        start = self._pos
        raw = self.bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._pos = start
            raise PostcardError(f"str: invalid UTF-8 at offset {start}") from exc

    def seq(self, read_item: Callable[[], T]) -> list[T]:
        """Read a ``Vec<T>``: varint count then each item with ``read_item``."""
        start = self._pos
        count = self._varint(U64_MAX, "length")
        # Every element type CortEX uses takes at least one byte, so a larger count is
        # certainly truncated and must not drive a huge loop.
        if count > self.remaining:
            self._pos = start
            raise PostcardError(
                f"seq: count {count} exceeds the {self.remaining} byte(s) left at {start}"
            )
        try:
            return [read_item() for _ in range(count)]
        except PostcardError:
            self._pos = start
            raise

    def option(self, read_value: Callable[[], T]) -> T | None:
        """Read an ``Option<T>``: ``0x00`` is None, ``0x01`` precedes the value."""
        start = self._pos
        tag = self._take(1, "option")[0]
        if tag == 0:
            return None
        if tag != 1:
            self._pos = start
            raise PostcardError(f"option: invalid tag {tag:#04x} at offset {start}")
        try:
            return read_value()
        except PostcardError:
            self._pos = start
            raise

    def variant(self) -> int:
        """Read an enum variant index (a ``u32`` varint); the caller reads the fields."""
        return self._varint(U32_MAX, "variant index")
