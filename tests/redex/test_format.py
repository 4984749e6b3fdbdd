"""Tests of the pure RedEX format codecs: golden bytes, edge cases, fuzzing, oracle."""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from net_core.errors import DecodeError, RedexError
from net_core.redex import _format as fmt
from net_core.redex._format import (
    CHECKSUM_MASK,
    FLAG_INLINE,
    FLAGS_MASK,
    IDX_RECORD_SIZE,
    MAX_GENERATION,
    ChannelNameError,
    IdxRecord,
    IdxRecordError,
    Manifest,
    ManifestError,
    RedexFormatError,
    channel_path_segments,
    decode_records,
    decode_timestamps,
    encode_records,
    encode_timestamps,
    entry_checksum,
    generation_dir_name,
    heap_record,
    inline_record,
    parse_generation_dir_name,
    validate_channel_name,
)

reference: ModuleType | None
try:
    import net as reference
except ImportError:
    reference = None

needs_reference = pytest.mark.skipif(reference is None, reason="ai2070-net not installed")

MANIFEST_GEN1 = bytes.fromhex("5245444d01010000000000003ee1c150")
MANIFEST_GEN2 = bytes.fromhex("5245444d01020000000000007e225a93")

# Appends "hello", "", "12345678", then batch ["xy", "zzz"], as written by the reference.
GOLDEN_PAYLOADS = [b"hello", b"", b"12345678", b"xy", b"zzz"]
GOLDEN_OFFSETS = [0, 5, 5, 13, 15]
GOLDEN_CHECKSUMS = [0x0C62DCFD, 0x08D394C2, 0x0D9E2EF6, 0x05976886, 0x0CB289BC]
GOLDEN_IDX = bytes.fromhex(
    "00000000000000000000000005000000fddc620c"
    "01000000000000000500000000000000c294d308"
    "02000000000000000500000008000000f62e9e0d"
    "03000000000000000d0000000200000086689705"
    "04000000000000000f00000003000000bc89b20c"
)
GOLDEN_DAT = b"hello12345678xyzzz"

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
flag_bits = st.integers(0, 15).map(lambda nibble: nibble << 28)
idx_records = st.builds(
    IdxRecord,
    seq=u64,
    offset=u32,
    length=u32,
    flags=flag_bits,
    checksum=st.integers(0, CHECKSUM_MASK),
)


# -- golden bytes --------------------------------------------------------------------------


def test_manifest_golden_bytes() -> None:
    assert Manifest(1).encode() == MANIFEST_GEN1
    assert Manifest(2).encode() == MANIFEST_GEN2
    assert Manifest.decode(MANIFEST_GEN1) == Manifest(1)
    assert Manifest.decode(MANIFEST_GEN2) == Manifest(2)


def test_manifest_longer_buffer_reads_first_16_bytes() -> None:
    assert Manifest.decode(MANIFEST_GEN1 + b"\xff") == Manifest(1)


def test_idx_golden_dump() -> None:
    records = [
        heap_record(seq, offset, len(payload), payload)
        for seq, (offset, payload) in enumerate(zip(GOLDEN_OFFSETS, GOLDEN_PAYLOADS, strict=True))
    ]
    assert [r.checksum for r in records] == GOLDEN_CHECKSUMS
    assert encode_records(records) == GOLDEN_IDX
    decoded = decode_records(GOLDEN_IDX)
    assert decoded == records
    assert [(r.seq, r.offset, r.length, r.flags) for r in decoded] == [
        (0, 0, 5, 0),
        (1, 5, 0, 0),
        (2, 5, 8, 0),
        (3, 13, 2, 0),
        (4, 15, 3, 0),
    ]
    assert b"".join(GOLDEN_DAT[r.offset : r.payload_end] for r in decoded) == GOLDEN_DAT


def test_single_record_codec_matches_bulk() -> None:
    for i, rec in enumerate(decode_records(GOLDEN_IDX)):
        chunk = GOLDEN_IDX[i * IDX_RECORD_SIZE : (i + 1) * IDX_RECORD_SIZE]
        assert IdxRecord.decode(chunk) == rec
        assert rec.encode() == chunk


def test_entry_checksum_is_low_28_bits_of_xxh3() -> None:
    assert entry_checksum(b"hello") == 0x0C62DCFD
    assert entry_checksum(memoryview(b"hello")) == 0x0C62DCFD
    assert entry_checksum(b"") == 0x08D394C2


