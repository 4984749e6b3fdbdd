"""Datagram transports for the mesh node: the ``udp`` socket and the in-process ``memory`` network.

Theory of operation. A :class:`MeshNode` owns exactly one :class:`DatagramTransport`, an
unreliable, unordered datagram socket with four operations: ``await send(data, addr)``,
``await receive() -> (data, addr)``, ``local_address`` and ``await aclose()``. Transports
are plugins (hook ``net_transports``): a :class:`~net_core.plugins.ComponentSpec` builds a
:class:`TransportBinder` from its options, and the node calls
``await binder.bind(address)`` to get the open transport.

* ``udp`` (:class:`UdpTransportConfig`): one anyio UDP socket; addresses are
  ``(host, port)`` tuples (``"host:port"`` strings are accepted by
  :func:`parse_udp_address`). The kernel buffers are enlarged (4 MiB by default) because
  bursts of small datagrams overflow the usual 208 KiB receive buffer.
* ``memory`` (:class:`MemoryTransportConfig`): endpoints of a :class:`MemoryNetwork`
  created by the test and passed in the options. Addresses are any hashable string or
  tuple. The network injects *seeded* faults (loss, duplication, reordering,
  partitions), so a failing run replays exactly with the same seed; every drop is
  counted in :attr:`MemoryNetwork.stats`.

A send to an address nobody listens on is silently lost, as with UDP (counted by the
memory network). Transports never raise on a lost datagram; they raise
:class:`TransportError` only for local failures (closed transport, unusable address).
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections import deque
from typing import Any, Protocol, TypeAlias, final, runtime_checkable

import anyio
import attrs
from anyio.abc import SocketAttribute, UDPSocket

from net_core.config import converter, in_range
from net_core.errors import ClosedError, MeshError

__all__ = [
    "Address",
    "DatagramTransport",
    "MemoryNetwork",
    "MemoryNetworkStats",
    "MemoryTransport",
    "MemoryTransportConfig",
    "TransportBinder",
    "TransportClosedError",
    "TransportError",
    "UdpTransport",
    "UdpTransportConfig",
    "parse_udp_address",
]

Address: TypeAlias = str | tuple[Any, ...]
"""A transport address: ``(host, port)`` for UDP, any hashable str/tuple for memory."""


class TransportError(MeshError):
    """A local transport failure (bad address, socket error)."""


class TransportClosedError(TransportError, ClosedError):
    """The transport was closed by its owner."""


@runtime_checkable
class DatagramTransport(Protocol):
    """An unreliable datagram socket (what the node needs from a transport)."""

    @property
    def local_address(self) -> Address:
        """The address peers send to."""
        ...

    async def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram (a lost datagram is not an error)."""
        ...

    async def receive(self) -> tuple[bytes, Address]:
        """Wait for the next datagram; :class:`TransportClosedError` once closed."""
        ...

    async def aclose(self) -> None:
        """Close the transport (idempotent)."""
        ...


class TransportBinder(Protocol):
    """What a transport plugin's factory returns: something that binds an address."""

    async def bind(self, address: Address | None) -> DatagramTransport:
        """Open a transport bound to ``address`` (``None``: the transport's default)."""
        ...


# -- udp ---------------------------------------------------------------------------------


