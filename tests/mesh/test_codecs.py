"""Byte layouts of the mesh codecs against the facts (``mesh.md`` §1), and their edges.

Header, AAD, flags, packet split, event framing and batching, credit grant, NACK,
keep-alive, routing header, datagram classification and pingwave. Properties
(round trips, arbitrary bytes) live in test_properties.py.
"""

from __future__ import annotations

import struct

import attrs
import pytest

from net_core.errors import DecodeError, MeshError
from net_core.mesh import (
    AAD_SIZE,
    HEADER_SIZE,
    MAX_EVENTS_PER_PACKET,
    MAX_PAYLOAD_SIZE,
    ControlDecodeError,
    DatagramKind,
    EnhancedPingwave,
    EventTooLargeError,
    FrameDecodeError,
    MeshEncodeError,
    NackPayload,
    NatKeepalive,
    NetHeader,
    PacketDecodeError,
    PacketFlags,
    PeerHealth,
    PingwaveDecodeError,
    RoutingFlags,
    RoutingHeader,
    RoutingHeaderDecodeError,
    StreamWindowGrant,
    TooManyEventsError,
    batch_events,
    classify_datagram,
    decode_events,
    encode_events,
    framed_size,
    memory_tier,
    split_packet,
    split_routed,
)

# mesh.md §1.6: flags 1, prio 3, ttl 4, hops 2, subproto 0x0A00, chash 0xBEEF,
# session 0x1122334455667788, counter 5, stream 7, seq 9, subnet 0x03070000,
# origin 0xDEADBEEF, plen 19, evc 2
VECTOR_HEADER = bytes.fromhex(
    "454e010103040200000aefbecc444444050000000000000088776655443322110700000000000000"
    "090000000000000000000703efbeadde0000000013000200"
)


def vector_header() -> NetHeader:
    return NetHeader(
        flags=1,
        priority=3,
        hop_ttl=4,
        hop_count=2,
        subprotocol_id=0x0A00,
        channel_hash=0xBEEF,
        nonce=bytes.fromhex("cc444444") + (5).to_bytes(8, "little"),
        session_id=0x1122334455667788,
        stream_id=7,
        sequence=9,
        subnet_id=0x03070000,
        origin_hash=0xDEADBEEF,
        payload_len=19,
        event_count=2,
    )


# -- header ------------------------------------------------------------------------------


def test_header_vector_is_byte_exact() -> None:
    assert vector_header().encode() == VECTOR_HEADER
    assert NetHeader.decode(VECTOR_HEADER) == vector_header()
    assert len(VECTOR_HEADER) == HEADER_SIZE


def test_aad_drops_nonce_and_zeroes_hop_count() -> None:
    expected = bytearray(VECTOR_HEADER)
    expected[6] = 0
    del expected[12:24]
    aad = vector_header().aad()
    assert aad == bytes(expected)
    assert len(aad) == AAD_SIZE == 52


@pytest.mark.parametrize("hops", [0, 1, 7, 255])
def test_aad_ignores_hop_count_but_not_ttl(hops: int) -> None:
    base = vector_header()
    assert attrs.evolve(base, hop_count=hops).aad() == base.aad()
    assert attrs.evolve(base, hop_ttl=5).aad() != base.aad()


def test_flags_and_nonce_counter() -> None:
    h = vector_header()
    assert h.is_reliable
    assert not h.is_handshake
    assert not h.is_heartbeat
    assert h.nonce_counter == 5
    assert PacketFlags.HANDSHAKE == 0x10
    assert PacketFlags.HEARTBEAT == 0x20
    assert NetHeader(flags=PacketFlags.HANDSHAKE).is_handshake
    # unused bits 0x40/0x80 are kept as-is
    raw = bytearray(VECTOR_HEADER)
    raw[3] = 0xC1
    assert NetHeader.decode(bytes(raw)).flags == 0xC1


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"\x4e\x45", "magic"),
        (2, b"\x02", "version"),
        (60, struct.pack("<H", MAX_PAYLOAD_SIZE + 1), "payload_len"),
        (62, struct.pack("<H", MAX_EVENTS_PER_PACKET + 1), "event_count"),
    ],
)
def test_header_validation(offset: int, value: bytes, message: str) -> None:
    raw = bytearray(VECTOR_HEADER)
    raw[offset : offset + len(value)] = value
    with pytest.raises(PacketDecodeError, match=message):
        NetHeader.decode(bytes(raw))


