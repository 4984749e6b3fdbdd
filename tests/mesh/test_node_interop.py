"""Our MeshNode against the reference ``net.NetMesh`` (ai2070-net 0.18) on 127.0.0.1.

* our node initiates, the reference accepts: events both ways, heartbeats for several
  intervals (the reference's ``heartbeat_interval_ms`` is configurable: 100 ms here);
* the reference initiates, our node accepts: events both ways, and the reference's credit
  window is refilled by OUR grants (backpressure, then recovery once our application
  consumed the event), and ours by the reference's grants.

The reference's blocking calls run in worker threads (they release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from net_core.mesh import MeshNode, MeshNodeConfig, PeerStatus, StreamBackpressureError

net = pytest.importorskip("net", reason="ai2070-net not installed")

pytestmark = [pytest.mark.anyio, pytest.mark.oracle, pytest.mark.timeout(60)]


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends (the reference's calls run in worker threads on either)."""
    return str(request.param)


def _addr_of(mesh: Any) -> str:
    # repr is "NetMesh(addr=IP:PORT, peers=N, nodes=M)"; the binding has no addr property
    return repr(mesh).split("addr=", 1)[1].split(",", 1)[0]


@asynccontextmanager
async def _setup() -> AsyncIterator[tuple[Any, MeshNode]]:
    psk = os.urandom(32)
    ref = net.NetMesh(
        "127.0.0.1:0", psk.hex(), heartbeat_interval_ms=100, session_timeout_ms=2000, num_shards=1
    )
    try:
        config = MeshNodeConfig(
            psk=psk,
            bind="127.0.0.1:0",
            node_id=0x1234_5678_9ABC_DEF0,
            heartbeat_interval=0.1,
            session_timeout=2.0,
        )
        async with MeshNode.open(config) as node:
            yield ref, node
    finally:
        await anyio.to_thread.run_sync(ref.shutdown)


async def _poll(ref: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    with anyio.fail_after(10):
        while len(got) < count:
            batch = await anyio.to_thread.run_sync(ref.poll, 64)
            got.extend(e.raw.encode() if isinstance(e.raw, str) else e.raw for e in batch)
            if len(got) < count:
                await anyio.sleep(0.02)
    return got


async def test_our_node_initiates_reference_accepts() -> None:
    async with _setup() as (ref, node), anyio.create_task_group() as tg:
        accepted: list[str] = []

        async def accept() -> None:
            accepted.append(await anyio.to_thread.run_sync(ref.accept, node.node_id))

        tg.start_soon(accept)
        await anyio.sleep(0.2)  # accept() must wait before msg1 arrives
        peer = await node.connect(_addr_of(ref), bytes.fromhex(ref.public_key), ref.node_id)
        with anyio.fail_after(10):
            while not accepted:  # noqa: ASYNC110 - polling foreign state
                await anyio.sleep(0.01)
        host, port = node.local_address  # type: ignore[misc]
        assert accepted == [f"{host}:{port}"]
        ref.start()

        stream = node.open_stream(ref.node_id, 0)
        await stream.send([b'{"n":1}', b'{"n":2}'])
        assert await _poll(ref, 2) == [b'{"n":1}', b'{"n":2}']

        ref.push_to(f"{host}:{port}", '{"from":"reference"}')
        with anyio.fail_after(10):
            event = await anext(stream.events())  # stream 0 is open here
        assert event.payload == b'{"from":"reference"}'
        assert event.peer_node_id == ref.node_id

        # several heartbeat intervals later the session is alive on both sides
        before = node.stats().heartbeats_received
        await anyio.sleep(0.8)
        assert node.stats().heartbeats_received - before >= 4
        info = node.peer(ref.node_id)
        assert info is not None
        assert info.session_id == peer.session_id
        assert info.status is PeerStatus.HEALTHY
        assert ref.peer_count() == 1
        await stream.send([b'{"n":3}'])
        assert await _poll(ref, 1) == [b'{"n":3}']
        # the reference granted back the credit of everything it took
        with anyio.fail_after(5):
            while stream.stats().tx_credit_remaining != stream.stats().tx_window:  # noqa: ASYNC110 - polling foreign state
                await anyio.sleep(0.01)
        assert stream.stats().credit_grants_received >= 1
        assert node.stats().drops.get("auth") is None


async def test_reference_initiates_our_node_accepts_with_credit() -> None:
    async with _setup() as (ref, node):
        node.allow(ref.node_id)
        host, port = node.local_address  # type: ignore[misc]
        await anyio.to_thread.run_sync(
            ref.connect, f"{host}:{port}", node.public_key.hex(), node.node_id
        )
        ref.start()
        with anyio.fail_after(5):
            while node.peer(ref.node_id) is None:  # noqa: ASYNC110 - polling foreign state
                await anyio.sleep(0.01)

        # the reference sends under a 300-byte window: the second 100-byte event is
        # backpressured until our application takes the first (our grant follows)
        ref_stream = ref.open_stream(node.node_id, 5, window_bytes=300)
        ref.send_on_stream(ref_stream, [bytes(100)])
        with pytest.raises(net.BackpressureError):
            ref.send_on_stream(ref_stream, [bytes(100)])
        await anyio.sleep(0.1)
        assert ref.stream_stats(node.node_id, 5).credit_grants_received == 0
        with anyio.fail_after(5):
            event = await node.receive()
        assert (event.stream_id, event.payload) == (5, bytes(100))
        with anyio.fail_after(5):
            while ref.stream_stats(node.node_id, 5).tx_credit_remaining != 300:  # noqa: ASYNC110 - polling foreign state
                await anyio.sleep(0.01)
        ref.send_on_stream(ref_stream, [bytes(100)])  # credit restored
        with anyio.fail_after(5):
            assert (await node.receive()).payload == bytes(100)

        # our window refilled by the reference's grants. An event costing more than the
        # whole window is always refused (grants never raise credit above the window);
        # ten 100-byte events cost 1840 wire bytes, six windows' worth: they only get
        # through because the reference's grants keep refilling the 300-byte window.
        ours = node.open_stream(ref.node_id, 0, window_bytes=300)
        with pytest.raises(StreamBackpressureError):
            await ours.send([bytes(300)])
        with anyio.fail_after(10):
            for _ in range(10):
                await ours.send_with_retry([bytes(100)], max_retries=40)
        assert ours.stats().credit_grants_received >= 6
        assert len(await _poll(ref, 10)) == 10
        with anyio.fail_after(5):
            while ours.stats().tx_credit_remaining != 300:  # noqa: ASYNC110 - polling foreign state
                await anyio.sleep(0.01)
