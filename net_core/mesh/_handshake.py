"""The mesh handshake: NKpsk0 bound to node ids, wrapped in Net packets (``mesh.md`` §2.2-2.3).

Theory of operation. The initiator knows the responder's static X25519 key, its node id
and the mesh PSK. Both sides feed the same 32-byte prologue to Noise,
``"net-handshake-v1" ‖ u64 LE src ‖ u64 LE dst``, where src/dst are the *routing ids*
(low 32 bits of the node ids) of the initiator and the responder. Then:

* direct: msg1 and msg2 carry empty payloads (48 Noise bytes each) and travel as
  handshake packets: a 64-byte header whose only non-zero fields are ``flags =
  HANDSHAKE`` and ``payload_len``, followed by the raw Noise bytes (112-byte datagrams);
* routed: msg1's payload is the initiator's full u64 node id (56 Noise bytes) so the
  responder learns who is calling through a relay; the responder requires its low 32
  bits to equal the routing header's ``src_id``. Both messages travel behind an 18-byte
  routing header with ttl :data:`~net_core.mesh.DEFAULT_HANDSHAKE_TTL`.

Both sides finish with identical :class:`~net_core.mesh.SessionKeys` (same session id;
initiator tx == responder rx). A :class:`HandshakeReplayGuard` remembers accepted
initiator ephemerals, so a replayed msg1 is refused with :class:`HandshakeReplayError`
instead of minting a second session.

Security note (kept from the reference, stated so nobody relies on more): the only
things authenticated are the PSK and the responder's static key. A direct initiator's
claimed node id is bound only through the 32-bit routing id in the prologue.

Sans-I/O: the classes take and return bytes; the node owns the sockets and timers.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Final, final

import attrs

from net_core.mesh._errors import (
    HandshakeDecodeError,
    HandshakeIdentityError,
    HandshakeOrderError,
    HandshakeReplayError,
)
from net_core.mesh._header import HEADER_SIZE, NetHeader, PacketFlags, split_packet
from net_core.mesh._noise import DH_LEN, NoiseInitiator, NoiseResponder
from net_core.mesh._routing import DEFAULT_HANDSHAKE_TTL, RoutingHeader, routing_id
from net_core.mesh._session import HandshakeRole, SessionKeys

__all__ = [
    "DIRECT_HANDSHAKE_DATAGRAM_SIZE",
    "DIRECT_HANDSHAKE_MESSAGE_SIZE",
    "PROLOGUE_LABEL",
    "ROUTED_MSG1_SIZE",
    "HandshakeInitiator",
    "HandshakeReplayGuard",
    "HandshakeResponder",
    "HandshakeResponse",
    "HandshakeResult",
    "decode_handshake_packet",
    "encode_handshake_packet",
    "handshake_prologue",
]

PROLOGUE_LABEL: Final = b"net-handshake-v1"
DIRECT_HANDSHAKE_MESSAGE_SIZE: Final = 48
ROUTED_MSG1_SIZE: Final = 56
DIRECT_HANDSHAKE_DATAGRAM_SIZE: Final = HEADER_SIZE + DIRECT_HANDSHAKE_MESSAGE_SIZE  # 112
_NODE_ID: Final = struct.Struct("<Q")
_PROLOGUE_IDS: Final = struct.Struct("<QQ")
_EMPTY_HANDSHAKE_HEADER: Final = NetHeader(flags=PacketFlags.HANDSHAKE)
_ZERO_KEY: Final = bytes(DH_LEN)


def handshake_prologue(src_node_id: int, dst_node_id: int) -> bytes:
    """The 32-byte Noise prologue: label ‖ routing id of src ‖ routing id of dst (u64 LE)."""
    return PROLOGUE_LABEL + _PROLOGUE_IDS.pack(routing_id(src_node_id), routing_id(dst_node_id))


def encode_handshake_packet(noise_message: bytes) -> bytes:
    """Wrap a Noise message in a handshake packet (header with only HANDSHAKE and
    ``payload_len`` set, then the raw bytes; no AEAD tag)."""
    header = attrs.evolve(_EMPTY_HANDSHAKE_HEADER, payload_len=len(noise_message))
    return header.encode() + bytes(noise_message)


def decode_handshake_packet(datagram: bytes | bytearray | memoryview) -> bytes:
    """Return the Noise message of a handshake packet.

    Strict: the flags must be exactly HANDSHAKE and every other header field zero
    (``hop_count`` excepted: relays may bump it), the body exactly ``payload_len`` bytes.
    Raises only the :class:`~net_core.errors.DecodeError` family.
    """
    header, body = split_packet(datagram)
    if header.flags != PacketFlags.HANDSHAKE:
        raise HandshakeDecodeError(f"handshake packet flags are {header.flags:#04x}, not 0x10")
    if attrs.evolve(header, hop_count=0) != attrs.evolve(
        _EMPTY_HANDSHAKE_HEADER, payload_len=header.payload_len
    ):
        raise HandshakeDecodeError("handshake packet header has non-zero fields")
    return body


@final
@attrs.frozen(slots=True)
class HandshakeResult:
    """A finished handshake, as either side sees it.

    ``remote_static`` is the responder's static key on the initiator side and 32 zero
    bytes on the responder side (NK: the initiator has no static key).
    ``initiator_ephemeral`` identifies this handshake for replay and rotation checks.
    """

    keys: SessionKeys
    peer_node_id: int
    initiator_ephemeral: bytes
    remote_static: bytes
    routed: bool


@final
@attrs.frozen(slots=True)
class HandshakeResponse:
    """What a responder sends back (``message2``, raw Noise bytes) and the session."""

    message2: bytes
    result: HandshakeResult

    def packet(self) -> bytes:
        """``message2`` as a direct handshake packet."""
        return encode_handshake_packet(self.message2)

    def routed_packet(self, local_node_id: int) -> bytes:
        """``message2`` behind a routing header addressed to the initiator."""
        route = RoutingHeader(
            src_id=routing_id(local_node_id),
            dest_id=self.result.peer_node_id,
            ttl=DEFAULT_HANDSHAKE_TTL,
        )
        return route.encode() + encode_handshake_packet(self.message2)


@final
class HandshakeInitiator:
    """One initiator handshake: :meth:`message1` once, then :meth:`finish` once.

    ``ephemeral`` injects the 32-byte ephemeral private key (tests); by default it comes
    from the OS CSPRNG. Any failure leaves the object FAILED; start a new one to retry.
    """

    __slots__ = ("_local", "_noise", "_peer", "_peer_static", "_routed")

    def __init__(
        self,
        *,
        local_node_id: int,
        peer_node_id: int,
        peer_static_public: bytes,
        psk: bytes,
        routed: bool = False,
        ephemeral: bytes | None = None,
    ) -> None:
        self._local = local_node_id
        self._peer = peer_node_id
        self._peer_static = bytes(peer_static_public)
        self._routed = routed
        self._noise = NoiseInitiator(
            responder_static=self._peer_static,
            psk=psk,
            prologue=handshake_prologue(local_node_id, peer_node_id),
            ephemeral=ephemeral,
        )

    @property
    def routed(self) -> bool:
        """True for a handshake through a relay."""
        return self._routed

    @property
    def ephemeral_public(self) -> bytes:
        """This handshake's ephemeral public key (the first 32 bytes of msg1)."""
        return self._noise.local_ephemeral_public

    def message1(self) -> bytes:
        """The Noise msg1 bytes (48 direct, 56 routed)."""
        payload = _NODE_ID.pack(self._local) if self._routed else b""
        return self._noise.write_message1(payload)

    def packet1(self) -> bytes:
        """msg1 as the datagram to send: a handshake packet, behind a routing header
        (src = our routing id, dest = the peer's node id, ttl 16) when routed."""
        packet = encode_handshake_packet(self.message1())
        if not self._routed:
            return packet
        route = RoutingHeader(
            src_id=routing_id(self._local), dest_id=self._peer, ttl=DEFAULT_HANDSHAKE_TTL
        )
        return route.encode() + packet

    def finish(self, message2: bytes) -> HandshakeResult:
        """Read the responder's msg2 (raw Noise bytes) and return the session.

        Raises :class:`~net_core.mesh.HandshakeAuthError` (wrong PSK or static key on
        either side, tampering), :class:`~net_core.mesh.HandshakeDecodeError` (bad
        length, or a payload where the mesh sends none) or
        :class:`~net_core.mesh.HandshakeOrderError`.
        """
        payload = self._noise.read_message2(message2)
        if payload:
            raise HandshakeDecodeError(f"msg2 carries a {len(payload)}-byte payload; want none")
        keys = SessionKeys.from_handshake_hash(self._noise.handshake_hash, HandshakeRole.INITIATOR)
        return HandshakeResult(
            keys=keys,
            peer_node_id=self._peer,
            initiator_ephemeral=self.ephemeral_public,
            remote_static=self._peer_static,
            routed=self._routed,
        )

    def finish_packet(self, datagram: bytes | bytearray | memoryview) -> HandshakeResult:
        """:meth:`finish` for a received handshake packet (direct, or the inner packet of
        a routed one)."""
        return self.finish(decode_handshake_packet(datagram))