def test_inline_record_stores_payload_verbatim() -> None:
    rec = inline_record(9, b"ABCDEFGH")
    raw = rec.encode()
    assert raw[8:16] == b"ABCDEFGH"
    assert rec.is_inline
    assert rec.inline_payload == b"ABCDEFGH"
    assert rec.checksum == entry_checksum(b"ABCDEFGH")
    (word,) = struct.unpack_from("<I", raw, 16)
    assert word == FLAG_INLINE | rec.checksum
    assert IdxRecord.decode(raw) == rec


def test_record_constructors_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="exactly 8 bytes"):
        inline_record(0, b"1234567")
    with pytest.raises(ValueError, match="does not match"):
        heap_record(0, 0, 3, b"ab")
    with pytest.raises(ValueError, match="not inline"):
        _ = heap_record(0, 0, 2, b"ab").inline_payload


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (IdxRecord(-1, 0, 0), "seq"),
        (IdxRecord(2**64, 0, 0), "seq"),
        (IdxRecord(0, 2**32, 0), "offset"),
        (IdxRecord(0, 0, -1), "length"),
        (IdxRecord(0, 0, 0, flags=0x1), "flags"),
        (IdxRecord(0, 0, 0, checksum=0x1000_0000), "checksum"),
    ],
)
def test_encode_refuses_fields_that_do_not_fit(record: IdxRecord, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        record.encode()
    with pytest.raises(ValueError, match=match):
        encode_records([record])


def test_decode_records_rejects_partial_record() -> None:
    with pytest.raises(IdxRecordError, match="21 is not a multiple of 20"):
        decode_records(GOLDEN_IDX[:21])
    with pytest.raises(IdxRecordError, match="must be 20 bytes, got 19"):
        IdxRecord.decode(GOLDEN_IDX[:19])
    assert decode_records(b"") == []


def test_unknown_flag_bits_survive_a_round_trip() -> None:
    rec = IdxRecord(1, 2, 3, flags=0x7000_0000, checksum=5)
    assert not rec.is_inline
    assert IdxRecord.decode(rec.encode()) == rec


# -- manifest rejections -------------------------------------------------------------------


def _with_checksum(body: bytes) -> bytes:
    return body + struct.pack("<I", xxhash.xxh3_64_intdigest(body) & 0xFFFF_FFFF)


def _manifest(
    magic: bytes = b"REDM", version: int = 1, gen: int = 1, reserved: bytes = b"\0\0\0"
) -> bytes:
    """A manifest with any field values and a correct checksum."""
    return _with_checksum(magic + bytes([version]) + struct.pack("<I", gen) + reserved)


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (MANIFEST_GEN1[:15], "manifest too short: 15 bytes, need 16"),
        (b"", "manifest too short: 0 bytes, need 16"),
        (_manifest(magic=b"REDX"), "manifest has bad magic b'REDX', expected b'REDM'"),
        (_manifest(version=2), "manifest has unsupported version 2, expected 1"),
        (_manifest(reserved=b"\0\x01\0"), "manifest reserved bytes are not zero: 000100"),
        (
            MANIFEST_GEN1[:12] + b"\0\0\0\0",
            "manifest checksum mismatch: stored 0x00000000, computed 0x50c1e13e",
        ),
        (_manifest(gen=0), "manifest names generation 0, which is reserved as invalid"),
    ],
)
def test_manifest_rejections_have_distinct_messages(buf: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.decode(buf)
    assert str(info.value) == message
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, RedexError)


def test_manifest_generation_bounds() -> None:
    assert Manifest.decode(Manifest(MAX_GENERATION).encode()).generation == MAX_GENERATION
    for bad in (0, -1, MAX_GENERATION + 1):
        with pytest.raises(ValueError, match="generation must be in"):
            Manifest(bad)


# -- timestamps ----------------------------------------------------------------------------


def test_timestamps_codec() -> None:
    raw = encode_timestamps([1, 2**64 - 1])
    assert raw == struct.pack("<QQ", 1, 2**64 - 1)
    assert decode_timestamps(raw, 2) == [1, 2**64 - 1]
    assert decode_timestamps(raw, 1) == [1]
    assert decode_timestamps(raw + b"\x01\x02\x03", 2) == [1, 2**64 - 1]
    assert decode_timestamps(raw, 3) is None
    assert decode_timestamps(raw[:15], 2) is None
    assert decode_timestamps(b"", 0) == []
    with pytest.raises(ValueError, match="u64"):
        encode_timestamps([-1])
    with pytest.raises(ValueError, match="count"):
        decode_timestamps(raw, -1)