def test_header_limits_accept_the_maximum() -> None:
    raw = bytearray(VECTOR_HEADER)
    raw[60:64] = struct.pack("<HH", MAX_PAYLOAD_SIZE, MAX_EVENTS_PER_PACKET)
    h = NetHeader.decode(bytes(raw))
    assert (h.payload_len, h.event_count) == (8112, 2028)


@pytest.mark.parametrize("size", [0, 1, 63, 65])
def test_header_wrong_length(size: int) -> None:
    with pytest.raises(PacketDecodeError):
        NetHeader.decode(bytes(size))


@pytest.mark.parametrize(
    "fields",
    [
        {"flags": 256},
        {"session_id": 2**64},
        {"stream_id": -1},
        {"origin_hash": 2**32},
        {"nonce": b"short"},
        {"event_count": MAX_EVENTS_PER_PACKET + 1},
        {"payload_len": MAX_PAYLOAD_SIZE + 1},
    ],
)
def test_header_encode_refuses_out_of_range(fields: dict[str, object]) -> None:
    with pytest.raises(MeshEncodeError):
        NetHeader(**fields).encode()  # type: ignore[arg-type]


def test_split_packet_requires_exact_body() -> None:
    header = NetHeader(payload_len=3, event_count=0)
    good = header.encode() + bytes(3 + 16)
    assert split_packet(good) == (header, bytes(19))
    for body in (bytes(18), bytes(20), b""):
        with pytest.raises(PacketDecodeError):
            split_packet(header.encode() + body)
    handshake = NetHeader(flags=PacketFlags.HANDSHAKE, payload_len=48)
    assert split_packet(handshake.encode() + bytes(48))[1] == bytes(48)
    with pytest.raises(PacketDecodeError):
        split_packet(handshake.encode() + bytes(64))  # no tag on handshakes
    with pytest.raises(PacketDecodeError):
        split_packet(bytes(10))


# -- framing -----------------------------------------------------------------------------


def test_framing_vector() -> None:
    payload = encode_events([b"hello", b"world!"])
    assert payload == b"\x05\x00\x00\x00hello\x06\x00\x00\x00world!"
    assert len(payload) == 19 == framed_size([b"hello", b"world!"])
    assert decode_events(payload, 2) == [b"hello", b"world!"]


def test_framing_limits_are_explicit() -> None:
    assert len(encode_events([b""] * MAX_EVENTS_PER_PACKET)) == 4 * 2028
    with pytest.raises(TooManyEventsError, match="2029"):
        encode_events([b""] * (MAX_EVENTS_PER_PACKET + 1))
    assert len(encode_events([bytes(MAX_PAYLOAD_SIZE - 4)])) == 8112
    with pytest.raises(EventTooLargeError, match="8113"):
        encode_events([bytes(MAX_PAYLOAD_SIZE - 3)])
    assert issubclass(TooManyEventsError, MeshError)
    assert issubclass(EventTooLargeError, ValueError)


@pytest.mark.parametrize(
    ("payload", "count"),
    [
        (b"\x05\x00\x00\x00hell", 1),  # truncated frame (the reference stopped silently)
        (b"\x05\x00\x00\x00hello", 2),  # fewer frames than declared
        (b"\x05\x00\x00\x00hello!", 1),  # trailing byte
        (b"\x00\x00\x00", 1),  # truncated prefix
        (b"", 65535),  # hostile count, nothing allocated
        (b"\x00\x00\x00\x00", 0),  # a frame nobody declared
    ],
)
def test_framing_decode_is_strict(payload: bytes, count: int) -> None:
    with pytest.raises(FrameDecodeError):
        decode_events(payload, count)


