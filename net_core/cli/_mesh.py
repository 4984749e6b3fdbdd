"""``net node`` and ``net mesh ping``: run a mesh node, and measure a handshake and round trips.

* ``net node --bind ADDR --psk-file F [--seed-file F] [--connect ADDR,PUBKEY,NODEID ...]
  [--allow NODEID ...] [--no-echo] [--json]`` runs one :class:`~net_core.mesh.MeshNode`
  until SIGINT or SIGTERM, then shuts it down cleanly (status 0). It first prints what
  another node needs to connect to it (node id, X25519 public key, bound address), then
  one line per peer/session change (connected, replaced, suspected, failed, recovered,
  evicted, address changed) as it happens, and a summary of its counters when it stops.
  With ``--json`` every line is one JSON object (JSON lines), with an ``"event"`` key.
* ``net mesh ping --peer ADDR,PUBKEY,NODEID --psk-file F [--bind ADDR] [--seed-file F]
  [--count N] [--interval S] [--timeout S] [--size B] [--json]`` handshakes with a
  node, times the handshake, then sends ``count`` pings on the diagnostic stream and
  prints the round-trip statistics (``--json``: one document). It exits 1 when the
  handshake fails or no ping is answered.

Inbound handshakes. A direct ``Noise_NKpsk0`` msg1 does not carry the initiator's node
id (it is bound through the handshake prologue), so a node answers only initiators it
expects: the ids given with ``--allow`` and the peers it connected to. To ping a node,
give the pinger an identity (``--seed-file``, made by ``net identity new``) and start the
node with ``--allow`` that identity's node id.

The echo. Every ``net node`` echoes what arrives on :data:`PING_STREAM_ID` back to the
sender on the same stream (unless ``--no-echo``); ``net mesh ping`` uses it. Everything
else received is taken from the queues (so senders keep their credit) and counted.

The PSK file holds the mesh's 32-byte pre-shared key: 32 raw bytes, or 64 hex digits
(surrounding whitespace ignored). Output follows the CLI conventions: library errors
(handshake timeouts, a bad PSK or seed file, an address that cannot be bound) exit 1 with
a typed error (a JSON ``{"error": {"type", "message"}}`` with ``--json``); usage errors
exit 2. This module never prints the PSK or a seed.
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar, final

import anyio
import anyio.abc
import attrs
import orjson

from net_core.cli._common import add_json_flag, command, emit_json
from net_core.cli._identity import _read_seed
from net_core.errors import ConfigError, NetError
from net_core.mesh import (
    MeshEvent,
    MeshNode,
    MeshNodeConfig,
    MeshStream,
    NotConnectedError,
    PeerEvent,
    PeerInfo,
    StreamBackpressureError,
)

__all__ = ["PING_STREAM_ID", "PeerSpec", "parse_peer_spec", "read_psk", "register"]

#: The diagnostic stream: a ``net node`` echoes every event received on it.
PING_STREAM_ID: Final = 0x6E65_742D_7069_6E67  # b"net-ping" read as a big-endian u64
_PING_MAGIC: Final = b"PING"
_PING_HEADER: Final = struct.Struct(">4sQ")  # magic, sequence number
_U64: Final = 2**64 - 1

T = TypeVar("T")


class UsageError(Exception):
    """A malformed command-line value (exit status 2)."""


@final
@attrs.frozen(slots=True)
class PeerSpec:
    """A peer to connect to: ``ADDR,PUBKEY,NODEID`` on the command line."""

    address: str
    public_key: bytes
    node_id: int

    def __str__(self) -> str:
        return f"{self.address},{self.public_key.hex()},{self.node_id:#018x}"


def parse_node_id(text: str) -> int:
    """A node id: decimal or ``0x`` hexadecimal, a u64."""
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"a node id is a decimal or 0x-hex u64, got {text!r}") from None
    if not 0 <= value <= _U64:
        raise UsageError(f"a node id is a u64, got {text!r}")
    return value


def parse_peer_spec(text: str) -> PeerSpec:
    """``ADDR,PUBKEY,NODEID``: ``host:port``, 64 hex digits, a node id."""
    parts = text.split(",")
    if len(parts) != 3:
        raise UsageError(f"a peer is ADDR,PUBKEY,NODEID, got {text!r}")
    address, key, node = (p.strip() for p in parts)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"a peer address is host:port, got {address!r}")
    try:
        public_key = bytes.fromhex(key)
    except ValueError:
        public_key = b""
    if len(public_key) != 32:
        raise UsageError(f"a peer public key is 64 hex digits, got {key!r}")
    return PeerSpec(address, public_key, parse_node_id(node))


def read_psk(path: str) -> bytes:
    """The 32-byte PSK in ``path`` (32 raw bytes or 64 hex digits); :class:`ConfigError`
    (naming the file, never its content) when it is neither."""
    raw = Path(path).read_bytes()
    if len(raw) == 32:
        return raw
    text = raw.decode("ascii", "replace").strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raise ConfigError(
        f"a PSK file holds 32 raw bytes or 64 hex digits; {path} has {len(raw)} bytes "
        "that are neither",
        path="psk",
    )


def _node_config(args: argparse.Namespace, bind: str) -> MeshNodeConfig:
    return MeshNodeConfig(
        psk=read_psk(args.psk_file),
        identity_seed=_read_seed(args.seed_file).seed() if args.seed_file else None,
        bind=bind,
        handshake_timeout=args.handshake_timeout,
        handshake_retries=args.handshake_retries,
    )


def _addr_text(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


@final
class _Lines:
    """Writes the node's lines: text, or one JSON object per line; flushed every time."""

    __slots__ = ("json",)

    def __init__(self, *, as_json: bool) -> None:
        self.json = as_json

    def write(self, event: str, text: str, **fields: Any) -> None:
        line = orjson.dumps({"event": event, **fields}).decode() if self.json else text
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


