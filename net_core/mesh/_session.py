"""Session keys and the per-session packet cipher (``mesh.md`` §2.4-2.5, §1.6-1.7).

Theory of operation. A finished handshake yields the Noise handshake hash ``hh``. From
it both sides derive, identically:

* ``session_id`` = u64 LE of ``hh[0:8]``;
* two directional ChaCha20-Poly1305 keys with :func:`derive_key` (BLAKE2s in its own
  keyed mode, *not* HMAC): the initiator sends with ``derive_key(hh, "initiator-tx")``
  and receives with ``derive_key(hh, "initiator-rx")``; the responder the other way round;
* the 4-byte nonce prefix, LE u32 of ``low32(session_id) ^ high32(session_id)``, shared by
  both directions (they differ by key).

A :class:`MeshSession` then seals and opens packets. The nonce is ``prefix ‖ counter``
(u64 LE) and travels in header bytes 12..24; the AEAD's associated data is the 52-byte
:meth:`~net_core.mesh.NetHeader.aad`. One TX counter per session, starting at 0, is shared
by every packet kind (events, subprotocols, grants, heartbeats); it is never reset and
never reused. Credit grants use a separate control sequence number on the control stream.
The receive side checks the :class:`~net_core.mesh.ReplayWindow` before decryption and
commits only after authentication.

Sans-I/O: keys and bytes in, bytes and values out; no sockets, no clocks.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from typing import Final, final

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from net_core.mesh._control import StreamWindowGrant
from net_core.mesh._errors import (
    CounterExhaustedError,
    PacketAuthError,
    PacketDecodeError,
    PacketReplayError,
)
from net_core.mesh._framing import decode_events, encode_events
from net_core.mesh._header import (
    CONTROL_STREAM_ID,
    NetHeader,
    PacketFlags,
    Subprotocol,
    split_packet,
)
from net_core.mesh._replay import ReplayWindow

__all__ = [
    "KDF_LABEL",
    "HandshakeRole",
    "MeshSession",
    "OpenedPacket",
    "SessionKeys",
    "derive_key",
    "nonce_prefix",
    "packet_nonce",
    "session_id_from_hash",
]

KDF_LABEL: Final = b"net-kdf-v1"
_LABEL_INITIATOR_TX: Final = b"initiator-tx"
_LABEL_INITIATOR_RX: Final = b"initiator-rx"
_U32: Final = 0xFFFF_FFFF
_U64_MAX: Final = 2**64 - 1
_COUNTER: Final = struct.Struct("<Q")


def derive_key(ikm: bytes, info: bytes) -> bytes:
    """The reference's session KDF: ``PRK = BLAKE2s(key=ikm, "net-kdf-v1")``, then
    ``OKM = BLAKE2s(key=PRK, info)``; 32 bytes."""
    prk = hashlib.blake2s(KDF_LABEL, key=ikm).digest()
    return hashlib.blake2s(info, key=prk).digest()


def session_id_from_hash(handshake_hash: bytes) -> int:
    """u64 LE of the first 8 bytes of the handshake hash."""
    return int.from_bytes(handshake_hash[:8], "little")


def nonce_prefix(session_id: int) -> bytes:
    """The 4-byte nonce prefix: LE u32 of the XOR of the session id's two halves."""
    return ((session_id & _U32) ^ (session_id >> 32)).to_bytes(4, "little")


def packet_nonce(prefix: bytes, counter: int) -> bytes:
    """The 12-byte packet nonce: ``prefix`` + ``counter`` as u64 LE."""
    return prefix + _COUNTER.pack(counter)