@final
class HandshakeReplayGuard:
    """Remembers the initiator ephemerals of accepted msg1s (bounded, oldest forgotten).

    A legitimate initiator draws a fresh ephemeral for every attempt, so a repeat can only
    be a replay (or a retransmission of a message already answered).
    """

    __slots__ = ("_capacity", "_seen")

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, ephemeral: object) -> bool:
        return ephemeral in self._seen

    def record(self, ephemeral: bytes) -> None:
        """Record ``ephemeral``; :class:`HandshakeReplayError` if it was already recorded."""
        if ephemeral in self._seen:
            raise HandshakeReplayError("msg1 replayed: its initiator ephemeral was already used")
        self._seen[ephemeral] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def forget(self, ephemeral: bytes) -> None:
        """Forget ``ephemeral``: the session its msg1 created died before the initiator
        ever used it, so a retransmission of that msg1 must be answered afresh (there is
        no session left to answer it from)."""
        self._seen.pop(ephemeral, None)


@final
class HandshakeResponder:
    """The responder side: holds the static key and PSK, answers one msg1 per call.

    Every call runs a fresh Noise responder, so a failed or hostile msg1 leaves nothing
    behind. With a ``replay_guard``, an authenticated msg1 whose ephemeral was already
    answered raises :class:`HandshakeReplayError`.
    """

    __slots__ = ("_guard", "_local", "_psk", "_static")

    def __init__(
        self,
        *,
        local_node_id: int,
        static_private: bytes,
        psk: bytes,
        replay_guard: HandshakeReplayGuard | None = None,
    ) -> None:
        self._local = local_node_id
        self._static = bytes(static_private)
        self._psk = bytes(psk)
        self._guard = replay_guard

    def respond(
        self, message1: bytes, *, peer_node_id: int, ephemeral: bytes | None = None
    ) -> HandshakeResponse:
        """Answer a direct msg1 from the peer the application expects (``peer_node_id``,
        whose routing id is bound through the prologue)."""
        noise = self._noise(peer_node_id, ephemeral)
        payload = noise.read_message1(message1)
        if payload:
            raise HandshakeDecodeError(f"direct msg1 carries a {len(payload)}-byte payload")
        return self._answer(noise, peer_node_id, routed=False)

    def respond_routed(
        self, message1: bytes, *, src_id: int, ephemeral: bytes | None = None
    ) -> HandshakeResponse:
        """Answer a routed msg1 that arrived with routing-header ``src_id``; the
        initiator's full node id comes from the payload and must match ``src_id``."""
        noise = self._noise(src_id, ephemeral)
        payload = noise.read_message1(message1)
        if len(payload) != _NODE_ID.size:
            raise HandshakeDecodeError(
                f"routed msg1 payload is {len(payload)} bytes; want the 8-byte node id"
            )
        (peer_node_id,) = _NODE_ID.unpack(payload)
        if routing_id(peer_node_id) != routing_id(src_id):
            raise HandshakeIdentityError(
                f"routed msg1 claims node {peer_node_id:#x} but came from routing id {src_id:#x}"
            )
        return self._answer(noise, peer_node_id, routed=True)

    def respond_packet(
        self,
        datagram: bytes | bytearray | memoryview,
        *,
        peer_node_id: int,
        ephemeral: bytes | None = None,
    ) -> HandshakeResponse:
        """:meth:`respond` for a received direct handshake packet."""
        return self.respond(
            decode_handshake_packet(datagram), peer_node_id=peer_node_id, ephemeral=ephemeral
        )

    def _noise(self, peer_node_id: int, ephemeral: bytes | None) -> NoiseResponder:
        return NoiseResponder(
            static_private=self._static,
            psk=self._psk,
            prologue=handshake_prologue(peer_node_id, self._local),
            ephemeral=ephemeral,
        )

    def _answer(
        self, noise: NoiseResponder, peer_node_id: int, *, routed: bool
    ) -> HandshakeResponse:
        initiator_ephemeral = noise.remote_ephemeral_public
        if initiator_ephemeral is None:  # unreachable after read_message1
            raise HandshakeOrderError("msg1 was not read")
        if self._guard is not None:
            self._guard.record(initiator_ephemeral)
        message2 = noise.write_message2()
        keys = SessionKeys.from_handshake_hash(noise.handshake_hash, HandshakeRole.RESPONDER)
        result = HandshakeResult(
            keys=keys,
            peer_node_id=peer_node_id,
            initiator_ephemeral=initiator_ephemeral,
            remote_static=_ZERO_KEY,
            routed=routed,
        )
        return HandshakeResponse(message2, result)
