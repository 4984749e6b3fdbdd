"""Our sans-I/O mesh core against the reference (``ai2070-net`` 0.18) on 127.0.0.1.

The reference runs as real ``net.NetMesh`` nodes bound to loopback; our side is the
sans-I/O state machines driven through a plain blocking UDP socket owned by the test:

* our initiator -> reference responder (``accept``): handshake, a two-event packet the
  reference delivers (``poll``), the reference's credit grant and heartbeats opened by
  our session;
* reference initiator (``connect``) -> our responder: its msg1 fails our responder with
  a different PSK (typed), is refused as a replay once answered, and our answer completes
  its ``connect``; then events both ways;
* credit grants both ways: the reference's send window is refilled by our grant, ours by
  the reference's;
* a routed handshake from our initiator through a reference relay to a reference
  responder (msg1 carries our node id), then a routed event the responder delivers.

Not covered, and why: the binding exposes no routed *initiator* (``connect_via`` is not
in the Python API), so our routed responder is checked against our own initiator only
(tests/mesh/test_handshake.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from net_core.mesh import (
    CONTROL_STREAM_ID,
    HEADER_SIZE,
    HandshakeAuthError,
    HandshakeInitiator,
    HandshakeReplayError,
    HandshakeReplayGuard,
    HandshakeResponder,
    MeshBackpressureError,
    MeshSession,
    NetHeader,
    PacketFlags,
    RoutingHeader,
    StreamReceiveWindow,
    StreamSendWindow,
    StreamWindowGrant,
    Subprotocol,
    decode_handshake_packet,
    packet_credit_cost,
    routing_id,
    split_routed,
    x25519_public_key,
)

net = pytest.importorskip("net", reason="ai2070-net not installed")

pytestmark = [pytest.mark.oracle, pytest.mark.timeout(60)]

Addr = tuple[str, int]


def _addr_of(mesh: Any) -> Addr:
    # repr is "NetMesh(addr=IP:PORT, peers=N, nodes=M)"; the binding has no addr property
    text = repr(mesh).split("addr=", 1)[1].split(",", 1)[0]
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _fmt(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


@pytest.fixture
def psk() -> bytes:
    return os.urandom(32)


@pytest.fixture
def make_mesh(psk: bytes) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("num_shards", 1)  # poll() drains shard 0 only
        mesh = net.NetMesh("127.0.0.1:0", psk.hex(), **kwargs)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.shutdown()


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def _recv_packet(sock: socket.socket, want: Callable[[bytes], bool]) -> bytes:
    """Receive until a datagram satisfies ``want`` (pingwaves etc. are skipped)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        data, _ = sock.recvfrom(9000)
        if want(data):
            return data
    raise AssertionError("expected datagram did not arrive")