# -- net node ---------------------------------------------------------------------------


def _peer_fields(event: PeerEvent) -> dict[str, Any]:
    return {
        "node_id": event.node_id,
        "address": _addr_text(event.address),
        "session_id": event.session_id,
    }


async def _serve(args: argparse.Namespace, config: MeshNodeConfig, peers: list[PeerSpec]) -> None:
    out = _Lines(as_json=args.json)
    # The handlers are in place before "started" is printed: a signal sent as soon as a
    # supervisor sees that line already stops the node cleanly.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with MeshNode.open(config) as node:
            for node_id in args.allow:
                node.allow(node_id)
            address = _addr_text(node.local_address)
            key = node.public_key.hex()
            out.write(
                "started",
                f"node_id:    {node.node_id:#018x} ({node.node_id})\n"
                f"public_key: {key}\n"
                f"address:    {address}\n"
                f"connect with: --connect {address},{key},{node.node_id:#018x}",
                node_id=node.node_id,
                public_key=key,
                address=address,
            )
            counts: dict[str, int] = {"events_received": 0, "events_echoed": 0}
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, signals, tg.cancel_scope)
                tg.start_soon(_print_peer_events, node, out)
                tg.start_soon(_drain, node, tg, counts, not args.no_echo)
                for peer in peers:
                    tg.start_soon(_connect, node, peer, out)
            stats = node.stats()
            out.write(
                "stopped",
                f"stopped: {stats.peers} peers, {stats.handshakes_completed} handshakes, "
                f"{counts['events_received']} events received, "
                f"{counts['events_echoed']} echoed, drops {stats.drops or 'none'}",
                peers=stats.peers,
                handshakes_completed=stats.handshakes_completed,
                events_received=counts["events_received"],
                events_echoed=counts["events_echoed"],
                drops=stats.drops,
            )


async def _stop_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _print_peer_events(node: MeshNode, out: _Lines) -> None:
    async for event in node.peer_events():
        fields = _peer_fields(event)
        out.write(
            event.kind.value,
            f"{event.kind.value:<15} node {event.node_id:#018x} at {fields['address']} "
            f"session {event.session_id:#018x}",
            **fields,
        )