# -- generation directories ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("v0000000001", 1),
        ("v0000000042", 42),
        ("v4294967295", MAX_GENERATION),
        ("v4294967296", None),
        ("v9999999999", None),
        ("v0000000000", None),
        ("v1", None),
        ("v00000000001", None),
        ("V0000000001", None),
        ("x0000000001", None),
        ("v000000000a", None),
        ("v-000000001", None),
        ("v+000000001", None),
        ("v 000000001", None),
        ("v00000000\u0663\u0663", None),
        ("", None),
    ],
)
def test_parse_generation_dir_name(name: str, expected: int | None) -> None:
    assert parse_generation_dir_name(name) == expected


def test_generation_dir_name() -> None:
    assert generation_dir_name(1) == "v0000000001"
    assert generation_dir_name(MAX_GENERATION) == "v4294967295"
    for bad in (0, MAX_GENERATION + 1):
        with pytest.raises(ValueError, match="generation must be in"):
            generation_dir_name(bad)


# -- channel names -------------------------------------------------------------------------

# Texts measured against ai2070-net 0.18 (the Python binding raises RedexError with
# exactly these messages, no "open_file:" prefix).
BAD_CHANNEL_NAMES = [
    ("", "channel name is empty"),
    ("x" * 256, "channel name too long (256 > 255)"),
    ("\u00e9" * 128, "channel name too long (256 > 255)"),
    (" " * 300, "channel name too long (300 > 255)"),
    ("/a", "invalid channel name format: must not start or end with '/'"),
    ("a/", "invalid channel name format: must not start or end with '/'"),
    ("/", "invalid channel name format: must not start or end with '/'"),
    ("//", "invalid channel name format: must not start or end with '/'"),
    ("/a b", "invalid channel name format: must not start or end with '/'"),
    ("../", "invalid channel name format: must not start or end with '/'"),
    ("a//b", "invalid channel name format: must not contain '//'"),
    ("a b//c", "invalid channel name format: must not contain '//'"),
    ("a//..", "invalid channel name format: must not contain '//'"),
    ("a b", "invalid character ' ' in channel name"),
    ("a:b c", "invalid character ':' in channel name"),
    ("../a b", "invalid character ' ' in channel name"),
    ("\u00e9", "invalid character '\u00e9' in channel name"),
    ("a\x00", "invalid character '\x00' in channel name"),
    ("a\\b", "invalid character '\\' in channel name"),
    (".", 'invalid channel name format: segment "." is reserved'),
    ("..", 'invalid channel name format: segment ".." is reserved'),
    ("a/./b", 'invalid channel name format: segment "." is reserved'),
    ("a/../b", 'invalid channel name format: segment ".." is reserved'),
    ("a/.", 'invalid channel name format: segment "." is reserved'),
]
GOOD_CHANNEL_NAMES = ["a", "a/b", "x" * 255, "a.b", "-_.", "...", "a/.../b", "A-Z_0.9", ".a/b."]


@pytest.mark.parametrize(("name", "message"), BAD_CHANNEL_NAMES)
def test_bad_channel_names(name: str, message: str) -> None:
    with pytest.raises(ChannelNameError) as info:
        validate_channel_name(name)
    assert str(info.value) == message


@pytest.mark.parametrize("name", GOOD_CHANNEL_NAMES)
def test_good_channel_names(name: str) -> None:
    validate_channel_name(name)
    assert "/".join(channel_path_segments(name)) == name


def test_channel_path_segments() -> None:
    assert channel_path_segments("cortex/tasks") == ["cortex", "tasks"]
    with pytest.raises(ChannelNameError):
        channel_path_segments("a//b")


def test_lone_surrogate_is_an_invalid_character() -> None:
    with pytest.raises(ChannelNameError, match="invalid character"):
        validate_channel_name("a\ud800")


# -- hypothesis: round trips ---------------------------------------------------------------


@given(idx_records)
def test_idx_record_round_trip(rec: IdxRecord) -> None:
    raw = rec.encode()
    assert len(raw) == IDX_RECORD_SIZE
    assert IdxRecord.decode(raw) == rec
    assert rec.flags & ~FLAGS_MASK == 0


