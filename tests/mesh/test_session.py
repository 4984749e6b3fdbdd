"""Sessions, the anti-replay window, credit windows and replacement rules (``mesh.md``
§1.7, §2.4-2.6, §4, and the invariants listed in §11)."""

from __future__ import annotations

import os

import pytest

from net_core.errors import BackpressureError
from net_core.mesh import (
    CONTROL_STREAM_ID,
    MAX_FORWARD,
    REPLAY_WINDOW_BITS,
    CounterExhaustedError,
    ExistingSession,
    FrameDecodeError,
    GrantQuarantine,
    HandshakeRole,
    MeshBackpressureError,
    MeshEncodeError,
    MeshSession,
    NetHeader,
    PacketAuthError,
    PacketDecodeError,
    PacketFlags,
    PacketReplayError,
    ReplayWindow,
    RotationDecision,
    SessionKeys,
    StreamReceiveWindow,
    StreamSendWindow,
    StreamWindowGrant,
    Subprotocol,
    decide_rotation,
    encode_handshake_packet,
    packet_credit_cost,
)

U64_MAX = 2**64 - 1


def pair(hh: bytes | None = None) -> tuple[MeshSession, MeshSession]:
    hh = hh or os.urandom(32)
    return (
        MeshSession(SessionKeys.from_handshake_hash(hh, HandshakeRole.INITIATOR)),
        MeshSession(SessionKeys.from_handshake_hash(hh, HandshakeRole.RESPONDER)),
    )


# -- sealing and opening -----------------------------------------------------------------


def test_events_both_ways() -> None:
    a, b = pair()
    wire = a.seal_events(7, 3, [b"hello", b"world!"], reliable=True, channel_hash=0xE5D8)
    assert len(wire) == 99
    opened = b.open(wire)
    assert opened.events() == [b"hello", b"world!"]
    h = opened.header
    assert (h.stream_id, h.sequence, h.event_count, h.payload_len) == (7, 3, 2, 19)
    assert h.flags == PacketFlags.RELIABLE
    assert h.channel_hash == 0xE5D8
    assert h.session_id == a.session_id
    assert h.nonce == a.keys.nonce_prefix + (0).to_bytes(8, "little")
    assert a.open(b.seal_events(1, 0, [b"back"])).events() == [b"back"]


def test_one_counter_for_every_packet_kind() -> None:
    a, b = pair()
    packets = [a.seal_events(1, 0, [b"x"]), a.heartbeat(), a.grant(1, 10), a.seal(NetHeader())]
    counters = [NetHeader.decode(p[:64]).nonce_counter for p in packets]
    assert counters == [0, 1, 2, 3]
    assert a.tx_counter == 4
    for p in packets:
        b.open(p)


def test_heartbeat_shape_and_verification() -> None:
    a, b = pair()
    beat = a.heartbeat()
    assert len(beat) == 80
    header = NetHeader.decode(beat[:64])
    assert header.flags == PacketFlags.HEARTBEAT
    assert (header.stream_id, header.sequence, header.payload_len) == (0, 0, 0)
    assert b.open(beat).plaintext == b""
    with pytest.raises(PacketReplayError):
        b.open(beat)
    _, c = pair()
    with pytest.raises(PacketAuthError):
        c.open(a.heartbeat())  # another session
    unauthenticated = a.heartbeat()[:-16] + bytes(16)
    with pytest.raises(PacketAuthError):
        b.open(unauthenticated)
    assert b.replay.rx_counter == 1  # the forged one touched nothing


def test_heartbeat_with_payload_is_refused() -> None:
    a, b = pair()
    odd = a.seal(NetHeader(flags=PacketFlags.HEARTBEAT), b"data")
    with pytest.raises(PacketDecodeError, match="heartbeat"):
        b.open(odd)
    assert b.replay.rx_counter == 0


def test_grant_packet_shape() -> None:
    a, b = pair()
    first = a.grant(5, 184)
    second = a.grant(5, 300)
    assert len(first) == 100
    opened = b.open(first)
    assert opened.header.subprotocol_id == Subprotocol.STREAM_WINDOW
    assert opened.header.stream_id == CONTROL_STREAM_ID
    assert opened.header.payload_len == 20
    assert [StreamWindowGrant.decode(e) for e in opened.events()] == [StreamWindowGrant(5, 184)]
    # the control sequence is separate from every stream's, including a user stream 0x0B00
    user = a.seal_events(0x0B00, 41, [b"x"])
    assert b.open(second).header.sequence == 1
    assert b.open(user).header.sequence == 41
    assert a.control_seq == 2


def test_hop_count_may_change_in_transit() -> None:
    a, b = pair()
    wire = bytearray(a.seal_events(1, 0, [b"x"]))
    wire[6] = 9
    assert b.open(bytes(wire)).header.hop_count == 9


