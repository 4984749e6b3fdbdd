"""Tests of the EventMeta header, its checksums and sealing/opening of payloads."""

from __future__ import annotations

import contextlib
import struct

import attrs
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from net_core.cortex import (
    DISPATCH_TASK_CREATED,
    EVENT_META_SIZE,
    FLAG_CAUSAL,
    FLAG_CONTINUITY_PROOF,
    ChecksumMismatch,
    EventMeta,
    EventMetaError,
    checksum_v1,
    checksum_v2,
    is_application_dispatch,
    open_event,
    seal,
)
from net_core.errors import CortexError, DecodeError

U64 = st.integers(0, 2**64 - 1)
U8 = st.integers(0, 255)
METAS = st.builds(EventMeta, U8, U8, U64, U64, st.integers(0, 2**32 - 1))

# A real Tasks CREATED payload written by ai2070-net 0.18 (origin 0xABCDEF0123, app_seq
# 0, tail {1, "Héllo", 1000}).
REFERENCE_CREATED = bytes.fromhex(
    "010000002301efcdab0000000000000000000000de885ad0010648c3a96c6c6fe807"
)


def test_header_layout_is_little_endian_with_zero_pad() -> None:
    meta = EventMeta(0x81, FLAG_CAUSAL | FLAG_CONTINUITY_PROOF, 0x0102030405060708, 9, 0xAABBCCDD)
    raw = meta.encode()
    assert len(raw) == EVENT_META_SIZE == 24
    assert raw == bytes.fromhex("8103000008070605040302010900000000000000ddccbbaa")


def test_decode_ignores_pad_and_trailing_bytes() -> None:
    raw = bytearray(EventMeta(1, 0, 2, 3, 4).encode())
    raw[2:4] = b"\xff\xee"
    assert EventMeta.decode(bytes(raw) + b"tail") == EventMeta(1, 0, 2, 3, 4)


@pytest.mark.parametrize("size", [0, 1, 20, 23])
def test_decode_short_buffer_raises(size: int) -> None:
    with pytest.raises(EventMetaError) as info:
        EventMeta.decode(b"\x00" * size)
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, CortexError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dispatch": 256},
        {"flags": -1},
        {"origin_hash": 2**64},
        {"seq_or_ts": -1},
        {"checksum": 2**32},
    ],
)
def test_out_of_range_fields_rejected(kwargs: dict[str, int]) -> None:
    base = {"dispatch": 0, "flags": 0, "origin_hash": 0, "seq_or_ts": 0, "checksum": 0}
    with pytest.raises(ValueError, match="must be in"):
        EventMeta(**(base | kwargs))


def test_checksums_on_reference_payload() -> None:
    meta, tail, version = open_event(REFERENCE_CREATED)
    assert version == 2
    assert meta == EventMeta(DISPATCH_TASK_CREATED, 0, 0xABCDEF0123, 0, 0xD05A88DE)
    assert tail == bytes.fromhex("010648c3a96c6c6fe807")
    assert checksum_v2(meta, tail) == meta.checksum
    assert checksum_v1(tail) != meta.checksum
    assert seal(DISPATCH_TASK_CREATED, 0xABCDEF0123, 0, tail) == REFERENCE_CREATED


def test_checksum_definitions() -> None:
    tail = b"some tail"
    assert checksum_v1(tail) == xxhash.xxh3_64_intdigest(tail) & 0xFFFFFFFF
    meta = EventMeta(5, 1, 6, 7, checksum=0x12345678)
    zeroed = struct.pack("<BBxxQQI", 5, 1, 6, 7, 0)
    assert checksum_v2(meta, tail) == xxhash.xxh3_64_intdigest(zeroed + tail) & 0xFFFFFFFF


def test_open_accepts_legacy_v1_checksum() -> None:
    tail = b"\x01\x01x\x05"
    meta = EventMeta(DISPATCH_TASK_CREATED, 0, 42, 3, checksum_v1(tail))
    got_meta, got_tail, version = open_event(meta.encode() + tail)
    assert (got_meta, got_tail, version) == (meta, tail, 1)


def test_open_rejects_bad_checksum() -> None:
    payload = bytearray(seal(DISPATCH_TASK_CREATED, 1, 2, b"abc"))
    payload[-1] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        open_event(bytes(payload))


def test_dispatch_ranges() -> None:
    assert not is_application_dispatch(0x00)
    assert not is_application_dispatch(0x7F)
    assert is_application_dispatch(0x80)
    assert is_application_dispatch(0xFF)


@given(METAS)
def test_meta_round_trip(meta: EventMeta) -> None:
    assert EventMeta.decode(meta.encode()) == meta


@given(U8, U8, U64, U64, st.binary(max_size=200))
def test_seal_open_round_trip(
    dispatch: int, flags: int, origin: int, seq: int, tail: bytes
) -> None:
    meta, got_tail, version = open_event(seal(dispatch, origin, seq, tail, flags=flags))
    assert version == 2
    assert got_tail == tail
    assert attrs.evolve(meta, checksum=0) == EventMeta(dispatch, flags, origin, seq)


@given(st.binary(max_size=64))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    try:
        meta = EventMeta.decode(data)
    except EventMetaError:
        assert len(data) < EVENT_META_SIZE
    else:
        assert meta.encode()[4:] == data[4:24]


@given(st.binary(max_size=64))
def test_open_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(EventMetaError):
        open_event(data)
