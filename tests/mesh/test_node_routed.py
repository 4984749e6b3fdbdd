"""MeshNode routing on the memory transport: pingwave rules, relaying, routed handshakes.

Small line topologies (a - b - c) where ``c`` is reachable from ``a`` only through ``b``.
Crafted datagrams are injected with ``MemoryNetwork._transmit`` under a peer's source
address, so the node sees them as coming from that peer. Every test runs on asyncio and
trio; conditions are awaited with a deadline, never assumed after a fixed sleep.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from net_core.mesh import (
    EnhancedPingwave,
    HandshakeTimeoutError,
    MemoryNetwork,
    MemoryTransportConfig,
    MeshNode,
    MeshNodeConfig,
    PeerEventKind,
    Route,
    RoutingHeader,
    routing_id,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PSK = bytes(range(32))


def _config(net: MemoryNetwork, addr: str, **kw: Any) -> MeshNodeConfig:
    kw.setdefault("heartbeat_interval", 0.03)
    kw.setdefault("session_timeout", 0.3)
    kw.setdefault("handshake_timeout", 0.2)
    return MeshNodeConfig(
        psk=PSK, bind=addr, transport="memory", transport_options=MemoryTransportConfig(net), **kw
    )


@asynccontextmanager
async def _line(net: MemoryNetwork, *names: str, **kw: Any) -> AsyncIterator[list[MeshNode]]:
    """Nodes connected in a line: names[0] - names[1] - ... (each connects to the next)."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(MeshNode.open(_config(net, n, **kw))) for n in names
        ]
        for left, right in itertools.pairwise(nodes):
            right.allow(left.node_id)
            await left.connect(right.local_address, right.public_key, right.node_id)
        yield nodes


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - node internals have no event to wait on
            await anyio.sleep(0.005)


def _has_route(node: MeshNode, dest: int, hop: int, metric: int) -> bool:
    route = node.route(dest)
    return route is not None and (route.next_hop, route.metric) == (hop, metric)


def _pingwave(origin: int, seq: int, **kw: Any) -> bytes:
    return EnhancedPingwave(origin_node_id=origin, seq=seq, **kw).encode()


async def test_pingwaves_build_routes_along_a_line() -> None:
    net = MemoryNetwork()
    async with _line(net, "a", "b", "c") as (a, b, c):
        await _until(lambda: _has_route(a, c.node_id, b.node_id, 3))
        await _until(lambda: _has_route(c, a.node_id, b.node_id, 3))
        assert _has_route(a, b.node_id, b.node_id, 1)
        assert _has_route(b, a.node_id, a.node_id, 1)
        assert _has_route(b, c.node_id, c.node_id, 1)
        routes = {r.destination: r for r in a.routes()}
        assert set(routes) == {b.node_id, c.node_id}
        assert routes[b.node_id].direct
        assert not routes[c.node_id].direct
        stats = b.stats()
        assert stats.pingwaves_sent > 0
        assert stats.pingwaves_forwarded > 0  # a's and c's pingwaves went through b
        assert stats.routes == 2
        # without a route there is no peer entry: only a routed handshake makes one
        assert a.peer(c.node_id) is None


async def test_pingwave_receipt_rules() -> None:
    net = MemoryNetwork()
    async with _line(net, "a", "b", "c") as (a, b, c):
        sent: list[tuple[bytes, Any, Any]] = []
        original = net._transmit

        def tap(data: bytes, src: Any, dst: Any) -> None:
            if len(data) == 72:
                sent.append((data, src, dst))
            original(data, src, dst)

        net._transmit = tap  # type: ignore[method-assign]
        far = 0xFA12_0000_0000_0001
        base = b.stats()

        # from a direct peer, hop 3: route far via a at metric 5, forwarded to c only
        original(_pingwave(far, 1, ttl=2, hop_count=3), "a", "b")
        await _until(lambda: _has_route(b, far, a.node_id, 5))
        await _until(
            lambda: any(EnhancedPingwave.decode(d).origin_node_id == far for d, _, _ in sent)
        )
        copies = [
            (EnhancedPingwave.decode(d), dst)
            for d, src, dst in sent
            if src == "b" and EnhancedPingwave.decode(d).origin_node_id == far
        ]
        assert [(p.ttl, p.hop_count, dst) for p, dst in copies] == [(1, 4, "c")]

        # the same (origin, seq) again: refreshes the route but is not forwarded twice
        original(_pingwave(far, 1, ttl=2, hop_count=3), "a", "b")
        await _until(lambda: b.stats().drops.get("pingwave_duplicate", 0) >= 1)

        # split horizon: a better route via c makes c our next hop towards far; a new
        # pingwave of far from a is then forwarded to nobody (a sent it, c is the hop)
        original(_pingwave(far, 2, ttl=0, hop_count=0), "c", "b")
        await _until(lambda: _has_route(b, far, c.node_id, 2))
        before = len(sent)
        original(_pingwave(far, 3, ttl=3, hop_count=0), "a", "b")
        await _until(lambda: b.stats().pingwaves_received >= base.pingwaves_received + 4)
        await anyio.sleep(0.05)
        assert not [
            d
            for d, src, _ in sent[before:]
            if src == "b" and EnhancedPingwave.decode(d).origin_node_id == far
        ]

        # our own pingwave, the hop limit, and a pingwave from a non-peer are dropped
        original(_pingwave(b.node_id, 99), "a", "b")
        original(_pingwave(far + 1, 1, hop_count=16), "a", "b")
        original(_pingwave(far + 2, 1), "stranger", "b")
        await _until(lambda: b.stats().drops.get("pingwave_not_peer", 0) >= 1)
        drops = b.stats().drops
        assert drops.get("pingwave_own") == 1
        assert drops.get("pingwave_hop_limit") == 1
        assert b.route(far + 1) is None
        assert b.route(far + 2) is None
        assert drops.get("internal_error") is None


