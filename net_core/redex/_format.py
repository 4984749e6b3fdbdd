"""The RedEX on-disk format: pure codecs, byte-identical to the reference 0.18.

Theory of operation. A persistent RedEX channel is a directory holding a 16-byte
``manifest`` that names the live *generation*, and one directory per generation
(``v0000000001``, ...) holding three files:

* ``idx``: one 20-byte :class:`IdxRecord` per event, in append order;
* ``dat``: the heap payloads, concatenated without framing;
* ``ts``: one u64 LE unix-nanosecond timestamp per ``idx`` record.

This module owns the byte layouts of those files, the entry checksum, the generation
directory naming rule and the channel-name rule. It is sans-I/O: bytes in, values out.
It must never open files, read clocks or log; the file layer wraps it.

Every decoder here raises only :class:`RedexFormatError` (a :class:`DecodeError`) on
malformed bytes; encoders raise :class:`ValueError` when handed values that do not fit
the layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, final

import attrs
import xxhash

from net_core.errors import DecodeError, RedexError

__all__ = [
    "CHECKSUM_MASK",
    "DAT_FILE",
    "FLAGS_MASK",
    "FLAG_COMPACTED",
    "FLAG_INLINE",
    "FLAG_TOMBSTONE",
    "GENERATION_DIR_DIGITS",
    "GENERATION_DIR_PREFIX",
    "IDX_FILE",
    "IDX_RECORD_SIZE",
    "INLINE_PAYLOAD_SIZE",
    "MANIFEST_FILE",
    "MANIFEST_MAGIC",
    "MANIFEST_SIZE",
    "MANIFEST_TMP_FILE",
    "MANIFEST_VERSION",
    "MAX_CHANNEL_NAME_BYTES",
    "MAX_GENERATION",
    "MAX_HEAP_BYTES",
    "MAX_SEQ",
    "MAX_U32",
    "TS_FILE",
    "TS_RECORD_SIZE",
    "ChannelNameError",
    "IdxRecord",
    "IdxRecordError",
    "Manifest",
    "ManifestError",
    "RedexFormatError",
    "channel_path_segments",
    "decode_records",
    "decode_timestamps",
    "encode_records",
    "encode_timestamps",
    "entry_checksum",
    "generation_dir_name",
    "heap_record",
    "inline_record",
    "parse_generation_dir_name",
    "validate_channel_name",
]

# -- constants ---------------------------------------------------------------------------

IDX_RECORD_SIZE: Final = 20
TS_RECORD_SIZE: Final = 8
MANIFEST_SIZE: Final = 16
MANIFEST_MAGIC: Final = b"REDM"
MANIFEST_VERSION: Final = 1

#: Top nibble of the idx ``flags_and_checksum`` word. Only INLINE changes how a record
#: is read; TOMBSTONE and COMPACTED are reserved (the reference ignores them on read).
FLAG_INLINE: Final = 0x8000_0000
FLAG_TOMBSTONE: Final = 0x4000_0000
FLAG_COMPACTED: Final = 0x2000_0000
FLAGS_MASK: Final = 0xF000_0000
CHECKSUM_MASK: Final = 0x0FFF_FFFF

#: An INLINE record carries exactly this many payload bytes in its offset+len fields.
INLINE_PAYLOAD_SIZE: Final = 8

#: Live heap bytes a file may hold (3 GiB), and the u32 limit of on-disk offsets.
MAX_HEAP_BYTES: Final = 3 * 2**30
MAX_U32: Final = 2**32 - 1
MAX_SEQ: Final = 2**64 - 1

#: Generations are u32 and start at 1; 0 is the reserved "invalid" value.
MAX_GENERATION: Final = MAX_U32
GENERATION_DIR_PREFIX: Final = "v"
GENERATION_DIR_DIGITS: Final = 10
_GENERATION_DIR_LEN: Final = len(GENERATION_DIR_PREFIX) + GENERATION_DIR_DIGITS

MAX_CHANNEL_NAME_BYTES: Final = 255

MANIFEST_FILE: Final = "manifest"
MANIFEST_TMP_FILE: Final = "manifest.tmp"
IDX_FILE: Final = "idx"
DAT_FILE: Final = "dat"
TS_FILE: Final = "ts"

_IDX: Final = struct.Struct("<QIII")
_INLINE: Final = struct.Struct("<II")
# magic, version, generation, reserved (3 bytes); the u32 checksum of these follows
_MANIFEST_BODY: Final = struct.Struct("<4sBI3s")
_U32: Final = struct.Struct("<I")
_ASCII_DIGITS: Final = frozenset("0123456789")
_CHANNEL_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./"
)

# -- errors ------------------------------------------------------------------------------


class RedexFormatError(DecodeError, RedexError):
    """Bytes read from a RedEX file do not follow the on-disk format."""


@final
class ManifestError(RedexFormatError):
    """A ``manifest`` file is unusable (short, bad magic/version/reserved/checksum, gen 0).

    The file layer treats any of these as "no valid manifest" and falls back to scanning
    generation directories, exactly like the reference.
    """


@final
class IdxRecordError(RedexFormatError):
    """An ``idx`` buffer does not hold a whole number of 20-byte records."""


@final
class ChannelNameError(RedexError, ValueError):
    """A channel name breaks the naming rule.

    The message is the reference's text, verbatim (e.g. ``channel name is empty``), so
    tools that match on it behave the same against either implementation.
    """


# -- checksum ----------------------------------------------------------------------------


def entry_checksum(payload: bytes | bytearray | memoryview) -> int:
    """Return the 28-bit checksum an ``idx`` record stores for ``payload``.

    XXH3-64 (seed 0) of the payload bytes only, truncated to 32 bits, then to 28.
    """
    return xxhash.xxh3_64_intdigest(payload) & CHECKSUM_MASK


# -- idx records -------------------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class IdxRecord:
    """One 20-byte ``idx`` entry: where an event's payload lives and how to verify it.

    ``flags`` keeps the flag bits in place (a subset of :data:`FLAGS_MASK`), so
    ``flags | checksum`` is the on-disk word. For an INLINE record ``offset`` and
    ``length`` are not a location: they are the 8 payload bytes themselves, read as two
    little-endian u32 words. No validation happens at construction so that bulk decoding
    stays cheap; :meth:`encode` checks that every field fits.
    """

    seq: int
    offset: int
    length: int
    flags: int = 0
    checksum: int = 0

    @property
    def is_inline(self) -> bool:
        """True when the payload is stored in the record instead of ``dat``."""
        return bool(self.flags & FLAG_INLINE)

    @property
    def inline_payload(self) -> bytes:
        """The 8 payload bytes of an INLINE record (``ValueError`` for a heap record)."""
        if not self.flags & FLAG_INLINE:
            raise ValueError(f"record seq {self.seq} is not inline")
        return _INLINE.pack(self.offset, self.length)

    @property
    def payload_end(self) -> int:
        """One past the last ``dat`` byte of a heap record (``offset + length``)."""
        return self.offset + self.length

    def encode(self) -> bytes:
        """Return the 20 on-disk bytes of this record."""
        _check_fields(self)
        return _IDX.pack(self.seq, self.offset, self.length, self.flags | self.checksum)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> IdxRecord:
        """Decode exactly one 20-byte record; any other length is an :class:`IdxRecordError`."""
        if len(buf) != IDX_RECORD_SIZE:
            raise IdxRecordError(f"idx record must be {IDX_RECORD_SIZE} bytes, got {len(buf)}")
        seq, offset, length, word = _IDX.unpack(buf)
        return cls(seq, offset, length, word & FLAGS_MASK, word & CHECKSUM_MASK)


def _check_fields(rec: IdxRecord) -> None:
    # struct would reject most of these too, but with an unhelpful struct.error; and
    # stray flag/checksum bits would silently corrupt the shared word.
    if not 0 <= rec.seq <= MAX_SEQ:
        raise ValueError(f"seq {rec.seq} does not fit u64")
    if not 0 <= rec.offset <= MAX_U32:
        raise ValueError(f"offset {rec.offset} does not fit u32")
    if not 0 <= rec.length <= MAX_U32:
        raise ValueError(f"length {rec.length} does not fit u32")
    if rec.flags & ~FLAGS_MASK:
        raise ValueError(f"flags {rec.flags:#x} has bits outside {FLAGS_MASK:#x}")
    if rec.checksum & ~CHECKSUM_MASK:
        raise ValueError(f"checksum {rec.checksum:#x} has bits outside {CHECKSUM_MASK:#x}")


def encode_records(records: Iterable[IdxRecord]) -> bytes:
    """Return the ``idx`` bytes of ``records``, concatenated in order."""
    pack = _IDX.pack
    out: list[bytes] = []
    for rec in records:
        _check_fields(rec)
        out.append(pack(rec.seq, rec.offset, rec.length, rec.flags | rec.checksum))
    return b"".join(out)


def decode_records(buf: bytes | bytearray | memoryview) -> list[IdxRecord]:
    """Decode a whole ``idx`` buffer.

    Raises :class:`IdxRecordError` when the length is not a multiple of 20; recovery
    trims a torn tail *before* calling this (see :mod:`net_core.redex._recovery`).
    """
    if len(buf) % IDX_RECORD_SIZE:
        raise IdxRecordError(f"idx length {len(buf)} is not a multiple of {IDX_RECORD_SIZE}")
    rec = IdxRecord
    return [
        rec(seq, offset, length, word & FLAGS_MASK, word & CHECKSUM_MASK)
        for seq, offset, length, word in _IDX.iter_unpack(buf)
    ]


def inline_record(seq: int, payload8: bytes | bytearray | memoryview) -> IdxRecord:
    """Build an INLINE record holding exactly 8 payload bytes, checksum included."""
    if len(payload8) != INLINE_PAYLOAD_SIZE:
        raise ValueError(
            f"an inline payload is exactly {INLINE_PAYLOAD_SIZE} bytes, got {len(payload8)}"
        )
    lo, hi = _INLINE.unpack(payload8)
    return IdxRecord(seq, lo, hi, FLAG_INLINE, entry_checksum(payload8))


def heap_record(
    seq: int, offset: int, length: int, payload: bytes | bytearray | memoryview
) -> IdxRecord:
    """Build a heap record for ``payload`` stored at ``dat[offset:offset + length]``.

    ``length`` is spelled out so the call site states what it writes; it must equal
    ``len(payload)``.
    """
    if length != len(payload):
        raise ValueError(f"length {length} does not match the payload ({len(payload)} bytes)")
    return IdxRecord(seq, offset, length, 0, entry_checksum(payload))


# -- manifest ----------------------------------------------------------------------------


def _check_generation(_inst: object, _attr: object, value: int) -> None:
    if not 1 <= value <= MAX_GENERATION:
        raise ValueError(f"generation must be in [1, {MAX_GENERATION}], got {value}")


@final
@attrs.frozen(slots=True)
class Manifest:
    """The 16-byte pointer file naming the live generation directory.

    Layout (little-endian): magic ``REDM``, version ``1``, u32 generation, 3 zero bytes,
    u32 checksum = low 32 bits of XXH3-64 over the first 12 bytes.
    """

    generation: int = attrs.field(validator=_check_generation)

    def encode(self) -> bytes:
        """Return the 16 on-disk bytes."""
        body = _MANIFEST_BODY.pack(MANIFEST_MAGIC, MANIFEST_VERSION, self.generation, b"\0\0\0")
        return body + _U32.pack(xxhash.xxh3_64_intdigest(body) & MAX_U32)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> Manifest:
        """Decode the first 16 bytes of ``buf``.

        Bytes past the 16th are ignored, as the reference does (a 17-byte file whose
        first 16 bytes are valid is a valid manifest).
        """
        if len(buf) < MANIFEST_SIZE:
            raise ManifestError(f"manifest too short: {len(buf)} bytes, need {MANIFEST_SIZE}")
        magic, version, generation, reserved = _MANIFEST_BODY.unpack_from(buf)
        (stored,) = _U32.unpack_from(buf, _MANIFEST_BODY.size)
        if magic != MANIFEST_MAGIC:
            raise ManifestError(f"manifest has bad magic {magic!r}, expected {MANIFEST_MAGIC!r}")
        if version != MANIFEST_VERSION:
            raise ManifestError(
                f"manifest has unsupported version {version}, expected {MANIFEST_VERSION}"
            )
        if reserved != b"\0\0\0":
            raise ManifestError(f"manifest reserved bytes are not zero: {reserved.hex()}")
        computed = xxhash.xxh3_64_intdigest(bytes(buf[: _MANIFEST_BODY.size])) & MAX_U32
        if stored != computed:
            raise ManifestError(
                f"manifest checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )
        if generation == 0:
            raise ManifestError("manifest names generation 0, which is reserved as invalid")
        return cls(generation)


# -- timestamps --------------------------------------------------------------------------


def encode_timestamps(timestamps: Iterable[int]) -> bytes:
    """Return the ``ts`` bytes: one u64 LE unix-nanosecond value per record."""
    values = list(timestamps)
    try:
        return struct.pack(f"<{len(values)}Q", *values)
    except struct.error as exc:
        raise ValueError(f"every timestamp must fit u64: {exc}") from None


def decode_timestamps(buf: bytes | bytearray | memoryview, count: int) -> list[int] | None:
    """Decode the first ``count`` timestamps of a ``ts`` buffer.

    Returns ``None`` when ``buf`` holds fewer than ``count * 8`` bytes: the reference
    then treats the timestamps as missing. Trailing bytes beyond ``count * 8`` (a torn
    tail, or entries of records that recovery cut) are ignored.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if len(buf) < count * TS_RECORD_SIZE:
        return None
    return list(struct.unpack_from(f"<{count}Q", buf))


