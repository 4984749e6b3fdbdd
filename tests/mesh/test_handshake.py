"""The NKpsk0 machines, the mesh handshake and session keys (``mesh.md`` §2).

* the public Noise test vector for ``Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s`` (cacophony's,
  as mirrored in the snow repository's ``tests/vectors/cacophony.txt``);
* the session-KDF, nonce-prefix and prologue vectors of the fact sheet;
* direct and routed handshakes, and every typed failure: wrong PSK, wrong static key,
  wrong peer id (prologue), tampering, replay, message order, routed identity mismatch.
"""

from __future__ import annotations

import os
import struct

import pytest

from net_core.mesh import (
    HandshakeAuthError,
    HandshakeDecodeError,
    HandshakeIdentityError,
    HandshakeInitiator,
    HandshakeOrderError,
    HandshakePhase,
    HandshakeReplayError,
    HandshakeReplayGuard,
    HandshakeResponder,
    HandshakeRole,
    NetHeader,
    NoiseInitiator,
    NoiseResponder,
    PacketDecodeError,
    PacketFlags,
    SessionKeys,
    decode_handshake_packet,
    derive_key,
    encode_handshake_packet,
    handshake_prologue,
    nonce_prefix,
    routing_id,
    x25519_public_key,
)

# -- the public Noise vector -------------------------------------------------------------
# cacophony test vector "Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s" (facts: keys, messages).
V_PROLOGUE = bytes.fromhex("4a6f686e2047616c74")
V_PSK = bytes.fromhex("54686973206973206d7920417573747269616e20706572737065637469766521")
V_INIT_EPHEMERAL = bytes.fromhex("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")
V_RESP_STATIC_PUB = bytes.fromhex(
    "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62"
)
V_RESP_STATIC = bytes.fromhex("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")
V_RESP_EPHEMERAL = bytes.fromhex("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
V_MESSAGES = [
    (
        "4c756477696720766f6e204d69736573",
        "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c794427635ede06947b2d3acd77a"
        "36788aaaf17e9f5a8ac252e560fb421ba161a2cf8",
    ),
    (
        "4d757272617920526f746862617264",
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843d682eb9cf4fee6816c8c8cf"
        "d34c15774321e234e3a426d7cfd3f13e5e84d04",
    ),
    ("462e20412e20486179656b", "b6645684db57679aa08f0b3352d58f32ec7f1e1a02083d5bd54277"),
    ("4361726c204d656e676572", "473a9a4109eba0939e934640d318984df8d0900aa922f0195a09ad"),
    (
        "4a65616e2d426170746973746520536179",
        "c8c44a16fff728f83e61272382149feadd3eb0ee1bab6313f84c72fe1581225236",
    ),
    (
        "457567656e2042f6686d20766f6e2042617765726b",
        "21354f87158ac5e357529e87e8c84cfcdb49c8a080550c8f908d05ef7ea82ca525e3d1398e",
    ),
]


def test_noise_vector_nkpsk0_25519_chachapoly_blake2s() -> None:
    assert x25519_public_key(V_RESP_STATIC) == V_RESP_STATIC_PUB
    init = NoiseInitiator(
        responder_static=V_RESP_STATIC_PUB,
        psk=V_PSK,
        prologue=V_PROLOGUE,
        ephemeral=V_INIT_EPHEMERAL,
    )
    resp = NoiseResponder(
        static_private=V_RESP_STATIC, psk=V_PSK, prologue=V_PROLOGUE, ephemeral=V_RESP_EPHEMERAL
    )
    (p0, c0), (p1, c1), *transport = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in V_MESSAGES]
    assert init.write_message1(p0) == c0
    assert resp.read_message1(c0) == p0
    assert resp.write_message2(p1) == c1
    assert init.read_message2(c1) == p1
    assert init.handshake_hash == resp.handshake_hash
    # Transport messages alternate initiator -> responder -> initiator ...
    i_send, i_recv = init.split()
    r_recv, r_send = resp.split()
    for index, (plain, cipher) in enumerate(transport):
        sender, receiver = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        assert sender.encrypt_with_ad(b"", plain) == cipher
        assert receiver.decrypt_with_ad(b"", cipher) == plain


