"""The ``mesh`` benchmark suite: two nodes on 127.0.0.1 UDP, ours vs the reference's NetMesh.

Each round builds a fresh pair of nodes with a fresh PSK (untimed): ours are two
:class:`~net_core.mesh.MeshNode` on the ``udp`` transport inside one ``anyio.run``
(asyncio), the reference's two ``net.NetMesh`` (``num_shards=1``, because its ``poll``
drains shard 0 only), handshaken with ``accept`` on a thread and ``connect``. Events are
64 bytes, ASCII (a JSON string holding the event's number, so every event is distinct
and the reference's ``poll``, which decodes UTF-8, returns them intact), sent in batches
of 64 on stream 1 with the default 64 KiB credit window. Scenarios:

* ``delivered_events``: events per second *delivered* to the receiving application on a
  fire-and-forget stream, timed from the first send until the receiver has taken the
  N-th event. Ours sends exactly N events with ``send_with_retry`` (credit backpressure
  makes it wait; nothing is dropped by the sender) and the receiver takes them from
  ``MeshNode.events()``; after the clock stops the round checks that the N distinct
  events arrived, each exactly once. Anything missing fails the round (reported
  ``FAILED`` with the count, never as a rate). The reference's sender thread calls
  ``send_blocking`` until its receiver thread (``poll``) has counted N events, then stops;
  the receiver keeps polling until the line has been quiet for 0.3 s, and the events the
  sender sent but the receiver never got are the reference's *loss*, reported in
  ``meta["loss"]`` and as the ``*_loss`` rows (percent of the events sent). A reference
  round that never reaches N events in the deadline fails with its counts.
* ``reliable_delivered_events``: the same on a ``reliable`` stream. Ours must also
  deliver in order: the round fails unless the events arrive exactly in send order.
  (The reference only sets the RELIABLE flag; it has no retransmission.)
* ``handshake``: complete ``Noise_NKpsk0`` handshakes per second between two nodes,
  N ``connect`` calls one after the other, each replacing the session of the previous
  one. The reference's responder must not be started to answer a handshake (a started
  ``NetMesh`` drops inbound msg1 unless ``accept`` is waiting), so a thread calls
  ``accept`` N times while the main thread calls ``connect`` N times; ours answers from
  its receive loop (the initiator is ``allow``-ed).

Ours sends with ``send_with_retry(max_retries=64)`` (up to about 12 s of waiting for
credit per call) rather than ``send_blocking``: both have the same backoff policy, and
the bounded one turns a stall (lost credit) into a failed round instead of a hang.

Both of our nodes share one thread and one event loop (sender, receiver and both
receive loops); the reference's nodes run on their own Rust runtimes plus the Python
threads that drive them. This module must stay a benchmark: it never changes library
behaviour or settings.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TextIO, final

import anyio
import attrs

from net_core.bench._harness import Reference, Side, SideFailed, Stopwatch, Suite, SuiteReport
from net_core.mesh import MeshNode, MeshNodeConfig, Reliability, StreamBackpressureError

__all__ = [
    "BATCH",
    "DEFAULT_SIZES",
    "EVENT_SIZE",
    "QUICK_SIZES",
    "MeshSizes",
    "event_payloads",
    "run_mesh_suite",
]

#: Events per ``send`` call and bytes per event (the issue's workload).
BATCH: Final = 64
EVENT_SIZE: Final = 64
STREAM_ID: Final = 1
WINDOW_BYTES: Final = 65_536
#: Retries of ``send_with_retry`` on our side (5 ms doubling to 200 ms: about 12 s).
SEND_RETRIES: Final = 64
#: How long the reference's receiver must stay quiet before its count is final.
QUIET_S: Final = 0.3
#: What ``poll`` asks for at once on the reference side.
POLL_LIMIT: Final = 4096


@final
@attrs.frozen(slots=True)
class MeshSizes:
    """Events (or handshakes) per timed round of each scenario, and the rounds per side."""

    delivered_events: int
    reliable_delivered_events: int
    handshake: int
    repeats: int


#: Stable figures in about a minute on a 2-core machine.
DEFAULT_SIZES: Final = MeshSizes(
    delivered_events=200_000, reliable_delivered_events=200_000, handshake=500, repeats=3
)

#: A smoke run of a few seconds: shapes only, the figures mean nothing.
QUICK_SIZES: Final = MeshSizes(
    delivered_events=4096, reliable_delivered_events=4096, handshake=10, repeats=1
)


def event_payloads(start: int, count: int) -> list[bytes]:
    """Events ``start .. start + count - 1``: 64 ASCII bytes each, a JSON string of the
    zero-padded event number (distinct, valid UTF-8 for the reference's ``poll``)."""
    return [b'"%062d"' % i for i in range(start, start + count)]


def _batches(n: int) -> list[list[bytes]]:
    events = event_payloads(0, n)
    return [events[i : i + BATCH] for i in range(0, n, BATCH)]


def _deadline(n: int) -> float:
    """Seconds a round may take before it is declared stalled (generous: a shared box)."""
    return 20.0 + n / 5_000


@final
class _LossBook:
    """Events sent and received per side and scenario over every round (warm-up included)."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, dict[str, int]]] = {}

    def add(self, scenario: str, side: str, sent: int, received: int, duplicates: int) -> None:
        row = self._rows.setdefault(scenario, {}).setdefault(
            side, {"rounds": 0, "sent": 0, "received": 0, "lost": 0, "duplicates": 0}
        )
        row["rounds"] += 1
        row["sent"] += sent
        row["received"] += received
        row["lost"] += max(sent - received, 0)
        row["duplicates"] += duplicates

    def percent_lost(self, scenario: str, side: str) -> float:
        """Percent of the events ``side`` sent in ``scenario`` that never arrived."""
        row = self._rows.get(scenario, {}).get(side)
        if row is None or row["sent"] == 0:
            raise SideFailed(f"{side}: no round of {scenario} sent anything")
        return 100.0 * row["lost"] / row["sent"]

    def document(self) -> dict[str, dict[str, dict[str, int]]]:
        return {k: {s: dict(v) for s, v in sides.items()} for k, sides in self._rows.items()}


# -- our side -------------------------------------------------------------------------


def _config(psk: bytes) -> MeshNodeConfig:
    return MeshNodeConfig(psk=psk, bind="127.0.0.1:0")


def _ours_delivered(book: _LossBook, scenario: str, reliability: Reliability) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        batches = _batches(n)
        received: list[bytes] = []
        outcome: dict[str, Any] = {}

        async def round_() -> None:
            psk = os.urandom(32)
            async with MeshNode.open(_config(psk)) as tx, MeshNode.open(_config(psk)) as rx:
                rx.allow(tx.node_id)
                await tx.connect(rx.local_address, rx.public_key, rx.node_id)
                stream = tx.open_stream(rx.node_id, STREAM_ID, reliability, WINDOW_BYTES)
                done = anyio.Event()
                append = received.append

                async def receive() -> None:
                    events = rx.events()
                    async for event in events:
                        append(event.payload)
                        if len(received) >= n:
                            done.set()
                            return

                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive)
                    send = tx.send_with_retry
                    with sw:
                        try:
                            for batch in batches:
                                await send(stream, batch, max_retries=SEND_RETRIES)
                        except StreamBackpressureError as exc:
                            outcome["stalled"] = str(exc)
                        else:
                            with anyio.move_on_after(_deadline(n)):
                                await done.wait()
                    tg.cancel_scope.cancel()
                outcome["drops"] = rx.stats().drops
                outcome["sent"] = tx.stream_stats(rx.node_id, STREAM_ID)

        anyio.run(round_)
        _check_ours(book, scenario, n, received, reliability, outcome)

    return side


def _check_ours(
    book: _LossBook,
    scenario: str,
    n: int,
    received: list[bytes],
    reliability: Reliability,
    outcome: dict[str, Any],
) -> None:
    distinct = len(set(received))
    book.add(scenario, "ours", n, distinct, len(received) - distinct)
    problems: list[str] = []
    if "stalled" in outcome:
        problems.append(f"sender stalled: {outcome['stalled']}")
    if distinct != n or len(received) != n:
        problems.append(f"{distinct} distinct of {n} events delivered ({len(received)} in all)")
    elif reliability is Reliability.RELIABLE and received != event_payloads(0, n):
        problems.append("events delivered out of order on a reliable stream")
    if problems:
        raise SideFailed(f"ours: {'; '.join(problems)}; receiver drops {outcome.get('drops')}")


def _ours_handshake() -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        counts: dict[str, int] = {}

        async def round_() -> None:
            psk = os.urandom(32)
            async with MeshNode.open(_config(psk)) as a, MeshNode.open(_config(psk)) as b:
                b.allow(a.node_id)
                connect, addr, key, peer = a.connect, b.local_address, b.public_key, b.node_id
                with sw:
                    for _ in range(n):
                        await connect(addr, key, peer)
                counts["initiator"] = a.stats().handshakes_completed
                counts["responder"] = b.stats().handshakes_completed

        anyio.run(round_)
        if counts != {"initiator": n, "responder": n}:
            raise SideFailed(f"ours: {counts} handshakes completed, expected {n} each")

    return side


# -- the reference --------------------------------------------------------------------


def _address_of(mesh: Any) -> str:
    # repr is "NetMesh(addr=IP:PORT, peers=N, nodes=M)"; the binding has no address property
    return str(repr(mesh).split("addr=", 1)[1].split(",", 1)[0])


@final
class _ReferencePair:
    """Two handshaken reference nodes (``sender`` connected to ``receiver``), started."""

    __slots__ = ("receiver", "sender")

    def __init__(self, net: Any) -> None:
        psk = os.urandom(32).hex()
        self.sender = net.NetMesh("127.0.0.1:0", psk, num_shards=1)
        self.receiver = net.NetMesh("127.0.0.1:0", psk, num_shards=1)
        try:
            accepted = _Thread(lambda: self.receiver.accept(self.sender.node_id))
            time.sleep(0.02)  # accept() must be reading before msg1 arrives
            self.sender.connect(
                _address_of(self.receiver), self.receiver.public_key, self.receiver.node_id
            )
            accepted.result()
            self.sender.start()
            self.receiver.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.sender.shutdown()
        self.receiver.shutdown()


@final
class _Thread:
    """A daemon thread running ``fn``; :meth:`result` joins it and re-raises its error."""

    __slots__ = ("_fn", "_out", "_thread")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._out: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._out["value"] = self._fn()
        except BaseException as exc:  # re-raised by result()
            self._out["error"] = exc

    def result(self, timeout: float | None = None) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise SideFailed("reference: a worker thread did not finish")
        if "error" in self._out:
            raise self._out["error"]
        return self._out.get("value")


def _reference_delivered(net: Any, book: _LossBook, scenario: str, reliability: str) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        batches = _batches(n)
        pair = _ReferencePair(net)
        try:
            _reference_round(pair, n, batches, sw, book, scenario, reliability)
        finally:
            pair.close()

    return side


def _reference_round(
    pair: _ReferencePair,
    n: int,
    batches: list[list[bytes]],
    sw: Stopwatch,
    book: _LossBook,
    scenario: str,
    reliability: str,
) -> None:
    sender, receiver = pair.sender, pair.receiver
    stream = sender.open_stream(
        receiver.node_id, STREAM_ID, reliability=reliability, window_bytes=WINDOW_BYTES
    )
    received: list[str] = []
    go, reached, stop_sending, stop_polling = (threading.Event() for _ in range(4))
    sent = [0]
    last_arrival = [time.monotonic()]

    def poll() -> None:
        take, extend = receiver.poll, received.extend
        while not stop_polling.is_set():
            events = take(POLL_LIMIT)
            if events:
                extend(e.raw for e in events)
                last_arrival[0] = time.monotonic()
                if len(received) >= n:
                    reached.set()
            else:
                time.sleep(0.0002)

    def send() -> None:
        go.wait()
        blocking = sender.send_blocking
        index = 0
        while not stop_sending.is_set():
            # past N (the receiver is still short): fresh distinct events
            batch = batches[index] if index < len(batches) else event_payloads(index * BATCH, BATCH)
            blocking(stream, batch)
            sent[0] += len(batch)
            index += 1

    poller = _Thread(poll)
    sender_thread = _Thread(send)
    try:
        with sw:
            go.set()
            reached.wait(_deadline(n))
        stop_sending.set()
        sender_thread.result(_deadline(n))
        while time.monotonic() - last_arrival[0] < QUIET_S:
            time.sleep(QUIET_S / 4)
    finally:
        stop_sending.set()
        go.set()
        stop_polling.set()
        try:
            poller.result(10)
        finally:
            distinct = len(set(received))
            book.add(scenario, "reference", sent[0], distinct, len(received) - distinct)
    if distinct < n:
        raise SideFailed(
            f"reference: {distinct} distinct of {sent[0]} events sent were delivered "
            f"within {_deadline(n):.0f} s"
        )


def _reference_handshake(net: Any) -> Side:
    def side(n: int, sw: Stopwatch) -> None:
        psk = os.urandom(32).hex()
        initiator = net.NetMesh("127.0.0.1:0", psk, num_shards=1)
        responder = net.NetMesh("127.0.0.1:0", psk, num_shards=1)
        try:
            peer_id = initiator.node_id
            address, key, node = (
                _address_of(responder),
                responder.public_key,
                responder.node_id,
            )

            def accept_all() -> None:
                for _ in range(n):
                    responder.accept(peer_id)

            acceptor = _Thread(accept_all)
            time.sleep(0.02)
            connect = initiator.connect
            with sw:
                for _ in range(n):
                    connect(address, key, node)
            acceptor.result(30)
            if initiator.peer_count() != 1:
                raise SideFailed(f"reference: {initiator.peer_count()} peers after {n} handshakes")
        finally:
            initiator.shutdown()
            responder.shutdown()

    return side


# -- the suite ------------------------------------------------------------------------


def run_mesh_suite(
    *,
    quick: bool = False,
    progress: TextIO | None = None,
    reference: Reference | None = None,
    sizes: MeshSizes | None = None,
) -> SuiteReport:
    """Run every mesh scenario on both sides; see the module docstring."""
    chosen = sizes if sizes is not None else (QUICK_SIZES if quick else DEFAULT_SIZES)
    suite = Suite(
        "mesh", quick=quick, repeats=chosen.repeats, reference=reference, progress=progress
    )
    net = suite.reference.module
    book = _LossBook()
    suite.add_meta(
        sizes=attrs.asdict(chosen),
        event_size=EVENT_SIZE,
        batch=BATCH,
        window_bytes=WINDOW_BYTES,
        transport="udp on 127.0.0.1; ours: two MeshNode in one anyio.run (asyncio), "
        "reference: two net.NetMesh (num_shards=1) driven by Python threads",
        delivered="events/s taken by the receiving application, from the first send to the "
        "N-th event received; ours sends exactly N (send_with_retry) and fails the round "
        "unless all N distinct events arrive (in order when reliable); the reference sends "
        "(send_blocking) until its receiver has N, and what it sent but never delivered "
        "(after 0.3 s of quiet) is its loss",
        loss_method="per scenario and side, summed over every round including the warm-up: "
        "events sent, distinct events received, lost (sent - received), duplicates",
        handshake="sequential connect() calls between the same two nodes, each replacing "
        "the previous session; the reference's responder answers through accept()",
    )
    for scenario, size, ours_mode, ref_mode in (
        (
            "delivered_events",
            chosen.delivered_events,
            Reliability.FIRE_AND_FORGET,
            "fire_and_forget",
        ),
        (
            "reliable_delivered_events",
            chosen.reliable_delivered_events,
            Reliability.RELIABLE,
            "reliable",
        ),
    ):
        suite.throughput(
            scenario,
            size,
            _ours_delivered(book, scenario, ours_mode),
            _reference_delivered(net, book, scenario, ref_mode) if net is not None else None,
            warmup_n=min(size, 4096),
        )
        suite.measure(
            f"{scenario}_loss",
            "% lost",
            functools.partial(book.percent_lost, scenario, "ours"),
            functools.partial(book.percent_lost, scenario, "reference")
            if net is not None
            else None,
        )
    suite.throughput(
        "handshake",
        chosen.handshake,
        _ours_handshake(),
        _reference_handshake(net) if net is not None else None,
        unit="handshakes/s",
        warmup_n=min(chosen.handshake, 10),
    )
    suite.add_meta(loss=book.document())
    return suite.report()