def parse_udp_address(address: Address | None) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` -> ``(host, port)``.

    ``None`` means ``("127.0.0.1", 0)``. Raises :class:`TransportError` otherwise.
    """
    if address is None:
        return ("127.0.0.1", 0)
    if isinstance(address, tuple):
        if len(address) >= 2 and isinstance(address[0], str) and isinstance(address[1], int):
            return (address[0], address[1])
        raise TransportError(f"a UDP address is (host, port), got {address!r}")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise TransportError(f"a UDP address is 'host:port', got {address!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    value = int(port)
    if not host or value > 65535:
        raise TransportError(f"a UDP address is 'host:port', got {address!r}")
    return (host, value)


@final
@attrs.frozen(slots=True)
class UdpTransportConfig:
    """Options of the ``udp`` transport: kernel buffer sizes in bytes (0 = OS default)."""

    receive_buffer_bytes: int = attrs.field(default=4 << 20, validator=in_range(0, 1 << 30))
    send_buffer_bytes: int = attrs.field(default=1 << 20, validator=in_range(0, 1 << 30))

    async def bind(self, address: Address | None) -> UdpTransport:
        """Open a UDP socket bound to ``address``."""
        host, port = parse_udp_address(address)
        try:
            sock = await anyio.create_udp_socket(local_host=host, local_port=port)
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {host}:{port}: {exc}") from exc
        raw: socket.socket = sock.extra(SocketAttribute.raw_socket)
        for option, size in (
            (socket.SO_RCVBUF, self.receive_buffer_bytes),
            (socket.SO_SNDBUF, self.send_buffer_bytes),
        ):
            if size:
                with contextlib.suppress(OSError):  # the OS may refuse; not fatal
                    raw.setsockopt(socket.SOL_SOCKET, option, size)
        return UdpTransport(sock)


@final
class UdpTransport:
    """A :class:`DatagramTransport` over one anyio UDP socket."""

    __slots__ = ("_closed", "_local", "_send_lock", "_sock")

    def __init__(self, sock: UDPSocket) -> None:
        self._sock = sock
        self._send_lock = anyio.Lock()  # trio refuses concurrent writers on one socket
        local = sock.extra(SocketAttribute.local_address)
        self._local: tuple[str, int] = (str(local[0]), int(local[1]))
        self._closed = False

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._local

    async def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram; OS-level refusals (ICMP unreachable etc.) count as loss."""
        if self._closed:
            raise TransportClosedError("udp transport is closed")
        host, port = parse_udp_address(addr)
        try:
            async with self._send_lock:
                await self._sock.sendto(data, host, port)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise TransportClosedError("udp transport is closed") from exc
        except OSError:
            return  # like a lost datagram

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram and its source ``(host, port)``."""
        while True:
            try:
                data, (host, port) = await self._sock.receive()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                raise TransportClosedError("udp transport is closed") from exc
            except OSError:
                # e.g. ECONNREFUSED reported for an earlier send on some platforms
                if self._closed:
                    raise TransportClosedError("udp transport is closed") from None
                continue
            return data, (str(host), int(port))

    async def aclose(self) -> None:
        """Close the socket (idempotent)."""
        self._closed = True
        await self._sock.aclose()


# -- memory ------------------------------------------------------------------------------


@attrs.define(slots=True)
class MemoryNetworkStats:
    """What the memory network did with every datagram it was handed."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    partitioned: int = 0
    unreachable: int = 0
    overflowed: int = 0


@final
class MemoryNetwork:
    """An in-process datagram network with seeded, injectable faults.

    ``loss``, ``duplicate`` and ``reorder`` are per-datagram probabilities drawn from one
    ``random.Random(seed)``. A reordered datagram is held back and delivered right after
    the next datagram to the same destination. :meth:`partition` blocks a pair of
    addresses in both directions (or one direction) until :meth:`heal`. Each endpoint's
    queue holds ``queue_limit`` datagrams; beyond that they are dropped, like a full
    kernel buffer. Faults may be changed at any time (attributes are plain).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        queue_limit: int = 65536,
    ) -> None:
        for name, value in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if queue_limit < 1:
            raise ValueError(f"queue_limit must be >= 1, got {queue_limit}")
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.queue_limit = queue_limit
        self.random = random.Random(seed)
        self.stats = MemoryNetworkStats()
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._blocked: set[tuple[Address, Address]] = set()
        self._held: dict[Address, tuple[bytes, Address]] = {}
        self._next_port = 1

    def endpoint(self, address: Address | None = None) -> MemoryTransport:
        """Open an endpoint at ``address`` (``None``: a fresh ``"mem-N"`` address)."""
        if address is None:
            while f"mem-{self._next_port}" in self._endpoints:
                self._next_port += 1
            address = f"mem-{self._next_port}"
        if not isinstance(address, str | tuple):
            raise TransportError(f"a memory address is a str or tuple, got {address!r}")
        if address in self._endpoints:
            raise TransportError(f"memory address {address!r} is already bound")
        transport = MemoryTransport(self, address, self.queue_limit)
        self._endpoints[address] = transport
        return transport

    def partition(self, a: Address, b: Address, *, both_ways: bool = True) -> None:
        """Drop every datagram from ``a`` to ``b`` (and back unless ``both_ways`` is False)."""
        self._blocked.add((a, b))
        if both_ways:
            self._blocked.add((b, a))

    def isolate(self, a: Address) -> None:
        """Partition ``a`` from every endpoint bound now."""
        for other in list(self._endpoints):
            if other != a:
                self.partition(a, other)

    def heal(self, a: Address | None = None, b: Address | None = None) -> None:
        """Lift the partition between ``a`` and ``b`` (both directions); no argument: all."""
        if a is None:
            self._blocked.clear()
            return
        if b is None:
            self._blocked = {pair for pair in self._blocked if a not in pair}
            return
        self._blocked.discard((a, b))
        self._blocked.discard((b, a))

    def _unbind(self, address: Address) -> None:
        self._endpoints.pop(address, None)
        self._held.pop(address, None)

    def _transmit(self, data: bytes, src: Address, dst: Address) -> None:
        stats = self.stats
        stats.sent += 1
        if (src, dst) in self._blocked:
            stats.partitioned += 1
            return
        rng = self.random
        if self.loss and rng.random() < self.loss:
            stats.lost += 1
            return
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            stats.duplicated += 1
            copies = 2
        if self.reorder and dst not in self._held and rng.random() < self.reorder:
            stats.reordered += 1
            self._held[dst] = (data, src)
            copies -= 1
        for _ in range(copies):
            self._deliver(data, src, dst)
        held = self._held.get(dst)
        if held is not None and held[0] is not data:
            del self._held[dst]
            self._deliver(held[0], held[1], dst)

    def _deliver(self, data: bytes, src: Address, dst: Address) -> None:
        endpoint = self._endpoints.get(dst)
        if endpoint is None:
            self.stats.unreachable += 1
            return
        if endpoint._offer(data, src):
            self.stats.delivered += 1
        else:
            self.stats.overflowed += 1


@final
class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork` (a :class:`DatagramTransport`)."""

    __slots__ = ("_closed", "_event", "_limit", "_local", "_network", "_queue")

    def __init__(self, network: MemoryNetwork, address: Address, limit: int) -> None:
        self._network = network
        self._local = address
        self._limit = limit
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._event = anyio.Event()
        self._closed = False

    @property
    def local_address(self) -> Address:
        """This endpoint's address."""
        return self._local

    def _offer(self, data: bytes, src: Address) -> bool:
        if self._closed or len(self._queue) >= self._limit:
            return False
        self._queue.append((data, src))
        self._event.set()
        return True

    async def send(self, data: bytes, addr: Address) -> None:
        """Hand one datagram to the network (it may lose, duplicate or delay it)."""
        if self._closed:
            raise TransportClosedError("memory transport is closed")
        await anyio.lowlevel.checkpoint()
        self._network._transmit(bytes(data), self._local, addr)

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram for this endpoint."""
        while not self._queue:
            if self._closed:
                raise TransportClosedError("memory transport is closed")
            self._event = anyio.Event()
            await self._event.wait()
        if self._closed:
            raise TransportClosedError("memory transport is closed")
        return self._queue.popleft()

    async def aclose(self) -> None:
        """Unbind from the network and wake a pending :meth:`receive` (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._network._unbind(self._local)
            self._event.set()


def _structure_network(value: Any, _t: type[Any]) -> MemoryNetwork:
    if not isinstance(value, MemoryNetwork):
        raise TypeError(f"expected a MemoryNetwork object, got {type(value).__name__}")
    return value


converter.register_structure_hook(MemoryNetwork, _structure_network)


@final
@attrs.frozen(slots=True)
class MemoryTransportConfig:
    """Options of the ``memory`` transport: the :class:`MemoryNetwork` to join."""

    network: MemoryNetwork

    async def bind(self, address: Address | None) -> MemoryTransport:
        """Open an endpoint of the network at ``address``."""
        await anyio.lowlevel.checkpoint()
        return self.network.endpoint(address)