# -- fact-sheet vectors ------------------------------------------------------------------


def test_session_kdf_vectors() -> None:
    hh = bytes(range(32))
    assert derive_key(hh, b"initiator-tx").hex() == (
        "142ba956d51f54d48c5889b0f92bbd4bb294a9f2706a7a63d0a4f104f47f5821"
    )
    assert derive_key(hh, b"initiator-rx").hex() == (
        "b00e152f0ee739f744bf170f4d0a14f3dbe9b19564c573352e7d6875c48b650e"
    )
    assert nonce_prefix(0x1122334455667788) == bytes.fromhex("cc444444")
    assert derive_key(hh, b"initiator-tx") != derive_key(hh, b"initiator-rx")
    assert derive_key(hh, b"x") != bytes(32)


def test_prologue_vector() -> None:
    assert handshake_prologue(0xAAAABBBB11112222, 0xCCCCDDDD33334444) == bytes.fromhex(
        "6e65742d68616e647368616b652d763122221111000000004444333300000000"
    )
    assert handshake_prologue(0x1_0000_0005, 7) == handshake_prologue(5, 7)


def test_session_keys_mirror_each_other() -> None:
    hh = os.urandom(32)
    i = SessionKeys.from_handshake_hash(hh, HandshakeRole.INITIATOR)
    r = SessionKeys.from_handshake_hash(hh, HandshakeRole.RESPONDER)
    assert i.session_id == r.session_id == int.from_bytes(hh[:8], "little")
    assert (i.tx_key, i.rx_key) == (r.rx_key, r.tx_key)
    assert i.nonce_prefix == r.nonce_prefix
    assert "tx_key" not in repr(i)
    with pytest.raises(ValueError, match="32 bytes"):
        SessionKeys.from_handshake_hash(b"short", HandshakeRole.INITIATOR)


# -- the mesh handshake ------------------------------------------------------------------

PSK = bytes(range(32))
STATIC = bytes(range(1, 33))
ALICE = 0xA11CE_0000_0001
BOB = 0xB0B_0000_0002


def _initiator(**overrides: object) -> HandshakeInitiator:
    kwargs: dict[str, object] = {
        "local_node_id": ALICE,
        "peer_node_id": BOB,
        "peer_static_public": x25519_public_key(STATIC),
        "psk": PSK,
    }
    kwargs.update(overrides)
    return HandshakeInitiator(**kwargs)  # type: ignore[arg-type]


def _responder(**overrides: object) -> HandshakeResponder:
    kwargs: dict[str, object] = {"local_node_id": BOB, "static_private": STATIC, "psk": PSK}
    kwargs.update(overrides)
    return HandshakeResponder(**kwargs)  # type: ignore[arg-type]


def test_direct_handshake_sizes_and_sessions() -> None:
    alice = _initiator()
    packet1 = alice.packet1()
    assert len(packet1) == 112
    assert NetHeader.decode(packet1[:64]) == NetHeader(flags=PacketFlags.HANDSHAKE, payload_len=48)
    answer = _responder().respond_packet(packet1, peer_node_id=ALICE)
    assert len(answer.packet()) == 112
    result = alice.finish_packet(answer.packet())
    assert result.keys.session_id == answer.result.keys.session_id
    assert result.keys.tx_key == answer.result.keys.rx_key
    assert result.keys.rx_key == answer.result.keys.tx_key
    assert result.peer_node_id == BOB
    assert answer.result.peer_node_id == ALICE
    assert result.remote_static == x25519_public_key(STATIC)
    assert answer.result.remote_static == bytes(32)
    assert result.initiator_ephemeral == answer.result.initiator_ephemeral == alice.ephemeral_public
    assert not result.routed