def _poll_until(mesh: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 5.0
    while len(got) < count and time.monotonic() < deadline:
        got.extend(e.raw.encode() if isinstance(e.raw, str) else e.raw for e in mesh.poll(64))
        time.sleep(0.02)
    return got


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # surfaced by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _is_net(data: bytes) -> bool:
    return data[:2] == b"\x45\x4e"


def test_our_initiator_reference_responder(
    make_mesh: Callable[..., Any], udp: socket.socket, psk: bytes
) -> None:
    ref = make_mesh(heartbeat_interval_ms=100)
    ref_addr = _addr_of(ref)
    our_id = 0x1234_5678_9ABC_DEF0
    thread, out = _in_thread(lambda: ref.accept(our_id))
    time.sleep(0.1)  # accept() must be waiting before msg1 arrives

    initiator = HandshakeInitiator(
        local_node_id=our_id,
        peer_node_id=ref.node_id,
        peer_static_public=bytes.fromhex(ref.public_key),
        psk=psk,
    )
    msg1 = initiator.packet1()
    assert len(msg1) == 112
    udp.sendto(msg1, ref_addr)
    reply = _recv_packet(udp, _is_net)
    assert len(reply) == 112
    header = NetHeader.decode(reply[:HEADER_SIZE])
    assert header == NetHeader(flags=PacketFlags.HANDSHAKE, payload_len=48)
    result = initiator.finish_packet(reply)
    thread.join(5)
    assert "error" not in out
    assert out["value"] == _fmt(udp.getsockname())
    ref.start()

    session = MeshSession(result.keys)
    datagram = session.seal_events(0, 0, [b"hello", b"world!"])
    assert len(datagram) == 99  # the wire-verified size of this exact packet
    udp.sendto(datagram, ref_addr)
    assert _poll_until(ref, 2) == [b"hello", b"world!"]

    # The reference answers an accepted data packet with a credit grant on the control
    # stream, and sends heartbeats: both must open with our session.
    grant_packet = _recv_packet(
        udp, lambda d: _is_net(d) and len(d) == 100 and not d[3] & PacketFlags.HEARTBEAT
    )
    opened = session.open(grant_packet)
    assert opened.header.subprotocol_id == Subprotocol.STREAM_WINDOW
    assert opened.header.stream_id == CONTROL_STREAM_ID
    (grant_event,) = opened.events()
    assert StreamWindowGrant.decode(grant_event) == StreamWindowGrant(0, 99)

    beat = _recv_packet(udp, lambda d: _is_net(d) and len(d) == 80)
    opened_beat = session.open(beat)
    assert opened_beat.header.is_heartbeat
    assert opened_beat.plaintext == b""
    with pytest.raises(Exception, match="counter"):
        session.open(beat)  # replayed heartbeat


def test_reference_initiator_our_responder(
    make_mesh: Callable[..., Any], udp: socket.socket, psk: bytes
) -> None:
    ref = make_mesh(heartbeat_interval_ms=100)
    our_id = 0xFEED_FACE_1234_5678
    static = os.urandom(32)
    our_addr = _fmt(udp.getsockname())
    thread, out = _in_thread(lambda: ref.connect(our_addr, x25519_public_key(static).hex(), our_id))
    msg1, src = udp.recvfrom(9000)
    assert len(msg1) == 112
    assert len(decode_handshake_packet(msg1)) == 48

    stranger = HandshakeResponder(local_node_id=our_id, static_private=static, psk=os.urandom(32))
    with pytest.raises(HandshakeAuthError):
        stranger.respond_packet(msg1, peer_node_id=ref.node_id)
    wrong_static = HandshakeResponder(local_node_id=our_id, static_private=os.urandom(32), psk=psk)
    with pytest.raises(HandshakeAuthError):
        wrong_static.respond_packet(msg1, peer_node_id=ref.node_id)
    wrong_peer_id = HandshakeResponder(local_node_id=our_id, static_private=static, psk=psk)
    with pytest.raises(HandshakeAuthError):  # prologue binds the routing ids
        wrong_peer_id.respond_packet(msg1, peer_node_id=ref.node_id ^ 1)

    guard = HandshakeReplayGuard()
    responder = HandshakeResponder(
        local_node_id=our_id, static_private=static, psk=psk, replay_guard=guard
    )
    answer = responder.respond_packet(msg1, peer_node_id=ref.node_id)
    with pytest.raises(HandshakeReplayError):
        responder.respond_packet(msg1, peer_node_id=ref.node_id)
    udp.sendto(answer.packet(), src)
    thread.join(10)
    assert "error" not in out
    ref.start()

    session = MeshSession(answer.result.keys)
    ref.push_to(our_addr, '{"from":"reference"}')
    data = _recv_packet(udp, lambda d: _is_net(d) and not d[3] & PacketFlags.HEARTBEAT)
    assert session.open(data).events() == [b'{"from":"reference"}']

    udp.sendto(session.seal_events(0, 0, [b'"back"']), src)
    assert _poll_until(ref, 1) == [b'"back"']


def test_routed_handshake_and_event_through_reference_relay(
    make_mesh: Callable[..., Any], udp: socket.socket, psk: bytes
) -> None:
    relay = make_mesh()
    target = make_mesh()
    relay.start()
    target.start()
    our_id = 0x0BAD_C0DE_0000_0042
    relay.add_route(target.node_id, _fmt(_addr_of(target)))
    relay.add_route(our_id, _fmt(udp.getsockname()))

    initiator = HandshakeInitiator(
        local_node_id=our_id,
        peer_node_id=target.node_id,
        peer_static_public=bytes.fromhex(target.public_key),
        psk=psk,
        routed=True,
    )
    msg1 = initiator.packet1()
    assert len(msg1) == 18 + 64 + 56
    udp.sendto(msg1, _addr_of(relay))
    reply = _recv_packet(udp, lambda d: d[:2] == b"RT")
    route, inner = split_routed(reply)
    assert route.dest_id == our_id
    assert route.src_id == routing_id(target.node_id)
    assert (route.ttl, route.hop_count) == (15, 1)  # one relay hop from ttl 16
    result = initiator.finish_packet(inner)

    session = MeshSession(result.keys)
    packet = session.seal_events(0, 0, [b'"via relay"'])
    header = RoutingHeader(src_id=routing_id(our_id), dest_id=target.node_id)
    udp.sendto(header.encode() + packet, _addr_of(relay))
    assert _poll_until(target, 1) == [b'"via relay"']


def test_reference_drops_tampered_and_replayed_events(
    make_mesh: Callable[..., Any], udp: socket.socket, psk: bytes
) -> None:
    ref = make_mesh()
    our_id = 0x42
    thread, _ = _in_thread(lambda: ref.accept(our_id))
    time.sleep(0.1)
    initiator = HandshakeInitiator(
        local_node_id=our_id,
        peer_node_id=ref.node_id,
        peer_static_public=bytes.fromhex(ref.public_key),
        psk=psk,
    )
    udp.sendto(initiator.packet1(), _addr_of(ref))
    result = initiator.finish_packet(_recv_packet(udp, _is_net))
    thread.join(5)
    ref.start()
    session = MeshSession(result.keys)

    first = session.seal_events(0, 0, [b'"one"'])
    tampered = bytearray(session.seal_events(0, 1, [b'"two"']))
    tampered[5] ^= 1  # hop_ttl is inside the AAD
    hop_bumped = bytearray(session.seal_events(0, 2, [b'"three"']))
    hop_bumped[6] = 7  # hop_count is not: still valid
    for datagram in (first, first, bytes(tampered), bytes(hop_bumped)):
        udp.sendto(datagram, _addr_of(ref))
    assert _poll_until(ref, 2) == [b'"one"', b'"three"']
    time.sleep(0.2)
    assert ref.poll(64) == []


def test_credit_grants_both_ways(
    make_mesh: Callable[..., Any], udp: socket.socket, psk: bytes
) -> None:
    ref = make_mesh()
    our_id = 0xFEED_FACE_1234_5678
    static = os.urandom(32)
    our_addr = _fmt(udp.getsockname())
    thread, out = _in_thread(lambda: ref.connect(our_addr, x25519_public_key(static).hex(), our_id))
    msg1, src = udp.recvfrom(9000)
    responder = HandshakeResponder(local_node_id=our_id, static_private=static, psk=psk)
    answer = responder.respond_packet(msg1, peer_node_id=ref.node_id)
    udp.sendto(answer.packet(), src)
    thread.join(10)
    assert "error" not in out
    ref.start()
    session = MeshSession(answer.result.keys)

    # The reference sends under a 300-byte window: one 100-byte event (184 bytes of
    # credit) passes, the second is backpressured until OUR grant arrives.
    stream = ref.open_stream(our_id, 5, window_bytes=300)
    ref.send_on_stream(stream, [bytes(100)])
    with pytest.raises(net.BackpressureError):
        ref.send_on_stream(stream, [bytes(100)])
    data = _recv_packet(udp, lambda d: _is_net(d) and len(d) == 64 + 104 + 16)
    opened = session.open(data)
    assert (opened.header.stream_id, opened.header.sequence) == (5, 0)
    receive = StreamReceiveWindow(5, window_bytes=300)
    grant = receive.on_packet(packet_credit_cost(opened.events()))
    assert grant == StreamWindowGrant(5, 184)
    udp.sendto(session.grant(grant.stream_id, grant.total_consumed), src)
    deadline = time.monotonic() + 5
    while ref.stream_stats(our_id, 5).credit_grants_received < 1:
        assert time.monotonic() < deadline, "the reference never applied our grant"
        time.sleep(0.02)
    assert ref.stream_stats(our_id, 5).tx_credit_remaining == 300
    ref.send_on_stream(stream, [bytes(100)])  # credit restored

    # And the other way: our send window, refilled by the reference's grant.
    window = StreamSendWindow(300)
    events = [bytes(100)]
    cost = packet_credit_cost(events)
    window.acquire(cost)
    udp.sendto(session.seal_events(9, 0, events), src)
    window.commit(cost)
    with pytest.raises(MeshBackpressureError):
        window.acquire(cost)
    reply = _recv_packet(
        udp, lambda d: _is_net(d) and len(d) == 100 and not d[3] & PacketFlags.HEARTBEAT
    )
    (event,) = session.open(reply).events()
    ref_grant = StreamWindowGrant.decode(event)
    assert ref_grant == StreamWindowGrant(9, cost)
    assert window.apply_grant(ref_grant.total_consumed) == cost
    assert window.remaining == 300
