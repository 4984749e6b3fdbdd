"""The encrypted mesh transport: its sans-I/O core.

Everything here is pure (bytes, ints and keys in; bytes, values and next states out),
byte-compatible with the reference implementation (``ai2070-net`` 0.18) so Python and
Rust nodes form one mesh. Facts: ``docs/formats.md`` ("Mesh wire format").

* packets (``_header``): the 64-byte :class:`NetHeader`, :class:`PacketFlags`,
  :class:`Subprotocol`, the 52-byte AAD, :func:`split_packet`;
* event framing (``_framing``): :func:`encode_events`, :func:`decode_events`,
  :func:`batch_events`; limits enforced with explicit errors, never truncation;
* fixed shapes: :class:`StreamWindowGrant`, :class:`NackPayload`, :class:`NatKeepalive`
  (``_control``); the 18-byte :class:`RoutingHeader` and :func:`classify_datagram`
  (``_routing``); the 72-byte :class:`EnhancedPingwave` (``_pingwave``);
* the :class:`RoutingTable` of :class:`Route` (``_routes``): direct routes, distance-vector
  offers from pingwaves, staleness, reroute on failure, split horizon;
* the ``Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s`` machines :class:`NoiseInitiator` /
  :class:`NoiseResponder` (``_noise``) and the mesh handshake on top of them,
  :class:`HandshakeInitiator` / :class:`HandshakeResponder`, direct and routed
  (``_handshake``);
* sessions (``_session``): :class:`SessionKeys` derivation and :class:`MeshSession`, which
  seals and opens packets, heartbeats and grants; the 1024-bit :class:`ReplayWindow`
  (``_replay``); replacement rules :func:`decide_rotation` (``_rekey``);
* stream credit (``_window``): :class:`StreamSendWindow`, :class:`StreamReceiveWindow`,
  :class:`GrantQuarantine`.

The I/O layer on top of the core (anyio; runs on asyncio and trio):

* :class:`MeshNode` / :class:`MeshNodeConfig` (``_node``): transport, handshakes
  (:meth:`MeshNode.connect`, :meth:`MeshNode.accept`, :meth:`MeshNode.allow`), sessions,
  heartbeats, the :class:`FailureDetector` (``_detector``), eviction, :class:`PeerEvent`;
* streams (``_stream``, ``_reliable``): :class:`MeshStream`, :class:`MeshEvent`,
  :class:`StreamStats`, :class:`Reliability`; reliable streams deliver every event
  exactly once, in order, while the session lives;
* transports (``_transport``, plugin hook ``net_transports``): ``udp``
  (:class:`UdpTransportConfig`) and ``memory`` (:class:`MemoryNetwork`,
  :class:`MemoryTransportConfig`).

Every decoder raises only the :class:`~net_core.errors.DecodeError` family
(:class:`MeshDecodeError`); handshake failures are typed (:class:`HandshakeAuthError`,
:class:`HandshakeReplayError`, :class:`HandshakeOrderError`, ...). No module in this
package opens a socket, reads a clock or starts a task.

Quick start (both ends in one process)::

    import os
    from net_core.mesh import (HandshakeInitiator, HandshakeResponder, MeshSession,
                               x25519_public_key)

    psk, static = os.urandom(32), os.urandom(32)
    alice = HandshakeInitiator(local_node_id=1, peer_node_id=2,
                               peer_static_public=x25519_public_key(static), psk=psk)
    bob = HandshakeResponder(local_node_id=2, static_private=static, psk=psk)
    answer = bob.respond_packet(alice.packet1(), peer_node_id=1)
    a = MeshSession(alice.finish_packet(answer.packet()).keys)
    b = MeshSession(answer.result.keys)
    assert b.open(a.seal_events(7, 0, [b"hello"])).events() == [b"hello"]
"""