async def _connect(node: MeshNode, peer: PeerSpec, out: _Lines) -> None:
    started = time.perf_counter()
    try:
        await node.connect(peer.address, peer.public_key, peer.node_id)
    except (NetError, OSError) as exc:  # reported; the node keeps running
        out.write(
            "connect_failed",
            f"connect_failed  node {peer.node_id:#018x} at {peer.address}: {exc}",
            node_id=peer.node_id,
            address=peer.address,
            error={"type": type(exc).__name__, "message": str(exc)},
        )
        return
    elapsed = (time.perf_counter() - started) * 1000
    out.write(
        "handshake",
        f"handshake       node {peer.node_id:#018x} at {peer.address} in {elapsed:.2f} ms",
        node_id=peer.node_id,
        address=peer.address,
        handshake_ms=elapsed,
    )


async def _drain(
    node: MeshNode, tg: anyio.abc.TaskGroup, counts: dict[str, int], echo: bool
) -> None:
    """Take every event off the node queue; start one echo loop per pinging session."""
    echoing: set[tuple[int, int]] = set()
    async for event in node.events():
        counts["events_received"] += 1
        if not echo or event.stream_id != PING_STREAM_ID:
            continue
        try:
            stream = node.open_stream(event.peer_node_id, PING_STREAM_ID)
        except NotConnectedError:
            continue
        await _echo(node, stream, event, counts)
        key = (stream.peer_node_id, stream.session_id)
        if key not in echoing:
            # With a handle open, this peer's pings arrive on the stream's own queue.
            echoing.add(key)
            tg.start_soon(_echo_loop, node, stream, counts, echoing, key)


async def _echo(
    node: MeshNode, stream: MeshStream, event: MeshEvent, counts: dict[str, int]
) -> None:
    try:
        await node.send_with_retry(stream, [event.payload])
    except (NotConnectedError, StreamBackpressureError):
        return
    counts["events_echoed"] += 1


async def _echo_loop(
    node: MeshNode,
    stream: MeshStream,
    counts: dict[str, int],
    echoing: set[tuple[int, int]],
    key: tuple[int, int],
) -> None:
    try:
        async for event in stream.events():
            counts["events_received"] += 1
            await _echo(node, stream, event, counts)
    except NotConnectedError:
        pass
    finally:
        echoing.discard(key)


# -- net mesh ping ----------------------------------------------------------------------


def _ping_payload(seq: int, size: int) -> bytes:
    head = _PING_HEADER.pack(_PING_MAGIC, seq)
    return head + bytes(size - len(head))


def _ping_seq(payload: bytes) -> int | None:
    if len(payload) < _PING_HEADER.size:
        return None
    magic, seq = _PING_HEADER.unpack_from(payload)
    return int(seq) if magic == _PING_MAGIC else None


@final
class _Arrivals:
    """Echo arrival times by ping sequence number, with a wake-up for the waiting pinger."""

    __slots__ = ("times", "wake")

    def __init__(self) -> None:
        self.times: dict[int, int] = {}
        self.wake = anyio.Event()

    async def collect(self, stream: MeshStream) -> None:
        async for event in stream.events():
            now = time.perf_counter_ns()
            seq = _ping_seq(event.payload)
            if seq is not None:
                self.times.setdefault(seq, now)
                self.wake.set()

    async def wait_for(self, seq: int) -> None:
        while seq not in self.times:
            self.wake = anyio.Event()
            await self.wake.wait()


async def _ping(args: argparse.Namespace, config: MeshNodeConfig, peer: PeerSpec) -> dict[str, Any]:
    out = _Lines(as_json=False)
    async with MeshNode.open(config) as node:
        started = time.perf_counter_ns()
        info: PeerInfo = await node.connect(peer.address, peer.public_key, peer.node_id)
        handshake_ms = (time.perf_counter_ns() - started) / 1e6
        if not args.json:
            out.write(
                "handshake",
                f"PING node {peer.node_id:#018x} at {_addr_text(info.address)} from "
                f"{_addr_text(node.local_address)}: handshake {handshake_ms:.3f} ms",
            )
        stream = node.open_stream(peer.node_id, PING_STREAM_ID)
        arrivals = _Arrivals()
        rtts: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(arrivals.collect, stream)
            for seq in range(args.count):
                sent_at = time.perf_counter_ns()
                await node.send_with_retry(stream, [_ping_payload(seq, args.size)])
                with anyio.move_on_after(args.timeout):
                    await arrivals.wait_for(seq)
                arrived = arrivals.times.get(seq)
                if arrived is None:
                    line = f"seq={seq} no echo within {args.timeout:g} s"
                else:
                    rtts.append((arrived - sent_at) / 1e6)
                    line = f"seq={seq} time={rtts[-1]:.3f} ms"
                if not args.json:
                    out.write("ping", line)
                if seq + 1 < args.count:
                    rest = args.interval - (time.perf_counter_ns() - sent_at) / 1e9
                    await anyio.sleep(max(rest, 0.0))
            tg.cancel_scope.cancel()
        return _ping_report(peer, node, handshake_ms, args.count, rtts)


