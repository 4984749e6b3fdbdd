"""The pure codecs: NATS protocol framing, header blocks, stored-message layout.

Decoders are proven with hypothesis to raise only the DecodeError family on any input.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from net_adapter_jetstream._message import (
    StoredMessageError,
    decode_stored,
    event_header,
)
from net_adapter_jetstream._protocol import (
    Err,
    Info,
    Msg,
    NatsParser,
    NatsProtocolError,
    Ping,
    Pong,
    encode_headers,
    encode_hpub,
    encode_pub,
    parse_headers,
)

from net_core.errors import DecodeError


def _header_block(value: bytes) -> bytes:
    return b"NATS/1.0\r\nK: " + value.hex().encode() + b"\r\n\r\n"


_subjects = st.from_regex(r"\A[A-Za-z0-9_]{1,12}(\.[A-Za-z0-9_]{1,12}){0,3}\Z")


def _msg_frame(
    subject: str, sid: int, reply: str | None, header: bytes | None, body: bytes
) -> bytes:
    """What the server sends: MSG / HMSG (the client encoders use PUB / HPUB)."""
    r = f" {reply}" if reply else ""
    if header is None:
        return f"MSG {subject} {sid}{r} {len(body)}\r\n".encode() + body + b"\r\n"
    return (
        f"HMSG {subject} {sid}{r} {len(header)} {len(header) + len(body)}\r\n".encode()
        + header
        + body
        + b"\r\n"
    )


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_parser_accepts_or_raises_protocol_error_on_any_bytes(data: bytes, step: int) -> None:
    parser = NatsParser()
    try:
        for i in range(0, len(data), step):
            parser.feed(data[i : i + step])
            parser.events()
    except NatsProtocolError:
        with pytest.raises(NatsProtocolError):
            parser.events()  # a broken parser stays broken


@given(
    st.lists(
        st.tuples(
            _subjects,
            st.integers(1, 2**31),
            st.none() | _subjects,
            st.none()
            | st.binary(max_size=40).map(
                lambda b: b"NATS/1.0\r\nK: " + b.hex().encode() + b"\r\n\r\n"
            ),
            st.binary(max_size=300),
        ),
        max_size=8,
    ),
    st.integers(1, 97),
)
def test_messages_survive_any_chunking(
    frames: list[tuple[str, int, str | None, bytes | None, bytes]], step: int
) -> None:
    stream = b"".join(_msg_frame(*f) for f in frames) + b"PING\r\nPONG\r\n"
    parser = NatsParser()
    got: list[object] = []
    for i in range(0, len(stream), step):
        parser.feed(stream[i : i + step])
        got.extend(parser.events())
    assert got == [Msg(*f) for f in frames] + [Ping(), Pong()]
    assert parser.buffered == 0


def test_control_lines() -> None:
    parser = NatsParser()
    parser.feed(b'INFO {"version":"2.9.10","headers":true}\r\n-ERR \'Authorization Violation\'\r\n')
    assert parser.events() == [
        Info({"version": "2.9.10", "headers": True}),
        Err("Authorization Violation"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        b"MSG a 1 notanumber\r\n",
        b"MSG a 1\r\n",
        b"HMSG a 1 10 5\r\n",  # header longer than the whole message
        b"MSG a 1 3\r\nabcXY",  # body not followed by CRLF
        b"INFO [1,2]\r\n",
        b"INFO {nope\r\n",
        b"WHAT\r\n",
        b"MSG a\xff 1 1\r\nx\r\n",
        b"x" * 70_000,  # no CRLF within the control-line limit
    ],
)
def test_malformed_frames_raise_protocol_error(bad: bytes) -> None:
    parser = NatsParser()
    parser.feed(bad)
    with pytest.raises(NatsProtocolError) as info:
        parser.events()
    assert isinstance(info.value, DecodeError)


def test_client_frames() -> None:
    assert encode_pub("a.b", None, b"xy") == b"PUB a.b 2\r\nxy\r\n"
    assert encode_pub("a.b", "r.1", b"") == b"PUB a.b r.1 0\r\n\r\n"
    header = encode_headers([("Nats-Msg-Id", "x:1:2:3")])
    assert header == b"NATS/1.0\r\nNats-Msg-Id: x:1:2:3\r\n\r\n"
    assert encode_hpub("s", "r", header, b"p") == (
        b"HPUB s r %d %d\r\n" % (len(header), len(header) + 1) + header + b"p\r\n"
    )
    with pytest.raises(ValueError):
        encode_headers([("Bad Key", "v")])
    with pytest.raises(ValueError):
        encode_headers([("K", "line\r\nbreak")])


def test_parse_headers_status_and_fields() -> None:
    eob = parse_headers(b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 3\r\n\r\n")
    assert eob.status == 204
    assert eob.description == "EOB"
    assert eob.fields == {"Nats-Num-Pending": "3"}
    plain = parse_headers(b"NATS/1.0\r\nA: 1\r\nB:  two \r\n\r\n")
    assert plain.status is None
    assert plain.fields == {"A": "1", "B": "two"}
    assert parse_headers(b"NATS/1.0 503\r\n\r\n").status == 503


@given(st.binary(max_size=300))
def test_parse_headers_any_bytes(block: bytes) -> None:
    with contextlib.suppress(NatsProtocolError):
        parse_headers(block)


@given(st.binary(max_size=300), st.binary(max_size=50), st.integers(0, 70_000))
def test_decode_stored_any_bytes_raises_only_stored_message_error(
    header: bytes, body: bytes, shard: int
) -> None:
    for block in (header, b"NATS/1.0\r\n" + header + b"\r\n\r\n"):
        try:
            event = decode_stored(block, body, shard)
        except StoredMessageError:
            continue  # a DecodeError (anything else fails the test)
        assert event.raw == body


def _as_served(header: bytes, seq: int) -> bytes:
    """The header block as a direct get returns it: the server appends its fields."""
    return header[:-2] + b"Nats-Stream: s\r\nNats-Sequence: %d\r\n\r\n" % seq


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 65_535),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**40),
    st.integers(0, 100_000),
    st.integers(1, 2**64 - 1),
    st.binary(max_size=200),
)
def test_event_header_round_trip(
    nonce: int, shard: int, ts: int, start: int, index: int, seq: int, body: bytes
) -> None:
    dedup = f"{nonce:x}:{shard}:{start}:{index}"
    event = decode_stored(_as_served(event_header(dedup, ts, shard), seq), body, shard)
    assert event == (str(seq), body, ts, shard, dedup)
    assert type(event.raw) is bytes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Net-Shard": "70000"}, "outside u16 range"),
        ({"Net-Shard": "4"}, "says shard 4"),
        ({"Net-Ts": "-1"}, "Net-Ts is not a decimal u64"),
        ({"Net-Ts": str(2**64)}, "above the u64 range"),
        ({"Net-Ts": None}, "lacks the Net-Ts header"),
        ({"Nats-Msg-Id": "garbage"}, "malformed dedup id"),
        ({"Nats-Msg-Id": "ab:9:0:0"}, "malformed dedup id"),
        ({"Nats-Sequence": "0"}, "sequence 0"),
        ({"Nats-Sequence": "\uff11\uff12"}, "not a decimal u64"),
    ],
)
def test_malformed_stored_messages_are_errors_never_defaults(
    fields: dict[str, str | None], message: str
) -> None:
    base = {"Nats-Msg-Id": "ab:3:0:0", "Net-Ts": "5", "Net-Shard": "3", "Nats-Sequence": "9"}
    merged = {k: v for k, v in {**base, **fields}.items() if v is not None}
    block = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in merged.items()) + "\r\n").encode()
    with pytest.raises(StoredMessageError, match=message):
        decode_stored(block, b"payload", 3)


def test_message_without_headers_is_an_error() -> None:
    with pytest.raises(StoredMessageError, match="no headers"):
        decode_stored(None, b'{"r":1}', 0)