def test_deterministic_with_injected_ephemerals() -> None:
    def run() -> tuple[bytes, bytes, int]:
        alice = _initiator(ephemeral=b"\x11" * 32)
        m1 = alice.message1()
        answer = _responder().respond(m1, peer_node_id=ALICE, ephemeral=b"\x22" * 32)
        return m1, answer.message2, alice.finish(answer.message2).keys.session_id

    assert run() == run()


def test_routed_handshake_carries_the_initiator_id() -> None:
    alice = _initiator(routed=True)
    datagram = alice.packet1()
    assert len(datagram) == 18 + 64 + 56
    assert datagram[:2] == b"RT"
    inner = decode_handshake_packet(datagram[18:])
    answer = _responder().respond_routed(inner, src_id=routing_id(ALICE))
    assert answer.result.peer_node_id == ALICE
    assert answer.result.routed
    routed_reply = answer.routed_packet(BOB)
    assert routed_reply[:2] == b"RT"
    assert struct.unpack_from("<BBxxIQ", routed_reply, 2) == (16, 0, routing_id(BOB), ALICE)
    result = alice.finish_packet(routed_reply[18:])
    assert result.keys.session_id == answer.result.keys.session_id
    assert result.routed


def test_routed_identity_must_match_the_routing_header() -> None:
    alice = _initiator(routed=True)
    inner = decode_handshake_packet(alice.packet1()[18:])
    with pytest.raises(HandshakeAuthError):
        # the prologue binds the routing id too, so a foreign src fails authentication
        _responder().respond_routed(inner, src_id=routing_id(ALICE) ^ 1)


def test_routed_payload_must_name_the_sender() -> None:
    # A PSK holder that lies about its node id in the payload (same routing id in the
    # prologue, different full id whose low 32 bits differ) is refused.
    src = routing_id(ALICE)
    noise = NoiseInitiator(
        responder_static=x25519_public_key(STATIC),
        psk=PSK,
        prologue=handshake_prologue(ALICE, BOB),
    )
    m1 = noise.write_message1(struct.pack("<Q", ALICE ^ 0xFF))
    with pytest.raises(HandshakeIdentityError):
        _responder().respond_routed(m1, src_id=src)
    noise = NoiseInitiator(
        responder_static=x25519_public_key(STATIC), psk=PSK, prologue=handshake_prologue(src, BOB)
    )
    with pytest.raises(HandshakeDecodeError):
        _responder().respond_routed(noise.write_message1(b"\x01\x02"), src_id=src)


def test_direct_msg1_with_a_payload_is_refused() -> None:
    noise = NoiseInitiator(
        responder_static=x25519_public_key(STATIC), psk=PSK, prologue=handshake_prologue(ALICE, BOB)
    )
    with pytest.raises(HandshakeDecodeError):
        _responder().respond(noise.write_message1(b"extra"), peer_node_id=ALICE)


@pytest.mark.parametrize(
    ("initiator", "responder", "peer_id"),
    [
        ({"psk": bytes(32)}, {}, ALICE),  # wrong PSK
        ({"peer_static_public": x25519_public_key(bytes(range(2, 34)))}, {}, ALICE),
        ({}, {"static_private": bytes(range(2, 34))}, ALICE),  # responder has another key
        ({}, {}, ALICE + 1),  # responder expects another node id (prologue)
        ({"local_node_id": ALICE + 1}, {}, ALICE),
    ],
)
def test_mismatches_fail_authentication(
    initiator: dict[str, object], responder: dict[str, object], peer_id: int
) -> None:
    with pytest.raises(HandshakeAuthError):
        _responder(**responder).respond_packet(
            _initiator(**initiator).packet1(), peer_node_id=peer_id
        )


def test_tampered_msg2_fails_and_the_initiator_stays_failed() -> None:
    alice = _initiator()
    answer = _responder().respond(alice.message1(), peer_node_id=ALICE)
    bad = bytearray(answer.message2)
    bad[40] ^= 0x80
    with pytest.raises(HandshakeAuthError):
        alice.finish(bytes(bad))
    with pytest.raises(HandshakeOrderError):
        alice.finish(answer.message2)


