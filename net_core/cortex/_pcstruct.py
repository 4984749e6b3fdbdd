"""``struct``-style packing of postcard records: one call per record, not per field.

The CortEX hot paths (sealing an event, folding one) encode and decode whole records
(``id u64, title String, now_ns u64``...). Doing it field by field through
:class:`~net_core.cortex.Reader` costs a Python call per field; these two functions take
a format string instead, like :mod:`struct`:

=====  =========================================================
code   postcard type
=====  =========================================================
``u``  ``u64`` / ``usize`` varint (at most 10 bytes, value <= 2**64-1)
``w``  ``u32`` varint (at most 5 bytes; enum variant indexes)
``?``  ``bool`` (one byte, 0x00 or 0x01)
``s``  ``String`` (varint length, UTF-8 bytes)
``y``  ``Vec<u8>`` (varint length, bytes)
``S``  ``Vec<String>`` (varint count, then strings; decoded as a tuple)
=====  =========================================================

``unpack_from(fmt, buf, pos)`` returns the values followed by the offset after the last
one (trailing bytes are the caller's business, as in the reference) and raises
:class:`~net_core.cortex.PostcardError`, and nothing else, on malformed input; ``buf``
is any bytes-like object, and a ``pos`` past its end is malformed input too (a negative
one is a caller bug: ``ValueError``). ``pack(fmt, *values)`` raises ``ValueError`` /
``TypeError`` for values that do not fit: ``s`` takes a str, ``S`` any iterable of str
but a str, ``y`` any bytes-like object, ``u``/``w`` an int (a bool counts, as in Python),
``?`` a bool. An unknown format code is a ``ValueError`` in both.

A C implementation (``net_core._pcstruct_c``, built when a compiler is available) is used
when present; :data:`IMPLEMENTATION` says which one is active. Both behave identically
(the test suite checks them against each other).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final, TypeVar

from net_core.cortex._postcard import PostcardError

__all__ = [
    "IMPLEMENTATION",
    "make_record",
    "pack",
    "py_make_record",
    "py_pack",
    "py_unpack_from",
    "unpack_from",
]

T = TypeVar("T", bound=tuple[Any, ...])

_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_U32_MAX: Final = 0xFFFF_FFFF
_SMALL: Final = [bytes((i,)) for i in range(128)]
_BYTES_FIELD: Final = "Vec<u8> field needs a bytes-like object"


def _varint(value: int, maximum: int) -> bytes:
    if type(value) is not int and not isinstance(value, int):
        raise TypeError(f"varint needs an int, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"varint value {value} out of range 0..={maximum}")
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _byte_view(value: Any, what: str) -> bytes:
    """The bytes of a bytes-like object (any buffer; non-contiguous ones are copied)."""
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(f"{what}, got {type(value).__name__}") from None
    with view:
        return view.tobytes()


def _pack_str(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} needs a str, got {type(value).__name__}")
    raw = value.encode()
    return _varint(len(raw), _U64_MAX) + raw


def _items(value: Any) -> list[Any]:
    """The items of any iterable but a str (a Vec<String> value), as a list."""
    try:
        iterator = iter(value)
    except TypeError:
        raise TypeError(
            f"Vec<String> needs a sequence of str, got {type(value).__name__}"
        ) from None
    return list(iterator)


def _read_varint(buf: bytes, pos: int, maximum: int, width: int, what: str) -> tuple[int, int]:
    start = pos
    try:
        byte = buf[pos]
    except IndexError:
        raise PostcardError(f"{what}: truncated varint at offset {start}") from None
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    for _ in range(width - 1):
        pos += 1
        try:
            byte = buf[pos]
        except IndexError:
            raise PostcardError(f"{what}: truncated varint at offset {start}") from None
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > maximum:
                raise PostcardError(f"{what}: varint {value} overflows at offset {start}")
            return value, pos + 1
        shift += 7
    raise PostcardError(f"{what}: varint longer than {width} bytes at offset {start}")


def _read_bytes(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    length, pos = _read_varint(buf, pos, _U64_MAX, 10, what)
    end = pos + length
    if end > len(buf):
        raise PostcardError(f"{what}: need {length} byte(s) at offset {pos}, have {len(buf) - pos}")
    return buf[pos:end], end


def _read_str(buf: bytes, pos: int) -> tuple[str, int]:
    raw, end = _read_bytes(buf, pos, "str")
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        raise PostcardError(f"str: invalid UTF-8 at offset {pos}") from None


def py_unpack_from(fmt: str, buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Any, ...]:
    """Pure-Python :func:`unpack_from`."""
    if not isinstance(fmt, str):
        raise TypeError(f"unpack_from format must be a str, got {type(fmt).__name__}")
    if not isinstance(buf, bytes):
        buf = _byte_view(buf, "unpack_from needs a bytes-like buffer")
    pos = operator.index(pos)
    if pos < 0:
        raise ValueError(f"offset {pos} is negative")
    if pos > len(buf):
        raise PostcardError(f"offset {pos} is beyond the end of the {len(buf)}-byte buffer")
    out: list[Any] = []
    append = out.append
    for code in fmt:
        if code == "u":
            value, pos = _read_varint(buf, pos, _U64_MAX, 10, "u64")
            append(value)
        elif code == "s":
            text, pos = _read_str(buf, pos)
            append(text)
        elif code == "S":
            start = pos
            count, pos = _read_varint(buf, pos, _U64_MAX, 10, "length")
            if count > len(buf) - pos:
                raise PostcardError(f"seq: count {count} exceeds the bytes left at {start}")
            items = []
            for _ in range(count):
                text, pos = _read_str(buf, pos)
                items.append(text)
            append(tuple(items))
        elif code == "w":
            value, pos = _read_varint(buf, pos, _U32_MAX, 5, "u32")
            append(value)
        elif code == "?":
            if pos >= len(buf):
                raise PostcardError(f"bool: truncated at offset {pos}")
            byte = buf[pos]
            if byte > 1:
                raise PostcardError(f"bool: invalid byte {byte:#04x} at offset {pos}")
            append(byte == 1)
            pos += 1
        elif code == "y":
            raw, pos = _read_bytes(buf, pos, "bytes")
            append(raw)
        else:
            raise ValueError(f"unknown postcard format code {code!r}")
    append(pos)
    return tuple(out)


def py_pack(fmt: str, /, *values: Any) -> bytes:
    """Pure-Python :func:`pack`."""
    if not isinstance(fmt, str):
        raise TypeError(f"pack format must be a str, got {type(fmt).__name__}")
    if len(values) != len(fmt):
        raise TypeError(f"pack format {fmt!r} takes {len(fmt)} values, got {len(values)}")
    parts: list[bytes] = []
    append = parts.append
    for code, value in zip(fmt, values, strict=True):
        if code == "u":
            append(_varint(value, _U64_MAX))
        elif code == "s":
            append(_pack_str(value, "str field"))
        elif code == "S":
            if isinstance(value, str):
                raise TypeError("Vec<String> needs a sequence of str, not a str")
            items = value if type(value) is list or type(value) is tuple else _items(value)
            append(_varint(len(items), _U64_MAX))
            for item in items:
                append(_pack_str(item, "Vec<String> item"))
        elif code == "w":
            append(_varint(value, _U32_MAX))
        elif code == "?":
            if not isinstance(value, bool):
                raise TypeError(f"bool field needs a bool, got {type(value).__name__}")
            append(b"\x01" if value else b"\x00")
        elif code == "y":
            raw = value if isinstance(value, bytes) else _byte_view(value, _BYTES_FIELD)
            append(_varint(len(raw), _U64_MAX))
            append(raw)
        else:
            raise ValueError(f"unknown postcard format code {code!r}")
    return b"".join(parts)


def py_make_record(cls: type[T], *items: Any) -> T:
    """Pure-Python :func:`make_record`."""
    if not (isinstance(cls, type) and issubclass(cls, tuple)):
        raise TypeError(f"make_record needs a tuple subclass, got {cls!r}")
    return tuple.__new__(cls, items)


def c_kernel(name: str) -> Callable[..., Any] | None:
    """A CortEX kernel of the C module (``fold_tasks``, ``seal_record``), or ``None``
    when the module is not built; callers then use their Python path."""
    if _c_module is None:
        return None
    kernel: Callable[..., Any] = getattr(_c_module, name)
    return kernel


unpack_from: Callable[..., tuple[Any, ...]]
pack: Callable[..., bytes]
make_record: Callable[..., Any]

try:
    from net_core import _pcstruct_c  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the pure-Python twins
    _c_module = None
    unpack_from = py_unpack_from
    pack = py_pack
    make_record = py_make_record
    IMPLEMENTATION: str = "python"
else:
    _pcstruct_c.set_error_class(PostcardError)
    _c_module = _pcstruct_c
    unpack_from = _pcstruct_c.unpack_from
    pack = _pcstruct_c.pack
    make_record = _pcstruct_c.make_record
    IMPLEMENTATION = "c"
