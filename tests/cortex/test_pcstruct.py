"""Tests of postcard record packing: the pure-Python twin and the C accelerator.

The pure-Python functions (``py_pack`` / ``py_unpack_from``) are the specification.
Every test of behaviour runs on both implementations; the parity tests then require
the C module (``net_core._pcstruct_c``) to give the same values, the same exception
types and the same messages as the twin for random records, random bytes, mutated and
truncated encodings, random pack arguments and every kind of buffer. The
:class:`~net_core.cortex.Writer` codec is a third, independent encoder to agree with.
"""

from __future__ import annotations

import array
import contextlib
import importlib.util
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.cortex import Memory, PostcardError, Task, TaskStatus, Writer, _pcstruct
from net_core.errors import DecodeError

try:
    from net_core import _pcstruct_c  # type: ignore[attr-defined]
except ImportError:
    _pcstruct_c = None

NOT_BUILT = "C accelerator not built (no compiler at install time)"
requires_c = pytest.mark.skipif(_pcstruct_c is None, reason=NOT_BUILT)

Unpack = Callable[..., tuple[Any, ...]]
Pack = Callable[..., bytes]

IMPLS = [
    pytest.param((_pcstruct.py_unpack_from, _pcstruct.py_pack), id="python"),
    pytest.param(
        (getattr(_pcstruct_c, "unpack_from", None), getattr(_pcstruct_c, "pack", None)),
        id="c",
        marks=requires_c,
    ),
]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
CODES = "uw?syS"


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a call did: ("ok", result) or (exception type, message)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # the point is to compare whatever was raised
        return (type(exc), str(exc))


def assert_same(*args: Any, fn: str = "unpack_from", **kwargs: Any) -> tuple[Any, ...]:
    """Call the C function and its Python twin; they must do exactly the same."""
    assert _pcstruct_c is not None
    expected = outcome(getattr(_pcstruct, f"py_{fn}"), *args, **kwargs)
    assert outcome(getattr(_pcstruct_c, fn), *args, **kwargs) == expected
    return expected


# ---------------------------------------------------------------------------------------
# Behaviour, on both implementations


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> tuple[Unpack, Pack]:
    """(unpack_from, pack) of one implementation."""
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (2**32 - 1, "ffffffff0f"),
        (2**63, "80808080808080808001"),
        (U64_MAX, "ffffffffffffffffff01"),
    ],
)
def test_u64_golden(impl: tuple[Unpack, Pack], value: int, encoded: str) -> None:
    unpack_from, pack = impl
    data = bytes.fromhex(encoded)
    assert pack("u", value) == data
    assert unpack_from("u", data) == (value, len(data))


def test_tasks_created_tail(impl: tuple[Unpack, Pack]) -> None:
    unpack_from, pack = impl
    now = 1_700_000_000_123_456_789
    tail = pack("usu", 12345, "task 12345", now)
    w = Writer()
    w.u64(12345)
    w.str("task 12345")
    w.u64(now)
    assert tail == w.getvalue()
    assert unpack_from("usu", tail) == (12345, "task 12345", now, len(tail))


def test_every_code(impl: tuple[Unpack, Pack]) -> None:
    unpack_from, pack = impl
    values = (7, 3, True, "héllo ✓", b"\x00\xff", ("", "a", "日本"))
    data = pack("uw?syS", *values)
    expected = "07 03 01 0a68c3a96c6c6f20e29c93 0200ff 03 00 0161 06e697a5e69cac"
    assert data == bytes.fromhex(expected)
    assert unpack_from("uw?syS", data) == (*values, len(data))


def test_empty_values_and_format(impl: tuple[Unpack, Pack]) -> None:
    unpack_from, pack = impl
    assert pack("syS", "", b"", ()) == b"\x00\x00\x00"
    assert unpack_from("syS", b"\x00\x00\x00") == ("", b"", (), 3)
    assert pack("") == b""
    assert unpack_from("", b"") == (0,)
    assert unpack_from("", b"abc", 3) == (3,)


def test_trailing_bytes_are_left_to_the_caller(impl: tuple[Unpack, Pack]) -> None:
    unpack_from, _ = impl
    assert unpack_from("u", b"\x05\x06\x07") == (5, 1)
    assert unpack_from("u", b"\x05\x06\x07", 1) == (6, 2)
    assert unpack_from("u", b"\x05\x06\x07", pos=2) == (7, 3)