def test_replay_guard_refuses_a_second_msg1() -> None:
    guard = HandshakeReplayGuard(capacity=2)
    responder = _responder(replay_guard=guard)
    first = _initiator().message1()
    responder.respond(first, peer_node_id=ALICE)
    with pytest.raises(HandshakeReplayError):
        responder.respond(first, peer_node_id=ALICE)
    assert len(guard) == 1
    # bounded: the oldest entry is forgotten past capacity
    for _ in range(2):
        responder.respond(_initiator().message1(), peer_node_id=ALICE)
    assert len(guard) == 2
    assert first[:32] not in guard
    with pytest.raises(ValueError, match="capacity"):
        HandshakeReplayGuard(0)


def test_replay_of_garbage_is_not_recorded() -> None:
    guard = HandshakeReplayGuard()
    m1 = _initiator(psk=bytes(32)).message1()
    with pytest.raises(HandshakeAuthError):
        _responder(replay_guard=guard).respond(m1, peer_node_id=ALICE)
    assert len(guard) == 0


def test_message_order_is_enforced() -> None:
    init = NoiseInitiator(responder_static=x25519_public_key(STATIC), psk=PSK)
    with pytest.raises(HandshakeOrderError):
        init.read_message2(bytes(48))
    with pytest.raises(HandshakeOrderError):
        _ = init.handshake_hash
    with pytest.raises(HandshakeOrderError):
        init.split()
    m1 = init.write_message1()
    assert init.phase is HandshakePhase.AWAITING_MSG2
    with pytest.raises(HandshakeOrderError):
        init.write_message1()
    resp = NoiseResponder(static_private=STATIC, psk=PSK)
    with pytest.raises(HandshakeOrderError):
        resp.write_message2()
    resp.read_message1(m1)
    with pytest.raises(HandshakeOrderError):
        resp.read_message1(m1)
    init.read_message2(resp.write_message2())
    assert init.phase is resp.phase is HandshakePhase.COMPLETE
    with pytest.raises(HandshakeOrderError):
        resp.write_message2()


@pytest.mark.parametrize("size", [0, 31, 47])
def test_short_messages_are_decode_errors(size: int) -> None:
    with pytest.raises(HandshakeDecodeError):
        NoiseResponder(static_private=STATIC, psk=PSK).read_message1(bytes(size))
    init = NoiseInitiator(responder_static=x25519_public_key(STATIC), psk=PSK)
    init.write_message1()
    with pytest.raises(HandshakeDecodeError):
        init.read_message2(bytes(size))
    assert init.phase is HandshakePhase.FAILED


def test_low_order_ephemeral_is_an_auth_error() -> None:
    # an all-zero "public key" makes X25519 produce the all-zero secret
    with pytest.raises(HandshakeAuthError):
        NoiseResponder(static_private=STATIC, psk=PSK).read_message1(bytes(48))


def test_bad_key_material_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="PSK"):
        NoiseResponder(static_private=STATIC, psk=b"short")
    with pytest.raises(ValueError, match="static"):
        NoiseInitiator(responder_static=b"short", psk=PSK)
    with pytest.raises(ValueError, match="private key"):
        NoiseInitiator(responder_static=bytes(32), psk=PSK, ephemeral=b"short")


def test_handshake_packet_decoder_is_strict() -> None:
    good = encode_handshake_packet(bytes(48))
    assert decode_handshake_packet(good) == bytes(48)
    hopped = bytearray(good)
    hopped[6] = 3  # hop_count may change in transit
    assert decode_handshake_packet(bytes(hopped)) == bytes(48)
    for offset, value in ((3, 0x30), (3, 0x00), (24, 1), (32, 1), (62, 1)):
        bad = bytearray(good)
        bad[offset] = value
        with pytest.raises((HandshakeDecodeError, PacketDecodeError)):
            decode_handshake_packet(bytes(bad))