class HandshakeRole(enum.Enum):
    """Which side of the handshake a session was built on (decides key direction)."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


@final
@attrs.frozen(slots=True)
class SessionKeys:
    """Everything a finished handshake yields: the session id and the directional keys."""

    session_id: int
    tx_key: bytes = attrs.field(repr=False)
    rx_key: bytes = attrs.field(repr=False)
    handshake_hash: bytes = attrs.field(repr=False)
    role: HandshakeRole

    @classmethod
    def from_handshake_hash(cls, handshake_hash: bytes, role: HandshakeRole) -> SessionKeys:
        """Derive the session of ``role`` from the final Noise handshake hash."""
        if len(handshake_hash) != 32:
            raise ValueError(f"a handshake hash is 32 bytes, got {len(handshake_hash)}")
        init_tx = derive_key(handshake_hash, _LABEL_INITIATOR_TX)
        init_rx = derive_key(handshake_hash, _LABEL_INITIATOR_RX)
        tx, rx = (init_tx, init_rx) if role is HandshakeRole.INITIATOR else (init_rx, init_tx)
        return cls(session_id_from_hash(handshake_hash), tx, rx, bytes(handshake_hash), role)

    @property
    def nonce_prefix(self) -> bytes:
        """The session's 4-byte nonce prefix."""
        return nonce_prefix(self.session_id)


@final
@attrs.frozen(slots=True)
class OpenedPacket:
    """An authenticated, replay-checked packet: its header and its plaintext."""

    header: NetHeader
    plaintext: bytes

    def events(self) -> list[bytes]:
        """Decode the plaintext as ``header.event_count`` length-prefixed events
        (raises :class:`~net_core.mesh.FrameDecodeError` on a malformed payload)."""
        return decode_events(self.plaintext, self.header.event_count)