def test_non_canonical_varints_are_accepted_within_the_width(impl: tuple[Unpack, Pack]) -> None:
    # postcard (and the codec) accept redundant 0x80 groups as long as the width holds.
    unpack_from, _ = impl
    assert unpack_from("u", bytes.fromhex("8000")) == (0, 2)
    assert unpack_from("w", bytes.fromhex("8080808000")) == (0, 5)
    assert unpack_from("u", bytes.fromhex("80808080808080808000")) == (0, 10)


MALFORMED = [
    # (format, hex bytes, pos, message)
    ("u", "", 0, "u64: truncated varint at offset 0"),
    ("u", "80", 0, "u64: truncated varint at offset 0"),
    ("u", "0180", 1, "u64: truncated varint at offset 1"),
    ("u", "8080808080808080808000", 0, "u64: varint longer than 10 bytes at offset 0"),
    ("u", "ffffffffffffffffff81", 0, "u64: varint longer than 10 bytes at offset 0"),
    ("u", "ffffffffffffffffff02", 0, "u64: varint 27670116110564327423 overflows at offset 0"),
    ("u", "80808080808080808002", 0, "u64: varint 18446744073709551616 overflows at offset 0"),
    ("u", "ffffffffffffffffff7f", 0, f"u64: varint {2**70 - 1} overflows at offset 0"),
    ("w", "ffffffff1f", 0, "u32: varint 8589934591 overflows at offset 0"),
    ("w", "8080808010", 0, "u32: varint 4294967296 overflows at offset 0"),
    ("w", "808080808000", 0, "u32: varint longer than 5 bytes at offset 0"),
    ("?", "02", 0, "bool: invalid byte 0x02 at offset 0"),
    ("?", "ff", 0, "bool: invalid byte 0xff at offset 0"),
    ("u?", "01", 0, "bool: truncated at offset 1"),
    ("s", "02c3", 0, "str: need 2 byte(s) at offset 1, have 1"),
    ("s", "01ff", 0, "str: invalid UTF-8 at offset 0"),
    ("us", "0502c328", 0, "str: invalid UTF-8 at offset 1"),
    ("s", "03eda080", 0, "str: invalid UTF-8 at offset 0"),  # an encoded surrogate
    ("s", "ffffffffffffffffff01", 0, "str: need 18446744073709551615 byte(s) at offset 10, have 0"),
    ("y", "05abcd", 0, "bytes: need 5 byte(s) at offset 1, have 2"),
    ("y", "", 0, "bytes: truncated varint at offset 0"),
    ("S", "ffffffffffffffffff01", 0, "seq: count 18446744073709551615 exceeds the bytes left at 0"),
    ("S", "040000", 0, "seq: count 4 exceeds the bytes left at 0"),
    ("S", "0200", 0, "seq: count 2 exceeds the bytes left at 0"),
    ("S", "020080", 0, "str: truncated varint at offset 2"),
    ("S", "020001", 0, "str: need 1 byte(s) at offset 3, have 0"),
    ("S", "010180", 0, "str: invalid UTF-8 at offset 1"),
    ("u", "01", 2, "offset 2 is beyond the end of the 1-byte buffer"),
    ("", "", 1, "offset 1 is beyond the end of the 0-byte buffer"),
    ("u", "01", 2**100, f"offset {2**100} is beyond the end of the 1-byte buffer"),
]


