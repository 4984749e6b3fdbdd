"""Relaying with the reference (``net.NetMesh``, ai2070-net 0.18) on 127.0.0.1.

* the reference relays: our node A connects to reference R directly, R connects to our
  node B, then A reaches B through R (:meth:`MeshNode.connect_via`): a routed handshake
  both our nodes see as a routed peer, and events both ways relayed by R;
* we relay for the reference: our node A reaches reference T through our node X (a
  routed handshake T answers through X), then events A -> T relayed by X.

Not possible, and why: a *reference initiator* through our relay. The binding has no
``connect_via``/routed connect in its Python API, so the reference never starts a routed
handshake here; the second test covers our relay with the reference as responder.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from net_core.mesh import MeshNode, MeshNodeConfig, PeerEventKind

net = pytest.importorskip("net", reason="ai2070-net not installed")

pytestmark = [pytest.mark.anyio, pytest.mark.oracle, pytest.mark.timeout(60)]


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends (the reference's calls run in worker threads on either)."""
    return str(request.param)


def _addr_of(mesh: Any) -> str:
    # repr is "NetMesh(addr=IP:PORT, peers=N, nodes=M)"; the binding has no addr property
    return repr(mesh).split("addr=", 1)[1].split(",", 1)[0]


def _fmt(node: MeshNode) -> str:
    address = node.local_address
    assert isinstance(address, tuple)
    return f"{address[0]}:{address[1]}"


@asynccontextmanager
async def _world(count: int) -> AsyncIterator[tuple[Any, list[MeshNode]]]:
    psk = os.urandom(32)
    ref = net.NetMesh(
        "127.0.0.1:0", psk.hex(), heartbeat_interval_ms=100, session_timeout_ms=2000, num_shards=1
    )
    try:
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    MeshNode.open(
                        MeshNodeConfig(
                            psk=psk,
                            bind="127.0.0.1:0",
                            heartbeat_interval=0.1,
                            session_timeout=2.0,
                            handshake_timeout=1.0,
                        )
                    )
                )
                for _ in range(count)
            ]
            yield ref, nodes
    finally:
        await anyio.to_thread.run_sync(ref.shutdown)


async def _until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - polling foreign state
            await anyio.sleep(0.01)


async def _poll(ref: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    with anyio.fail_after(10):
        while len(got) < count:
            batch = await anyio.to_thread.run_sync(ref.poll, 64)
            got.extend(e.raw.encode() if isinstance(e.raw, str) else e.raw for e in batch)
            if len(got) < count:
                await anyio.sleep(0.02)
    return got


async def test_reference_relays_between_our_nodes() -> None:
    async with _world(2) as (ref, (a, b)), anyio.create_task_group() as tg:
        accepted: list[str] = []

        async def accept() -> None:
            accepted.append(await anyio.to_thread.run_sync(ref.accept, a.node_id))

        tg.start_soon(accept)
        await anyio.sleep(0.2)  # accept() must wait before msg1 arrives
        await a.connect(_addr_of(ref), bytes.fromhex(ref.public_key), ref.node_id)
        await _until(lambda: bool(accepted))
        b.allow(ref.node_id)
        await anyio.to_thread.run_sync(ref.connect, _fmt(b), b.public_key.hex(), b.node_id)
        ref.start()
        await _until(lambda: b.peer(ref.node_id) is not None)

        events_b = b.peer_events()
        b.allow(a.node_id)
        info = await a.connect_via(_addr_of(ref), b.public_key, b.node_id)
        assert info.routed
        with anyio.fail_after(5):
            event = await anext(events_b)
            while event.node_id != a.node_id:
                event = await anext(events_b)
        assert event.kind is PeerEventKind.CONNECTED
        seen_by_b = b.peer(a.node_id)
        assert seen_by_b is not None
        assert seen_by_b.routed
        assert seen_by_b.session_id == info.session_id

        out = a.open_stream(b.node_id, 3, reliability="reliable")
        back = b.open_stream(a.node_id, 3)
        await out.send([b"one", b"two"])
        await out.send([b"three"])
        got: list[bytes] = []
        with anyio.fail_after(10):
            async for ev in back.events():
                got.append(ev.payload)
                if len(got) == 3:
                    break
        assert got == [b"one", b"two", b"three"]
        await back.send([b"back through the reference"])
        with anyio.fail_after(10):
            reply = await anext(out.events())
        assert reply.payload == b"back through the reference"
        # the relayed session stays up across heartbeat intervals
        await anyio.sleep(0.5)
        assert a.peer(b.node_id) is not None
        assert b.peer(a.node_id) is not None
        assert a.stats().drops.get("auth") is None
        assert b.stats().drops.get("auth") is None
        tg.cancel_scope.cancel()


async def test_our_node_relays_to_a_reference_responder() -> None:
    async with _world(2) as (ref, (a, x)):
        x.allow(a.node_id)
        await a.connect(x.local_address, x.public_key, x.node_id)
        x.allow(ref.node_id)
        await anyio.to_thread.run_sync(ref.connect, _fmt(x), x.public_key.hex(), x.node_id)
        ref.start()
        await _until(lambda: x.peer(ref.node_id) is not None)

        info = await a.connect_via(x.local_address, bytes.fromhex(ref.public_key), ref.node_id)
        assert info.routed
        stream = a.open_stream(ref.node_id, 0)
        await stream.send([b'{"via":"our relay"}'])
        assert await _poll(ref, 1) == [b'{"via":"our relay"}']
        assert x.stats().routed_forwarded >= 2  # msg1 one way, msg2 back, then the event
        assert ref.peer_count() == 2
