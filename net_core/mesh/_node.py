"""The mesh node: one datagram transport, encrypted sessions, liveness and streams.

Theory of operation. A :class:`MeshNode` is an async context manager
(``async with MeshNode.open(config) as node``) that owns its transport and a task group
with three tasks:

* the **receive loop** classifies every datagram (``mesh.md`` §1.1), answers or finishes
  handshakes, opens packets with the peer's :class:`~net_core.mesh.MeshSession` and
  dispatches them: heartbeats, credit grants, reliable-stream feedback, events. Anything
  malformed, unauthenticated, replayed or unexpected is dropped and counted by reason in
  :meth:`MeshNode.stats` (``drops``); no datagram can end the loop.
* the **heartbeat loop** (every ``heartbeat_interval``) snapshots the peer list *before*
  awaiting anything, sends each peer an authenticated heartbeat, runs the
  :class:`~net_core.mesh.FailureDetector` (healthy -> suspected -> failed after 2 and 3
  silent ``session_timeout`` periods) and evicts peers that are FAILED and silent for
  ``eviction_timeout`` (default 30 x ``session_timeout``, the reference's rule).
* the **retransmit loop** resends reliable-stream packets whose timeout expired.

Sessions are keyed by peer node id; an address index (address -> node id) is refreshed
whenever an authenticated packet arrives from a new address (a path change), so the
fast path needs one dict lookup; a scan by session id is the fallback.

Handshakes (``Noise_NKpsk0``): :meth:`MeshNode.connect` sends msg1 and waits for msg2,
retrying ``handshake_retries`` times with ``handshake_timeout`` each (100 ms x attempt
between attempts) and raises :class:`HandshakeTimeoutError`. Inbound msg1 are answered
automatically, but only for node ids the node expects: a direct msg1 does not carry the
initiator's node id, it is bound through the handshake prologue, so the responder must
try candidates. The candidates are the ids passed to :meth:`MeshNode.accept` (pending)
or :meth:`MeshNode.allow`, and the peers the node has (or had) a session with. A msg1
no candidate authenticates is dropped (``handshake_auth``); a replayed msg1 is dropped
(``handshake_replay``). A direct handshake replaces an existing session with the same
peer (the reference's rule): its streams end with it.

Peer and session changes are published as :class:`PeerEvent` on :meth:`MeshNode.peer_events`.

Streams: see :mod:`net_core.mesh._stream` (handles, queues, credit on consumption) and
:mod:`net_core.mesh._reliable` (the reliable-stream guarantee).

Routing (``mesh.md`` §3.4, §3.6; :mod:`net_core.mesh._routes`). Every direct session
installs a direct route (metric 1). Each heartbeat round builds **one** pingwave (same
bytes, same seq for every peer) and sends it to every direct peer right after that
peer's heartbeat. A received pingwave is used only from a registered direct peer, never
our own, and never at ``hop_count >= MAX_HOPS``; it offers the route origin-via-sender at
metric ``hop_count + 2``, is de-duplicated on (origin, seq) for 10 s, and, while its ttl
lasts, is forwarded (ttl - 1, hop + 1) to every direct peer except the sender, our next
hop towards its origin (split horizon) and peers the failure detector holds FAILED (our
"partitioned" peers). Routes older than 3 x ``session_timeout`` are ignored and swept
each round. When a direct peer becomes FAILED its routes move to an alternate (or any
other live direct peer); they come back when it recovers, and go when it is evicted.

Relaying: a routed datagram (18-byte routing header + an end-to-end encrypted packet)
for another node is forwarded with ttl - 1 / hop + 1 to the direct peer our route names;
it is dropped and counted at ttl 0, without a route, when it would bounce straight back,
or when it does not come from a direct peer (we are not an open relay). A routed packet
for us is opened with the session its inner session id names (routed heartbeats
included: the reference drops those, we count them as liveness).

Routed handshakes: :meth:`MeshNode.connect_via` sends a routed msg1 (carrying our node id)
through a relay; the session is installed with the relay as its address and its traffic
travels behind a routing header (ttl 8) to our current next hop towards the peer (the
relay when we have no route). The responder side answers routed msg1 from expected node
ids only and takes the rotation decision (:func:`~net_core.mesh.decide_rotation`) and
installs the session with no await in between (atomic per peer): a replayed msg1 is
dropped, and a routed msg1 that would replace a live session whose remote static differs
is refused while that session is inside its idle window (``session_timeout``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, final

import anyio
import attrs
from anyio.abc import TaskGroup

from net_core.config import in_range, positive
from net_core.errors import ConfigError, DecodeError
from net_core.identity import EntityKeypair, routing_origin
from net_core.mesh._control import NackPayload, StreamWindowGrant
from net_core.mesh._detector import FailureDetector, PeerStatus
from net_core.mesh._errors import (
    CounterExhaustedError,
    HandshakeAuthError,
    HandshakeError,
    HandshakeIdentityError,
    HandshakeReplayError,
    MeshDecodeError,
    MeshEncodeError,
    PacketAuthError,
    PacketReplayError,
)
from net_core.mesh._framing import batch_events, encode_events
from net_core.mesh._handshake import (
    HandshakeInitiator,
    HandshakeReplayGuard,
    HandshakeResponder,
    HandshakeResult,
    decode_handshake_packet,
)
from net_core.mesh._header import (
    CONTROL_STREAM_ID,
    HEADER_SIZE,
    NetHeader,
    PacketFlags,
    Subprotocol,
)
from net_core.mesh._node_errors import (
    HandshakeTimeoutError,
    NodeClosedError,
    NotConnectedError,
    StreamBackpressureError,
    StreamConfigError,
)
from net_core.mesh._noise import x25519_public_key
from net_core.mesh._pingwave import EnhancedPingwave
from net_core.mesh._rekey import ExistingSession, RotationDecision, decide_rotation
from net_core.mesh._reliable import FEEDBACK_SUBPROTOCOL, ReliableReceiver, ReliableSender
from net_core.mesh._replay import ReplayWindow
from net_core.mesh._routes import Route, RoutingTable
from net_core.mesh._routing import (
    MAX_HOPS,
    ROUTED_DATA_TTL,
    DatagramKind,
    RoutingHeader,
    classify_datagram,
    routing_id,
    split_routed,
)
from net_core.mesh._session import HandshakeRole, MeshSession
from net_core.mesh._stream import (
    SEND_BLOCKING_RETRIES,
    SEND_RETRY_CAP,
    SEND_RETRY_INITIAL,
    MeshEvent,
    MeshStream,
    Reliability,
    StreamStats,
    _Credit,
    _Inbox,
    _StreamState,
)
from net_core.mesh._transport import (
    Address,
    DatagramTransport,
    UdpTransport,
    parse_udp_address,
)
from net_core.mesh._window import (
    DEFAULT_STREAM_WINDOW_BYTES,
    GrantQuarantine,
    StreamReceiveWindow,
    StreamSendWindow,
    packet_credit_cost,
)
from net_core.plugins import get_plugin_manager

__all__ = [
    "MeshNode",
    "MeshNodeConfig",
    "NodeStats",
    "PeerEvent",
    "PeerEventKind",
    "PeerInfo",
]

log = logging.getLogger("net_core.mesh")

_U64: Final = 2**64 - 1
_NS: Final = 1_000_000_000
_RELIABLE_FLAGS: Final = PacketFlags.RELIABLE | PacketFlags.NACK
_PEER_EVENT_LIMIT: Final = 4096
_PINGWAVE_DEDUP_NS: Final = 10 * _NS
_PINGWAVE_DEDUP_LIMIT: Final = 65536


def _key32(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attribute.name != "psk":
        return
    if not isinstance(value, bytes) or len(value) != 32:
        raise ConfigError("must be 32 bytes", path=attribute.name)


def _u64_or_none(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int) or not 0 <= value <= _U64):
        raise ConfigError(f"must be a u64, got {value!r}", path=attribute.name)


def _more_than_zero(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"must be a number > 0, got {value!r}", path=attribute.name)


@final
@attrs.frozen(slots=True)
class MeshNodeConfig:
    """How to run one mesh node. Durations are seconds; defaults are the reference's
    (``mesh.md`` §3.1).

    * ``psk``: the 32-byte mesh pre-shared key (every node of a mesh has the same one);
    * ``identity_seed``: 32-byte ed25519 seed of the node's identity; the node id is
      derived from it (default: a fresh identity). ``node_id`` overrides the id;
    * ``static_key``: the 32-byte X25519 private key peers connect to (default: random;
      the public half is :attr:`MeshNode.public_key`);
    * ``bind`` / ``transport`` / ``transport_options``: where and how to listen
      (``"udp"``: ``"host:port"`` or ``(host, port)``; ``"memory"``: any str/tuple and
      ``transport_options`` holding the :class:`~net_core.mesh.MemoryNetwork`);
    * liveness: ``heartbeat_interval`` (5 s), ``session_timeout`` (30 s),
      ``suspicion_threshold`` (2) and ``failure_threshold`` (3) missed timeouts,
      ``eviction_timeout`` (None: 30 x session_timeout);
    * handshakes: ``handshake_timeout`` (5 s) per attempt, ``handshake_retries`` (3);
    * receive queues: ``inbox_limit`` events per queue; reliable streams:
      ``reliable_rto`` (0.05 s) initial retransmission timeout, ``reliable_max_rto`` (1 s).
    """

    psk: bytes = attrs.field(validator=_key32, repr=False)
    identity_seed: bytes | None = attrs.field(default=None, validator=_key32, repr=False)
    static_key: bytes | None = attrs.field(default=None, validator=_key32, repr=False)
    node_id: int | None = attrs.field(default=None, validator=_u64_or_none)
    bind: str | tuple[Any, ...] | None = None
    transport: str = "udp"
    transport_options: Any = None
    heartbeat_interval: float = attrs.field(default=5.0, validator=_more_than_zero)
    session_timeout: float = attrs.field(default=30.0, validator=_more_than_zero)
    suspicion_threshold: int = attrs.field(default=2, validator=positive)
    failure_threshold: int = attrs.field(default=3, validator=positive)
    eviction_timeout: float | None = attrs.field(default=None, validator=_more_than_zero)
    handshake_timeout: float = attrs.field(default=5.0, validator=_more_than_zero)
    handshake_retries: int = attrs.field(default=3, validator=in_range(1, 1024))
    inbox_limit: int = attrs.field(default=65536, validator=positive)
    reliable_rto: float = attrs.field(default=0.05, validator=_more_than_zero)
    reliable_max_rto: float = attrs.field(default=1.0, validator=_more_than_zero)

    def __attrs_post_init__(self) -> None:
        if self.session_timeout <= self.heartbeat_interval:
            raise ConfigError(
                f"must be greater than heartbeat_interval ({self.heartbeat_interval}), "
                f"got {self.session_timeout}",
                path="session_timeout",
            )
        if self.suspicion_threshold > self.failure_threshold:
            raise ConfigError("must be <= failure_threshold", path="suspicion_threshold")
        if self.reliable_max_rto < self.reliable_rto:
            raise ConfigError("must be >= reliable_rto", path="reliable_max_rto")

    @property
    def effective_eviction_timeout(self) -> float:
        """``eviction_timeout`` or, when None, 30 x ``session_timeout``."""
        if self.eviction_timeout is not None:
            return self.eviction_timeout
        return 30 * self.session_timeout


class PeerEventKind(enum.StrEnum):
    """What happened to a peer (see :class:`PeerEvent`)."""

    CONNECTED = "connected"
    """A session was established (we initiated or accepted)."""
    REPLACED = "replaced"
    """A new handshake replaced the live session; streams of the old one ended."""
    SUSPECTED = "suspected"
    FAILED = "failed"
    RECOVERED = "recovered"
    """Heard from again after SUSPECTED or FAILED."""
    EVICTED = "evicted"
    """Removed after being FAILED and silent for ``eviction_timeout`` (or disconnected)."""
    ADDRESS_CHANGED = "address_changed"


@final
@attrs.frozen(slots=True)
class PeerEvent:
    """A peer/session change, as published on :meth:`MeshNode.peer_events`."""

    kind: PeerEventKind
    node_id: int
    address: Address
    session_id: int


@final
@attrs.frozen(slots=True)
class PeerInfo:
    """A snapshot of one peer."""

    node_id: int
    address: Address
    session_id: int
    role: HandshakeRole
    status: PeerStatus
    established_ns: int
    last_heard_ns: int
    streams: int
    routed: bool = False
    """True for a session through a relay (:meth:`MeshNode.connect_via`, or a routed
    handshake we answered); its packets travel behind a routing header."""


@final
@attrs.frozen(slots=True)
class NodeStats:
    """Counters of one node. ``drops`` maps a reason to how many datagrams (or events,
    for ``inbox_overflow``) were dropped for it."""

    node_id: int
    peers: int
    datagrams_received: int
    datagrams_sent: int
    handshakes_initiated: int
    handshakes_completed: int
    heartbeats_sent: int
    heartbeats_received: int
    packets_received: int
    events_received: int
    events_sent: int
    grants_sent: int
    grants_received: int
    retransmits: int
    pingwaves_received: int
    evictions: int
    drops: dict[str, int]
    pingwaves_sent: int = 0
    pingwaves_forwarded: int = 0
    routed_received: int = 0
    """Routed datagrams addressed to us."""
    routed_forwarded: int = 0
    """Routed datagrams we relayed to another node."""
    routes: int = 0
    handshake_replies_resent: int = 0
    """Repeated msg1s (initiator retries, network duplicates) answered with the msg2
    already sent: the handshake stays one session."""


@attrs.define(slots=True, eq=False)
class _Peer:
    node_id: int
    address: Address
    session: MeshSession
    role: HandshakeRole
    remote_static: bytes
    initiator_ephemeral: bytes
    established_ns: int
    last_rx_ns: int
    streams: dict[int, _StreamState] = attrs.field(factory=dict)
    quarantine: GrantQuarantine = attrs.field(factory=GrantQuarantine)
    epochs: int = 0
    alive: bool = True
    alternates: list[MeshSession] = attrs.field(factory=list)
    routed: bool = False
    route_prefix: bytes = b""
    #: The msg2 we answered this peer's msg1 with (responder side), re-sent when the
    #: same msg1 arrives again (the initiator's retry, or a network duplicate).
    handshake_reply: bytes = b""
    #: An authenticated packet arrived under this peer's current session.
    confirmed: bool = False


@attrs.define(slots=True, eq=False)
class _PendingConnect:
    initiator: HandshakeInitiator
    relay: Address | None = None
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: HandshakeResult | None = None
    failed: bool = False


#: Longest pause between two handshake attempts (they grow by 100 ms per attempt).
_MAX_RETRY_GAP: Final = 1.0


def _now() -> int:
    return time.monotonic_ns()


@final
class MeshNode:
    """One mesh node (see the module docstring). Create it with :meth:`open`."""

    def __init__(
        self, config: MeshNodeConfig, transport: DatagramTransport, task_group: TaskGroup
    ) -> None:
        self.config = config
        self._transport = transport
        self._tg = task_group
        identity = (
            EntityKeypair.from_seed(config.identity_seed)
            if config.identity_seed is not None
            else EntityKeypair.generate()
        )
        self.identity = identity
        self._origin = routing_origin(identity.origin_hash)
        self.node_id: int = config.node_id if config.node_id is not None else identity.node_id
        self._static = config.static_key if config.static_key is not None else _random32()
        self.public_key: bytes = x25519_public_key(self._static)
        self._guard = HandshakeReplayGuard()
        self._responder = HandshakeResponder(
            local_node_id=self.node_id,
            static_private=self._static,
            psk=config.psk,
            replay_guard=self._guard,
        )
        self._peers: dict[int, _Peer] = {}
        self._by_addr: dict[Address, int] = {}
        self._known: set[int] = set()
        self._allowed: set[int] = set()
        self._accepting: dict[int, list[anyio.Event]] = {}
        self._pending: dict[Address, list[_PendingConnect]] = {}
        self._pending_routed: dict[int, list[_PendingConnect]] = {}
        self._routes = RoutingTable(int(3 * config.session_timeout * _NS))
        self._pingwave_seq = 0
        self._seen_pingwaves: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._detector = FailureDetector(
            int(config.session_timeout * _NS),
            suspicion_threshold=config.suspicion_threshold,
            failure_threshold=config.failure_threshold,
        )
        self._inbox = _Inbox(config.inbox_limit)
        self._peer_events: _PeerEventQueue = _PeerEventQueue(_PEER_EVENT_LIMIT)
        self._retransmit_wake = anyio.Event()
        self._closed = False
        self._normalize = _normalizer(transport)
        self._confirm_window_ns = int(
            config.handshake_timeout * (config.handshake_retries + 1) * _NS
        )
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "datagrams_received",
                "datagrams_sent",
                "handshakes_initiated",
                "handshakes_completed",
                "heartbeats_sent",
                "heartbeats_received",
                "packets_received",
                "events_received",
                "events_sent",
                "grants_sent",
                "grants_received",
                "retransmits",
                "pingwaves_received",
                "evictions",
                "pingwaves_sent",
                "pingwaves_forwarded",
                "routed_received",
                "routed_forwarded",
                "handshake_replies_resent",
            ),
            0,
        )
        self._drops: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: MeshNodeConfig) -> AsyncIterator[MeshNode]:
        """Bind the transport, start the node's tasks, and close everything on exit."""
        binder = get_plugin_manager().transport(config.transport, config.transport_options)
        transport: DatagramTransport = await binder.bind(config.bind)
        try:
            async with anyio.create_task_group() as tg:
                node = cls(config, transport, tg)
                tg.start_soon(node._receive_loop)
                tg.start_soon(node._heartbeat_loop)
                tg.start_soon(node._retransmit_loop)
                try:
                    yield node
                finally:
                    node._shutdown()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await transport.aclose()

    def _shutdown(self) -> None:
        self._closed = True
        for peer in list(self._peers.values()):
            self._end_peer(peer)
        self._peers.clear()
        self._inbox.close()
        self._peer_events.close()
        for pending in (self._pending, self._pending_routed):
            for waiters in pending.values():
                for waiter in waiters:
                    waiter.failed = True
                    waiter.done.set()
        for events in self._accepting.values():
            for event in events:
                event.set()

    @property
    def local_address(self) -> Address:
        """The transport address peers send to."""
        return self._transport.local_address

    @property
    def closed(self) -> bool:
        """True once the node's context exited."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise NodeClosedError("the mesh node is closed")

    # -- counters ----------------------------------------------------------------------

    def _drop(self, reason: str, count: int = 1) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + count

    def stats(self) -> NodeStats:
        """A snapshot of the node's counters."""
        c = self._counters
        return NodeStats(
            node_id=self.node_id,
            peers=len(self._peers),
            datagrams_received=c["datagrams_received"],
            datagrams_sent=c["datagrams_sent"],
            handshakes_initiated=c["handshakes_initiated"],
            handshakes_completed=c["handshakes_completed"],
            heartbeats_sent=c["heartbeats_sent"],
            heartbeats_received=c["heartbeats_received"],
            packets_received=c["packets_received"],
            events_received=c["events_received"],
            events_sent=c["events_sent"],
            grants_sent=c["grants_sent"],
            grants_received=c["grants_received"],
            retransmits=c["retransmits"],
            pingwaves_received=c["pingwaves_received"],
            evictions=c["evictions"],
            drops=dict(self._drops),
            pingwaves_sent=c["pingwaves_sent"],
            pingwaves_forwarded=c["pingwaves_forwarded"],
            routed_received=c["routed_received"],
            routed_forwarded=c["routed_forwarded"],
            routes=len(self._routes),
            handshake_replies_resent=c["handshake_replies_resent"],
        )

    # -- peers -------------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        """Every peer with a live session."""
        return [self._info(p) for p in list(self._peers.values())]

    def peer(self, node_id: int) -> PeerInfo | None:
        """The peer ``node_id`` (None when there is no session)."""
        peer = self._peers.get(node_id)
        return None if peer is None else self._info(peer)

    def _info(self, peer: _Peer) -> PeerInfo:
        return PeerInfo(
            node_id=peer.node_id,
            address=peer.address,
            session_id=peer.session.session_id,
            role=peer.session.keys.role,
            status=self._detector.status(peer.node_id) or PeerStatus.HEALTHY,
            established_ns=peer.established_ns,
            last_heard_ns=peer.last_rx_ns,
            streams=sum(1 for s in peer.streams.values() if s.is_open),
            routed=peer.routed,
        )

    def routes(self) -> list[Route]:
        """The routing table: one route per destination (stale ones included, see
        ``updated_ns``), sorted by destination node id."""
        return self._routes.routes()

    def route(self, node_id: int) -> Route | None:
        """The live route to ``node_id`` (None when there is none or it went stale)."""
        return self._routes.lookup(node_id, _now())

    def peer_events(self) -> AsyncIterator[PeerEvent]:
        """Iterate peer/session changes as they happen (ends when the node closes).

        The queue keeps the newest 4096 events; older unread ones are dropped and counted
        (``peer_event_overflow``)."""
        return self._peer_events.iterate(self)

    def _emit(self, kind: PeerEventKind, peer: _Peer) -> None:
        event = PeerEvent(kind, peer.node_id, peer.address, peer.session.session_id)
        if not self._peer_events.put(event):
            self._drop("peer_event_overflow")

    def allow(self, peer_node_id: int) -> None:
        """Answer inbound handshakes from ``peer_node_id`` from now on (until :meth:`forbid`)."""
        self._allowed.add(peer_node_id)

    def forbid(self, peer_node_id: int) -> None:
        """Stop answering inbound handshakes from ``peer_node_id`` (sessions stay)."""
        self._allowed.discard(peer_node_id)
        self._known.discard(peer_node_id)

    async def accept(
        self,
        peer_node_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the wait users expect, like connect
    ) -> PeerInfo:
        """Wait until ``peer_node_id`` completes a handshake with us (as initiator).

        While waiting, its msg1 are answered. Returns at once if a handshake completes
        later than the call; raises :class:`HandshakeTimeoutError` after ``timeout``
        seconds (None: wait forever) and :class:`NodeClosedError` if the node closes.
        """
        self._check_open()
        event = anyio.Event()
        self._accepting.setdefault(peer_node_id, []).append(event)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            waiters = self._accepting.get(peer_node_id, [])
            if event in waiters:
                waiters.remove(event)
            if not waiters:
                self._accepting.pop(peer_node_id, None)
        self._check_open()
        peer = self._peers.get(peer_node_id)
        if not event.is_set() or peer is None:
            raise HandshakeTimeoutError(f"no handshake from node {peer_node_id:#x} in {timeout}s")
        return self._info(peer)

    async def connect(
        self,
        addr: Address,
        peer_public_key: bytes,
        peer_node_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per attempt, not a call deadline
        retries: int | None = None,
    ) -> PeerInfo:
        """Handshake with the node at ``addr`` whose X25519 static public key is
        ``peer_public_key`` and whose id is ``peer_node_id``; return the new peer.

        Up to ``retries`` (config ``handshake_retries``) attempts of ``timeout``
        (``handshake_timeout``) seconds, 100 ms x attempt apart (at most 1 s); every
        attempt re-sends the same msg1, and the responder answers a repeat with the msg2
        it already sent, so retries and network duplicates never split the session.
        Raises :class:`HandshakeTimeoutError` when no attempt succeeds,
        :class:`NodeClosedError` when the node closes.
        """
        self._check_open()
        if len(peer_public_key) != 32:
            raise ValueError(f"peer_public_key must be 32 bytes, got {len(peer_public_key)}")
        addr = self._normalize(addr)
        attempts = retries if retries is not None else self.config.handshake_retries
        wait = timeout if timeout is not None else self.config.handshake_timeout
        # One handshake per call, its msg1 re-sent on every attempt: the responder answers
        # a repeat with the same msg2, so however the network delays or duplicates the
        # attempts, both sides end up with the same (single) session.
        initiator = HandshakeInitiator(
            local_node_id=self.node_id,
            peer_node_id=peer_node_id,
            peer_static_public=bytes(peer_public_key),
            psk=self.config.psk,
        )
        waiter = _PendingConnect(initiator)
        peer = await self._run_handshake(waiter, self._pending, addr, addr, attempts, wait)
        if peer is None:
            raise HandshakeTimeoutError(
                f"handshake with node {peer_node_id:#x} at {addr!r} failed after "
                f"{attempts} attempts"
            )
        return self._info(peer)

    async def connect_via(
        self,
        relay: Address,
        peer_public_key: bytes,
        peer_node_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per attempt, not a call deadline
        retries: int | None = None,
    ) -> PeerInfo:
        """Handshake through the relay at ``relay`` with a node we have no direct path
        to; return the new (routed) peer.

        msg1 travels behind a routing header (ttl 16) and carries our node id; the relay
        forwards it along its routes and the answer comes back the same way. The session
        is end-to-end: relays never see its keys. Its packets then go to our current next
        hop towards the peer (learned from pingwaves), else to ``relay``. Retries and
        errors as :meth:`connect`.
        """
        self._check_open()
        if len(peer_public_key) != 32:
            raise ValueError(f"peer_public_key must be 32 bytes, got {len(peer_public_key)}")
        if peer_node_id == self.node_id:
            raise ValueError("connect_via to our own node id")
        relay = self._normalize(relay)
        key = routing_id(peer_node_id)
        attempts = retries if retries is not None else self.config.handshake_retries
        wait = timeout if timeout is not None else self.config.handshake_timeout
        initiator = HandshakeInitiator(
            local_node_id=self.node_id,
            peer_node_id=peer_node_id,
            peer_static_public=bytes(peer_public_key),
            psk=self.config.psk,
            routed=True,
        )
        waiter = _PendingConnect(initiator, relay=relay)
        peer = await self._run_handshake(waiter, self._pending_routed, key, relay, attempts, wait)
        if peer is None:
            raise HandshakeTimeoutError(
                f"routed handshake with node {peer_node_id:#x} via {relay!r} failed after "
                f"{attempts} attempts"
            )
        return self._info(peer)

    async def _run_handshake(
        self,
        waiter: _PendingConnect,
        pending: dict[Any, list[_PendingConnect]],
        key: Any,
        destination: Address,
        attempts: int,
        wait: float,
    ) -> _Peer | None:
        """Send the waiter's msg1 up to ``attempts`` times (the same bytes each time),
        ``wait`` seconds apart plus a growing gap, until the answer installs a peer;
        ``None`` if none did. The waiter is registered under ``pending[key]`` meanwhile.
        """
        packet1 = waiter.initiator.packet1()
        pending.setdefault(key, []).append(waiter)
        try:
            for attempt in range(1, attempts + 1):
                self._counters["handshakes_initiated"] += 1
                await self._send_raw(packet1, destination)
                with anyio.move_on_after(wait):
                    await waiter.done.wait()
                self._check_open()
                if waiter.result is not None:
                    return self._peers.get(waiter.result.peer_node_id)
                if attempt < attempts:
                    await anyio.sleep(min(0.1 * attempt, _MAX_RETRY_GAP))
        finally:
            waiters = pending.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                pending.pop(key, None)
        return None

    async def disconnect(self, peer_node_id: int) -> bool:
        """Forget the session with ``peer_node_id`` locally (its streams end); True if
        there was one. The peer is not told; it will evict us by silence."""
        await anyio.lowlevel.checkpoint()
        peer = self._peers.get(peer_node_id)
        if peer is None:
            return False
        self._remove_peer(peer, PeerEventKind.EVICTED)
        return True

    def _install(self, result: HandshakeResult, addr: Address, *, routed: bool = False) -> _Peer:
        now = _now()
        old = self._peers.get(result.peer_node_id)
        peer = _Peer(
            node_id=result.peer_node_id,
            address=addr,
            session=MeshSession(result.keys),
            role=result.keys.role,
            remote_static=result.remote_static,
            initiator_ephemeral=result.initiator_ephemeral,
            established_ns=now,
            last_rx_ns=now,
            routed=routed,
            route_prefix=RoutingHeader(
                routing_id(self.node_id), result.peer_node_id, ROUTED_DATA_TTL
            ).encode()
            if routed
            else b"",
        )
        if (
            old is not None
            and old.alive
            and result.keys.role is HandshakeRole.RESPONDER
            and now - old.established_ns < self._confirm_window_ns
        ):
            # A late duplicate or reordered msg1 of the same connect may land after a
            # newer one: the initiator finished only one of them. Keep the recent
            # sessions; the first packet that opens under one of them confirms it.
            peer.alternates = [old.session, *old.alternates][:4]
        if old is not None:
            self._end_peer(old)
            if self._by_addr.get(old.address) == old.node_id:
                del self._by_addr[old.address]
        self._peers[peer.node_id] = peer
        if routed:
            if old is not None and not old.routed:  # no longer a direct peer
                self._routes.remove_next_hop(old.node_id)
        else:
            self._by_addr[addr] = peer.node_id
            self._routes.add_direct(peer.node_id, now)
        self._known.add(peer.node_id)
        self._detector.remove(peer.node_id)
        self._detector.heartbeat(peer.node_id, now)
        self._counters["handshakes_completed"] += 1
        self._emit(PeerEventKind.REPLACED if old is not None else PeerEventKind.CONNECTED, peer)
        for event in self._accepting.get(peer.node_id, []):
            event.set()
        return peer

    def _end_peer(self, peer: _Peer) -> None:
        """The peer's session is over: close its streams and wake their waiters."""
        peer.alive = False
        for state in peer.streams.values():
            if state.inbox is not None:
                state.inbox.close()
            state.wake_senders()

    def _remove_peer(self, peer: _Peer, kind: PeerEventKind) -> None:
        if peer.handshake_reply and not peer.confirmed:
            # We answered its msg1 but the initiator never used the session (our msg2 was
            # lost): its retries of that same msg1 must get a fresh answer, not be
            # refused as replays of a session that no longer exists.
            self._guard.forget(peer.initiator_ephemeral)
        if self._peers.get(peer.node_id) is peer:
            del self._peers[peer.node_id]
        if self._by_addr.get(peer.address) == peer.node_id:
            del self._by_addr[peer.address]
        self._detector.remove(peer.node_id)
        if not peer.routed:
            self._routes.remove_next_hop(peer.node_id)
        self._end_peer(peer)
        self._emit(kind, peer)

    # -- sending -----------------------------------------------------------------------

    async def _send_raw(self, datagram: bytes, addr: Address) -> None:
        await self._transport.send(datagram, addr)
        self._counters["datagrams_sent"] += 1

    async def _send_to_peer(self, peer: _Peer, datagram: bytes) -> bool:
        """Send a sealed datagram; False when the transport is gone."""
        try:
            if peer.routed:
                await self._send_raw(peer.route_prefix + datagram, self._routed_address(peer))
            else:
                await self._send_raw(datagram, peer.address)
        except Exception:  # the node is shutting down or the transport broke
            return False
        return True

    def _next_hop_address(self, destination: int) -> Address | None:
        """The address of the live direct peer our route to ``destination`` names."""
        hop = self._routes.next_hop(destination, _now())
        if hop is None:
            return None
        peer = self._peers.get(hop)
        if peer is None or peer.routed or not peer.alive:
            return None
        return peer.address

    def _routed_address(self, peer: _Peer) -> Address:
        """Where a routed peer's packets go: our next hop towards it, else the relay or
        upstream it was last heard through."""
        address = self._next_hop_address(peer.node_id)
        return peer.address if address is None else address

    def _live_peer(self, stream: MeshStream) -> tuple[_Peer, _StreamState]:
        self._check_open()
        peer = self._peers.get(stream.peer_node_id)
        if peer is None or not peer.alive or peer.session.session_id != stream.session_id:
            raise NotConnectedError(f"no session for peer {stream.peer_node_id:#x}")
        state = peer.streams.get(stream.stream_id)
        if state is None or state.epoch != stream.epoch:
            raise NotConnectedError(f"stream {stream.stream_id} is closed (stale handle)")
        return peer, state

    def open_stream(
        self,
        peer_node_id: int,
        stream_id: int,
        reliability: Reliability | str = Reliability.FIRE_AND_FORGET,
        window_bytes: int = DEFAULT_STREAM_WINDOW_BYTES,
        fairness_weight: int = 1,
    ) -> MeshStream:
        """Open (or return the already open) stream ``stream_id`` to ``peer_node_id``.

        Idempotent: while the stream is open the first configuration wins and later
        calls return a handle on it. ``window_bytes`` is the send credit (0 = unbounded,
        not allowed for reliable streams). Raises :class:`NotConnectedError` without a
        session and :class:`StreamConfigError` for a bad configuration.
        """
        self._check_open()
        try:
            mode = Reliability(reliability)
        except ValueError:
            raise StreamConfigError(
                f"reliability must be 'fire_and_forget' or 'reliable', got {reliability!r}"
            ) from None
        if not 0 <= stream_id <= _U64 or stream_id == CONTROL_STREAM_ID:
            raise StreamConfigError(f"stream_id must be in 0..2**64-2, got {stream_id}")
        if not 0 <= window_bytes <= _U64:
            raise StreamConfigError(f"window_bytes must be in 0..2**64-1, got {window_bytes}")
        if mode is Reliability.RELIABLE and window_bytes == 0:
            raise StreamConfigError("a reliable stream needs a credit window (window_bytes > 0)")
        if fairness_weight < 1:
            raise StreamConfigError(f"fairness_weight must be >= 1, got {fairness_weight}")
        peer = self._peers.get(peer_node_id)
        if peer is None or not peer.alive:
            raise NotConnectedError(f"no session for peer {peer_node_id:#x}")
        state = peer.streams.get(stream_id)
        if state is None:
            state = _StreamState(stream_id)
            peer.streams[stream_id] = state
        if not state.is_open:
            peer.epochs += 1
            state.epoch = peer.epochs
            state.reliability = mode
            state.fairness_weight = fairness_weight
            state.window = StreamSendWindow(window_bytes)
            state.sender = (
                ReliableSender(
                    rto_ns=int(self.config.reliable_rto * _NS),
                    max_rto_ns=int(self.config.reliable_max_rto * _NS),
                )
                if mode is Reliability.RELIABLE
                else None
            )
            state.inbox = _Inbox(self.config.inbox_limit)
            state.last_activity_ns = _now()
        assert state.window is not None
        return MeshStream(
            self,
            peer_node_id,
            stream_id,
            state.epoch,
            peer.session.session_id,
            state.reliability,
            state.window.window_bytes,
            state.fairness_weight,
        )

    async def close_stream(self, stream: MeshStream) -> None:
        """Close the stream: later sends on any handle of this epoch raise
        :class:`NotConnectedError`, its queue ends, late grants are quarantined (2 s).
        Closing an already closed stream does nothing. A reliable stream's packets that
        are not acknowledged yet are abandoned (closing ends the guarantee)."""
        await anyio.lowlevel.checkpoint()
        peer = self._peers.get(stream.peer_node_id)
        if peer is None:
            return
        state = peer.streams.get(stream.stream_id)
        if state is None or state.epoch != stream.epoch:
            return
        state.epoch = 0
        state.window = None
        state.sender = None
        state.tx_seq = 0
        if state.inbox is not None:
            credits = state.inbox.close()
            state.inbox = None
            for credit in credits:
                await self._return_credit(credit)
        state.wake_senders()
        peer.quarantine.closed(stream.stream_id, _now())

    async def send(
        self, stream: MeshStream, events: Sequence[bytes | bytearray | memoryview]
    ) -> int:
        """Send ``events`` on ``stream``, packed into as few packets as fit; return the
        number of packets sent.

        Each packet needs its credit (Σ(4 + len) + 80 bytes); when the credit runs out
        :class:`StreamBackpressureError` is raised (``events_sent`` says how many events
        of this call went before). :class:`NotConnectedError` without a live session or
        for a stale handle; :class:`~net_core.mesh.EventTooLargeError` for an event over
        8112 bytes (nothing is sent then).
        """
        peer, state = self._live_peer(stream)
        batches = batch_events(events)
        window = state.window
        assert window is not None
        reliable = state.sender is not None
        flags = _RELIABLE_FLAGS if reliable else PacketFlags.NONE
        sent_events = 0
        packets = 0
        for batch in batches:
            payloads = [bytes(e) for e in batch]
            cost = packet_credit_cost(payloads)
            if not window.try_acquire(cost):
                raise StreamBackpressureError(cost, window.remaining, sent_events, packets)
            seq = state.tx_seq
            state.tx_seq += 1
            # Committed before the datagram leaves: the receiver's grant for it may be
            # processed (by the receive task) before the send call returns, and a grant
            # only counts bytes already committed.
            window.commit(cost)
            try:
                datagram = peer.session.seal(
                    NetHeader(
                        flags=flags,
                        stream_id=stream.stream_id,
                        sequence=seq,
                        event_count=len(payloads),
                        origin_hash=self._origin,
                    ),
                    encode_events(payloads),
                )
                if peer.routed:
                    await self._send_raw(peer.route_prefix + datagram, self._routed_address(peer))
                else:
                    await self._send_raw(datagram, peer.address)
            except BaseException:
                window.uncommit(cost)
                if state.tx_seq == seq + 1:
                    state.tx_seq = seq
                raise
            now = _now()
            if state.sender is not None:
                state.sender.track(seq, payloads, cost, now)
                self._retransmit_wake.set()
            state.last_activity_ns = now
            state.events_sent += len(payloads)
            state.packets_sent += 1
            self._counters["events_sent"] += len(payloads)
            sent_events += len(payloads)
            packets += 1
        return packets

    async def send_with_retry(
        self,
        stream: MeshStream,
        events: Sequence[bytes | bytearray | memoryview],
        *,
        max_retries: int = 8,
    ) -> int:
        """:meth:`send`, retrying only on backpressure: up to ``max_retries`` more
        attempts, waiting for a credit grant or a backoff of 5 ms doubling to 200 ms
        (whichever comes first). Events already sent are not resent. Returns the packets
        sent; re-raises the last :class:`StreamBackpressureError` when retries run out."""
        remaining: Sequence[bytes | bytearray | memoryview] = events
        packets = 0
        # The delays of retry_delays(max_retries), computed as we go: send_blocking asks
        # for 4096 retries and must not pay for a list of them on every call.
        delay = SEND_RETRY_INITIAL
        attempt = 0
        while True:
            try:
                return packets + await self.send(stream, remaining)
            except StreamBackpressureError as exc:
                remaining = remaining[exc.events_sent :]
                packets += exc.packets_sent
                if attempt >= max_retries:
                    raise
                _, state = self._live_peer(stream)
                with anyio.move_on_after(delay):
                    await state.credit_changed.wait()
                delay = min(delay * 2, SEND_RETRY_CAP)
                attempt += 1

    async def send_blocking(
        self, stream: MeshStream, events: Sequence[bytes | bytearray | memoryview]
    ) -> int:
        """:meth:`send_with_retry` with 4096 retries (the reference's blocking policy)."""
        return await self.send_with_retry(stream, events, max_retries=SEND_BLOCKING_RETRIES)

    async def _send_grant(self, peer: _Peer, grant: StreamWindowGrant) -> None:
        if not peer.alive or self._closed:
            return
        try:
            datagram = peer.session.grant(grant.stream_id, grant.total_consumed)
        except (CounterExhaustedError, MeshEncodeError):
            return
        if await self._send_to_peer(peer, datagram):
            self._counters["grants_sent"] += 1

    async def _return_credit(self, credit: _Credit) -> None:
        state = credit.state
        if state.rx_window is None:
            return
        grant = state.rx_window.on_packet(credit.cost)
        if grant is not None:
            await self._send_grant(credit.peer, grant)

    # -- receiving (application side) ---------------------------------------------------

    async def _take(self, inbox: _Inbox) -> MeshEvent | None:
        while True:
            item = await inbox.get()
            if item is None:
                return None
            event, credit = item
            if credit is not None:
                await self._return_credit(credit)
            if event.index >= 0:
                return event

    async def receive(self) -> MeshEvent:
        """The next event from any peer on a stream without an open handle.

        Raises :class:`NodeClosedError` once the node is closed."""
        event = await self._take(self._inbox)
        if event is None:
            raise NodeClosedError("the mesh node is closed")
        return event

    async def events(self) -> AsyncIterator[MeshEvent]:
        """Iterate :meth:`receive` until the node closes."""
        while True:
            event = await self._take(self._inbox)
            if event is None:
                return
            yield event

    async def _stream_events(self, stream: MeshStream) -> AsyncIterator[MeshEvent]:
        _, state = self._live_peer(stream)
        inbox = state.inbox
        if inbox is None:
            return
        while True:
            event = await self._take(inbox)
            if event is None:
                return
            yield event

    def stream_stats(self, peer_node_id: int, stream_id: int) -> StreamStats | None:
        """Counters of stream ``stream_id`` with ``peer_node_id`` (None if unknown)."""
        peer = self._peers.get(peer_node_id)
        if peer is None:
            return None
        state = peer.streams.get(stream_id)
        if state is None:
            return None
        window = state.window
        inbox = state.inbox
        rx_seq = state.receiver.next_expected if state.receiver is not None else state.rx_seq
        return StreamStats(
            tx_seq=state.tx_seq,
            rx_seq=rx_seq,
            inbound_pending=len(inbox) if inbox is not None else 0,
            last_activity_ns=state.last_activity_ns,
            active=state.is_open,
            backpressure_events=window.backpressure_events if window else 0,
            tx_credit_remaining=window.remaining if window else 0,
            tx_window=window.window_bytes if window else 0,
            credit_grants_received=window.credit_grants_received if window else 0,
            credit_grants_sent=state.rx_window.credit_grants_sent if state.rx_window else 0,
            events_sent=state.events_sent,
            events_received=state.events_received,
            packets_sent=state.packets_sent,
            packets_received=state.packets_received,
            retransmits=state.sender.retransmits if state.sender is not None else 0,
            unacked_packets=len(state.sender) if state.sender is not None else 0,
            duplicates_dropped=state.duplicates_dropped,
            reorder_buffered=state.receiver.buffered if state.receiver else 0,
            overflow_dropped=state.overflow_dropped,
        )

    # -- the receive loop --------------------------------------------------------------

    async def _receive_loop(self) -> None:
        transport = self._transport
        while True:
            try:
                data, addr = await transport.receive()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:
                if self._closed:
                    return
                self._drop("transport_error")
                await anyio.sleep(0.01)
                continue
            self._counters["datagrams_received"] += 1
            try:
                await self._on_datagram(data, addr)
            except anyio.get_cancelled_exc_class():
                raise
            except DecodeError:
                self._drop("malformed")
            except Exception:  # a bug must not end the loop: count it, log it
                self._drop("internal_error")
                log.exception("mesh node %#x: error handling a datagram", self.node_id)

    async def _on_datagram(self, data: bytes, addr: Address) -> None:
        kind = classify_datagram(data)
        if kind is DatagramKind.PACKET:
            header = (
                NetHeader.decode(memoryview(data)[:HEADER_SIZE])
                if len(data) >= HEADER_SIZE
                else None
            )
            if header is None:
                self._drop("malformed")
                return
            if header.is_handshake:
                await self._on_handshake(data, addr)
            else:
                await self._on_packet(header, data, addr)
        elif kind is DatagramKind.PINGWAVE:
            await self._on_pingwave(EnhancedPingwave.decode(data), addr)
        elif kind is DatagramKind.ROUTED:
            await self._on_routed(data, addr)
        elif kind is DatagramKind.KEEPALIVE:
            self._drop("keepalive")
        else:
            self._drop("unknown_kind")

    async def _on_handshake(self, data: bytes, addr: Address) -> None:
        waiters = [w for w in self._pending.get(addr, []) if not w.done.is_set()]
        for waiter in waiters:
            try:
                result = waiter.initiator.finish_packet(data)
            except HandshakeError:
                continue  # not the answer to this attempt (stale, or a crossing msg1)
            peer = self._install(result, addr)
            waiter.result = result
            waiter.done.set()
            # confirm at once which of our attempts finished (the responder may hold
            # several sessions from retried msg1s)
            await self._send_to_peer(peer, peer.session.heartbeat())
            return
        candidates = list(
            dict.fromkeys([*self._accepting, *self._allowed, *self._peers, *self._known])
        )
        if not candidates:
            self._drop("handshake_unexpected")
            return
        for candidate in candidates:
            try:
                response = self._responder.respond_packet(data, peer_node_id=candidate)
            except HandshakeAuthError:
                continue
            except HandshakeReplayError:
                await self._answer_repeat(decode_handshake_packet(data)[:32], addr)
                return
            except MeshDecodeError:
                self._drop("malformed")
                return
            reply = response.packet()
            try:
                await self._send_raw(reply, addr)
            except Exception:
                self._drop("transport_error")
                return
            self._install(response.result, addr).handshake_reply = reply
            return
        self._drop("handshake_auth")

    async def _answer_repeat(self, ephemeral: bytes, addr: Address) -> None:
        """An authenticated msg1 we already answered arrived again: re-send the same
        answer (the initiator's msg2 was lost or is late), never a second session."""
        for peer in list(self._peers.values()):
            if peer.alive and peer.handshake_reply and peer.initiator_ephemeral == ephemeral:
                self._counters["handshake_replies_resent"] += 1
                try:
                    await self._send_raw(peer.handshake_reply, addr)
                except Exception:
                    if not self._closed:
                        self._drop("transport_error")
                return
        self._drop("handshake_replay")

    def _direct_peer_at(self, addr: Address) -> _Peer | None:
        node_id = self._by_addr.get(addr)
        if node_id is None:
            return None
        peer = self._peers.get(node_id)
        if peer is None or peer.routed or not peer.alive:
            return None
        return peer

    async def _on_pingwave(self, pingwave: EnhancedPingwave, addr: Address) -> None:
        self._counters["pingwaves_received"] += 1
        origin = pingwave.origin_node_id
        if origin == self.node_id:
            self._drop("pingwave_own")
            return
        if pingwave.hop_count >= MAX_HOPS:
            self._drop("pingwave_hop_limit")
            return
        sender = self._direct_peer_at(addr)
        if sender is None:
            self._drop("pingwave_not_peer")
            return
        now = _now()
        self._routes.add_route_with_metric(origin, sender.node_id, pingwave.hop_count + 2, now)
        key = (origin, pingwave.seq)
        seen = self._seen_pingwaves
        expiry = seen.get(key)
        if expiry is not None and expiry > now:
            self._drop("pingwave_duplicate")
            return
        seen.pop(key, None)
        seen[key] = now + _PINGWAVE_DEDUP_NS
        if len(seen) > _PINGWAVE_DEDUP_LIMIT:
            seen.popitem(last=False)
        forwarded = pingwave.forwarded()
        if forwarded is None:
            return
        horizon = self._routes.split_horizon(origin, sender.node_id, now)
        # snapshot before awaiting: the peer dict may change under the sends
        targets = [
            p.address
            for p in self._peers.values()
            if p.alive
            and not p.routed
            and p.node_id not in horizon
            and p.node_id != origin
            and self._detector.status(p.node_id) is not PeerStatus.FAILED
        ]
        if not targets:
            return
        wire = forwarded.encode()
        for address in targets:
            try:
                await self._send_raw(wire, address)
            except Exception:
                if self._closed:
                    return
                self._drop("transport_error")
                continue
            self._counters["pingwaves_forwarded"] += 1

    async def _on_routed(self, data: bytes, addr: Address) -> None:
        route, inner = split_routed(data)
        if route.dest_id == self.node_id:
            self._counters["routed_received"] += 1
            header = NetHeader.decode(memoryview(inner)[:HEADER_SIZE])
            if header.is_handshake:
                await self._on_routed_handshake(route, inner, addr)
            else:
                await self._on_packet(header, inner, addr, routed=True)
            return
        forwarded = route.forwarded()
        if forwarded is None:
            self._drop("routed_ttl_expired")
            return
        if self._direct_peer_at(addr) is None:
            self._drop("routed_not_peer")
            return
        next_hop = self._next_hop_address(route.dest_id)
        if next_hop is None:
            self._drop("routed_no_route")
            return
        if next_hop == addr:
            self._drop("routed_loop")
            return
        try:
            await self._send_raw(forwarded.encode() + inner, next_hop)
        except Exception:
            if not self._closed:
                self._drop("transport_error")
            return
        self._counters["routed_forwarded"] += 1

    async def _on_routed_handshake(self, route: RoutingHeader, inner: bytes, addr: Address) -> None:
        waiters = [w for w in self._pending_routed.get(route.src_id, []) if not w.done.is_set()]
        for waiter in waiters:
            try:
                result = waiter.initiator.finish_packet(inner)
            except HandshakeError:
                continue  # not the answer to this attempt
            relay = waiter.relay if waiter.relay is not None else addr
            peer = self._install(result, relay, routed=True)
            waiter.result = result
            waiter.done.set()
            await self._send_to_peer(peer, peer.session.heartbeat())  # confirm this attempt
            return
        try:
            message1 = decode_handshake_packet(inner)
            response = self._responder.respond_routed(message1, src_id=route.src_id)
        except HandshakeReplayError:
            self._drop("handshake_replay")
            return
        except HandshakeAuthError:
            self._drop("handshake_auth")
            return
        except HandshakeIdentityError:
            self._drop("handshake_identity")
            return
        except (HandshakeError, MeshDecodeError):
            self._drop("malformed")
            return
        result = response.result
        node_id = result.peer_node_id
        if node_id == self.node_id or not (
            node_id in self._accepting
            or node_id in self._allowed
            or node_id in self._peers
            or node_id in self._known
        ):
            self._drop("handshake_unexpected")
            return
        # Decision and insert with no await in between: atomic per peer.
        now = _now()
        existing = self._peers.get(node_id)
        facts = (
            None
            if existing is None or not existing.alive
            else ExistingSession(
                existing.remote_static, existing.initiator_ephemeral, existing.last_rx_ns
            )
        )
        decision = decide_rotation(
            facts,
            remote_static=result.remote_static,
            initiator_ephemeral=result.initiator_ephemeral,
            routed=True,
            now_ns=now,
            session_timeout_ns=int(self.config.session_timeout * _NS),
        )
        if decision is RotationDecision.DROP_REPLAY:
            await self._answer_repeat(result.initiator_ephemeral, addr)
            return
        if decision is RotationDecision.REFUSE_FRESH:
            self._drop("handshake_refused_fresh")
            return
        peer = self._install(result, addr, routed=True)
        peer.handshake_reply = response.routed_packet(self.node_id)
        try:
            await self._send_raw(peer.handshake_reply, addr)
        except Exception:
            if self._peers.get(node_id) is peer:  # roll back what nobody could confirm
                self._remove_peer(peer, PeerEventKind.EVICTED)
            if not self._closed:
                self._drop("transport_error")

    def _find_peer(self, header: NetHeader, addr: Address) -> _Peer | None:
        node_id = self._by_addr.get(addr)
        if node_id is not None:
            peer = self._peers.get(node_id)
            if peer is not None and peer.session.session_id == header.session_id:
                return peer
        for peer in self._peers.values():
            if peer.session.session_id == header.session_id:
                return peer
        for peer in self._peers.values():
            for alternate in peer.alternates:
                if alternate.session_id == header.session_id:
                    return peer
        return None

    async def _on_packet(
        self, header: NetHeader, data: bytes, addr: Address, *, routed: bool = False
    ) -> None:
        peer = self._find_peer(header, addr)
        if peer is None:
            self._drop("unknown_session")
            return
        session = peer.session
        if session.session_id != header.session_id:
            session = next(s for s in peer.alternates if s.session_id == header.session_id)
        try:
            opened = session.open(data)
        except PacketAuthError:
            self._drop("auth")
            return
        except PacketReplayError:
            self._drop("replay")
            return
        if session is not peer.session:  # the initiator finished this one: confirm it
            peer.alternates = [peer.session]
            peer.session = session
            self._emit(PeerEventKind.REPLACED, peer)
        elif peer.alternates:
            peer.alternates = []
        peer.confirmed = True
        now = _now()
        peer.last_rx_ns = now
        transition = self._detector.heartbeat(peer.node_id, now)
        if transition is not None:
            self._emit(PeerEventKind.RECOVERED, peer)
            if not peer.routed:
                self._routes.restore(peer.node_id, now)
        if addr != peer.address:
            if peer.routed:
                if routed:  # the upstream of a relayed session moved: our fallback path
                    peer.address = addr
            elif not routed:  # a path change: re-index the peer
                if self._by_addr.get(peer.address) == peer.node_id:
                    del self._by_addr[peer.address]
                peer.address = addr
                self._by_addr[addr] = peer.node_id
                self._emit(PeerEventKind.ADDRESS_CHANGED, peer)
        header = opened.header
        if header.is_heartbeat:
            self._counters["heartbeats_received"] += 1
            if not peer.routed and not routed:
                self._routes.add_direct(peer.node_id, now)
            return
        self._counters["packets_received"] += 1
        sub = header.subprotocol_id
        if sub == Subprotocol.STREAM_WINDOW:
            self._on_grants(peer, opened.events(), now)
        elif sub == FEEDBACK_SUBPROTOCOL and header.flags & PacketFlags.NACK:
            await self._on_feedback(peer, header, opened.events(), now)
        else:
            await self._on_events(peer, header, opened.events(), now)

    def _on_grants(self, peer: _Peer, events: list[bytes], now: int) -> None:
        for raw in events:
            try:
                grant = StreamWindowGrant.decode(raw)
            except MeshDecodeError:
                self._drop("grant_malformed")
                continue
            self._counters["grants_received"] += 1
            if peer.quarantine.is_quarantined(grant.stream_id, now):
                self._drop("grant_quarantined")
                continue
            state = peer.streams.get(grant.stream_id)
            if state is None or state.window is None:
                self._drop("grant_unknown_stream")
                continue
            if state.window.apply_grant(grant.total_consumed):
                state.wake_senders()

    async def _on_feedback(
        self, peer: _Peer, header: NetHeader, events: list[bytes], now: int
    ) -> None:
        if len(events) != 1:
            self._drop("feedback_malformed")
            return
        nack = NackPayload.decode(events[0])
        state = peer.streams.get(header.stream_id)
        if state is None or state.sender is None:
            self._drop("feedback_unknown_stream")
            return
        resend = state.sender.on_feedback(nack, now, gaps=header.sequence == 1)
        for seq in resend:
            await self._retransmit(peer, state, seq)

    async def _retransmit(self, peer: _Peer, state: _StreamState, seq: int) -> None:
        sender = state.sender
        if sender is None or not peer.alive:
            return
        events = sender.events_of(seq)
        if events is None:
            return
        try:
            datagram = peer.session.seal(
                NetHeader(
                    flags=_RELIABLE_FLAGS,
                    stream_id=state.stream_id,
                    sequence=seq,
                    event_count=len(events),
                    origin_hash=self._origin,
                ),
                encode_events(events),
            )
        except CounterExhaustedError:
            return
        sender.retransmitted(seq, _now())
        self._counters["retransmits"] += 1
        await self._send_to_peer(peer, datagram)

    async def _on_events(
        self, peer: _Peer, header: NetHeader, events: list[bytes], now: int
    ) -> None:
        stream_id = header.stream_id
        state = peer.streams.get(stream_id)
        if state is None:
            state = _StreamState(stream_id)
            peer.streams[stream_id] = state
        if state.rx_window is None:
            window = state.window.window_bytes if state.window is not None else None
            state.rx_window = StreamReceiveWindow(
                stream_id, DEFAULT_STREAM_WINDOW_BYTES if window is None else window
            )
        state.last_activity_ns = now
        seq = header.sequence
        cost = packet_credit_cost(events)
        inbox = state.inbox if state.inbox is not None else self._inbox
        flags = header.flags
        if flags & _RELIABLE_FLAGS == _RELIABLE_FLAGS:
            receiver = state.receiver
            if receiver is None:
                receiver = state.receiver = ReliableReceiver()
            if receiver.is_duplicate(seq):
                receiver.duplicates += 1
                state.duplicates_dropped += 1
                if state.rx_window.consumed and state.rx_window.window_bytes:
                    # the sender retransmits: our grant may have been lost too
                    await self._send_grant(
                        peer, StreamWindowGrant(stream_id, state.rx_window.consumed)
                    )
            elif not inbox.room(len(events)):
                self._drop("inbox_overflow", len(events))
                state.overflow_dropped += len(events)
            else:
                for rseq, revents, rcost in receiver.on_packet(seq, events, cost):
                    self._deliver(peer, state, inbox, rseq, revents, rcost, reliable=True)
            await self._send_feedback(peer, stream_id, receiver)
            return
        if flags & PacketFlags.RELIABLE:
            # a sender that never retransmits (the reference): de-duplicate only
            dedup = state.dedup
            if dedup is None:
                dedup = state.dedup = ReplayWindow()
            if not dedup.is_valid(seq):
                state.duplicates_dropped += 1
                return
            if not inbox.room(len(events)):
                self._drop("inbox_overflow", len(events))
                state.overflow_dropped += len(events)
                return
            dedup.commit(seq)
            self._deliver(peer, state, inbox, seq, events, cost, reliable=True)
            return
        if not inbox.room(len(events)):
            self._drop("inbox_overflow", len(events))
            state.overflow_dropped += len(events)
            return
        self._deliver(peer, state, inbox, seq, events, cost, reliable=False)

    def _deliver(
        self,
        peer: _Peer,
        state: _StreamState,
        inbox: _Inbox,
        seq: int,
        events: list[bytes],
        cost: int,
        *,
        reliable: bool,
    ) -> None:
        state.rx_seq = max(state.rx_seq, seq + 1)
        state.events_received += len(events)
        state.packets_received += 1
        self._counters["events_received"] += len(events)
        items = [
            MeshEvent(peer.node_id, state.stream_id, seq, i, payload, reliable)
            for i, payload in enumerate(events)
        ]
        inbox.put_packet(items, _Credit(peer, state, cost))

    async def _send_feedback(self, peer: _Peer, stream_id: int, receiver: ReliableReceiver) -> None:
        nack = receiver.feedback()
        try:
            datagram = peer.session.seal(
                NetHeader(
                    flags=PacketFlags.NACK,
                    subprotocol_id=FEEDBACK_SUBPROTOCOL,
                    stream_id=stream_id,
                    sequence=1 if receiver.has_gap() else 0,
                    event_count=1,
                ),
                encode_events([nack.encode()]),
            )
        except CounterExhaustedError:
            return
        await self._send_to_peer(peer, datagram)

    # -- the heartbeat loop ------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        while True:
            await anyio.sleep(interval)
            await self._heartbeat_round()

    async def _heartbeat_round(self) -> None:
        # Snapshot first: the awaits below must not iterate a dict another task mutates.
        targets = [(p, p.address) for p in self._peers.values() if p.alive]
        pingwave = self._next_pingwave()
        for peer, address in targets:
            if not peer.alive:
                continue
            try:
                datagram = peer.session.heartbeat()
                if peer.routed:
                    await self._send_raw(peer.route_prefix + datagram, self._routed_address(peer))
                else:
                    await self._send_raw(datagram, address)
            except CounterExhaustedError:
                continue
            except Exception:
                if self._closed:
                    return
                self._drop("transport_error")
                continue
            self._counters["heartbeats_sent"] += 1
            if peer.routed:
                continue  # a pingwave is for direct neighbours only
            try:
                await self._send_raw(pingwave, address)
            except Exception:
                if self._closed:
                    return
                self._drop("transport_error")
                continue
            self._counters["pingwaves_sent"] += 1
        now = _now()
        await self._refresh_grants(targets, now)
        self._check_liveness(now)
        self._routes.sweep(now)
        seen = self._seen_pingwaves
        while seen:
            key, expiry = next(iter(seen.items()))
            if expiry > now:
                break
            del seen[key]

    def _next_pingwave(self) -> bytes:
        """This round's pingwave: one per cycle, the same bytes for every peer."""
        self._pingwave_seq += 1
        return EnhancedPingwave(
            origin_node_id=self.node_id,
            seq=self._pingwave_seq,
            origin_timestamp_us=time.time_ns() // 1000,
        ).encode()

    async def _refresh_grants(self, targets: list[tuple[_Peer, Address]], now: int) -> None:
        """Re-send the cumulative grant of every stream that received data recently.

        Grants are cumulative, so a repeat is harmless; without it, a lost last grant
        would leave an idle sender without credit forever (nothing would trigger the next
        grant)."""
        recent = int(self.config.session_timeout * _NS)
        work = [
            (peer, StreamWindowGrant(state.stream_id, state.rx_window.consumed))
            for peer, _ in targets
            for state in list(peer.streams.values())
            if state.rx_window is not None
            and state.rx_window.consumed
            and state.rx_window.window_bytes
            and now - state.last_activity_ns < recent
        ]
        for peer, grant in work:
            await self._send_grant(peer, grant)

    def _check_liveness(self, now: int) -> None:
        for change in self._detector.check(now):
            peer = self._peers.get(change.node_id)
            if peer is None:
                continue
            kind = (
                PeerEventKind.FAILED
                if change.after is PeerStatus.FAILED
                else PeerEventKind.SUSPECTED
            )
            self._emit(kind, peer)
            if kind is PeerEventKind.FAILED and not peer.routed:
                live = [
                    p.node_id
                    for p in self._peers.values()
                    if p.alive
                    and not p.routed
                    and self._detector.status(p.node_id) is not PeerStatus.FAILED
                ]
                self._routes.reroute(peer.node_id, live, now)
        evict_after = int(self.config.effective_eviction_timeout * _NS)
        for peer in list(self._peers.values()):
            if (
                self._detector.status(peer.node_id) is PeerStatus.FAILED
                and now - peer.last_rx_ns > evict_after
            ):
                self._counters["evictions"] += 1
                self._remove_peer(peer, PeerEventKind.EVICTED)
        for peer in list(self._peers.values()):
            peer.quarantine.sweep(now)

    # -- the retransmit loop -----------------------------------------------------------

    async def _retransmit_loop(self) -> None:
        while True:
            deadline = self._next_retransmit_deadline()
            if deadline is None:
                self._retransmit_wake = anyio.Event()
                await self._retransmit_wake.wait()
                continue
            delay = (deadline - _now()) / _NS
            if delay > 0:
                await anyio.sleep(max(delay, 0.001))
            now = _now()
            work = [
                (peer, state, seq)
                for peer in list(self._peers.values())
                if peer.alive
                for state in list(peer.streams.values())
                if state.sender is not None
                for seq in state.sender.due(now)
            ]
            for peer, state, seq in work:
                await self._retransmit(peer, state, seq)

    def _next_retransmit_deadline(self) -> int | None:
        best: int | None = None
        for peer in self._peers.values():
            for state in peer.streams.values():
                if state.sender is not None:
                    deadline = state.sender.next_deadline_ns()
                    if deadline is not None and (best is None or deadline < best):
                        best = deadline
        return best


@final
class _PeerEventQueue:
    __slots__ = ("_closed", "_items", "_limit", "_wake")

    def __init__(self, limit: int) -> None:
        self._items: deque[PeerEvent] = deque()
        self._limit = limit
        self._wake = anyio.Event()
        self._closed = False

    def put(self, event: PeerEvent) -> bool:
        kept = True
        if len(self._items) >= self._limit:
            self._items.popleft()
            kept = False
        self._items.append(event)
        self._wake.set()
        return kept

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def iterate(self, node: MeshNode) -> AsyncIterator[PeerEvent]:
        del node
        while True:
            while not self._items:
                if self._closed:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
            yield self._items.popleft()


def _random32() -> bytes:
    return os.urandom(32)


def _normalizer(transport: DatagramTransport) -> Any:
    if isinstance(transport, UdpTransport):
        return parse_udp_address

    def same(addr: Address) -> Address:
        return addr

    return same
