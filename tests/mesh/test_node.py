"""MeshNode on the in-process memory transport: handshakes, events, credit, liveness, drops.

Every test runs on asyncio and trio. Timing-dependent parts use short heartbeat and
session timeouts; assertions wait for conditions (with a deadline) rather than sleeping
a fixed time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from net_core.errors import BackpressureError, ConfigError, MeshError
from net_core.mesh import (
    HandshakeRole,
    HandshakeTimeoutError,
    MemoryNetwork,
    MemoryTransportConfig,
    MeshEvent,
    MeshNode,
    MeshNodeConfig,
    MeshSession,
    NodeClosedError,
    NotConnectedError,
    PeerEventKind,
    PeerStatus,
    SessionKeys,
    StreamBackpressureError,
    StreamConfigError,
)
from net_core.plugins import get_plugin_manager

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PSK = bytes(range(32))


def _config(net: MemoryNetwork, addr: str, **kw: Any) -> MeshNodeConfig:
    kw.setdefault("heartbeat_interval", 0.05)
    kw.setdefault("session_timeout", 0.2)
    return MeshNodeConfig(
        psk=kw.pop("psk", PSK),
        bind=addr,
        transport="memory",
        transport_options=MemoryTransportConfig(net),
        **kw,
    )


@asynccontextmanager
async def _nodes(net: MemoryNetwork, *names: str, **kw: Any) -> AsyncIterator[list[MeshNode]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(MeshNode.open(_config(net, n, **kw))) for n in names]


async def _connect(a: MeshNode, b: MeshNode) -> None:
    b.allow(a.node_id)
    await a.connect(b.local_address, b.public_key, b.node_id)


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    # polling is the point here: the conditions are node internals with no event to wait on
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def _take(source: Callable[[], Awaitable[MeshEvent]], count: int) -> list[MeshEvent]:
    out: list[MeshEvent] = []
    with anyio.fail_after(10):
        while len(out) < count:
            out.append(await source())
    return out


async def test_transport_plugins_are_registered() -> None:
    manager = get_plugin_manager()
    assert {"udp", "memory"} <= set(manager.names("transport"))
    net = MemoryNetwork()
    binder = manager.transport("memory", MemoryTransportConfig(net))
    a = await binder.bind("a")
    b = await binder.bind(("b", 1))
    await a.send(b"hi", ("b", 1))
    assert await b.receive() == (b"hi", "a")
    await a.aclose()
    await a.aclose()  # idempotent
    with pytest.raises(ConfigError):
        manager.transport("memory", {"network": "not a network"})


async def test_memory_network_faults_are_seeded_and_counted() -> None:
    def run(seed: int) -> tuple[list[bytes], Any]:
        net = MemoryNetwork(seed=seed, loss=0.2, duplicate=0.2, reorder=0.2)
        a, b = net.endpoint("a"), net.endpoint("b")
        del a
        for i in range(200):
            net._transmit(i.to_bytes(2, "big"), "a", "b")
        got = [data for data, _ in b._queue]
        return got, net.stats

    first, stats = run(7)
    again, _ = run(7)
    assert first == again  # deterministic under a seed
    assert stats.lost
    assert stats.duplicated
    assert stats.reordered
    assert stats.sent == 200
    assert stats.delivered == len(first)
    assert first != sorted(first)


async def test_handshake_and_events_both_ways() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        events_b = b.peer_events()
        await _connect(a, b)
        assert a.peer(b.node_id) is not None
        await _until(lambda: b.peer(a.node_id) is not None)
        first = await anext(events_b)
        assert (first.kind, first.node_id) == (PeerEventKind.CONNECTED, a.node_id)
        assert a.peer(b.node_id).session_id == b.peer(a.node_id).session_id  # type: ignore[union-attr]

        s_ab = a.open_stream(b.node_id, 7)
        await s_ab.send([b"one", b"two"])
        got = await _take(b.receive, 2)
        assert [e.payload for e in got] == [b"one", b"two"]
        assert {(e.peer_node_id, e.stream_id) for e in got} == {(a.node_id, 7)}

        # b opens the same stream: a's events now arrive on the handle, and b answers
        s_ba = b.open_stream(a.node_id, 7)
        await s_ab.send([b"three"])
        it = s_ba.events()
        assert (await anext(it)).payload == b"three"
        await s_ba.send([b"back"])
        # a has a handle open on stream 7 too, so the answer arrives there
        assert (await anext(s_ab.events())).payload == b"back"
        stats = s_ab.stats()
        assert stats.events_sent == 3
        assert stats.events_received == 1
        assert b.stats().handshakes_completed == 1


async def test_open_stream_is_idempotent_with_epochs() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        await _connect(a, b)
        s1 = a.open_stream(b.node_id, 3, window_bytes=1000)
        s2 = a.open_stream(b.node_id, 3, reliability="reliable", window_bytes=5)
        assert (s2.epoch, s2.window_bytes, s2.reliability) == (s1.epoch, 1000, s1.reliability)
        await s1.close()
        with pytest.raises(NotConnectedError):
            await s1.send([b"x"])
        s3 = a.open_stream(b.node_id, 3)
        assert s3.epoch > s1.epoch
        with pytest.raises(NotConnectedError):
            await s2.send([b"x"])
        await s3.send([b"x"])
        with pytest.raises(NotConnectedError):
            a.open_stream(12345, 1)
        with pytest.raises(StreamConfigError):
            a.open_stream(b.node_id, 4, reliability="sometimes")
        with pytest.raises(StreamConfigError):
            a.open_stream(b.node_id, 4, reliability="reliable", window_bytes=0)
        with pytest.raises(StreamConfigError):
            a.open_stream(b.node_id, 4, fairness_weight=0)


async def test_backpressure_and_recovery_by_grants() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        await _connect(a, b)
        stream = a.open_stream(b.node_id, 5, window_bytes=300)
        await stream.send([bytes(100)])  # 184 bytes of credit
        assert stream.stats().tx_credit_remaining == 116
        with pytest.raises(StreamBackpressureError) as info:
            await stream.send([bytes(100)])
        assert isinstance(info.value, BackpressureError)
        assert isinstance(info.value, MeshError)
        assert info.value.events_sent == 0
        assert stream.stats().backpressure_events == 1
        # credit comes back only once b's application takes the event
        await anyio.sleep(0.05)
        assert stream.stats().tx_credit_remaining == 116
        assert (await b.receive()).payload == bytes(100)
        await _until(lambda: stream.stats().tx_credit_remaining == 300)
        assert stream.stats().credit_grants_received >= 1
        await stream.send([bytes(100)])

        # send_with_retry waits for the grant; send_blocking too
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                for _ in range(20):
                    await b.receive()

            tg.start_soon(consume)
            for _ in range(19):
                await stream.send_with_retry([bytes(100)], max_retries=50)
        with pytest.raises(StreamBackpressureError):
            await stream.send([bytes(100)] * 3)  # 392 > 300: never fits one packet
        # a partial send reports what went
        with pytest.raises(StreamBackpressureError) as partial:
            await stream.send_with_retry([bytes(8000), bytes(8000)], max_retries=0)
        assert partial.value.events_sent == 0


async def test_partial_send_reports_events_sent() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        await _connect(a, b)
        stream = a.open_stream(b.node_id, 1, window_bytes=20000)
        with pytest.raises(StreamBackpressureError) as info:
            await stream.send([bytes(8000)] * 3)  # 8084 bytes of credit per packet
        assert (info.value.events_sent, info.value.packets_sent) == (2, 2)
        got = await _take(b.receive, 2)
        assert len(got) == 2
        assert await stream.send_blocking([bytes(8000)]) == 1


async def test_connect_timeout_and_wrong_psk_are_typed() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        with pytest.raises(HandshakeTimeoutError):  # nobody listens there
            await a.connect("nowhere", b.public_key, b.node_id, timeout=0.05, retries=2)
        with pytest.raises(HandshakeTimeoutError):  # b does not expect a
            await a.connect(b.local_address, b.public_key, b.node_id, timeout=0.05, retries=1)
        assert b.stats().drops.get("handshake_unexpected") == 1
    async with _nodes(net, "c") as (c,), _nodes(net, "d", psk=os.urandom(32)) as (d,):
        d.allow(c.node_id)
        with pytest.raises(HandshakeTimeoutError):
            await c.connect(d.local_address, d.public_key, d.node_id, timeout=0.05, retries=1)
        assert d.stats().drops.get("handshake_auth") == 1


async def test_accept_waits_for_the_initiator() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        result: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def accept() -> None:
                result.append(await b.accept(a.node_id, timeout=5))

            tg.start_soon(accept)
            await anyio.sleep(0.01)
            await a.connect(b.local_address, b.public_key, b.node_id)
        assert result[0].node_id == a.node_id
        with pytest.raises(HandshakeTimeoutError):
            await b.accept(12345, timeout=0.02)


async def test_handshake_survives_loss() -> None:
    net = MemoryNetwork(seed=3, loss=0.5)
    async with _nodes(net, "a", "b", handshake_timeout=0.05) as (a, b):
        b.allow(a.node_id)
        await a.connect(b.local_address, b.public_key, b.node_id, retries=30)
        assert a.peer(b.node_id) is not None


async def test_malformed_replayed_and_forged_datagrams_are_counted() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b") as (a, b):
        await _connect(a, b)
        raw = net.endpoint("mallory")
        captured: list[bytes] = []
        original = net._transmit

        def tap(data: bytes, src: Any, dst: Any) -> None:
            if src == "a" and dst == "b" and len(data) > 80:
                captured.append(data)
            original(data, src, dst)

        net._transmit = tap  # type: ignore[method-assign]
        stream = a.open_stream(b.node_id, 1)
        await stream.send([b"real"])
        assert (await b.receive()).payload == b"real"
        data = captured[0]
        bad = bytearray(data)
        bad[16:24] = (500).to_bytes(8, "little")  # a fresh counter: passes the replay check
        bad[-1] ^= 1
        for junk in (
            b"",
            b"NE" + bytes(10),
            b"\x45\x4e" + bytes(62),  # bad version
            bytes(72),  # a zero pingwave (invalid health is fine: 0 is HEALTHY)
            b"RT" + bytes(100),
            b"garbage" * 3,
            data,  # replay from another address: counter already used
            bytes(bad),  # tampered tag, fresh counter
            data[:-1],  # truncated
        ):
            await raw.send(junk, "b")
        # a forged session packet from a session b does not know
        stranger = MeshSession(a.peer(b.node_id).session_id and _other_keys())  # type: ignore[union-attr]
        await raw.send(stranger.seal_events(1, 0, [b"forged"]), "b")
        await _until(lambda: b.stats().datagrams_received >= 13)
        drops = b.stats().drops
        assert drops.get("replay") == 1
        assert drops.get("auth") == 1
        assert drops.get("unknown_session") == 1
        assert drops.get("routed_ttl_expired") == 1
        assert drops.get("unknown_kind", 0) + drops.get("malformed", 0) >= 4
        # the node still works
        await stream.send([b"after"])
        assert (await b.receive()).payload == b"after"
        assert b.stats().drops.get("internal_error") is None


def _other_keys() -> Any:
    return SessionKeys.from_handshake_hash(os.urandom(32), HandshakeRole.INITIATOR)


async def test_failure_detection_eviction_and_recovery() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b", eviction_timeout=1.0) as (a, b):
        await _connect(a, b)
        events = a.peer_events()
        assert (await anext(events)).kind is PeerEventKind.CONNECTED
        stream = a.open_stream(b.node_id, 1)
        await anyio.sleep(0.3)  # several heartbeat intervals: still healthy
        assert a.peer(b.node_id).status is PeerStatus.HEALTHY  # type: ignore[union-attr]
        assert a.stats().heartbeats_received >= 3

        net.partition("a", "b")
        kinds = []
        with anyio.fail_after(5):
            async for event in events:
                kinds.append(event.kind)
                if event.kind is PeerEventKind.FAILED:
                    break
        assert kinds == [PeerEventKind.SUSPECTED, PeerEventKind.FAILED]
        net.heal()
        with anyio.fail_after(5):
            assert (await anext(events)).kind is PeerEventKind.RECOVERED
        assert a.peer(b.node_id).status is PeerStatus.HEALTHY  # type: ignore[union-attr]

        net.partition("a", "b")
        with anyio.fail_after(5):
            async for event in events:
                if event.kind is PeerEventKind.EVICTED:
                    break
        assert a.peer(b.node_id) is None
        assert a.stats().evictions == 1
        with pytest.raises(NotConnectedError):
            await stream.send([b"x"])
        # b evicted a too; a reconnect works after healing
        net.heal()
        await _until(lambda: b.peer(a.node_id) is None)
        await a.connect(b.local_address, b.public_key, b.node_id)
        assert b.peer(a.node_id) is not None


async def test_three_nodes_and_session_replacement() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a", "b", "c") as (a, b, c):
        await _connect(a, b)
        await _connect(b, c)
        await _connect(c, a)
        for x, y in ((a, b), (b, c), (c, a)):
            await x.open_stream(y.node_id, 9).send([f"{x.node_id}".encode()])
        got_b = await b.receive()
        got_c = await c.receive()
        got_a = await a.receive()
        assert (got_b.peer_node_id, got_c.peer_node_id, got_a.peer_node_id) == (
            a.node_id,
            b.node_id,
            c.node_id,
        )
        assert len(a.peers()) == len(b.peers()) == len(c.peers()) == 2

        old = a.open_stream(b.node_id, 1)
        await a.connect(b.local_address, b.public_key, b.node_id)  # a new session
        with pytest.raises(NotConnectedError):
            await old.send([b"x"])
        new = a.open_stream(b.node_id, 1)
        await new.send([b"fresh"])
        assert (await b.receive()).payload == b"fresh"
        kinds = []
        it = b.peer_events()
        with anyio.fail_after(2):
            while PeerEventKind.REPLACED not in kinds:
                kinds.append((await anext(it)).kind)


async def test_closed_node_raises_typed_errors() -> None:
    net = MemoryNetwork()
    async with _nodes(net, "a") as (a,):
        pass
    with pytest.raises(NodeClosedError):
        await a.receive()
    with pytest.raises(NodeClosedError):
        a.open_stream(1, 1)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="psk"):
        MeshNodeConfig(psk=b"short")
    with pytest.raises(ConfigError, match="session_timeout"):
        MeshNodeConfig(psk=PSK, heartbeat_interval=5, session_timeout=1)
    with pytest.raises(ConfigError, match="handshake_retries"):
        MeshNodeConfig(psk=PSK, handshake_retries=0)
    config = MeshNodeConfig(psk=PSK)
    assert (config.heartbeat_interval, config.session_timeout, config.handshake_retries) == (
        5.0,
        30.0,
        3,
    )
    assert config.effective_eviction_timeout == 900.0