def _ping_report(
    peer: PeerSpec, node: MeshNode, handshake_ms: float, sent: int, rtts: list[float]
) -> dict[str, Any]:
    rtt: dict[str, float] | None = None
    if rtts:
        ordered = sorted(rtts)
        rtt = {
            "min": ordered[0],
            "avg": statistics.fmean(ordered),
            "p50": ordered[max(math.ceil(len(ordered) / 2), 1) - 1],
            "max": ordered[-1],
            "stdev": statistics.pstdev(ordered),
        }
    return {
        "peer": {"node_id": peer.node_id, "address": peer.address},
        "local": {"node_id": node.node_id, "address": _addr_text(node.local_address)},
        "handshake_ms": handshake_ms,
        "sent": sent,
        "received": len(rtts),
        "loss_percent": 100.0 * (sent - len(rtts)) / sent,
        "rtt_ms": rtt,
    }


# -- argument handling ------------------------------------------------------------------


def _run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run``, with a lone error out of the node's task groups unwrapped (so a
    handshake timeout is reported as the typed error it is, not as a group)."""
    try:
        return anyio.run(func, *args)
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, NetError | OSError):
            raise leaf from None
        raise


def _usage(args: argparse.Namespace, prog: str, message: str) -> int:
    if args.json:
        emit_json({"error": {"type": "UsageError", "message": message}})
    else:
        sys.stderr.write(f"{prog}: error: {message}\n")
    return 2


def _common_checks(args: argparse.Namespace) -> str | None:
    if args.psk_file is None:
        return (
            "--psk-file is required: every node of a mesh shares one 32-byte PSK "
            "(for example: head -c 32 /dev/urandom > mesh.psk)"
        )
    if not args.handshake_timeout > 0:
        return f"--handshake-timeout must be > 0, got {args.handshake_timeout}"
    if not 1 <= args.handshake_retries <= 1024:
        return f"--handshake-retries must be in 1..1024, got {args.handshake_retries}"
    return None


@command
def _run_node(args: argparse.Namespace) -> int:
    """Run a mesh node until SIGINT/SIGTERM, printing peer and session events."""
    problem = _common_checks(args)
    try:
        peers = [parse_peer_spec(s) for spec in args.connect for s in spec]
        args.allow = [parse_node_id(s) for spec in args.allow for s in spec]
    except UsageError as exc:
        problem = problem or str(exc)
    if problem is not None:
        return _usage(args, "net node", problem)
    config = _node_config(args, args.bind)
    _run(_serve, args, config, peers)
    return 0


@command
def _run_ping(args: argparse.Namespace) -> int:
    """Handshake with a node and time round trips on the diagnostic stream."""
    problem = _common_checks(args)
    try:
        peer = parse_peer_spec(args.peer)
    except UsageError as exc:
        problem = problem or str(exc)
    if args.count < 1:
        problem = problem or f"--count must be >= 1, got {args.count}"
    if not args.interval >= 0 or not args.timeout > 0:
        problem = problem or "--interval must be >= 0 and --timeout > 0"
    if not _PING_HEADER.size <= args.size <= 8112:
        problem = problem or f"--size must be in {_PING_HEADER.size}..8112, got {args.size}"
    if problem is not None:
        return _usage(args, "net mesh ping", problem)
    config = _node_config(args, args.bind)
    report = _run(_ping, args, config, peer)
    failed = report["received"] == 0
    if failed:
        message = f"no echo from node {peer.node_id:#018x} ({report['sent']} pings sent)"
        report["error"] = {"type": "NoEchoError", "message": message}
    if args.json:
        emit_json(report)
    else:
        _print_ping_summary(report, peer)
        if failed:
            sys.stderr.write(f"net: error: {report['error']['message']}\n")
    return 1 if failed else 0


def _print_ping_summary(report: dict[str, Any], peer: PeerSpec) -> None:
    sys.stdout.write(
        f"--- node {peer.node_id:#018x} ping statistics ---\n"
        f"handshake {report['handshake_ms']:.3f} ms; {report['sent']} sent, "
        f"{report['received']} received, {report['loss_percent']:.1f}% loss\n"
    )
    rtt = report["rtt_ms"]
    if rtt is not None:
        sys.stdout.write(
            "rtt min/avg/p50/max/stdev = "
            + "/".join(f"{rtt[k]:.3f}" for k in ("min", "avg", "p50", "max", "stdev"))
            + " ms\n"
        )


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--psk-file",
        metavar="F",
        help="the mesh's 32-byte pre-shared key: 32 raw bytes or 64 hex digits (required)",
    )
    parser.add_argument(
        "--seed-file",
        metavar="F",
        help="identity seed (from `net identity new --seed-file F`); sets the node id "
        "(default: a fresh identity)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds per handshake attempt (default 5)",
    )
    parser.add_argument(
        "--handshake-retries",
        type=int,
        default=3,
        metavar="N",
        help="handshake attempts (default 3)",
    )
    add_json_flag(parser)


def _comma_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``node`` and ``mesh`` sub-commands."""
    node = subparsers.add_parser(
        "node",
        help="run a mesh node and print peer/session events",
        description=(
            "Run an encrypted mesh node on one UDP socket until SIGINT/SIGTERM. It prints "
            "its node id, public key and address (what a peer passes to --connect), then "
            "one line per peer/session change; --json prints JSON lines. It answers "
            "handshakes from the node ids given with --allow and from peers it connected "
            "to, and echoes the diagnostic stream that `net mesh ping` uses."
        ),
    )
    node.add_argument("--bind", required=True, metavar="ADDR", help="host:port to listen on")
    node.add_argument(
        "--connect",
        action="append",
        default=[],
        type=lambda s: [s],
        metavar="ADDR,PUBKEY,NODEID",
        help="connect to this peer at start (repeatable)",
    )
    node.add_argument(
        "--allow",
        action="append",
        default=[],
        type=_comma_list,
        metavar="NODEID[,NODEID...]",
        help="answer handshakes from these node ids (decimal or 0x-hex; repeatable)",
    )
    node.add_argument(
        "--no-echo", action="store_true", help="do not echo the diagnostic (ping) stream"
    )
    _add_node_options(node)
    node.set_defaults(func=_run_node)

    mesh = subparsers.add_parser("mesh", help="mesh diagnostics", description="Mesh diagnostics.")
    mesh_sub = mesh.add_subparsers(title="commands", metavar="COMMAND")
    ping = mesh_sub.add_parser(
        "ping",
        help="time a handshake and round trips to a running `net node`",
        description=(
            "Handshake with a node (which must --allow this node's id: give this side a "
            "--seed-file), then send pings on the diagnostic stream, which every `net node` "
            "echoes, and print the handshake time and round-trip statistics."
        ),
    )
    ping.add_argument("--peer", required=True, metavar="ADDR,PUBKEY,NODEID", help="the node")
    ping.add_argument(
        "--bind", default="0.0.0.0:0", metavar="ADDR", help="local host:port (default 0.0.0.0:0)"
    )
    ping.add_argument("--count", type=int, default=5, metavar="N", help="pings (default 5)")
    ping.add_argument(
        "--interval", type=float, default=0.2, metavar="S", help="seconds between pings (0.2)"
    )
    ping.add_argument(
        "--timeout", type=float, default=1.0, metavar="S", help="seconds to wait for an echo (1)"
    )
    ping.add_argument(
        "--size", type=int, default=64, metavar="B", help="bytes per ping event (default 64)"
    )
    _add_node_options(ping)
    ping.set_defaults(func=_run_ping)