def test_empty_payload_with_zero_events() -> None:
    assert decode_events(b"", 0) == []
    assert encode_events([]) == b""


def test_batch_events_splits_in_order() -> None:
    events = [bytes([i]) * 1000 for i in range(20)]
    batches = batch_events(events)
    assert [e for b in batches for e in b] == events
    assert all(framed_size(b) <= MAX_PAYLOAD_SIZE for b in batches)
    assert [len(b) for b in batches] == [8, 8, 4]
    assert [len(b) for b in batch_events([b"x"] * 5, max_events=2)] == [2, 2, 1]
    assert batch_events([]) == []
    with pytest.raises(EventTooLargeError):
        batch_events([b"ok", bytes(MAX_PAYLOAD_SIZE)])
    with pytest.raises(ValueError, match="max_payload"):
        batch_events([b"x"], max_payload=MAX_PAYLOAD_SIZE + 1)


# -- fixed shapes ------------------------------------------------------------------------


def test_stream_window_grant_layout() -> None:
    grant = StreamWindowGrant(5, 184)
    assert grant.encode() == struct.pack("<QQ", 5, 184)
    assert StreamWindowGrant.decode(grant.encode()) == grant
    with pytest.raises(ControlDecodeError, match="truncated"):
        StreamWindowGrant.decode(bytes(15))
    with pytest.raises(ControlDecodeError, match="oversize"):
        StreamWindowGrant.decode(bytes(17))
    with pytest.raises(MeshEncodeError):
        StreamWindowGrant(2**64, 0).encode()


def test_nack_layout_and_missing_list() -> None:
    nack = NackPayload(10, 0b101)
    assert nack.encode() == struct.pack("<QQ", 10, 5)
    assert NackPayload.decode(nack.encode()) == nack
    assert nack.missing() == [10, 11, 13]
    for size in (15, 17):
        with pytest.raises(ControlDecodeError):
            NackPayload.decode(bytes(size))


def test_keepalive_layout() -> None:
    ka = NatKeepalive(0x0102030405060708, 9)
    wire = ka.encode()
    assert wire == b"PH" + struct.pack("<QI", 0x0102030405060708, 9)
    assert len(wire) == 14
    assert NatKeepalive.decode(wire) == ka
    with pytest.raises(ControlDecodeError):
        NatKeepalive.decode(b"PX" + wire[2:])
    with pytest.raises(ControlDecodeError):
        NatKeepalive.decode(wire + b"\x00")


def test_routing_header_layout() -> None:
    header = RoutingHeader(src_id=0x11223344, dest_id=0x0102030405060708, ttl=16, hop_count=0)
    wire = header.encode()
    assert wire.hex() == "525410000000443322110807060504030201"
    assert len(wire) == 18
    assert RoutingHeader.decode(wire) == header
    nxt = header.forwarded()
    assert nxt is not None
    assert (nxt.ttl, nxt.hop_count) == (15, 1)
    assert RoutingHeader(1, 2, ttl=0).forwarded() is None
    saturated = RoutingHeader(1, 2, ttl=3, hop_count=255).forwarded()
    assert saturated is not None
    assert saturated.hop_count == 255
    assert RoutingFlags.CONTROL | RoutingFlags.END_OF_STREAM == 9


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, b"\x54\x52"), (4, b"\x10"), (5, b"\x01")],
)
def test_routing_header_validation(offset: int, value: bytes) -> None:
    raw = bytearray(RoutingHeader(1, 2).encode())
    raw[offset : offset + len(value)] = value
    with pytest.raises(RoutingHeaderDecodeError):
        RoutingHeader.decode(bytes(raw))


def test_routing_header_encode_refuses_a_full_src_id() -> None:
    with pytest.raises(MeshEncodeError, match="routing_id"):
        RoutingHeader(src_id=2**32, dest_id=1).encode()