@pytest.mark.parametrize(("fmt", "data", "pos", "message"), MALFORMED)
def test_malformed_input_raises_postcard_error(
    impl: tuple[Unpack, Pack], fmt: str, data: str, pos: int, message: str
) -> None:
    unpack_from, _ = impl
    with pytest.raises(PostcardError) as info:
        unpack_from(fmt, bytes.fromhex(data), pos)
    assert str(info.value) == message
    assert isinstance(info.value, DecodeError)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("u", b"\x01", -1), ValueError, "offset -1 is negative"),
        (("uZ", b"\x01"), ValueError, "unknown postcard format code 'Z'"),
        (("u", "01"), TypeError, "bytes-like buffer, got str"),
        (("u", [1]), TypeError, "bytes-like buffer, got list"),
        ((b"u", b"\x01"), TypeError, "format must be a str, got bytes"),
        (("u", b"\x01", 1.0), TypeError, "cannot be interpreted as an integer"),
    ],
)
def test_unpack_caller_errors(
    impl: tuple[Unpack, Pack], args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    unpack_from, _ = impl
    with pytest.raises(error, match=match):
        unpack_from(*args)


def test_malformed_bytes_win_over_a_later_unknown_code(impl: tuple[Unpack, Pack]) -> None:
    # Codes are processed in order: the first problem met is the one raised.
    unpack_from, _ = impl
    with pytest.raises(PostcardError):
        unpack_from("uZ", b"")


@pytest.mark.parametrize(
    ("fmt", "values", "error", "match"),
    [
        ("u", (-1,), ValueError, "out of range"),
        ("u", (2**64,), ValueError, "out of range"),
        ("w", (2**32,), ValueError, "out of range"),
        ("w", (-(2**70),), ValueError, "out of range"),
        ("u", (1.0,), TypeError, "needs an int, got float"),
        ("u", ("1",), TypeError, "needs an int, got str"),
        ("s", (b"x",), TypeError, "needs a str, got bytes"),
        ("s", (None,), TypeError, "needs a str, got NoneType"),
        ("s", ("\ud800",), UnicodeEncodeError, "surrogates not allowed"),
        ("S", ("abc",), TypeError, "not a str"),
        ("S", (3,), TypeError, "needs a sequence of str, got int"),
        ("S", (["a", 1],), TypeError, "item needs a str, got int"),
        ("S", ([b"a"],), TypeError, "item needs a str, got bytes"),
        ("?", (1,), TypeError, "needs a bool, got int"),
        ("?", (None,), TypeError, "needs a bool, got NoneType"),
        ("y", (3,), TypeError, "bytes-like object, got int"),
        ("y", ("ab",), TypeError, "bytes-like object, got str"),
        ("y", ([1, 2],), TypeError, "bytes-like object, got list"),
        ("uZ", (1, 2), ValueError, "unknown postcard format code 'Z'"),
        ("uu", (1,), TypeError, "takes 2 values, got 1"),
        ("", (1,), TypeError, "takes 0 values, got 1"),
    ],
)
def test_pack_rejects_bad_values(
    impl: tuple[Unpack, Pack],
    fmt: str,
    values: tuple[Any, ...],
    error: type[Exception],
    match: str,
) -> None:
    _, pack = impl
    with pytest.raises(error, match=match):
        pack(fmt, *values)


def test_pack_accepts_ints_bools_and_any_iterable_of_str(impl: tuple[Unpack, Pack]) -> None:
    _, pack = impl
    assert pack("uw", True, False) == b"\x01\x00"  # bool is an int, as in Python
    expected = b"\x02\x01a\x01b"
    assert pack("S", ["a", "b"]) == expected
    assert pack("S", ("a", "b")) == expected
    assert pack("S", (c for c in "ab")) == expected
    assert pack("S", dict.fromkeys("ab")) == expected
    assert pack("S", []) == b"\x00"


def _non_contiguous(data: bytes) -> memoryview:
    doubled = bytearray(len(data) * 2)
    doubled[::2] = data
    view = memoryview(doubled)[::2]
    assert not view.c_contiguous or len(data) < 2
    return view


BUFFERS: list[Callable[[bytes], Any]] = [
    bytes,
    bytearray,
    memoryview,
    lambda b: memoryview(b"\xee" + b + b"\xee")[1:-1],
    lambda b: array.array("B", b),
    _non_contiguous,
]


@pytest.mark.parametrize(
    "make", BUFFERS, ids=["bytes", "bytearray", "mv", "slice", "array", "strided"]
)
def test_any_buffer(impl: tuple[Unpack, Pack], make: Callable[[bytes], Any]) -> None:
    unpack_from, pack = impl
    values = (300, "ab", b"\x01\x02", ("x",))
    data = pack("usyS", *values)
    result = unpack_from("usyS", make(data))
    assert result == (*values, len(data))
    assert type(result[2]) is bytes
    assert pack("y", make(b"\x01\x02\x03")) == b"\x03\x01\x02\x03"


def test_wide_item_buffers_are_read_as_raw_bytes(impl: tuple[Unpack, Pack]) -> None:
    unpack_from, pack = impl
    words = array.array("H", [0x0102, 0x0304])
    raw = words.tobytes()
    assert unpack_from("u", words) == (raw[0], 1)
    assert pack("y", words) == bytes([4]) + raw


def test_errors_release_the_buffer(impl: tuple[Unpack, Pack]) -> None:
    # A bytearray cannot be resized while exported; every path must release it.
    unpack_from, pack = impl
    buf = bytearray(b"\x05\xff")
    with pytest.raises(PostcardError):
        unpack_from("uu", buf)
    with pytest.raises(PostcardError):
        unpack_from("u", buf, 5)
    with pytest.raises(ValueError, match="format code"):
        unpack_from("uQ", buf)
    assert unpack_from("u", buf) == (5, 1)
    with pytest.raises(TypeError):
        pack("yu", buf, "x")
    buf.extend(b"more")
    assert len(buf) == 6


def test_keyword_arguments(impl: tuple[Unpack, Pack]) -> None:
    unpack_from, pack = impl
    with pytest.raises(TypeError):
        pack(fmt="")  # positional only, like struct.pack
    assert unpack_from(fmt="u", buf=b"\x01\x02", pos=1) == (2, 2)
    assert unpack_from("u", buf=b"\x01") == (1, 1)
    with pytest.raises(TypeError):
        unpack_from("u", b"\x01", offset=0)
    with pytest.raises(TypeError):
        unpack_from("u", b"\x01", fmt="u")
    with pytest.raises(TypeError):
        unpack_from("u")


# ---------------------------------------------------------------------------------------
# Parity: the C module against its pure-Python twin

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "u": st.integers(0, U64_MAX) | st.sampled_from([0, 127, 128, 2**63, U64_MAX]),
    "w": st.integers(0, U32_MAX) | st.sampled_from([0, 127, 128, U32_MAX]),
    "?": st.booleans(),
    "s": st.text(),
    "y": st.binary(),
    "S": st.lists(st.text(), max_size=4).map(tuple),
}


