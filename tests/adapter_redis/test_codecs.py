"""The sans-I/O layers: RESP encoding/parsing, the entry layout and the batch encoder."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from net_adapter_redis._entry import (
    BatchEncoder,
    EntryDecodeError,
    check_exec_reply,
    decode_entries,
    decode_entry,
    decode_payload,
    encode_payload,
)
from net_adapter_redis._resp import (
    NO_REPLY,
    ReplyReader,
    RespProtocolError,
    ServerError,
    encode_command,
    first_error,
)

from net_core.bus import StoredEvent
from net_core.errors import DecodeError

U64 = st.integers(0, 2**64 - 1)


def _replies(data: bytes, chunk: int = 7) -> list[object]:
    """Every complete reply in ``data``, fed ``chunk`` bytes at a time."""
    reader = ReplyReader()
    out: list[object] = []
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
        while (reply := reader.get()) is not NO_REPLY:
            out.append(reply)
    return out


# -- RESP ---------------------------------------------------------------------------------


def test_encode_command_is_an_array_of_bulk_strings() -> None:
    assert encode_command("SET", b"k\r\n", 12) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n"
    with pytest.raises(ValueError, match="name"):
        encode_command()
    with pytest.raises(TypeError, match="float"):
        encode_command("SET", 1.5)  # type: ignore[arg-type]


def test_reader_keeps_error_replies_as_values_also_nested() -> None:
    data = b"+OK\r\n-ERR bad thing\r\n*3\r\n$3\r\nabc\r\n-WRONGTYPE no\r\n:5\r\n$-1\r\n*-1\r\n"
    ok, err, arr, null_bulk, null_array = _replies(data, chunk=3)
    assert ok == b"OK"
    assert isinstance(err, ServerError)
    assert (err.code, err.message) == ("ERR", "ERR bad thing")
    assert arr[0] == b"abc"
    nested = first_error(arr)
    assert nested is not None
    assert (nested.code, nested.message) == ("WRONGTYPE", "WRONGTYPE no")
    assert first_error([b"a", 1, None]) is None
    assert arr[2] == 5
    assert null_bulk is None
    assert null_array is None


def test_reader_waits_for_incomplete_replies_and_get_many() -> None:
    reader = ReplyReader()
    reader.feed(b"+QUEUED\r\n+QUEUED\r\n*2\r\n$1\r\na")
    assert reader.get_many(5) == [b"QUEUED", b"QUEUED"]
    reader.feed(b"\r\n$1\r\nb\r\n")
    assert reader.get_many(5) == [[b"a", b"b"]]
    assert reader.get() is NO_REPLY


def test_protocol_error_breaks_the_reader() -> None:
    reader = ReplyReader()
    reader.feed(b"?what\r\n")
    with pytest.raises(RespProtocolError):
        reader.get()
    assert reader.broken
    with pytest.raises(RespProtocolError):
        reader.feed(b"+OK\r\n")


@given(st.binary(max_size=300), st.integers(1, 64))
def test_any_bytes_give_replies_or_a_decode_error(data: bytes, chunk: int) -> None:
    with contextlib.suppress(DecodeError):
        _replies(data, chunk)


@given(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), max_size=8))
def test_commands_parse_back_as_arrays(commands: list[list[bytes]]) -> None:
    data = b"".join(encode_command(*c) for c in commands)
    assert _replies(data, 5) == commands


# -- the entry layout ---------------------------------------------------------------------


@given(st.binary(max_size=200), U64, st.integers(0, 65535))
def test_payload_round_trips_any_bytes(raw: bytes, ts: int, shard: int) -> None:
    assert decode_payload(encode_payload(raw, ts, shard)) == (raw, ts, shard)


def test_payload_is_the_reference_layout() -> None:
    assert encode_payload(b'{"i":0}', 107371, 3) == b'{"r":{"i":0},"t":107371,"s":3}'
    raw = b'x,"t":1,"s":2}'  # looks like a tail: the real tail is the last one
    assert decode_payload(encode_payload(raw, 5, 6)) == (raw, 5, 6)


@pytest.mark.parametrize(
    "d",
    [
        b"",
        b'{"r":1}',
        b'{"x":1,"t":1,"s":1}',
        b'{"r":1,"t":-1,"s":1}',
        b'{"r":1,"t":01,"s":1}',
        b'{"r":1,"t":1,"s":65536}',
        b'{"r":1,"t":18446744073709551616,"s":1}',
        b'{"r":1,"t":1,"s":1} ',
        b'{"r":,"t":1,"s":1',
    ],
)
def test_malformed_payloads_are_rejected(d: bytes) -> None:
    with pytest.raises(EntryDecodeError):
        decode_payload(d)


@given(st.binary(max_size=120))
def test_any_payload_bytes_decode_or_raise_decode_error(d: bytes) -> None:
    try:
        raw, ts, shard = decode_payload(d)
    except DecodeError:
        return
    assert encode_payload(raw, ts, shard) == d


_REPLY_ITEMS = st.recursive(
    st.none() | st.binary(max_size=30) | st.integers(-5, 5) | st.just(ServerError("ERR x")),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=12,
)


@given(_REPLY_ITEMS)
def test_any_reply_shape_decodes_or_raises_decode_error(entry: object) -> None:
    with contextlib.suppress(DecodeError):
        decode_entry(entry)


def test_decode_entry_layouts() -> None:
    d = encode_payload(b"\xff\x00", 9, 4)
    ours = decode_entry([b"1-2", [b"d", d, b"dedup_id", b"a:4:0:0"]])
    assert ours == ("1-2", b"\xff\x00", 9, 4, "a:4:0:0")
    reordered = decode_entry([b"1-3", [b"x", b"y", b"dedup_id", b"b:4:0:1", b"d", d]])
    assert reordered == ("1-3", b"\xff\x00", 9, 4, "b:4:0:1")
    assert decode_entry([b"1-4", [b"d", d]]).dedup_id is None
    for bad in (
        [b"1-5", [b"x", b"y"]],
        [b"1-5", [b"d"]],
        [b"1-5"],
        [b"\xff-1", [b"d", d]],
        [b"1-5", [b"d", d, b"dedup_id", b"\xff"]],
        [b"1-5", [b"d", None, b"dedup_id", b"x"]],
    ):
        with pytest.raises(EntryDecodeError):
            decode_entry(bad)


# -- the batch request ----------------------------------------------------------------------


def _commands(buffer: bytes) -> list[list[bytes]]:
    return _replies(buffer, 4096)  # type: ignore[return-value]


@given(
    st.lists(st.binary(max_size=40), min_size=1, max_size=30),
    st.data(),
    U64,
    st.integers(0, 2**40),
    st.integers(0, 65535),
    st.sampled_from([None, 1000, 7]),
    st.booleans(),
)
def test_batch_request_matches_command_by_command_encoding(
    events: list[bytes],
    data: st.DataObject,
    nonce: int,
    start: int,
    shard: int,
    cap: int | None,
    approximate: bool,
) -> None:
    stamps = data.draw(st.lists(U64, min_size=len(events), max_size=len(events)))
    skip = data.draw(st.integers(0, len(events) - 1))
    encoder = BatchEncoder("p%", max_stream_len=cap, approximate=approximate)
    buffer, queued = encoder.encode(shard, nonce, start, events, stamps, skip)
    trim = (
        []
        if cap is None
        else ([b"MAXLEN", b"~", b"%d" % cap] if approximate else [b"MAXLEN", b"%d" % cap])
    )
    key = f"p%:shard:{shard}".encode()
    expected = [[b"MULTI"]]
    for i in range(skip, len(events)):
        expected.append(
            [
                b"XADD",
                key,
                *trim,
                b"*",
                b"d",
                encode_payload(events[i], stamps[i], shard),
                b"dedup_id",
                f"{nonce:x}:{shard}:{start}:{i}".encode(),
            ]
        )
    expected.append(
        [b"HSET", f"p%:marks:{shard}".encode(), b"%x" % nonce, b"%d" % (start + len(events))]
    )
    expected.append([b"EXEC"])
    assert _commands(buffer) == expected
    assert queued == len(events) - skip + 1


def test_batch_encoder_rejects_bad_input() -> None:
    encoder = BatchEncoder("p")
    with pytest.raises(ValueError, match="negative"):
        encoder.encode(0, 1, 0, [b"a"], [-1])
    with pytest.raises(TypeError):
        encoder.encode(0, 1, 0, ["text"], [1])  # type: ignore[list-item]
    big = [b"x"] * 3000  # grows the index table past its first 1024 entries
    buffer, queued = encoder.encode(0, 1, 0, big, list(range(3000)))
    assert queued == 3001
    assert _commands(buffer)[-3][-1] == b"1:0:0:2999"


def test_check_exec_reply() -> None:
    assert check_exec_reply(None, [b"1-1", 1], 2) is None
    assert check_exec_reply([b"OK", b"QUEUED", b"QUEUED", [b"1-1", 1]], [b"1-1", 1], 2) is None
    err = ServerError("WRONGTYPE Operation against a key")
    assert check_exec_reply(None, [err], 1) is err
    queued_err = ServerError("ERR wrong number of arguments")
    abort = ServerError("EXECABORT x")
    assert check_exec_reply([b"OK", queued_err, abort], abort, 1) is queued_err
    assert check_exec_reply(None, abort, 1) is abort
    assert check_exec_reply(None, None, 1).code == "EXECABORT"  # type: ignore[union-attr]
    assert check_exec_reply(None, [b"1-1"], 2).code == "ERR"  # type: ignore[union-attr]


_EVENT_ENTRY = st.tuples(
    st.from_regex(r"\A[0-9]{1,13}-[0-9]{1,5}\Z").map(str.encode),
    st.binary(max_size=40),
    U64,
    st.integers(0, 65535),
    st.text(max_size=12).map(str.encode),
).map(lambda t: [t[0], [b"d", encode_payload(t[1], t[2], t[3]), b"dedup_id", t[4]]])


@given(st.lists(_EVENT_ENTRY | _REPLY_ITEMS, max_size=12), st.integers(0, 65535))
def test_batch_decoder_agrees_with_the_entry_decoder(reply: list[object], shard: int) -> None:
    """The inlined fast path of decode_entries gives what decode_entry gives (with the
    stream's shard id), and skips exactly the entries decode_entry rejects."""
    out: list[StoredEvent] = []
    malformed = decode_entries(reply, shard, out)
    expected = []
    rejected = 0
    for entry in reply:
        try:
            expected.append(decode_entry(entry)._replace(shard_id=shard))
        except DecodeError:
            rejected += 1
    assert out == expected
    assert malformed == rejected