def test_split_routed() -> None:
    inner = NetHeader(payload_len=0).encode() + bytes(16)
    route = RoutingHeader(1, 2)
    assert split_routed(route.encode() + inner) == (route, inner)
    with pytest.raises(RoutingHeaderDecodeError):
        split_routed(route.encode() + inner[:63])


def test_classify_datagram_follows_the_dispatch_order() -> None:
    assert classify_datagram(NatKeepalive(1, 2).encode()) is DatagramKind.KEEPALIVE
    assert classify_datagram(EnhancedPingwave(7, 1).encode()) is DatagramKind.PINGWAVE
    assert classify_datagram(b"RT" + bytes(80)) is DatagramKind.ROUTED
    assert classify_datagram(b"RT" + bytes(79)) is DatagramKind.UNKNOWN
    assert classify_datagram(VECTOR_HEADER) is DatagramKind.PACKET
    assert classify_datagram(b"\x45\x4e" + bytes(70)) is DatagramKind.PACKET  # 72 but "NE"
    assert classify_datagram(b"PH" + bytes(13)) is DatagramKind.UNKNOWN
    assert classify_datagram(b"") is DatagramKind.UNKNOWN


def test_pingwave_layout() -> None:
    wave = EnhancedPingwave(
        origin_node_id=0x2A22743FEE3E433D,
        seq=1,
        ttl=3,
        hop_count=0,
        origin_timestamp_us=1_700_000_000_000_000,
        capability_hash=0xAABBCCDD,
        capability_version=4,
        load_level=10,
        health=PeerHealth.DEGRADED,
        gpu=1,
        model_slots=2,
        memory_tier=memory_tier(16384),
        tools_bitmap=0x0F,
        capability_flags=0x01020304,
    )
    wire = wave.encode()
    assert len(wire) == 72
    assert wire[:8] == (0x2A22743FEE3E433D).to_bytes(8, "little")
    assert wire[8:32] == bytes(24)
    assert wire[32:40] == (1).to_bytes(8, "little")
    assert wire[40:42] == b"\x03\x00"
    assert wire[62:64] == b"\x0a\x01"
    assert wire[64:72] == bytes([1, 2, 3, 0x0F]) + (0x01020304).to_bytes(4, "little")
    assert EnhancedPingwave.decode(wire) == wave
    nxt = wave.forwarded()
    assert nxt is not None
    assert (nxt.ttl, nxt.hop_count) == (2, 1)
    assert EnhancedPingwave(1, 1, ttl=0).forwarded() is None


@pytest.mark.parametrize("health", [4, 5, 255])
def test_pingwave_rejects_unknown_health(health: int) -> None:
    raw = bytearray(EnhancedPingwave(1, 1).encode())
    raw[63] = health
    with pytest.raises(PingwaveDecodeError, match="health"):
        EnhancedPingwave.decode(bytes(raw))


def test_pingwave_rejects_bad_padding_and_length() -> None:
    raw = bytearray(EnhancedPingwave(1, 1).encode())
    raw[20] = 1
    with pytest.raises(PingwaveDecodeError):
        EnhancedPingwave.decode(bytes(raw))
    with pytest.raises(PingwaveDecodeError):
        EnhancedPingwave.decode(bytes(73))


@pytest.mark.parametrize(
    ("mb", "tier"),
    [
        (0, 0),
        (1024, 0),
        (1025, 1),
        (4096, 1),
        (8192, 2),
        (16384, 3),
        (32768, 4),
        (65536, 5),
        (131072, 6),
        (131073, 7),
    ],
)
def test_memory_tier(mb: int, tier: int) -> None:
    assert memory_tier(mb) == tier


def test_every_decode_error_is_a_decode_error_and_a_mesh_error() -> None:
    for cls in (
        PacketDecodeError,
        FrameDecodeError,
        ControlDecodeError,
        RoutingHeaderDecodeError,
        PingwaveDecodeError,
    ):
        assert issubclass(cls, DecodeError)
        assert issubclass(cls, MeshError)