@given(st.lists(idx_records, max_size=20))
def test_idx_records_bulk_round_trip(records: list[IdxRecord]) -> None:
    raw = encode_records(records)
    assert len(raw) == IDX_RECORD_SIZE * len(records)
    assert decode_records(raw) == records
    assert decode_records(bytearray(raw)) == records
    assert decode_records(memoryview(raw)) == records


@given(st.integers(1, MAX_GENERATION))
def test_manifest_round_trip(generation: int) -> None:
    raw = Manifest(generation).encode()
    assert len(raw) == fmt.MANIFEST_SIZE
    assert Manifest.decode(raw).generation == generation
    name = generation_dir_name(generation)
    assert parse_generation_dir_name(name) == generation


@given(st.lists(u64, max_size=50))
def test_timestamps_round_trip(values: list[int]) -> None:
    raw = encode_timestamps(values)
    assert decode_timestamps(raw, len(values)) == values


@given(st.integers(0, 15), st.integers(1, 255))
def test_manifest_any_changed_byte_is_rejected(position: int, delta: int) -> None:
    raw = bytearray(MANIFEST_GEN1)
    raw[position] = (raw[position] + delta) % 256
    with pytest.raises(ManifestError):
        Manifest.decode(bytes(raw))


@given(inline=st.binary(min_size=8, max_size=8), seq=u64)
def test_inline_record_round_trip(inline: bytes, seq: int) -> None:
    rec = IdxRecord.decode(inline_record(seq, inline).encode())
    assert rec.is_inline
    assert rec.inline_payload == inline
    assert rec.checksum == entry_checksum(inline)


# -- hypothesis: any input -> value or DecodeError -----------------------------------------


@given(st.binary(max_size=200))
def test_decode_records_any_bytes(buf: bytes) -> None:
    try:
        records = decode_records(buf)
    except IdxRecordError:
        assert len(buf) % IDX_RECORD_SIZE
    else:
        assert len(records) * IDX_RECORD_SIZE == len(buf)
        assert encode_records(records) == buf


@given(st.binary(max_size=40))
def test_idx_record_decode_any_bytes(buf: bytes) -> None:
    try:
        rec = IdxRecord.decode(buf)
    except IdxRecordError:
        assert len(buf) != IDX_RECORD_SIZE
    else:
        assert rec.encode() == buf


# Random 12-byte bodies with a correct checksum reach the field checks too.
@given(st.one_of(st.binary(max_size=40), st.binary(min_size=12, max_size=12).map(_with_checksum)))
def test_manifest_decode_any_bytes(buf: bytes) -> None:
    try:
        manifest = Manifest.decode(buf)
    except ManifestError:
        pass
    else:
        assert manifest.encode() == buf[:16]


@given(st.binary(max_size=100), st.integers(0, 20))
def test_decode_timestamps_any_bytes(buf: bytes, count: int) -> None:
    values = decode_timestamps(buf, count)
    if len(buf) < 8 * count:
        assert values is None
    else:
        assert values is not None
        assert len(values) == count
        assert encode_timestamps(values) == buf[: 8 * count]


@given(st.one_of(st.text(max_size=14), st.from_regex(r"v[0-9]{10}", fullmatch=True)))
def test_parse_generation_dir_name_any_text(name: str) -> None:
    value = parse_generation_dir_name(name)
    if value is not None:
        assert generation_dir_name(value) == name


@given(st.one_of(st.text(max_size=300), st.text(alphabet="ab./ -", max_size=12)))
def test_validate_channel_name_any_text(name: str) -> None:
    try:
        validate_channel_name(name)
    except ChannelNameError:
        return
    assert name.split("/") == channel_path_segments(name)


def test_error_classes() -> None:
    assert issubclass(ManifestError, RedexFormatError)
    assert issubclass(IdxRecordError, RedexFormatError)
    assert issubclass(RedexFormatError, DecodeError)
    assert issubclass(RedexFormatError, RedexError)
    assert issubclass(ChannelNameError, RedexError)
    assert not issubclass(ChannelNameError, DecodeError)


# -- oracle: the reference implementation --------------------------------------------------


def _generation_files(channel_dir: Path, generation: int = 1) -> tuple[bytes, bytes, bytes]:
    gen = channel_dir / generation_dir_name(generation)
    return (gen / "idx").read_bytes(), (gen / "dat").read_bytes(), (gen / "ts").read_bytes()