@pytest.mark.parametrize("offset", [0, 2, 3, 5, 8, 10, 12, 16, 24, 32, 40, 48, 52, 56, 60, 62, 64])
def test_tampering_any_field_fails(offset: int) -> None:
    a, b = pair()
    wire = bytearray(a.seal_events(1, 0, [b"payload!"]))
    wire[offset] ^= 0x01
    with pytest.raises((PacketAuthError, PacketDecodeError, PacketReplayError)):
        b.open(bytes(wire))
    assert b.replay.rx_counter == 0  # nothing committed


def test_failed_packets_do_not_move_the_window() -> None:
    a, b = pair()
    good = a.seal_events(1, 0, [b"x"])
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(PacketAuthError):
        b.open(bytes(bad))
    assert b.open(good).events() == [b"x"]


def test_open_refuses_handshakes_and_foreign_prefix() -> None:
    a, b = pair()
    with pytest.raises(PacketDecodeError):
        b.open(encode_handshake_packet(bytes(48)))
    wire = bytearray(a.seal_events(1, 0, [b"x"]))
    wire[12] ^= 0xFF  # nonce prefix
    with pytest.raises(PacketAuthError, match="prefix"):
        b.open(bytes(wire))


def test_seal_validates_before_spending_a_counter() -> None:
    a, _ = pair()
    with pytest.raises(MeshEncodeError):
        a.seal(NetHeader(stream_id=2**64))
    assert a.tx_counter == 0


def test_counter_exhaustion() -> None:
    a, b = pair()
    a._tx_counter = U64_MAX - 1  # white-box: reach the end without 2**64 packets
    last = a.seal(NetHeader())
    with pytest.raises(CounterExhaustedError):
        a.seal(NetHeader())
    with pytest.raises(PacketReplayError):
        b.open(last)  # counter 2**64-2 is > MAX_FORWARD ahead of a fresh window


def test_two_sessions_same_key_different_prefix_differ() -> None:
    hh = os.urandom(32)
    keys = SessionKeys.from_handshake_hash(hh, HandshakeRole.INITIATOR)
    other = SessionKeys(
        session_id=keys.session_id ^ 1,
        tx_key=keys.tx_key,
        rx_key=keys.rx_key,
        handshake_hash=hh,
        role=keys.role,
    )
    one = MeshSession(keys).seal_events(1, 0, [b"same"])
    two = MeshSession(other).seal_events(1, 0, [b"same"])
    assert one[64:] != two[64:]


def test_malformed_frames_surface_as_frame_errors() -> None:
    a, b = pair()
    wire = a.seal(NetHeader(event_count=2), b"\x01\x00\x00\x00x")
    with pytest.raises(FrameDecodeError):
        b.open(wire).events()


# -- the anti-replay window --------------------------------------------------------------


def test_replay_window_rules() -> None:
    w = ReplayWindow()
    assert w.commit(0)
    assert not w.commit(0)
    assert not w.is_valid(0)
    assert w.commit(5)
    assert w.rx_counter == 6
    assert w.commit(3)  # late but inside the window
    assert not w.commit(3)
    assert w.seen(5)
    assert w.seen(3)
    assert not w.seen(4)


def test_replay_window_forward_limit_and_max() -> None:
    w = ReplayWindow()
    assert w.is_valid(MAX_FORWARD)
    assert not w.is_valid(MAX_FORWARD + 1)
    assert not w.is_valid(U64_MAX)
    assert not w.commit(U64_MAX)
    assert w.rx_counter == 0  # refused values never mutate state


def test_replay_window_age_limit_and_slide() -> None:
    w = ReplayWindow()
    assert w.commit(100)
    for newest in range(200, 2001, 100):  # slides of 100 keep the old bit set
        assert w.commit(newest)
        assert not w.is_valid(newest - 100)
    assert w.rx_counter == 2001
    assert w.is_valid(2000 - (REPLAY_WINDOW_BITS - 1))  # age 1023: still inside
    assert not w.is_valid(2000 - REPLAY_WINDOW_BITS)  # age 1024: too old
    assert w.commit(2000 + MAX_FORWARD)  # a full-window jump clears the history
    assert w.seen(2000 + MAX_FORWARD)
    assert not w.seen(2000)
    assert not w.is_valid(2000)  # now older than the window


def test_replay_window_saturated_refuses() -> None:
    w = ReplayWindow()
    w._rx_counter = U64_MAX  # white-box: the saturated state
    assert not w.is_valid(U64_MAX - 2)


# -- credit windows (StreamWindow v2) ----------------------------------------------------


def test_packet_credit_cost() -> None:
    assert packet_credit_cost([bytes(100)]) == 184
    assert packet_credit_cost([b"hello", b"world!"]) == 99


