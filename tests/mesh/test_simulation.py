"""A five-node ring on the memory transport under seeded loss, duplication and reordering.

    n0 - n1 - n2 - n3 - n4 - n0

Each node has a direct session with its two neighbours only; the two others are two hops
away. The scenario, in one test per backend:

1. routes converge: metric 1 to each neighbour, metric 3 (two hops) to the others, through
   the neighbour on the short side of the ring;
2. n0 opens a relayed session to n2 through n1 (:meth:`MeshNode.connect_via`) and a
   reliable stream on it: every event arrives in order exactly once;
3. the n0-n1 link is partitioned while the stream keeps sending: n0 and n1 see each other
   fail and evict each other, the routes between n0 and n2 reroute the long way round
   (n0 - n4 - n3 - n2), and the relayed session and its reliable stream survive;
4. the link heals and n0 reconnects to n1: routes converge to the first table again and
   the stream still delivers everything in order exactly once.

The network's faults are seeded (``MemoryNetwork(seed=...)``); the scheduling is real, so
every step waits for its condition with a deadline. Short timers (30 ms heartbeats,
0.3 s session timeout, 1.2 s eviction) keep the whole file well under 30 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from net_core.mesh import (
    MemoryNetwork,
    MemoryTransportConfig,
    MeshNode,
    MeshNodeConfig,
    MeshStream,
    PeerEvent,
    PeerEventKind,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PSK = bytes(range(32))
SIZE = 5
NAMES = [f"n{i}" for i in range(SIZE)]


def _config(net: MemoryNetwork, name: str) -> MeshNodeConfig:
    return MeshNodeConfig(
        psk=PSK,
        bind=name,
        transport="memory",
        transport_options=MemoryTransportConfig(net),
        heartbeat_interval=0.03,
        session_timeout=0.3,
        eviction_timeout=1.2,
        handshake_timeout=0.1,
        handshake_retries=30,
        reliable_rto=0.02,
        reliable_max_rto=0.2,
    )


@asynccontextmanager
async def _ring(net: MemoryNetwork) -> AsyncIterator[list[MeshNode]]:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(MeshNode.open(_config(net, n))) for n in NAMES]
        for i, node in enumerate(nodes):
            right = nodes[(i + 1) % SIZE]
            right.allow(node.node_id)
            await node.connect(right.local_address, right.public_key, right.node_id)
        yield nodes


async def _until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - node internals have no event to wait on
            await anyio.sleep(0.01)


def _expected_table(nodes: list[MeshNode]) -> dict[tuple[int, int], tuple[int, int]]:
    """(node index, destination index) -> (next hop index, metric) on the healthy ring."""
    table: dict[tuple[int, int], tuple[int, int]] = {}
    for i in range(SIZE):
        for j in range(SIZE):
            if i == j:
                continue
            forward = (j - i) % SIZE
            if forward == 1 or forward == SIZE - 1:
                table[i, j] = (j, 1)
            elif forward == 2:
                table[i, j] = ((i + 1) % SIZE, 3)
            else:
                table[i, j] = ((i - 1) % SIZE, 3)
    del nodes
    return table


def _table_holds(nodes: list[MeshNode], table: dict[tuple[int, int], tuple[int, int]]) -> bool:
    index = {n.node_id: i for i, n in enumerate(nodes)}
    for (i, j), (hop, metric) in table.items():
        route = nodes[i].route(nodes[j].node_id)
        if route is None or (index.get(route.next_hop), route.metric) != (hop, metric):
            return False
    return True


def _next_hop(nodes: list[MeshNode], i: int, j: int) -> int | None:
    route = nodes[i].route(nodes[j].node_id)
    if route is None:
        return None
    return next((k for k, n in enumerate(nodes) if n.node_id == route.next_hop), None)


class _Receiver:
    """Collects a stream's events in the background."""

    def __init__(self, stream: MeshStream) -> None:
        self.stream = stream
        self.got: list[bytes] = []

    async def run(self) -> None:
        async for event in self.stream.events():
            self.got.append(event.payload)