# -- generation directories --------------------------------------------------------------


def generation_dir_name(generation: int) -> str:
    """Return the directory name of a generation: ``v`` + 10 zero-padded digits."""
    if not 1 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation must be in [1, {MAX_GENERATION}], got {generation}")
    return f"{GENERATION_DIR_PREFIX}{generation:0{GENERATION_DIR_DIGITS}d}"


def parse_generation_dir_name(name: str) -> int | None:
    """Return the generation a directory name denotes, or ``None`` if it is not one.

    Same filter as the reference: 11 characters, ``v``, 10 ASCII digits, a value in
    ``[1, 2**32 - 1]``. ``v1``, ``v00000000001`` and ``v0000000000`` are not generation
    directories (and so are never swept).
    """
    if len(name) != _GENERATION_DIR_LEN or not name.startswith(GENERATION_DIR_PREFIX):
        return None
    digits = name[1:]
    # str.isdigit() would accept non-ASCII digits such as "٣".
    if not _ASCII_DIGITS.issuperset(digits):
        return None
    value = int(digits)
    if not 1 <= value <= MAX_GENERATION:
        return None
    return value


# -- channel names -----------------------------------------------------------------------


def validate_channel_name(name: str) -> None:
    """Raise :class:`ChannelNameError` unless ``name`` is a valid channel name.

    The rule and the order of the checks follow the reference, so the first violation
    reported is the same: empty; longer than 255 UTF-8 bytes; leading or trailing ``/``;
    ``//``; a character outside ``[A-Za-z0-9-_./]`` (the first one); a ``.`` or ``..``
    segment.
    """
    if not name:
        raise ChannelNameError("channel name is empty")
    # surrogatepass: a lone surrogate must reach the character check below, not escape
    # as UnicodeEncodeError.
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_CHANNEL_NAME_BYTES:
        raise ChannelNameError(f"channel name too long ({size} > {MAX_CHANNEL_NAME_BYTES})")
    if name[0] == "/" or name[-1] == "/":
        raise ChannelNameError("invalid channel name format: must not start or end with '/'")
    if "//" in name:
        raise ChannelNameError("invalid channel name format: must not contain '//'")
    for char in name:
        if char not in _CHANNEL_CHARS:
            raise ChannelNameError(f"invalid character '{char}' in channel name")
    for segment in name.split("/"):
        if segment in (".", ".."):
            raise ChannelNameError(f'invalid channel name format: segment "{segment}" is reserved')


def channel_path_segments(name: str) -> list[str]:
    """Validate ``name`` and return the directory names it maps to (``a/b`` -> a, b)."""
    validate_channel_name(name)
    return name.split("/")