@st.composite
def records(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    """A random format and values that fit it."""
    fmt = draw(st.text(alphabet=CODES, max_size=8))
    return fmt, tuple(draw(VALUES[code]) for code in fmt)


@requires_c
@given(records(), st.binary(max_size=4), st.binary(max_size=4))
def test_parity_on_valid_records(
    record: tuple[str, tuple[Any, ...]], prefix: bytes, suffix: bytes
) -> None:
    assert _pcstruct_c is not None
    fmt, values = record
    data = _pcstruct_c.pack(fmt, *values)
    assert data == _pcstruct.py_pack(fmt, *values)
    assert _pcstruct_c.unpack_from(fmt, data) == (*values, len(data))
    assert _pcstruct.py_unpack_from(fmt, data) == (*values, len(data))
    framed = prefix + data + suffix
    end = len(prefix) + len(data)
    for make in BUFFERS:
        assert _pcstruct_c.unpack_from(fmt, make(framed), len(prefix)) == (*values, end)
        assert _pcstruct.py_unpack_from(fmt, make(framed), len(prefix)) == (*values, end)


@requires_c
@given(records())
def test_every_strict_prefix_of_a_record_is_truncated(record: tuple[str, tuple[Any, ...]]) -> None:
    # A postcard record is self-delimiting: no strict prefix decodes.
    fmt, values = record
    data = _pcstruct.py_pack(fmt, *values)
    for cut in range(len(data)):
        kind, _ = assert_same(fmt, data[:cut])
        assert kind is PostcardError


@requires_c
@given(records(), st.data())
def test_parity_on_mutated_records(
    record: tuple[str, tuple[Any, ...]], data: st.DataObject
) -> None:
    fmt, values = record
    raw = bytearray(_pcstruct.py_pack(fmt, *values))
    if raw:
        where = data.draw(st.integers(0, len(raw) - 1))
        raw[where] = data.draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xC3, 0xFF]))
    kind, _ = assert_same(fmt, bytes(raw))
    assert kind in ("ok", PostcardError)


@requires_c
@given(
    st.text(alphabet=CODES, max_size=8),
    st.binary(max_size=40),
    st.integers(0, 44),
    st.sampled_from(BUFFERS),
)
def test_parity_on_arbitrary_bytes(
    fmt: str, data: bytes, pos: int, make: Callable[[bytes], Any]
) -> None:
    kind, _ = assert_same(fmt, make(data), pos)
    # Malformed input raises PostcardError, and nothing else.
    assert kind in ("ok", PostcardError)