async def test_connect_via_relay_streams_both_ways() -> None:
    net = MemoryNetwork()
    async with _line(net, "a", "b", "c") as (a, b, c):
        await _until(lambda: _has_route(a, c.node_id, b.node_id, 3))
        events_c = c.peer_events()
        c.allow(a.node_id)
        info = await a.connect_via(b.local_address, c.public_key, c.node_id)
        assert info.routed
        assert info.address == "b"
        with anyio.fail_after(5):
            event = await anext(events_c)
            while event.node_id != a.node_id:
                event = await anext(events_c)
        assert event.kind is PeerEventKind.CONNECTED
        peer_c = c.peer(a.node_id)
        assert peer_c is not None
        assert peer_c.routed
        assert peer_c.session_id == info.session_id
        assert {p.node_id for p in b.peers()} == {a.node_id, c.node_id}  # b only relays

        out = a.open_stream(c.node_id, 4, reliability="reliable")
        back = c.open_stream(a.node_id, 4)
        payloads = [f"hop-{i}".encode() for i in range(50)]
        for i in range(0, 50, 5):
            await out.send_blocking(payloads[i : i + 5])
        got: list[bytes] = []
        with anyio.fail_after(5):
            async for ev in back.events():
                got.append(ev.payload)
                if len(got) == 50:
                    break
        assert got == payloads
        await back.send([b"reply"])
        with anyio.fail_after(5):
            reply = await anext(out.events())
        assert (reply.payload, reply.peer_node_id) == (b"reply", c.node_id)
        assert b.stats().routed_forwarded >= 11  # ten data packets and the reply, at least
        assert c.stats().routed_received > 0
        # routed heartbeats keep the relayed session healthy for many intervals
        await anyio.sleep(0.4)
        assert a.peer(c.node_id) is not None
        assert c.peer(a.node_id) is not None
        assert a.stats().drops.get("auth") is None


async def test_relay_drops_are_counted() -> None:
    net = MemoryNetwork()
    async with _line(net, "a", "b", "c") as (a, b, c):
        await _until(lambda: _has_route(b, c.node_id, c.node_id, 1))
        inner = bytes(64)  # the relay never opens it
        src = routing_id(a.node_id)
        net._transmit(RoutingHeader(src, c.node_id, ttl=0).encode() + inner, "a", "b")
        net._transmit(RoutingHeader(src, 0xDEAD, ttl=5).encode() + inner, "a", "b")
        net._transmit(RoutingHeader(src, c.node_id, ttl=5).encode() + inner, "stranger", "b")
        net._transmit(RoutingHeader(src, c.node_id, ttl=5).encode() + inner, "c", "b")
        await _until(lambda: sum(b.stats().drops.get(k, 0) for k in _RELAY_DROPS) >= 4)
        drops = b.stats().drops
        assert {k: drops.get(k) for k in _RELAY_DROPS} == dict.fromkeys(_RELAY_DROPS, 1)
        # a valid one is forwarded with ttl - 1, hop + 1 (c drops it: unknown session)
        net._transmit(RoutingHeader(src, c.node_id, ttl=5).encode() + inner, "a", "b")
        await _until(lambda: b.stats().routed_forwarded == 1)
        await _until(lambda: c.stats().drops.get("malformed", 0) >= 1)
        assert a.stats().drops.get("internal_error") is None