async def _send(stream: MeshStream, first: int, count: int) -> list[bytes]:
    payloads = [f"event-{i:05d}".encode() for i in range(first, first + count)]
    for k in range(0, count, 4):
        await stream.send_blocking(payloads[k : k + 4])
    return payloads


async def _collect(events: AsyncIterator[PeerEvent], into: list[PeerEvent]) -> None:
    async for event in events:
        into.append(event)


@pytest.mark.parametrize("seed", [3, 11])
async def test_ring_routes_relay_partition_and_heal(seed: int) -> None:
    net = MemoryNetwork(seed=seed)
    async with _ring(net) as nodes, anyio.create_task_group() as tg:
        n0, n1, n2 = nodes[0], nodes[1], nodes[2]
        net.loss, net.duplicate, net.reorder = 0.03, 0.05, 0.1  # faults after the handshakes
        healthy = _expected_table(nodes)

        # 1. convergence
        await _until(lambda: _table_holds(nodes, healthy))
        for node in nodes:
            assert len(node.peers()) == 2
            assert len(node.routes()) == SIZE - 1

        # 2. a relayed session n0 -> n2 through n1, and a reliable stream on it
        events0: list[PeerEvent] = []
        events1: list[PeerEvent] = []
        tg.start_soon(_collect, n0.peer_events(), events0)
        tg.start_soon(_collect, n1.peer_events(), events1)
        n2.allow(n0.node_id)
        info = await n0.connect_via(n1.local_address, n2.public_key, n2.node_id)
        assert info.routed
        out = n0.open_stream(n2.node_id, 9, reliability="reliable", window_bytes=2048)
        receiver = _Receiver(n2.open_stream(n0.node_id, 9))
        tg.start_soon(receiver.run)
        sent = await _send(out, 0, 200)
        await _until(lambda: len(receiver.got) >= len(sent))
        assert receiver.got == sent
        relayed_before = n1.stats().routed_forwarded
        assert relayed_before > 0

        # 3. partition n0 - n1 while sending: fail, evict, reroute the long way round
        net.partition("n0", "n1")
        sent += await _send(out, 200, 100)
        await _until(
            lambda: any(
                e.kind is PeerEventKind.EVICTED and e.node_id == n1.node_id for e in events0
            )
        )
        await _until(
            lambda: any(
                e.kind is PeerEventKind.EVICTED and e.node_id == n0.node_id for e in events1
            )
        )
        assert any(e.kind is PeerEventKind.FAILED and e.node_id == n1.node_id for e in events0)
        assert n0.peer(n1.node_id) is None
        assert n1.peer(n0.node_id) is None
        await _until(lambda: _next_hop(nodes, 0, 2) == 4 and _next_hop(nodes, 2, 0) == 3)
        assert n0.route(n1.node_id) is not None  # n1 is still reachable, the long way
        assert _next_hop(nodes, 0, 1) == 4
        sent += await _send(out, 300, 100)
        await _until(lambda: len(receiver.got) >= len(sent), seconds=15)
        assert receiver.got == sent  # in order, exactly once, across the reroute
        peer = n0.peer(n2.node_id)
        assert peer is not None
        assert peer.session_id == info.session_id  # the same relayed session throughout
        assert nodes[3].stats().routed_forwarded > 0
        assert nodes[4].stats().routed_forwarded > 0

        # 4. heal, reconnect the direct link, converge to the healthy table again
        net.heal()
        n1.allow(n0.node_id)
        await n0.connect(n1.local_address, n1.public_key, n1.node_id)
        await _until(lambda: _table_holds(nodes, healthy))
        sent += await _send(out, 400, 100)
        await _until(lambda: len(receiver.got) >= len(sent))
        assert receiver.got == sent
        stats = out.stats()
        assert stats.retransmits > 0  # the faults were real
        assert stats.events_sent == len(sent)
        for node in nodes:
            assert node.stats().drops.get("internal_error") is None
        assert net.stats.lost > 0
        assert net.stats.duplicated > 0
        assert net.stats.reordered > 0
        assert net.stats.partitioned > 0
        tg.cancel_scope.cancel()