@pytest.mark.oracle
@needs_reference
def test_oracle_reference_files_decode(tmp_path: Path) -> None:
    assert reference is not None
    redex = reference.Redex(persistent_dir=str(tmp_path))
    file = redex.open_file("a/b", persistent=True)
    assert file.append(b"hello") == 0
    assert file.append(b"") == 1
    assert file.append(b"12345678") == 2
    assert file.append_batch([b"xy", b"zzz"]) == 3
    events = file.read_range(0, 10)
    file.close()

    channel = tmp_path / "a" / "b"
    assert Manifest.decode((channel / "manifest").read_bytes()) == Manifest(1)
    idx, dat, ts = _generation_files(channel)
    assert idx == GOLDEN_IDX
    assert dat == GOLDEN_DAT
    records = decode_records(idx)
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert [r.offset for r in records] == GOLDEN_OFFSETS
    for rec, event, payload in zip(records, events, GOLDEN_PAYLOADS, strict=True):
        assert not rec.is_inline
        assert dat[rec.offset : rec.payload_end] == payload
        assert rec.checksum == entry_checksum(payload) == event.checksum
    stamps = decode_timestamps(ts, len(records))
    assert stamps is not None
    assert len(ts) == 8 * len(records)
    assert stamps[3] == stamps[4]  # one timestamp per batch
    assert stamps == sorted(stamps)


@pytest.mark.oracle
@needs_reference
def test_oracle_reference_reads_our_files(tmp_path: Path) -> None:
    assert reference is not None
    payloads = [b"first", b"", b"ABCDEFGH", b"\x00" * 100, b"tail"]
    records: list[IdxRecord] = []
    dat = bytearray()
    for seq, payload in enumerate(payloads, start=40):
        if payload == b"ABCDEFGH":
            records.append(inline_record(seq, payload))
        else:
            records.append(heap_record(seq, len(dat), len(payload), payload))
            dat += payload
    channel = tmp_path / "ours" / "x"
    gen_dir = channel / generation_dir_name(3)
    gen_dir.mkdir(parents=True)
    (gen_dir / "idx").write_bytes(encode_records(records))
    (gen_dir / "dat").write_bytes(bytes(dat))
    (gen_dir / "ts").write_bytes(encode_timestamps([1_000 + i for i in range(len(records))]))
    (channel / "manifest").write_bytes(Manifest(3).encode())

    file = reference.Redex(persistent_dir=str(tmp_path)).open_file("ours/x", persistent=True)
    events = file.read_range(0, 2**32)
    assert [(e.seq, bytes(e.payload)) for e in events] == [
        (seq, p) for seq, p in enumerate(payloads, start=40)
    ]
    assert [e.is_inline for e in events] == [False, False, True, False, False]
    assert [e.checksum for e in events] == [r.checksum for r in records]
    assert file.append(b"more") == 45  # the reference continued from our last seq
    file.close()
    # Nothing was repaired: the reference found our files valid as they are.
    idx, dat_after, _ts = _generation_files(channel, 3)
    assert decode_records(idx)[:5] == records
    assert dat_after == bytes(dat) + b"more"
    assert Manifest.decode((channel / "manifest").read_bytes()) == Manifest(3)


def _reference_error(name: str) -> str | None:
    assert reference is not None
    try:
        reference.Redex().open_file(name)
    except reference.RedexError as exc:
        return str(exc)
    return None


def _our_error(name: str) -> str | None:
    try:
        validate_channel_name(name)
    except ChannelNameError as exc:
        return str(exc)
    return None


@pytest.mark.oracle
@needs_reference
@pytest.mark.parametrize("name", [n for n, _ in BAD_CHANNEL_NAMES] + GOOD_CHANNEL_NAMES)
def test_oracle_channel_name_texts(name: str) -> None:
    assert _our_error(name) == _reference_error(name)


@pytest.mark.oracle
@needs_reference
@settings(max_examples=300)
@given(
    st.one_of(
        st.text(alphabet="ab/. -\u00e9:", max_size=10),
        st.text(st.characters(blacklist_categories=["Cs"]), max_size=8),
        st.text(alphabet="x/.", min_size=250, max_size=260),
    )
)
def test_oracle_channel_names_fuzzed(name: str) -> None:
    assert _our_error(name) == _reference_error(name)