from net_core.mesh._control import (
    KEEPALIVE_MAGIC,
    KEEPALIVE_SIZE,
    NACK_SIZE,
    STREAM_WINDOW_SIZE,
    NackPayload,
    NatKeepalive,
    StreamWindowGrant,
)
from net_core.mesh._detector import FailureDetector, HealthTransition, PeerStatus
from net_core.mesh._errors import (
    ControlDecodeError,
    CounterExhaustedError,
    EventTooLargeError,
    FrameDecodeError,
    HandshakeAuthError,
    HandshakeDecodeError,
    HandshakeError,
    HandshakeIdentityError,
    HandshakeOrderError,
    HandshakeReplayError,
    MeshBackpressureError,
    MeshDecodeError,
    MeshEncodeError,
    PacketAuthError,
    PacketDecodeError,
    PacketReplayError,
    PingwaveDecodeError,
    RoutingHeaderDecodeError,
    TooManyEventsError,
)
from net_core.mesh._framing import (
    FRAME_PREFIX_SIZE,
    batch_events,
    decode_events,
    encode_events,
    framed_size,
)
from net_core.mesh._handshake import (
    DIRECT_HANDSHAKE_DATAGRAM_SIZE,
    DIRECT_HANDSHAKE_MESSAGE_SIZE,
    PROLOGUE_LABEL,
    ROUTED_MSG1_SIZE,
    HandshakeInitiator,
    HandshakeReplayGuard,
    HandshakeResponder,
    HandshakeResponse,
    HandshakeResult,
    decode_handshake_packet,
    encode_handshake_packet,
    handshake_prologue,
)
from net_core.mesh._header import (
    AAD_SIZE,
    CONTROL_STREAM_ID,
    HEADER_SIZE,
    MAGIC,
    MAX_EVENTS_PER_PACKET,
    MAX_PACKET_SIZE,
    MAX_PAYLOAD_SIZE,
    NONCE_SIZE,
    PACKET_OVERHEAD,
    TAG_SIZE,
    VERSION,
    NetHeader,
    PacketFlags,
    Subprotocol,
    split_packet,
)
from net_core.mesh._node import (
    MeshNode,
    MeshNodeConfig,
    NodeStats,
    PeerEvent,
    PeerEventKind,
    PeerInfo,
)
from net_core.mesh._node_errors import (
    HandshakeTimeoutError,
    NodeClosedError,
    NotConnectedError,
    StreamBackpressureError,
    StreamConfigError,
)
from net_core.mesh._noise import (
    NOISE_PROTOCOL_NAME,
    CipherState,
    HandshakePhase,
    NoiseInitiator,
    NoiseResponder,
    x25519_public_key,
)
from net_core.mesh._pingwave import (
    DEFAULT_PINGWAVE_TTL,
    PINGWAVE_SIZE,
    EnhancedPingwave,
    PeerHealth,
    memory_tier,
)
from net_core.mesh._rekey import ExistingSession, RotationDecision, decide_rotation
from net_core.mesh._reliable import (
    FEEDBACK_SUBPROTOCOL,
    MAX_REORDER_PACKETS,
    ReliableReceiver,
    ReliableSender,
)
from net_core.mesh._replay import MAX_FORWARD, REPLAY_WINDOW_BITS, ReplayWindow
from net_core.mesh._routes import (
    DIRECT_METRIC,
    MAX_ALTERNATES,
    MAX_METRIC,
    Route,
    RoutingTable,
)
from net_core.mesh._routing import (
    DEFAULT_HANDSHAKE_TTL,
    MAX_HOPS,
    ROUTED_DATA_TTL,
    ROUTING_HEADER_SIZE,
    ROUTING_MAGIC,
    DatagramKind,
    RoutingFlags,
    RoutingHeader,
    classify_datagram,
    routing_id,
    split_routed,
)
from net_core.mesh._session import (
    KDF_LABEL,
    HandshakeRole,
    MeshSession,
    OpenedPacket,
    SessionKeys,
    derive_key,
    nonce_prefix,
    packet_nonce,
    session_id_from_hash,
)
from net_core.mesh._stream import MeshEvent, MeshStream, Reliability, StreamStats
from net_core.mesh._transport import (
    Address,
    DatagramTransport,
    MemoryNetwork,
    MemoryNetworkStats,
    MemoryTransport,
    MemoryTransportConfig,
    TransportBinder,
    TransportClosedError,
    TransportError,
    UdpTransport,
    UdpTransportConfig,
    parse_udp_address,
)
from net_core.mesh._window import (
    DEFAULT_STREAM_WINDOW_BYTES,
    GRANT_QUARANTINE_NS,
    GrantQuarantine,
    StreamReceiveWindow,
    StreamSendWindow,
    packet_credit_cost,
)