ANY_VALUE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.text(max_size=4) | st.integers(0, 9), max_size=3),
    st.lists(st.text(max_size=4), max_size=3).map(tuple),
    st.binary(max_size=8).map(bytearray),
)


@requires_c
@given(st.text(alphabet=CODES + "xU\n", max_size=6), st.lists(ANY_VALUE, max_size=7))
def test_parity_on_arbitrary_pack_arguments(fmt: str, values: list[Any]) -> None:
    assert_same(fmt, *values, fn="pack")


@requires_c
@given(st.sampled_from([None, 1, 1.5, "u", b"u", bytearray(b"u")]), ANY_VALUE)
def test_parity_on_bad_arguments(fmt: Any, buf: Any) -> None:
    assert_same(fmt, buf)
    assert_same(fmt, buf, fn="pack")


@requires_c
@pytest.mark.parametrize(("fmt", "data", "pos", "message"), MALFORMED)
def test_parity_on_the_malformed_table(fmt: str, data: str, pos: int, message: str) -> None:
    assert assert_same(fmt, bytes.fromhex(data), pos) == (PostcardError, message)


@requires_c
def test_no_reference_leaks_on_any_path() -> None:
    # Run every success and error path many times; a leaked tuple, str, bytes or
    # buffer export per call would grow traced memory by megabytes.
    assert _pcstruct_c is not None
    unpack_from, pack = _pcstruct_c.unpack_from, _pcstruct_c.pack
    good = pack("uw?syS", 2**63, 7, True, "é" * 20, b"x" * 40, ("a", "é", "x" * 30))
    ba = bytearray(good)
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (unpack_from, ("uw?syS", good)),
        (unpack_from, ("uw?syS", ba)),
        (unpack_from, ("uw?syS", _non_contiguous(good))),
        (pack, ("uw?syS", 2**63, 7, True, "é" * 20, b"x" * 40, ("a", "é", "x" * 30))),
        (pack, ("SyS", iter(["a"] * 30), bytearray(300), ["b" * 300])),
    ]
    calls += [(unpack_from, (f, bytes.fromhex(d), p)) for f, d, p, _ in MALFORMED]
    calls += [
        (unpack_from, ("uS", bytes.fromhex("05030161016201ff"))),  # bad item after good ones
        (unpack_from, ("uZ", good)),
        (unpack_from, ("u", good, -1)),
        (unpack_from, ("u", "x")),
        (pack, ("uS", 1, ["a", "b", 3])),
        (pack, ("uS", 1, ("a" for _ in range(3)))),
        (pack, ("sy", "x" * 300, 5)),
        (pack, ("y", _non_contiguous(b"abcdef"))),
        (pack, ("uu", 2**64, 1)),
        (pack, ("u?", 1, 0)),
        (pack, ("uZ", 1, 1)),
        (pack, ("s", "\ud800")),
    ]

    def run(rounds: int) -> None:
        for _ in range(rounds):
            for fn, args in calls:
                with contextlib.suppress(PostcardError, ValueError, TypeError):
                    fn(*args)

    run(50)
    tracemalloc.start()
    try:
        run(10)
        before = tracemalloc.get_traced_memory()[0]
        run(2000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"traced memory grew by {grown} bytes"


@requires_c
def test_reference_counts_of_arguments_are_unchanged() -> None:
    assert _pcstruct_c is not None
    text, blob, items = "x" * 10_000, b"y" * 10_000, ["z" * 100]
    buf = bytearray(_pcstruct.py_pack("sy", text, blob))
    counts = [sys.getrefcount(o) for o in (text, blob, items, buf)]
    for _ in range(100):
        _pcstruct_c.pack("syS", text, blob, items)
        with pytest.raises(TypeError):
            _pcstruct_c.pack("syS?", text, blob, items, None)
        _pcstruct_c.unpack_from("sy", buf)
        with pytest.raises(PostcardError):
            _pcstruct_c.unpack_from("syu", buf)
    assert [sys.getrefcount(o) for o in (text, blob, items, buf)] == counts


# ---------------------------------------------------------------------------------------
# Which implementation is active


def test_implementation_is_the_c_module_when_it_is_built() -> None:
    if _pcstruct_c is None:
        assert _pcstruct.IMPLEMENTATION == "python"
        assert _pcstruct.unpack_from is _pcstruct.py_unpack_from
    else:
        assert _pcstruct.IMPLEMENTATION == "c"
        assert _pcstruct.unpack_from is _pcstruct_c.unpack_from
        assert _pcstruct.pack is _pcstruct_c.pack


@requires_c
def test_built_extension_is_not_older_than_its_source() -> None:
    # An editable install compiles once: a later edit of the C file is not picked up
    # until the package is reinstalled, and the parity tests would test a stale binary.
    assert _pcstruct_c is not None
    built = Path(_pcstruct_c.__file__)
    source = built.with_name("_pcstruct_c.c")
    if not source.exists():
        pytest.skip("installed from a wheel: no C source beside the extension to compare")
    assert built.stat().st_mtime >= source.stat().st_mtime, (
        f"{source} changed after {built.name} was built: "
        "rebuild it with `.venv/bin/pip install -e '.[dev]'` (or `make venv`)"
    )


@pytest.mark.skipif(
    os.environ.get("NET_CORE_REQUIRE_C") != "1",
    reason="NET_CORE_REQUIRE_C=1 is not set: the pure-Python fallback is allowed here",
)
def test_c_is_active_when_required() -> None:
    assert _pcstruct.IMPLEMENTATION == "c", NOT_BUILT


def test_python_fallback_when_the_c_module_is_missing() -> None:
    script = (
        "import sys; sys.modules['net_core._pcstruct_c'] = None\n"
        "from net_core.cortex import _pcstruct as p\n"
        "assert p.IMPLEMENTATION == 'python', p.IMPLEMENTATION\n"
        "assert p.unpack_from('us', p.pack('us', 300, 'é')) == (300, 'é', 5)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


@requires_c
def test_error_class_is_per_module_and_must_be_set() -> None:
    # A second instance of the extension has its own state: unusable until configured.
    assert _pcstruct_c is not None
    spec = importlib.util.spec_from_file_location(
        "net_core._pcstruct_c", Path(_pcstruct_c.__file__)
    )
    assert spec is not None
    assert spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh is not _pcstruct_c
    with pytest.raises(RuntimeError, match="set_error_class"):
        fresh.unpack_from("u", b"\x01")
    with pytest.raises(TypeError):
        fresh.set_error_class(42)
    with pytest.raises(TypeError):
        fresh.set_error_class(int)

    class Other(Exception):
        pass

    fresh.set_error_class(Other)
    with pytest.raises(Other):
        fresh.unpack_from("u", b"")
    assert fresh.pack("u", 1) == b"\x01"
    with pytest.raises(PostcardError):
        _pcstruct_c.unpack_from("u", b"")


# -- make_record ------------------------------------------------------------------------


def _record_makers() -> list[Callable[..., Any]]:
    makers: list[Callable[..., Any]] = [_pcstruct.py_make_record]
    if _pcstruct_c is not None:
        makers.append(_pcstruct_c.make_record)
    return makers


@pytest.mark.parametrize("make", _record_makers())
def test_make_record_builds_the_named_tuple(make: Callable[..., Any]) -> None:
    task = make(Task, 7, "title", TaskStatus.PENDING, 1, 2)
    assert type(task) is Task
    assert task == Task(7, "title", TaskStatus.PENDING, 1, 2)
    assert task.title == "title"
    assert task._replace(id=8).id == 8
    memory = make(Memory, 1, "c", ("a", "b"), "s", 3, 4, True)
    assert memory == Memory(1, "c", ("a", "b"), "s", 3, 4, True)
    assert make(tuple, 1, 2) == (1, 2)
    assert type(make(tuple)) is tuple
    for bad in (int, list, "Task", None):
        with pytest.raises(TypeError, match="tuple subclass"):
            make(bad, 1)


@requires_c
def test_make_record_keeps_reference_counts_balanced() -> None:
    title = "a title long enough not to be interned " * 2
    before = sys.getrefcount(title)
    records = [_pcstruct_c.make_record(Task, i, title, 0, 1, 2) for i in range(100)]
    assert sys.getrefcount(title) == before + 100
    del records
    assert sys.getrefcount(title) == before
