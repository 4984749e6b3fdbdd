"""The event bus: sharded ingest, batching workers, dispatch to storage, scaling, poll.

Theory of operation. ``ingest`` hashes the event bytes (XXH3-64), picks a shard with the
reference's Lemire mapping over the active shards, and appends the event to that
shard's bounded ring under the shard's lock, applying the backpressure mode when the
ring is full. It never waits. One worker task per shard pops events from the ring,
forms batches (size or delay, adaptive size), stamps each with the shard's gap-free
``sequence_start`` and the producer nonce, and writes it to the storage backend with a
bounded timeout and jittered exponential retries. Every accepted event ends up either
dispatched or counted as dropped with a reason.

Shutdown correctness does not rely on counting in-flight producers: ``ingest`` checks
the closing flag *inside* the shard lock, and shutdown sets the flag and then takes every
shard lock once. After that barrier no ingest can add to any ring, so each worker drains
its ring to empty (two consecutive empty pops), flushes its pending batch and exits.

The bus owns its task group: use it as ``async with Bus.open(config) as bus:``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final

import anyio
import anyio.abc
import attrs
import orjson
import xxhash

from net_core.bus._backoff import retry_backoff_ms
from net_core.bus._batcher import BatchAssembler
from net_core.bus._config import BusConfig, ScalingConfig
from net_core.bus._errors import Backpressure, Sampled, ShuttingDown, Unrouted
from net_core.bus._mapper import ScaleDown, ScaleUp, ShardMapper, ShardState
from net_core.bus._nonce import load_or_create_producer_nonce, process_nonce
from net_core.bus._storage import Batch, StorageBackend
from net_core.config import structure
from net_core.errors import BusError, FatalAdapterError, TransientAdapterError
from net_core.plugins import (
    Kind,
    LifecycleEvent,
    LifecycleKind,
    PluginManager,
    get_plugin_manager,
)

__all__ = ["Bus", "BusStats"]

log = logging.getLogger("net_core.bus")

_xxh3 = xxhash.xxh3_64_intdigest
_dumps = orjson.dumps
_get_ident = threading.get_ident
_time_ns = time.time_ns
_IDLE_POLL_S: Final = 0.005
_DROP_REASONS: Final = (
    "ring_full",
    "evicted_oldest",
    "sampled",
    "unrouted",
    "adapter_rejected",
    "adapter_failed",
    "shutdown",
)


@final
@attrs.frozen(slots=True)
class BusStats:
    """A snapshot of the bus counters (cumulative over the bus's life).

    ``events_dropped`` is the sum of ``dropped`` by reason; an event refused to its
    producer (``fail_producer``) is not a drop: the producer still holds it.
    """

    events_ingested: int
    events_dispatched: int
    batches_dispatched: int
    events_dropped: int
    dropped: Mapping[str, int]
    events_refused: int
    active_shards: int
    shutdown_was_lossy: bool


class _Shard:
    """One shard's ring, worker state and counters.

    The ring is two deques (payloads and their insertion timestamps) rather than one
    deque of tuples: no per-event tuple, nothing for the garbage collector to walk.
    ``lock`` is used only by thread-safe buses and by the slow paths.
    """

    __slots__ = (
        "assembler",
        "dispatched",
        "dropped",
        "evicted",
        "id",
        "last_ts",
        "lock",
        "popped",
        "removed",
        "ring",
        "sample_acc",
        "settled",
        "stamps",
        "waiter",
        "window_events",
    )

    def __init__(self, shard_id: int, bus: Bus, next_sequence: int) -> None:
        self.id = shard_id
        self.lock = threading.Lock()
        self.ring: deque[bytes] = deque()
        self.stamps: deque[int] = deque()
        # Insertion timestamps: wall-clock ns (comparable across shards, processes and
        # restarts), made strictly increasing per shard.
        self.last_ts = 0
        self.assembler = BatchAssembler(shard_id, bus.config.batch, next_sequence=next_sequence)
        self.popped = 0  # events the worker took from the ring
        self.evicted = 0  # events removed from the ring by drop_oldest / sample
        self.settled = 0  # popped events dispatched or dropped
        self.dispatched = 0
        self.dropped: dict[str, int] = dict.fromkeys(_DROP_REASONS, 0)
        self.sample_acc = 0.0
        self.waiter: anyio.Event | None = None
        self.window_events = 0  # `accepted` at the last metrics sample
        self.removed = False

    @property
    def accepted(self) -> int:
        """Events ever accepted into the ring (derived: nothing to count per ingest)."""
        return self.popped + self.evicted + len(self.ring)

    @property
    def done(self) -> int:
        """Accepted events whose fate is decided (dispatched or dropped)."""
        return self.settled + self.evicted


@final
class Bus:
    """A sharded in-process event bus in front of a storage backend (see module docs)."""

    def __init__(
        self,
        config: BusConfig | Mapping[str, Any] | None = None,
        *,
        storage: StorageBackend | None = None,
        plugins: PluginManager | None = None,
    ) -> None:
        self.config = config if isinstance(config, BusConfig) else structure(config, BusConfig)
        self._plugins = plugins
        pm = plugins or get_plugin_manager()
        self.storage: StorageBackend = (
            storage
            if storage is not None
            else pm.build(
                Kind.STORAGE,
                self.config.storage.backend,
                self.config.storage.options,
                path="storage.options",
            )
        )
        # Manual scaling works without an automatic policy: the mapper then gets a
        # permissive manual one (no cooldown between explicit calls).
        policy = self.config.scaling or ScalingConfig(
            min_shards=1,
            max_shards=max(self.config.shards, min(self.config.max_shard_id, 1024)),
            cooldown_ms=0.001,
            auto_scale=False,
        )
        self._mapper = ShardMapper(
            self.config.shards, policy, max_shard_id=self.config.max_shard_id
        )
        self._shards: dict[int, _Shard] = {}
        self._retired: dict[int, _Shard] = {}
        self._previous: list[int] = []
        self._closing = False
        self._closed = False
        self._lossy = False
        self._refused = 0
        self._unrouted = 0
        self._batches = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._loop_thread = 0
        self._progress: anyio.Event | None = None
        self._flush_requested = 0
        self._nonce = 0
        self._workers_done: dict[int, anyio.Event] = {}
        self._worker_scopes: dict[int, anyio.CancelScope] = {}
        self._shutdown_done: anyio.Event | None = None
        self._poll_merger: Any = None
        self._capacity = self.config.ring_capacity
        # The ingest routing table: _Shard objects in the mapper's candidate order.
        # The ingest routing table and its size, replaced as one tuple so a reader in
        # another thread never pairs a table with the wrong size.
        self._routing: tuple[tuple[_Shard | None, ...], int] = ((None,), 0)
        if self.config.thread_safe:
            self.ingest_raw = self._ingest_raw_locked  # type: ignore[method-assign]

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: BusConfig | Mapping[str, Any] | None = None,
        *,
        storage: StorageBackend | None = None,
        plugins: PluginManager | None = None,
    ) -> AsyncIterator[Bus]:
        """Start a bus (its storage, workers and monitor) for the duration of the block.

        Leaving the block shuts the bus down gracefully: every accepted event is
        dispatched or counted as dropped (see :meth:`shutdown`).
        """
        bus = cls(config, storage=storage, plugins=plugins)
        try:
            async with anyio.create_task_group() as tg:
                await bus._start(tg)
                try:
                    yield bus
                finally:
                    with anyio.CancelScope(shield=True):
                        await bus.shutdown()
        except BaseExceptionGroup as group:
            # The task group wraps what the block (or the start-up) raised; hand the
            # caller the exception itself when there is exactly one.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self._loop_thread = _get_ident()
        if self.config.producer_nonce_path:
            self._nonce = await anyio.to_thread.run_sync(
                load_or_create_producer_nonce, self.config.producer_nonce_path
            )
        else:
            self._nonce = process_nonce()
        with anyio.fail_after(self.config.adapter_timeout_ms / 1000):
            await self.storage.open()
            known = await self.storage.known_shards()
        # Shards of earlier runs: still polled (their events are stored), and their ids
        # are never handed out again.
        if known:
            self._mapper.reserve_ids_below(max(known) + 1)
        self._previous = [sid for sid in known if sid not in self._mapper.active_ids()]
        for shard_id in self._mapper.active_ids():
            await self._add_shard_structures(shard_id)
        self._refresh_route()
        from net_core.consumer import PollMerger  # noqa: PLC0415 - consumer sits above bus

        self._poll_merger = PollMerger(
            self.storage, self._poll_shards, read_timeout=self.config.adapter_timeout_ms / 1000
        )
        if self.config.scaling is not None and self.config.scaling.auto_scale:
            tg.start_soon(self._scaling_monitor)
        self._notify(LifecycleKind.BUS_STARTED, {"shards": list(self._shards)})

    async def _add_shard_structures(self, shard_id: int) -> _Shard:
        with anyio.fail_after(self.config.adapter_timeout_ms / 1000):
            next_sequence = await self.storage.resume_sequence(shard_id, self._nonce)
        shard = _Shard(shard_id, self, next_sequence)
        self._shards[shard_id] = shard
        done = anyio.Event()
        self._workers_done[shard_id] = done
        assert self._tg is not None
        self._tg.start_soon(self._worker, shard, done)
        return shard

    def _notify(self, kind: LifecycleKind, data: dict[str, Any]) -> None:
        (self._plugins or get_plugin_manager()).notify(LifecycleEvent(kind, "bus", data))

    # -- ingest ----------------------------------------------------------------------

    def _refresh_route(self) -> None:
        shards = self._shards
        # Every ACTIVE shard, in id order: the reference's deterministic mapping (load
        # metrics drive scaling decisions, not per-event routing).
        ids = self._mapper.active_ids()
        self._routing = (tuple(shards[sid] for sid in ids) or (None,), len(ids))

    def ingest_raw(self, event: bytes | str) -> int:
        """Queue one event given as bytes (or text, UTF-8 encoded), without validation.

        Returns the shard id. Raises :class:`Backpressure`, :class:`Sampled`,
        :class:`Unrouted` or :class:`ShuttingDown`; never blocks. Call it from the
        bus's event-loop thread (or configure ``thread_safe=True``).
        """
        if type(event) is not bytes:
            event = _to_bytes(event)
        route, n = self._routing
        # Lemire mapping of the XXH3-64 hash over the active shards (ShardMapper.select).
        shard = route[(_xxh3(event) * n) >> 64]
        if shard is None or self._closing:
            return self._ingest_refused(shard)
        ring = shard.ring
        if len(ring) >= self._capacity:
            self._on_full(shard)
        ts = _time_ns()
        if ts <= shard.last_ts:
            ts = shard.last_ts + 1
        shard.last_ts = ts
        ring.append(event)
        shard.stamps.append(ts)
        if shard.waiter is not None:
            self._wake(shard)
        return shard.id

    def _ingest_raw_locked(self, event: bytes | str) -> int:
        """``ingest_raw`` for thread-safe buses: the same steps under the shard lock."""
        if type(event) is not bytes:
            event = _to_bytes(event)
        digest = _xxh3(event)
        while True:
            route, n = self._routing
            shard = route[(digest * n) >> 64]
            if shard is None:
                return self._ingest_refused(shard)
            lock = shard.lock
            lock.acquire()
            try:
                # Checked under the lock: shutdown and shard retirement take the lock
                # once after setting their flag, so no event can enter a ring after it.
                if self._closing:
                    return self._ingest_refused(shard)
                if shard.removed:
                    continue  # the topology changed under us: route again
                ring = shard.ring
                if len(ring) >= self._capacity:
                    self._on_full(shard)
                ts = _time_ns()
                if ts <= shard.last_ts:
                    ts = shard.last_ts + 1
                shard.last_ts = ts
                ring.append(event)
                shard.stamps.append(ts)
                if shard.waiter is not None:
                    self._wake(shard)
                return shard.id
            finally:
                lock.release()

    def _ingest_refused(self, shard: _Shard | None) -> int:
        if self._closing:
            raise ShuttingDown
        self._unrouted += 1
        raise Unrouted

    def _wake(self, shard: _Shard) -> None:
        if _get_ident() == self._loop_thread:
            waiter = shard.waiter
            shard.waiter = None
            if waiter is not None:
                waiter.set()

    def ingest(self, obj: Any) -> int:
        """JSON-encode ``obj`` (orjson: compact, keys in insertion order) and queue it;
        returns the shard id."""
        # orjson's result keeps its oversized work buffer (about 4 KiB) alive for as long
        # as the object lives; an exact-size copy costs less than queueing that.
        return self.ingest_raw(bytes(memoryview(_dumps(obj))))

    def _on_full(self, shard: _Shard) -> None:
        # The ring is full: make room (drop_oldest, a sampled keep) or refuse.
        mode = self.config.backpressure
        if mode == "drop_oldest":
            self._evict_oldest(shard)
            return
        if mode == "sample":
            shard.sample_acc += self.config.sample_rate
            if shard.sample_acc >= 1.0:
                shard.sample_acc -= 1.0
                self._evict_oldest(shard)
                return
            shard.dropped["sampled"] += 1
            raise Sampled
        if mode == "drop_newest":
            shard.dropped["ring_full"] += 1
            raise Backpressure
        self._refused += 1  # fail_producer: the producer keeps the event
        raise Backpressure

    @staticmethod
    def _evict_oldest(shard: _Shard) -> None:
        shard.ring.popleft()
        shard.stamps.popleft()
        shard.evicted += 1
        shard.dropped["evicted_oldest"] += 1

    def ingest_raw_batch(self, events: Iterable[bytes | str]) -> int:
        """Queue several events; returns how many were accepted (refusals are counted).

        Events of one shard keep their input order and share one clock reading (made
        strictly increasing); each shard's lock is taken once (thread-safe buses).
        """
        if self._closing:
            raise ShuttingDown
        if type(events) is list and set(map(type, events)) <= {bytes}:
            items: list[bytes] = events
        else:
            items = [e if type(e) is bytes else _to_bytes(e) for e in events]
        return self._ingest_groups(items)

    def _ingest_groups(self, items: list[bytes]) -> int:
        route, n = self._routing
        groups: dict[_Shard, list[bytes]] = {}
        unrouted = 0
        for data in items:
            target = route[(_xxh3(data) * n) >> 64]
            if target is None:
                unrouted += 1
                continue
            group = groups.get(target)
            if group is None:
                groups[target] = [data]
            else:
                group.append(data)
        self._unrouted += unrouted
        accepted = 0
        capacity = self._capacity
        threaded = self.config.thread_safe
        moved: list[bytes] = []
        for shard, group_items in groups.items():
            if threaded:
                shard.lock.acquire()
            try:
                if self._closing:
                    if accepted == 0:
                        raise ShuttingDown
                    break
                if shard.removed:
                    moved.extend(group_items)  # retired meanwhile: route these again
                    continue
                ring = shard.ring
                count = len(group_items)
                if count <= capacity - len(ring):
                    base = _time_ns()
                    if base <= shard.last_ts:
                        base = shard.last_ts + 1
                    ring.extend(group_items)
                    shard.stamps.extend(range(base, base + count))
                    shard.last_ts = base + count - 1
                    taken = count
                else:
                    taken = 0
                    for data in group_items:
                        if len(ring) >= capacity:
                            try:
                                self._on_full(shard)
                            except (Backpressure, Sampled):
                                continue
                        ts = _time_ns()
                        if ts <= shard.last_ts:
                            ts = shard.last_ts + 1
                        shard.last_ts = ts
                        ring.append(data)
                        shard.stamps.append(ts)
                        taken += 1
                accepted += taken
                if taken and shard.waiter is not None:
                    self._wake(shard)
            finally:
                if threaded:
                    shard.lock.release()
        if moved:
            accepted += self._ingest_groups(moved)
        return accepted

    def ingest_batch(self, objs: Iterable[Any]) -> int:
        """JSON-encode each object and queue them; returns how many were accepted."""
        return self.ingest_raw_batch([bytes(memoryview(_dumps(o))) for o in objs])

    # -- workers ---------------------------------------------------------------------

    async def _worker(self, shard: _Shard, done: anyio.Event) -> None:
        # Its own cancel scope: a timed-out shutdown cancels the workers, never the
        # task group of the code that opened the bus.
        with anyio.CancelScope() as scope:
            self._worker_scopes[shard.id] = scope
            await self._work(shard, done)

    async def _work(self, shard: _Shard, done: anyio.Event) -> None:
        assembler = shard.assembler
        max_take = self.config.batch.max_size
        ring, stamps = shard.ring, shard.stamps
        empty_passes = 0
        try:
            while True:
                shard.lock.acquire()
                try:
                    n = min(len(ring), max_take)
                    events = [ring.popleft() for _ in range(n)]
                    times = [stamps.popleft() for _ in range(n)]
                    shard.popped += n
                    finishing = self._closing or shard.removed
                    if not n and not finishing and assembler.pending == 0:
                        waiter = shard.waiter = anyio.Event()
                    else:
                        waiter = None
                finally:
                    shard.lock.release()
                now = time.monotonic_ns()
                if n:
                    empty_passes = 0
                    for batch in assembler.add(events, times, now):
                        await self._dispatch(shard, batch)
                else:
                    empty_passes += 1
                due = assembler.poll(now)
                if due is not None:
                    await self._dispatch(shard, due)
                if self._flush_requested and assembler.pending:
                    for batch in assembler.flush_all():
                        await self._dispatch(shard, batch)
                # Finishing: stop only after two consecutive empty passes with a
                # checkpoint between them, then deliver the pending batch.
                if finishing and not n and empty_passes >= 2:
                    for batch in assembler.flush_all():
                        await self._dispatch(shard, batch)
                    return
                if n or finishing:
                    await anyio.lowlevel.checkpoint()
                    continue
                deadline = assembler.deadline_ns()
                timeout = (
                    _IDLE_POLL_S
                    if deadline is None
                    else max(0.0, (deadline - time.monotonic_ns()) / 1e9)
                )
                if waiter is not None:
                    with anyio.move_on_after(min(timeout, _IDLE_POLL_S)):
                        await waiter.wait()
                    shard.waiter = None
                else:
                    await anyio.sleep(min(timeout, _IDLE_POLL_S))
        finally:
            done.set()

    async def _dispatch(self, shard: _Shard, assembled: Any) -> None:
        batch = Batch(
            shard_id=shard.id,
            sequence_start=assembled.sequence_start,
            nonce=self._nonce,
            events=assembled.events,
            timestamps=assembled.timestamps,
        )
        count = len(batch.events)
        attempts = self.config.retries + 1
        timeout = self.config.adapter_timeout_ms / 1000
        reasons: list[str] = []
        outcome = "adapter_failed"
        for attempt in range(attempts):
            try:
                with anyio.fail_after(timeout):
                    await self.storage.write_batch(batch)
            except FatalAdapterError as exc:
                reasons.append(f"attempt {attempt + 1}: fatal: {exc}")
                outcome = "adapter_rejected"
                break
            except TimeoutError:
                reasons.append(f"attempt {attempt + 1}: timed out after {timeout:g} s")
            except TransientAdapterError as exc:
                reasons.append(f"attempt {attempt + 1}: transient: {exc}")
            except Exception as exc:  # a backend bug: treat as fatal, never crash the worker
                reasons.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
                outcome = "adapter_rejected"
                break
            else:
                shard.dispatched += count
                shard.settled += count
                self._batches += 1
                self._signal_progress()
                return
            if attempt + 1 < attempts:
                await anyio.sleep(retry_backoff_ms(shard.id, attempt) / 1000)
        shard.dropped[outcome] += count
        shard.settled += count
        log.warning(
            "shard %d dropped a batch of %d events (sequence_start %d): %s",
            shard.id,
            count,
            batch.sequence_start,
            "; ".join(reasons),
        )
        self._signal_progress()

    def _signal_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    # -- flush & shutdown ------------------------------------------------------------

    async def flush(self) -> None:
        """Delivery barrier: return once every event accepted before the call has been
        dispatched to storage (or dropped, and counted), then flush the backend."""
        if self._closing:
            raise ShuttingDown
        targets = {sid: s.accepted for sid, s in {**self._shards, **self._retired}.items()}
        self._flush_requested += 1
        try:
            while True:
                all_shards = {**self._shards, **self._retired}
                if all(all_shards[sid].done >= target for sid, target in targets.items()):
                    break
                if self._progress is None:
                    self._progress = anyio.Event()
                with anyio.move_on_after(_IDLE_POLL_S):
                    await self._progress.wait()
        finally:
            self._flush_requested -= 1
        with anyio.fail_after(self.config.adapter_timeout_ms / 1000):
            await self.storage.flush()

    async def shutdown(self, timeout: float = 30.0) -> BusStats:  # noqa: ASYNC109 - a drain budget, not a cancel
        """Stop accepting events, deliver everything accepted, close storage.

        Idempotent; concurrent callers wait for the first one. If delivery does not
        finish within ``timeout`` seconds, the workers are cancelled, what is left is
        counted as dropped (reason ``shutdown``) and ``shutdown_was_lossy`` is set.
        """
        if self._shutdown_done is not None:
            await self._shutdown_done.wait()
            return self.stats()
        self._shutdown_done = anyio.Event()
        try:
            await self._shutdown(timeout)
        finally:
            self._shutdown_done.set()
        return self.stats()

    async def _shutdown(self, timeout: float) -> None:  # noqa: ASYNC109
        self._closing = True
        # The barrier: after holding each lock once, no ingest can add to a ring.
        for shard in list(self._shards.values()):
            shard.lock.acquire()
            shard.lock.release()
            if shard.waiter is not None:
                self._wake(shard)
        with anyio.move_on_after(timeout) as scope:
            for done in list(self._workers_done.values()):
                await done.wait()
        if scope.cancelled_caught:
            self._lossy = True
            for worker_scope in self._worker_scopes.values():
                worker_scope.cancel()
            for shard in self._shards.values():
                left = shard.accepted - shard.done
                if left > 0:
                    shard.dropped["shutdown"] += left
                    shard.settled += left
        if any(
            s.dropped["adapter_rejected"] or s.dropped["adapter_failed"] or s.dropped["shutdown"]
            for s in {**self._shards, **self._retired}.values()
        ):
            self._lossy = True
        try:
            with anyio.fail_after(self.config.adapter_timeout_ms / 1000):
                await self.storage.flush()
        except Exception as exc:
            self._lossy = True
            log.error("storage flush at shutdown failed: %s", exc)
        try:
            with anyio.fail_after(self.config.adapter_timeout_ms / 1000):
                await self.storage.close()
        except Exception as exc:
            log.error("storage close at shutdown failed: %s", exc)
        self._closed = True
        self._notify(LifecycleKind.BUS_STOPPED, {"lossy": self._lossy})

    # -- scaling ---------------------------------------------------------------------

    @property
    def num_shards(self) -> int:
        """Number of active shards (events are routed to these)."""
        return len(self._mapper.active_ids())

    def shard_ids(self) -> list[int]:
        """Ids of the active shards."""
        return list(self._mapper.active_ids())

    async def scale_up(self, count: int = 1) -> list[int]:
        """Add ``count`` shards (ids are new, never reused); returns their ids."""
        if self._closing:
            raise ShuttingDown
        if count <= 0:
            return []
        ids = self._mapper.scale_up_provisioning(count, time.monotonic_ns())
        added: list[int] = []
        for shard_id in ids:
            try:
                await self._add_shard_structures(shard_id)
                self._mapper.activate(shard_id)
                self._refresh_route()
            except BaseException:
                # Roll back this shard and the ones not started yet; the mapper's count
                # only ever moved for shards that were activated.
                for sid in ids[len(added) :]:
                    await self._retire(sid)
                raise
            added.append(shard_id)
            self._notify(LifecycleKind.SHARD_ADDED, {"shard": shard_id})
        return added

    async def scale_down(self, count: int = 1) -> list[int]:
        """Remove ``count`` shards; their queued events are delivered first."""
        if self._closing:
            raise ShuttingDown
        ids = self._mapper.scale_down(count, time.monotonic_ns())
        self._refresh_route()  # draining shards take no new events from now on
        for shard_id in ids:
            await self._retire(shard_id)
        return ids

    async def _retire(self, shard_id: int) -> None:
        # Stop routing to the shard first, then let its worker deliver everything left
        # in its ring and pending batch, then forget it in the mapper.
        if self._mapper.state(shard_id) is ShardState.ACTIVE:
            self._mapper.drain(shard_id, time.monotonic_ns())
        self._refresh_route()
        shard = self._shards.get(shard_id)
        if shard is not None:
            shard.lock.acquire()
            try:
                shard.removed = True
            finally:
                shard.lock.release()
            if shard.waiter is not None:
                self._wake(shard)
            await self._workers_done[shard_id].wait()
            del self._shards[shard_id]
            self._retired[shard_id] = shard
        if self._mapper.state(shard_id) is ShardState.DRAINING:
            # Its worker has exited with the ring empty: the shard is empty now.
            self._mapper.finalize_draining(time.monotonic_ns() + 10**9, lambda sid: sid == shard_id)
        if self._mapper.state(shard_id) is not None:
            self._mapper.remove(shard_id)
        self._notify(LifecycleKind.SHARD_REMOVED, {"shard": shard_id})

    async def _scaling_monitor(self) -> None:
        policy = self.config.scaling
        assert policy is not None
        window = policy.metrics_window_ms / 1000
        while not self._closing:
            await anyio.sleep(window)
            capacity = self.config.ring_capacity
            for shard in list(self._shards.values()):
                accepted = shard.accepted
                events, shard.window_events = accepted - shard.window_events, accepted
                self._mapper.record(shard.id, len(shard.ring) / capacity, events)
            decision = self._mapper.evaluate(time.monotonic_ns())
            try:
                if isinstance(decision, ScaleUp):
                    await self.scale_up(decision.count)
                elif isinstance(decision, ScaleDown):
                    await self.scale_down(decision.count)
            except BusError as exc:
                log.info("automatic scaling skipped: %s", exc)

    # -- consumer --------------------------------------------------------------------

    def _poll_shards(self) -> list[int]:
        live = [
            sid
            for sid in self._mapper.live_ids()
            if self._mapper.state(sid) != ShardState.PROVISIONING
        ]
        return sorted({*live, *self._retired, *self._previous})

    async def poll(
        self,
        limit: int,
        cursor: str | None = None,
        filter: Any = None,
        *,
        ordering: str = "none",
        shards: Sequence[int] | None = None,
    ) -> Any:
        """Read up to ``limit`` stored events after ``cursor`` (see PollMerger)."""
        if self._closed:
            raise ShuttingDown
        from net_core.consumer import PollRequest  # noqa: PLC0415 - consumer sits above bus

        return await self._poll_merger.poll(
            PollRequest(
                limit=limit,
                cursor=cursor,
                filter=filter,
                ordering=ordering,
                shards=list(shards) if shards is not None else None,
            )
        )

    # -- stats -----------------------------------------------------------------------

    def stats(self) -> BusStats:
        """Counters of the bus (all shards, including removed ones)."""
        shards = [*self._shards.values(), *self._retired.values()]
        dropped = dict.fromkeys(_DROP_REASONS, 0)
        for s in shards:
            for reason, n in s.dropped.items():
                dropped[reason] += n
        dropped["unrouted"] += self._unrouted
        return BusStats(
            events_ingested=sum(s.accepted for s in shards),
            events_dispatched=sum(s.dispatched for s in shards),
            batches_dispatched=self._batches,
            events_dropped=sum(dropped.values()),
            dropped=dropped,
            events_refused=self._refused,
            active_shards=self.num_shards,
            shutdown_was_lossy=self._lossy,
        )

    @property
    def nonce(self) -> int:
        """The producer nonce stamped on every batch."""
        return self._nonce

    @property
    def closed(self) -> bool:
        """Whether shutdown has completed."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("closing" if self._closing else "open")
        return f"Bus({state}, shards={self.num_shards}, storage={self.storage.name!r})"


def _to_bytes(event: Any) -> bytes:
    if isinstance(event, str):
        return event.encode("utf-8")
    if isinstance(event, bytearray | memoryview):
        return bytes(event)
    raise TypeError(f"an event must be bytes or str, got {type(event).__name__}")