def test_verified_send_sequence_window_300() -> None:
    w = StreamSendWindow(300)
    cost = packet_credit_cost([bytes(100)])
    w.acquire(cost)
    w.commit(cost)
    assert w.remaining == 116
    with pytest.raises(MeshBackpressureError) as info:
        w.acquire(cost)
    assert isinstance(info.value, BackpressureError)
    assert w.backpressure_events == 1
    assert w.remaining == 116  # nothing taken by the refused packet
    assert w.apply_grant(184) == 184
    assert w.remaining == 300
    assert w.credit_grants_received == 1


def test_grants_are_monotonic_clamped_and_self_healing() -> None:
    w = StreamSendWindow(1000)
    for _ in range(3):
        w.acquire(200)
        w.commit(200)
    assert w.remaining == 400
    assert w.apply_grant(U64_MAX) == 600  # clamped to tx_bytes_sent
    assert w.remaining == 1000
    w.acquire(100)
    w.commit(100)
    assert w.apply_grant(550) == 0  # stale: below the clamped maximum seen (600)
    assert w.apply_grant(700) == 100  # a later grant still works after u64::MAX
    assert w.credit_grants_received == 3
    # lost grants heal: only the latest cumulative total matters
    for _ in range(3):
        w.acquire(100)
        w.commit(100)
    assert w.apply_grant(1000) == 300
    assert w.remaining == 1000


def test_grant_credit_is_capped_at_the_window() -> None:
    w = StreamSendWindow(300)
    w.acquire(200)
    w.commit(200)
    w.refund(0)
    assert w.apply_grant(200) == 200
    assert w.remaining == 300


def test_refund_restores_uncommitted_credit() -> None:
    w = StreamSendWindow(300)
    w.acquire(184)
    w.refund(184)
    assert w.remaining == 300
    assert w.tx_bytes_sent == 0
    assert w.apply_grant(184) == 0  # nothing was sent, so nothing can be granted


def test_unbounded_window() -> None:
    w = StreamSendWindow(0)
    assert w.unbounded
    for _ in range(100):
        w.acquire(10_000)
    assert not w.would_block(2**40)
    assert w.apply_grant(5) == 0
    assert StreamReceiveWindow(1, window_bytes=0).on_packet(184) is None


def test_backpressure_signal() -> None:
    w = StreamSendWindow(200)
    assert not w.would_block(184)
    w.acquire(184)
    assert w.would_block(184)
    assert not w.try_acquire(184)
    with pytest.raises(ValueError, match="cost"):
        w.try_acquire(-1)
    with pytest.raises(ValueError, match="window_bytes"):
        StreamSendWindow(-1)


def test_receiver_grants_are_cumulative() -> None:
    r = StreamReceiveWindow(5)
    # the observed reference sequence: plaintexts of 22, 14 and 10 bytes
    totals = []
    for size in (18, 10, 6):
        grant = r.on_packet(packet_credit_cost([bytes(size)]))
        assert grant is not None
        totals.append(grant.total_consumed)
    assert totals == [102, 196, 286]
    assert r.credit_grants_sent == 3


def test_grant_quarantine() -> None:
    q = GrantQuarantine()
    assert not q.is_quarantined(5, 0)  # no quarantine without a close
    q.closed(5, now_ns=1_000)
    assert q.is_quarantined(5, 1_000 + 1_999_999_999)
    assert not q.is_quarantined(5, 1_000 + 2_000_000_000)
    q.closed(6, now_ns=0)
    q.sweep(now_ns=3_000_000_000)
    assert not q.is_quarantined(6, 0)


# -- replacement rules -------------------------------------------------------------------

S1, S2, E1, E2 = b"\x01" * 32, b"\x02" * 32, b"\x0a" * 32, b"\x0b" * 32
TIMEOUT = 30_000_000_000


@pytest.mark.parametrize(
    ("existing", "static", "ephemeral", "routed", "now", "decision"),
    [
        (None, S1, E1, True, 0, RotationDecision.ACCEPT_NEW),
        (ExistingSession(S1, E1, 0), S1, E1, True, 5, RotationDecision.DROP_REPLAY),
        (ExistingSession(S1, E1, 0), S1, E2, True, 5, RotationDecision.ACCEPT_ROTATION),
        (ExistingSession(S1, E1, 0), S2, E2, True, TIMEOUT - 1, RotationDecision.REFUSE_FRESH),
        (ExistingSession(S1, E1, 0), S2, E2, True, TIMEOUT, RotationDecision.ACCEPT_ROTATION),
        (ExistingSession(S1, E1, 0), S2, E2, False, 1, RotationDecision.ACCEPT_ROTATION),
    ],
)
def test_rotation_table(
    existing: ExistingSession | None,
    static: bytes,
    ephemeral: bytes,
    routed: bool,
    now: int,
    decision: RotationDecision,
) -> None:
    got = decide_rotation(
        existing,
        remote_static=static,
        initiator_ephemeral=ephemeral,
        routed=routed,
        now_ns=now,
        session_timeout_ns=TIMEOUT,
    )
    assert got is decision
    assert got.installs == (decision in (RotationDecision.ACCEPT_NEW, decision.ACCEPT_ROTATION))
