"""Hypothesis properties of the mesh core.

* every codec round-trips;
* arbitrary bytes give a value or a :class:`DecodeError` (never anything else), and every
  fixed-size control decoder rejects trailing bytes;
* the handshake rejects a wrong PSK, a wrong static key, replays and any flipped byte of
  msg1 or msg2 with a typed error;
* session ``open`` on arbitrary or mutated datagrams raises only typed mesh errors;
* the replay window agrees with a set-based model of its rules; credit windows keep
  their invariants under any sequence of operations.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import attrs
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from net_core.errors import DecodeError
from net_core.mesh import (
    MAX_EVENTS_PER_PACKET,
    MAX_FORWARD,
    MAX_PAYLOAD_SIZE,
    REPLAY_WINDOW_BITS,
    DatagramKind,
    EnhancedPingwave,
    EventTooLargeError,
    HandshakeAuthError,
    HandshakeError,
    HandshakeInitiator,
    HandshakePhase,
    HandshakeReplayError,
    HandshakeReplayGuard,
    HandshakeResponder,
    HandshakeRole,
    MeshSession,
    NackPayload,
    NatKeepalive,
    NetHeader,
    NoiseInitiator,
    NoiseResponder,
    PacketAuthError,
    PacketReplayError,
    PeerHealth,
    ReplayWindow,
    RoutingHeader,
    SessionKeys,
    StreamSendWindow,
    StreamWindowGrant,
    TooManyEventsError,
    batch_events,
    classify_datagram,
    decode_events,
    decode_handshake_packet,
    encode_events,
    split_packet,
    split_routed,
    x25519_public_key,
)

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
U64 = st.integers(0, 2**64 - 1)

headers = st.builds(
    NetHeader,
    flags=U8,
    priority=U8,
    hop_ttl=U8,
    hop_count=U8,
    frag_flags=U8,
    subprotocol_id=U16,
    channel_hash=U16,
    nonce=st.binary(min_size=12, max_size=12),
    session_id=U64,
    stream_id=U64,
    sequence=U64,
    subnet_id=U32,
    origin_hash=U32,
    fragment_id=U16,
    fragment_offset=U16,
    payload_len=st.integers(0, MAX_PAYLOAD_SIZE),
    event_count=st.integers(0, MAX_EVENTS_PER_PACKET),
)
events_st = st.lists(st.binary(max_size=300), max_size=40)


# -- round trips -------------------------------------------------------------------------


@given(headers)
def test_header_round_trip(header: NetHeader) -> None:
    wire = header.encode()
    assert len(wire) == 64
    assert NetHeader.decode(wire) == header
    expected = bytearray(wire)
    expected[6] = 0
    del expected[12:24]
    aad = header.aad()
    assert aad == bytes(expected)
    assert attrs.evolve(header, hop_count=(header.hop_count + 1) % 256).aad() == aad


@given(events_st)
def test_framing_round_trip(events: list[bytes]) -> None:
    payload = encode_events(events)
    assert decode_events(payload, len(events)) == events


@given(st.lists(st.binary(max_size=3000), max_size=30), st.integers(1, 50))
def test_batching_round_trip(events: list[bytes], max_events: int) -> None:
    batches = batch_events(events, max_events=max_events)
    assert [e for batch in batches for e in batch] == events
    for batch in batches:
        assert len(batch) <= max_events
        decoded = decode_events(encode_events(batch), len(batch))
        assert decoded == batch


@given(st.lists(st.binary(max_size=20), max_size=3000))
def test_framing_refuses_instead_of_truncating(events: list[bytes]) -> None:
    try:
        payload = encode_events(events)
    except (TooManyEventsError, EventTooLargeError):
        assert len(events) > MAX_EVENTS_PER_PACKET or (
            sum(4 + len(e) for e in events) > MAX_PAYLOAD_SIZE
        )
    else:
        assert decode_events(payload, len(events)) == events


@given(U64, U64)
def test_grant_and_nack_round_trip(a: int, b: int) -> None:
    assert StreamWindowGrant.decode(StreamWindowGrant(a, b).encode()) == StreamWindowGrant(a, b)
    assert NackPayload.decode(NackPayload(a, b).encode()) == NackPayload(a, b)


@given(U64, U32)
def test_keepalive_round_trip(sender: int, punch: int) -> None:
    assert NatKeepalive.decode(NatKeepalive(sender, punch).encode()) == NatKeepalive(sender, punch)


@given(U32, U64, U8, U8, st.integers(0, 15))
def test_routing_header_round_trip(src: int, dest: int, ttl: int, hops: int, flags: int) -> None:
    header = RoutingHeader(src, dest, ttl, hops, flags)
    assert RoutingHeader.decode(header.encode()) == header


pingwaves = st.builds(
    EnhancedPingwave,
    origin_node_id=U64,
    seq=U64,
    ttl=U8,
    hop_count=U8,
    origin_timestamp_us=U64,
    capability_hash=U64,
    capability_version=U32,
    load_level=U8,
    health=st.sampled_from(PeerHealth),
    gpu=U8,
    model_slots=U8,
    memory_tier=U8,
    tools_bitmap=U8,
    capability_flags=U32,
)


@given(pingwaves)
def test_pingwave_round_trip(wave: EnhancedPingwave) -> None:
    wire = wave.encode()
    assert len(wire) == 72
    assert EnhancedPingwave.decode(wire) == wave


# -- arbitrary bytes ---------------------------------------------------------------------

FIXED_DECODERS: list[tuple[Any, int]] = [
    (StreamWindowGrant.decode, 16),
    (NackPayload.decode, 16),
    (NatKeepalive.decode, 14),
    (RoutingHeader.decode, 18),
    (EnhancedPingwave.decode, 72),
    (NetHeader.decode, 64),
]


@given(st.binary(max_size=200), st.sampled_from(FIXED_DECODERS))
def test_fixed_decoders_value_or_decode_error(data: bytes, decoder: tuple[Any, int]) -> None:
    decode, size = decoder
    try:
        decode(data)
    except DecodeError:
        return
    assert len(data) == size


@given(st.sampled_from(FIXED_DECODERS), st.binary(min_size=1, max_size=8), st.data())
def test_fixed_decoders_reject_trailing_bytes(
    decoder: tuple[Any, int], extra: bytes, data: st.DataObject
) -> None:
    decode, size = decoder
    valid = {
        16: StreamWindowGrant(1, 2).encode(),
        14: NatKeepalive(1, 2).encode(),
        18: RoutingHeader(1, 2).encode(),
        72: EnhancedPingwave(1, 2).encode(),
        64: NetHeader().encode(),
    }[size]
    decode(valid)
    try:
        decode(valid + extra)
    except DecodeError:
        return
    raise AssertionError("trailing bytes were accepted")


@given(st.binary(max_size=600), st.integers(0, 70000))
def test_decode_events_value_or_decode_error(data: bytes, count: int) -> None:
    try:
        events = decode_events(data, count)
    except DecodeError:
        return
    assert len(events) == count
    assert encode_events(events) == data


@given(st.binary(max_size=300))
def test_packet_level_decoders_value_or_decode_error(data: bytes) -> None:
    for decode in (split_packet, split_routed, decode_handshake_packet):
        with contextlib.suppress(DecodeError):
            decode(data)
    assert isinstance(classify_datagram(data), DatagramKind)


@given(headers, st.binary(max_size=64))
def test_split_packet_on_valid_headers(header: NetHeader, body: bytes) -> None:
    try:
        got, got_body = split_packet(header.encode() + body)
    except DecodeError:
        return
    assert got == header
    assert got_body == body


# -- handshake ---------------------------------------------------------------------------

PSK = bytes(range(32))
STATIC = bytes(range(100, 132))
STATIC_PUB = x25519_public_key(STATIC)
ALICE, BOB = 0x1111_2222_3333_4444, 0x5555_6666_7777_8888
HANDSHAKE_FAILURES = (HandshakeError, DecodeError)


def _initiator(psk: bytes = PSK, static: bytes = STATIC_PUB) -> HandshakeInitiator:
    return HandshakeInitiator(
        local_node_id=ALICE, peer_node_id=BOB, peer_static_public=static, psk=psk
    )


def _responder() -> HandshakeResponder:
    return HandshakeResponder(local_node_id=BOB, static_private=STATIC, psk=PSK)


@given(st.binary(min_size=32, max_size=32))
def test_wrong_psk_fails(psk: bytes) -> None:
    assume(psk != PSK)
    try:
        _responder().respond_packet(_initiator(psk=psk).packet1(), peer_node_id=ALICE)
    except HandshakeAuthError:
        return
    raise AssertionError("a wrong PSK was accepted")


@given(st.binary(min_size=32, max_size=32))
def test_wrong_static_key_fails(private: bytes) -> None:
    other = x25519_public_key(private)
    assume(other != STATIC_PUB)
    try:
        _responder().respond_packet(_initiator(static=other).packet1(), peer_node_id=ALICE)
    except HandshakeAuthError:
        return
    raise AssertionError("a wrong responder static key was accepted")


@given(st.integers(0, 111), st.integers(1, 255))
def test_any_flipped_byte_of_msg1_fails(index: int, mask: int) -> None:
    packet = bytearray(_initiator().packet1())
    packet[index] ^= mask
    assume(index != 6)  # hop_count is not protected: relays may change it
    try:
        _responder().respond_packet(bytes(packet), peer_node_id=ALICE)
    except HANDSHAKE_FAILURES:
        return
    raise AssertionError(f"msg1 with byte {index} flipped was accepted")


@given(st.integers(0, 111), st.integers(1, 255))
def test_any_flipped_byte_of_msg2_fails(index: int, mask: int) -> None:
    assume(index != 6)
    alice = _initiator()
    reply = bytearray(_responder().respond_packet(alice.packet1(), peer_node_id=ALICE).packet())
    reply[index] ^= mask
    try:
        alice.finish_packet(bytes(reply))
    except HANDSHAKE_FAILURES:
        return
    raise AssertionError(f"msg2 with byte {index} flipped was accepted")


@given(st.integers(1, 5))
def test_replayed_msg1_is_refused(replays: int) -> None:
    responder = HandshakeResponder(
        local_node_id=BOB, static_private=STATIC, psk=PSK, replay_guard=HandshakeReplayGuard()
    )
    packet = _initiator().packet1()
    responder.respond_packet(packet, peer_node_id=ALICE)
    for _ in range(replays):
        try:
            responder.respond_packet(packet, peer_node_id=ALICE)
        except HandshakeReplayError:
            continue
        raise AssertionError("a replayed msg1 was answered")


# -- sessions ----------------------------------------------------------------------------

_HH = os.urandom(32)


def _fresh_pair() -> tuple[MeshSession, MeshSession]:
    return (
        MeshSession(SessionKeys.from_handshake_hash(_HH, HandshakeRole.INITIATOR)),
        MeshSession(SessionKeys.from_handshake_hash(_HH, HandshakeRole.RESPONDER)),
    )


OPEN_FAILURES = (DecodeError, PacketAuthError, PacketReplayError)


@given(st.binary(max_size=300))
def test_open_arbitrary_bytes(data: bytes) -> None:
    _, b = _fresh_pair()
    try:
        b.open(data)
    except OPEN_FAILURES:
        return
    raise AssertionError("random bytes authenticated")


@given(events_st.filter(lambda e: sum(4 + len(x) for x in e) <= MAX_PAYLOAD_SIZE), st.data())
def test_open_mutated_datagrams(events: list[bytes], data: st.DataObject) -> None:
    a, b = _fresh_pair()
    wire = bytearray(a.seal_events(3, 1, events))
    index = data.draw(st.integers(0, len(wire) - 1))
    assume(index != 6)
    wire[index] ^= data.draw(st.integers(1, 255))
    try:
        b.open(bytes(wire))
    except OPEN_FAILURES:
        assert b.replay.rx_counter == 0
        return
    raise AssertionError(f"datagram with byte {index} changed was accepted")


@given(st.lists(st.integers(0, 3000), max_size=60))
def test_sealed_packets_open_once_in_any_order(order: list[int]) -> None:
    a, b = _fresh_pair()
    wires = [a.seal_events(1, i, [bytes([i % 256])]) for i in range(40)]
    seen: set[int] = set()
    for pick in order:
        index = pick % len(wires)
        try:
            b.open(wires[index])
        except PacketReplayError:
            assert index in seen
        else:
            assert index not in seen
            seen.add(index)


# -- replay window model -----------------------------------------------------------------


class ReplayWindowModel(RuleBasedStateMachine):
    """The window against the rules written as a set: exact agreement on every query."""

    def __init__(self) -> None:
        super().__init__()
        self.window = ReplayWindow()
        self.committed: set[int] = set()
        self.highest = -1

    def _model_valid(self, counter: int) -> bool:
        rx = self.highest + 1
        if counter >= rx:
            return counter - rx <= MAX_FORWARD
        return rx - 1 - counter < REPLAY_WINDOW_BITS and counter not in self.committed

    @rule(counter=st.integers(0, 6000))
    def commit(self, counter: int) -> None:
        expect = self._model_valid(counter)
        assert self.window.is_valid(counter) == expect
        assert self.window.commit(counter) == expect
        if expect:
            self.committed.add(counter)
            self.highest = max(self.highest, counter)

    @precondition(lambda self: self.highest >= 0)
    @rule(back=st.integers(0, 1100))
    def replay_recent(self, back: int) -> None:
        counter = max(self.highest - back, 0)
        assert self.window.is_valid(counter) == self._model_valid(counter)

    @invariant()
    def rx_counter_matches(self) -> None:
        assert self.window.rx_counter == self.highest + 1


TestReplayWindowModel = ReplayWindowModel.TestCase


class SendWindowMachine(RuleBasedStateMachine):
    """Credit never goes negative or above the window; grants never invent credit."""

    def __init__(self) -> None:
        super().__init__()
        self.window = StreamSendWindow(2000)
        self.in_flight: list[int] = []

    @rule(cost=st.integers(0, 900))
    def acquire(self, cost: int) -> None:
        before = self.window.remaining
        if self.window.try_acquire(cost):
            self.in_flight.append(cost)
            assert self.window.remaining == before - cost
        else:
            assert cost > before
            assert self.window.remaining == before

    @precondition(lambda self: bool(self.in_flight))
    @rule(commit=st.booleans())
    def finish(self, commit: bool) -> None:
        cost = self.in_flight.pop(0)
        if commit:
            self.window.commit(cost)
        else:
            self.window.refund(cost)

    @rule(total=st.one_of(U64, st.integers(0, 5000)))
    def grant(self, total: int) -> None:
        restored = self.window.apply_grant(total)
        assert restored >= 0

    @invariant()
    def bounded(self) -> None:
        w = self.window
        assert 0 <= w.remaining <= w.window_bytes
        assert w.max_consumed_seen <= w.tx_bytes_sent
        # outstanding credit = committed but ungranted + in flight, exactly
        assert w.window_bytes - w.remaining == (
            w.tx_bytes_sent - w.max_consumed_seen + sum(self.in_flight)
        )


TestSendWindowMachine = SendWindowMachine.TestCase


class HandshakeMachine(RuleBasedStateMachine):
    """NKpsk0 steps called in any order, with any message possibly tampered: every call
    either advances the machine or raises a typed error, and two machines that both
    complete agree on the session."""

    def __init__(self) -> None:
        super().__init__()
        self.init = NoiseInitiator(responder_static=STATIC_PUB, psk=PSK)
        self.resp = NoiseResponder(static_private=STATIC, psk=PSK)
        self.msg1: bytes | None = None
        self.msg2: bytes | None = None
        self.tampered = False

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except HANDSHAKE_FAILURES:
            return None

    @rule()
    def write_msg1(self) -> None:
        self.msg1 = self._call(self.init.write_message1) or self.msg1

    @rule(flip=st.none() | st.tuples(st.integers(0, 47), st.integers(1, 255)))
    def read_msg1(self, flip: tuple[int, int] | None) -> None:
        if self.msg1 is None:
            self.tampered = True  # a forged all-zero message1, not a real one
        message = bytearray(self.msg1 if self.msg1 is not None else bytes(48))
        if flip is not None and flip[0] < len(message):
            message[flip[0]] ^= flip[1]
            self.tampered = True
        self._call(self.resp.read_message1, bytes(message))

    @rule()
    def write_msg2(self) -> None:
        self.msg2 = self._call(self.resp.write_message2) or self.msg2

    @rule(flip=st.none() | st.tuples(st.integers(0, 47), st.integers(1, 255)))
    def read_msg2(self, flip: tuple[int, int] | None) -> None:
        if self.msg2 is None:
            self.tampered = True  # a forged all-zero message2, not a real one
        message = bytearray(self.msg2 if self.msg2 is not None else bytes(48))
        if flip is not None and flip[0] < len(message):
            message[flip[0]] ^= flip[1]
            self.tampered = True
        self._call(self.init.read_message2, bytes(message))

    @invariant()
    def agree_when_complete(self) -> None:
        done = (self.init.phase, self.resp.phase) == (
            HandshakePhase.COMPLETE,
            HandshakePhase.COMPLETE,
        )
        if done:
            assert self.init.handshake_hash == self.resp.handshake_hash
        if HandshakePhase.FAILED in (self.init.phase, self.resp.phase):
            # Only a tampered or forged message can fail an honest pair.
            assert self.tampered


TestHandshakeMachine = HandshakeMachine.TestCase