@final
class MeshSession:
    """One live session's crypto state: the TX counter, the RX replay window and the
    control sequence. Not thread-safe; the node serialises access per session.

    The cipher is bound to this object: never copy a session or build a second one from
    the same keys for sending, or nonces would repeat.
    """

    __slots__ = ("_control_seq", "_prefix", "_rx", "_tx", "_tx_counter", "keys", "replay")

    def __init__(self, keys: SessionKeys) -> None:
        self.keys = keys
        self._tx = ChaCha20Poly1305(keys.tx_key)
        self._rx = ChaCha20Poly1305(keys.rx_key)
        self._prefix = keys.nonce_prefix
        self._tx_counter = 0
        self._control_seq = 0
        self.replay = ReplayWindow()

    @property
    def session_id(self) -> int:
        """The u64 session id both sides share."""
        return self.keys.session_id

    @property
    def tx_counter(self) -> int:
        """The counter the next sealed packet will use."""
        return self._tx_counter

    @property
    def control_seq(self) -> int:
        """The sequence number the next credit grant will carry."""
        return self._control_seq

    # -- sending -----------------------------------------------------------------------

    def _next_nonce(self) -> bytes:
        counter = self._tx_counter
        if counter >= _U64_MAX:
            raise CounterExhaustedError(f"session {self.session_id:#x} used every nonce")
        self._tx_counter = counter + 1
        return self._prefix + _COUNTER.pack(counter)

    def seal(self, header: NetHeader, plaintext: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` under a fresh counter and return the whole datagram.

        ``header`` supplies every field but ``nonce``, ``session_id`` and ``payload_len``,
        which are filled here. Raises :class:`~net_core.mesh.MeshEncodeError` for a
        header that does not fit (no counter is consumed then).
        """
        header = attrs.evolve(header, session_id=self.session_id, payload_len=len(plaintext))
        return self._seal(header, plaintext)

    def _seal(self, header: NetHeader, plaintext: bytes) -> bytes:
        aad = header.aad()  # validates before a counter is spent
        nonce = self._next_nonce()
        sealed = self._tx.encrypt(nonce, plaintext, aad)
        # The wire header is the AAD with hop_count restored and the nonce put back.
        return b"".join((aad[:6], bytes((header.hop_count,)), aad[7:12], nonce, aad[12:], sealed))

    def seal_events(
        self,
        stream_id: int,
        sequence: int,
        events: Sequence[bytes | bytearray | memoryview],
        *,
        reliable: bool = False,
        subprotocol_id: int = Subprotocol.EVENTS,
        channel_hash: int = 0,
        origin_hash: int = 0,
    ) -> bytes:
        """Frame ``events`` and seal them as one data packet (see :meth:`seal`).

        Raises :class:`~net_core.mesh.TooManyEventsError` /
        :class:`~net_core.mesh.EventTooLargeError` when the batch does not fit one
        packet; split it with :func:`~net_core.mesh.batch_events` first.
        """
        payload = encode_events(events)
        header = NetHeader(
            flags=PacketFlags.RELIABLE if reliable else PacketFlags.NONE,
            subprotocol_id=subprotocol_id,
            channel_hash=channel_hash,
            session_id=self.keys.session_id,
            stream_id=stream_id,
            sequence=sequence,
            origin_hash=origin_hash,
            payload_len=len(payload),
            event_count=len(events),
        )
        return self._seal(header, payload)

    def heartbeat(self) -> bytes:
        """An 80-byte authenticated heartbeat (flag HEARTBEAT, empty plaintext)."""
        return self.seal(NetHeader(flags=PacketFlags.HEARTBEAT))

    def grant(self, stream_id: int, total_consumed: int) -> bytes:
        """A 100-byte credit-grant packet: subprotocol 0x0B00 on the control stream,
        carrying one 16-byte :class:`~net_core.mesh.StreamWindowGrant` event."""
        event = StreamWindowGrant(stream_id, total_consumed).encode()
        header = NetHeader(
            subprotocol_id=Subprotocol.STREAM_WINDOW,
            stream_id=CONTROL_STREAM_ID,
            sequence=self._control_seq,
            event_count=1,
        )
        datagram = self.seal(header, encode_events([event]))
        self._control_seq += 1
        return datagram

    # -- receiving ---------------------------------------------------------------------

    def open(self, datagram: bytes | bytearray | memoryview) -> OpenedPacket:
        """Authenticate and decrypt one direct Net packet of this session.

        Raises :class:`~net_core.mesh.PacketDecodeError` (malformed, or a handshake
        packet), :class:`~net_core.mesh.PacketAuthError` (another session, a foreign
        nonce prefix, a bad tag) or :class:`~net_core.mesh.PacketReplayError`. Nothing
        changes unless the packet is accepted.
        """
        header, body = split_packet(datagram)
        raw = bytes(datagram[:64])
        # the AAD straight from the validated wire bytes: no re-packing per packet
        return self.open_parts(header, body, aad=raw[:6] + b"\x00" + raw[7:12] + raw[24:])

    def open_parts(
        self, header: NetHeader, body: bytes, *, aad: bytes | None = None
    ) -> OpenedPacket:
        """:meth:`open` for a packet already split (e.g. the inner packet of a routed one).

        ``aad`` may pass the 52 associated-data bytes when the caller has the raw header;
        otherwise they are rebuilt from ``header``.
        """
        if header.is_handshake:
            raise PacketDecodeError("a handshake packet cannot be opened by a session")
        if header.session_id != self.session_id:
            raise PacketAuthError(
                f"packet session {header.session_id:#x} is not {self.session_id:#x}"
            )
        if header.nonce[:4] != self._prefix:
            raise PacketAuthError("packet nonce prefix does not belong to this session")
        if header.is_heartbeat and (header.payload_len or header.event_count):
            raise PacketDecodeError("a heartbeat carries no payload")
        counter = header.nonce_counter
        if not self.replay.is_valid(counter):
            raise PacketReplayError(counter)
        try:
            plaintext = self._rx.decrypt(header.nonce, body, aad or header.aad())
        except InvalidTag as exc:
            raise PacketAuthError("packet failed authentication") from exc
        if not self.replay.commit(counter):
            raise PacketReplayError(counter)
        return OpenedPacket(header, plaintext)
