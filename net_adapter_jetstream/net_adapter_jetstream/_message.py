"""How one bus event is laid out as a JetStream message, both ways (pure, no I/O).

An event is stored as one message on subject ``{prefix}.shard.{id}`` whose body is the
event's bytes, verbatim (any bytes, empty included), and whose headers carry the rest:

* ``Nats-Msg-Id: {nonce:x}:{shard}:{sequence_start}:{index}``: the batch's stable dedup
  id; the server drops a re-publish within its duplicate window;
* ``Net-Ts: {insertion_ts}``: the insertion time, unix nanoseconds (u64, decimal);
* ``Net-Shard: {shard}``: the shard id (u16, decimal), checked against the stream on read.

(The reference wraps the event into a ``{"r":..,"t":..,"s":..}`` JSON body instead; that
cannot hold non-JSON bytes and re-serialises JSON, so a round trip is not byte-exact.)

Reading turns a direct-get reply (headers with ``Nats-Sequence`` added by the server, and
the body) back into a :class:`~net_core.bus.StoredEvent` whose position is the stream
sequence. Anything malformed (missing or non-numeric headers, a shard id above 65,535 or
not the stream's, a sequence out of the u64 range) raises :class:`StoredMessageError`,
a :class:`~net_core.errors.DecodeError`: never a default value, never empty bytes.

This module does no I/O.
"""

from __future__ import annotations

import re
from typing import Final

from net_adapter_jetstream._protocol import NatsProtocolError, parse_headers
from net_core.bus import StoredEvent
from net_core.errors import DecodeError

__all__ = [
    "MAX_SHARD_ID",
    "MAX_U64",
    "MSG_ID_HEADER",
    "SEQUENCE_HEADER",
    "SHARD_HEADER",
    "TS_HEADER",
    "StoredMessageError",
    "decode_stored",
    "event_header",
    "parse_u64",
]

MAX_SHARD_ID: Final = 65_535
MAX_U64: Final = (1 << 64) - 1
MSG_ID_HEADER: Final = "Nats-Msg-Id"
TS_HEADER: Final = "Net-Ts"
SHARD_HEADER: Final = "Net-Shard"
SEQUENCE_HEADER: Final = "Nats-Sequence"

_DEDUP_ID = re.compile(r"^[0-9a-f]{1,16}:(\d{1,5}):\d{1,20}:\d{1,20}$")


class StoredMessageError(DecodeError):
    """A message in a shard stream is not a stored bus event (malformed or foreign)."""


def event_header(dedup_id: str, insertion_ts: int, shard_id: int) -> bytes:
    """The header block of one event's message (see the module docstring)."""
    return (
        f"NATS/1.0\r\nNats-Msg-Id: {dedup_id}\r\nNet-Ts: {insertion_ts}\r\n"
        f"Net-Shard: {shard_id}\r\n\r\n"
    ).encode()


def parse_u64(text: str, what: str) -> int:
    """``text`` as a decimal u64 (ASCII digits only), else :class:`StoredMessageError`."""
    if not (text.isdigit() and text.isascii()) or len(text) > 20:
        raise StoredMessageError(f"{what} is not a decimal u64: {text[:40]!r}")
    value = int(text)
    if value > MAX_U64:
        raise StoredMessageError(f"{what} {value} is above the u64 range")
    return value


def decode_stored(header: bytes | None, body: bytes, shard_id: int) -> StoredEvent:
    """The stored event a direct-get reply of stream ``shard_id`` carries.

    Raises:
        StoredMessageError: the message is not a well-formed stored event of that shard.
    """
    if header is None:
        raise StoredMessageError("stored message has no headers (not written by the bus)")
    try:
        headers = parse_headers(header)
    except NatsProtocolError as exc:
        raise StoredMessageError(f"stored message headers are malformed: {exc}") from exc
    if headers.status is not None:
        raise StoredMessageError(f"expected a stored message, got status {headers.status}")
    fields = headers.fields
    try:
        seq_text = fields[SEQUENCE_HEADER]
        ts_text = fields[TS_HEADER]
        shard_text = fields[SHARD_HEADER]
        dedup = fields[MSG_ID_HEADER]
    except KeyError as exc:
        raise StoredMessageError(f"stored message lacks the {exc.args[0]} header") from None
    seq = parse_u64(seq_text, SEQUENCE_HEADER)
    if seq == 0:
        raise StoredMessageError("stored message has sequence 0")
    ts = parse_u64(ts_text, TS_HEADER)
    stored_shard = parse_u64(shard_text, SHARD_HEADER)
    if stored_shard > MAX_SHARD_ID:
        raise StoredMessageError(
            f"shard_id {stored_shard} outside u16 range (message {seq} of shard {shard_id})"
        )
    if stored_shard != shard_id:
        raise StoredMessageError(
            f"message {seq} in the stream of shard {shard_id} says shard {stored_shard}"
        )
    match = _DEDUP_ID.match(dedup)
    if match is None or int(match[1]) != shard_id:
        raise StoredMessageError(f"message {seq} has a malformed dedup id {dedup[:80]!r}")
    return StoredEvent(str(seq), body, ts, shard_id, dedup)