_RELAY_DROPS = ("routed_ttl_expired", "routed_no_route", "routed_not_peer", "routed_loop")


async def test_routed_responder_drops_replayed_msg1() -> None:
    net = MemoryNetwork()
    async with _line(net, "a", "b", "c") as (a, b, c):
        await _until(lambda: _has_route(b, c.node_id, c.node_id, 1))
        captured: list[bytes] = []
        original = net._transmit

        def tap(data: bytes, src: Any, dst: Any) -> None:
            if src == "b" and dst == "c" and data[:2] == b"RT" and len(data) == 18 + 64 + 56:
                captured.append(data)
            original(data, src, dst)

        net._transmit = tap  # type: ignore[method-assign]
        c.allow(a.node_id)
        info = await a.connect_via("b", c.public_key, c.node_id)
        assert len(captured) == 1
        original(captured[0], "b", "c")  # the same msg1 again
        await _until(lambda: c.stats().drops.get("handshake_replay", 0) == 1)
        peer = c.peer(a.node_id)
        assert peer is not None
        assert peer.session_id == info.session_id  # the replay minted nothing
        assert c.stats().handshakes_completed == 2  # b (direct) and a (routed) only


async def test_routed_rotation_refused_while_the_session_is_fresh() -> None:
    """c initiated a session with x (it knows x's static key). An impostor claiming x's
    node id reaches c through the relay b: refused while the x session is inside its
    idle window, accepted once it went idle for session_timeout."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        b, c, x = [
            await stack.enter_async_context(MeshNode.open(_config(net, n))) for n in ("b", "c", "x")
        ]
        impostor = await stack.enter_async_context(
            MeshNode.open(_config(net, "m", node_id=x.node_id))
        )
        x.allow(c.node_id)
        await c.connect("x", x.public_key, x.node_id)
        c.allow(b.node_id)
        await b.connect("c", c.public_key, c.node_id)
        b.allow(x.node_id)  # the impostor's id
        await impostor.connect("b", b.public_key, b.node_id)
        original_session = c.peer(x.node_id).session_id  # type: ignore[union-attr]

        with pytest.raises(HandshakeTimeoutError):
            await impostor.connect_via("b", c.public_key, c.node_id, timeout=0.2, retries=2)
        # The first attempt is refused; the retry re-sends the same msg1, a repeat.
        assert c.stats().drops.get("handshake_refused_fresh") == 1
        assert c.stats().drops.get("handshake_replay") == 1
        peer = c.peer(x.node_id)
        assert peer is not None
        assert not peer.routed
        assert peer.session_id == original_session

        net.partition("c", "x")  # the real x goes silent
        await anyio.sleep(0.35)
        info = await impostor.connect_via("b", c.public_key, c.node_id, timeout=0.2)
        peer = c.peer(x.node_id)
        assert peer is not None
        assert peer.routed
        assert peer.session_id == info.session_id


async def test_route_listing_type() -> None:
    net = MemoryNetwork()
    async with _line(net, "a", "b") as (a, b):
        await _until(lambda: len(a.routes()) == 1)
        (route,) = a.routes()
        assert isinstance(route, Route)
        assert route == a.route(b.node_id)
        assert a.peer(b.node_id).routed is False  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="own node id"):
            await a.connect_via("b", b.public_key, a.node_id)


async def test_direct_upgrade_of_a_relayed_session() -> None:
    """a reaches c through b, then connects to c directly: both sides switch to the
    direct session (address index refreshed) and b stops relaying their traffic."""
    net = MemoryNetwork()
    async with _line(net, "a", "b", "c") as (a, b, c):
        c.allow(a.node_id)
        await a.connect_via("b", c.public_key, c.node_id)
        info = await a.connect("c", c.public_key, c.node_id)
        assert not info.routed
        assert info.address == "c"
        await _until(lambda: c.peer(a.node_id) is not None and not c.peer(a.node_id).routed)  # type: ignore[union-attr]
        peer = c.peer(a.node_id)
        assert peer is not None
        assert peer.address == "a"
        await _until(lambda: _has_route(a, c.node_id, c.node_id, 1))
        relayed = b.stats().routed_forwarded
        stream = a.open_stream(c.node_id, 2)
        await stream.send([b"direct now"])
        with anyio.fail_after(5):
            event = await c.receive()
        assert event.payload == b"direct now"
        reply = c.open_stream(a.node_id, 2)
        await reply.send([b"direct too"])
        with anyio.fail_after(5):
            assert (await anext(stream.events())).payload == b"direct too"
        assert b.stats().routed_forwarded == relayed
