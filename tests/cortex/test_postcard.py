"""Tests of the minimal postcard codec: golden bytes, limits, round trips and fuzzing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.cortex import PostcardError, Reader, Writer
from net_core.errors import CortexError, DecodeError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (1000, "e807"),
        (2**40, "808080808020"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
)
def test_u64_golden(value: int, encoded: str) -> None:
    w = Writer()
    w.u64(value)
    assert w.getvalue().hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert r.u64() == value
    r.finish()


def test_sheet_example_tail() -> None:
    w = Writer()
    w.u64(300)
    w.str("x")
    w.u64(2**40)
    assert w.getvalue() == bytes.fromhex("ac0201788080808080" + "20")


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("u16", "808004"),  # 0x10000 > u16
        ("u16", "80808000"),  # 4 bytes: over-long for u16
        ("u32", "ffffffff1f"),  # overflows u32
        ("u32", "808080808000"),  # 6 bytes: over-long for u32
        ("u64", "ffffffffffffffffff02"),  # overflows u64
        ("u64", "8080808080808080808000"),  # 11 bytes
        ("u64", "80"),  # truncated
        ("u64", ""),
        ("u8", ""),
        ("bool", "02"),
        ("bool", ""),
        ("str", "02c3"),  # truncated bytes
        ("str", "01ff"),  # invalid UTF-8
        ("bytes", "05abcd"),
    ],
)
def test_malformed_inputs_raise_postcard_error(method: str, data: str) -> None:
    r = Reader(bytes.fromhex(data))
    with pytest.raises(PostcardError) as info:
        getattr(r, method)()
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, CortexError)
    assert r.position == 0


def test_option_and_seq_and_variant() -> None:
    w = Writer()
    w.option(None, w.u64)
    w.option(7, w.u64)
    w.seq(["a", "bc"], w.str)
    w.variant(3)
    w.bool(True)
    w.u8(0xFE)
    w.i64(-3)
    data = w.getvalue()
    assert data == bytes.fromhex("00 0107 02 0161 026263 03 01 fe 05")
    r = Reader(data)
    assert r.option(r.u64) is None
    assert r.option(r.u64) == 7
    assert r.seq(r.str) == ["a", "bc"]
    assert r.variant() == 3
    assert r.bool() is True
    assert r.u8() == 0xFE
    assert r.i64() == -3
    assert r.remaining == 0
    r.finish()


def test_bad_option_tag_and_huge_seq_count() -> None:
    with pytest.raises(PostcardError, match="option"):
        Reader(b"\x02").option(Reader(b"").u8)
    with pytest.raises(PostcardError, match="count"):
        Reader(bytes.fromhex("ffffffffffffffffff01")).seq(Reader(b"").u8)


def test_finish_rejects_trailing_bytes() -> None:
    r = Reader(b"\x01\x02")
    r.u64()
    assert r.position == 1
    with pytest.raises(PostcardError, match="trailing"):
        r.finish()


@pytest.mark.parametrize(
    ("method", "value"),
    [("u8", 256), ("u16", 2**16), ("u32", -1), ("u64", 2**64), ("i64", 2**63), ("variant", 2**32)],
)
def test_writer_range_checks(method: str, value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        getattr(Writer(), method)(value)


@given(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**16 - 1))
def test_int_round_trip(u: int, i: int, small: int) -> None:
    w = Writer()
    w.u64(u)
    w.i64(i)
    w.u16(small)
    w.u32(small)
    r = Reader(w.getvalue())
    assert (r.u64(), r.i64(), r.u16(), r.u32()) == (u, i, small, small)
    r.finish()


@given(st.text(), st.binary(), st.lists(st.text()), st.none() | st.integers(0, 2**64 - 1))
def test_value_round_trip(s: str, b: bytes, items: list[str], opt: int | None) -> None:
    w = Writer()
    w.str(s)
    w.bytes(b)
    w.seq(items, w.str)
    w.option(opt, w.u64)
    r = Reader(w.getvalue())
    assert r.str() == s
    assert r.bytes() == b
    assert r.seq(r.str) == items
    assert r.option(r.u64) == opt
    r.finish()


def _readers(r: Reader) -> dict[str, Callable[[], Any]]:
    return {
        "u8": r.u8,
        "u16": r.u16,
        "u32": r.u32,
        "u64": r.u64,
        "i64": r.i64,
        "bool": r.bool,
        "bytes": r.bytes,
        "str": r.str,
        "variant": r.variant,
        "seq_str": lambda: r.seq(r.str),
        "opt_u64": lambda: r.option(r.u64),
    }


@given(st.binary(max_size=40), st.lists(st.sampled_from(sorted(_readers(Reader(b"")))), max_size=8))
def test_arbitrary_bytes_only_raise_postcard_error(data: bytes, calls: list[str]) -> None:
    r = Reader(data)
    readers = _readers(r)
    for name in calls:
        before = r.position
        try:
            readers[name]()
        except PostcardError:
            assert r.position == before
            return
        assert before <= r.position <= len(data)