__all__ = [
    "AAD_SIZE",
    "CONTROL_STREAM_ID",
    "DEFAULT_HANDSHAKE_TTL",
    "DEFAULT_PINGWAVE_TTL",
    "DEFAULT_STREAM_WINDOW_BYTES",
    "DIRECT_HANDSHAKE_DATAGRAM_SIZE",
    "DIRECT_HANDSHAKE_MESSAGE_SIZE",
    "DIRECT_METRIC",
    "FEEDBACK_SUBPROTOCOL",
    "FRAME_PREFIX_SIZE",
    "GRANT_QUARANTINE_NS",
    "HEADER_SIZE",
    "KDF_LABEL",
    "KEEPALIVE_MAGIC",
    "KEEPALIVE_SIZE",
    "MAGIC",
    "MAX_ALTERNATES",
    "MAX_EVENTS_PER_PACKET",
    "MAX_FORWARD",
    "MAX_HOPS",
    "MAX_METRIC",
    "MAX_PACKET_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MAX_REORDER_PACKETS",
    "NACK_SIZE",
    "NOISE_PROTOCOL_NAME",
    "NONCE_SIZE",
    "PACKET_OVERHEAD",
    "PINGWAVE_SIZE",
    "PROLOGUE_LABEL",
    "REPLAY_WINDOW_BITS",
    "ROUTED_DATA_TTL",
    "ROUTED_MSG1_SIZE",
    "ROUTING_HEADER_SIZE",
    "ROUTING_MAGIC",
    "STREAM_WINDOW_SIZE",
    "TAG_SIZE",
    "VERSION",
    "Address",
    "CipherState",
    "ControlDecodeError",
    "CounterExhaustedError",
    "DatagramKind",
    "DatagramTransport",
    "EnhancedPingwave",
    "EventTooLargeError",
    "ExistingSession",
    "FailureDetector",
    "FrameDecodeError",
    "GrantQuarantine",
    "HandshakeAuthError",
    "HandshakeDecodeError",
    "HandshakeError",
    "HandshakeIdentityError",
    "HandshakeInitiator",
    "HandshakeOrderError",
    "HandshakePhase",
    "HandshakeReplayError",
    "HandshakeReplayGuard",
    "HandshakeResponder",
    "HandshakeResponse",
    "HandshakeResult",
    "HandshakeRole",
    "HandshakeTimeoutError",
    "HealthTransition",
    "MemoryNetwork",
    "MemoryNetworkStats",
    "MemoryTransport",
    "MemoryTransportConfig",
    "MeshBackpressureError",
    "MeshDecodeError",
    "MeshEncodeError",
    "MeshEvent",
    "MeshNode",
    "MeshNodeConfig",
    "MeshSession",
    "MeshStream",
    "NackPayload",
    "NatKeepalive",
    "NetHeader",
    "NodeClosedError",
    "NodeStats",
    "NoiseInitiator",
    "NoiseResponder",
    "NotConnectedError",
    "OpenedPacket",
    "PacketAuthError",
    "PacketDecodeError",
    "PacketFlags",
    "PacketReplayError",
    "PeerEvent",
    "PeerEventKind",
    "PeerHealth",
    "PeerInfo",
    "PeerStatus",
    "PingwaveDecodeError",
    "Reliability",
    "ReliableReceiver",
    "ReliableSender",
    "ReplayWindow",
    "RotationDecision",
    "Route",
    "RoutingFlags",
    "RoutingHeader",
    "RoutingHeaderDecodeError",
    "RoutingTable",
    "SessionKeys",
    "StreamBackpressureError",
    "StreamConfigError",
    "StreamReceiveWindow",
    "StreamSendWindow",
    "StreamStats",
    "StreamWindowGrant",
    "Subprotocol",
    "TooManyEventsError",
    "TransportBinder",
    "TransportClosedError",
    "TransportError",
    "UdpTransport",
    "UdpTransportConfig",
    "batch_events",
    "classify_datagram",
    "decide_rotation",
    "decode_events",
    "decode_handshake_packet",
    "derive_key",
    "encode_events",
    "encode_handshake_packet",
    "framed_size",
    "handshake_prologue",
    "memory_tier",
    "nonce_prefix",
    "packet_credit_cost",
    "packet_nonce",
    "parse_udp_address",
    "routing_id",
    "session_id_from_hash",
    "split_packet",
    "split_routed",
    "x25519_public_key",
]
