"""Shard scaling of the bus: manual scale up/down (ids, routing, draining, counters,
polling removed shards), bounds and rollback, the automatic policy, and the
thread-safe ingest paths racing a scale-down."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import anyio
import orjson
import pytest
import xxhash

from net_core.bus import Bus, ShuttingDown
from net_core.bus import _bus as bus_module
from net_core.bus._mapper import AtMaxShards, AtMinShards, InCooldown
from net_core.errors import BusError, TransientAdapterError
from tests.bus.backends import (
    GatedStorage,
    RecordingStorage,
    SlowStorage,
    assert_accounted,
    stored_events,
    wait_until,
)

FAST_BATCH = {"min_size": 1, "max_size": 1000, "max_delay_ms": 1.0}


def _payloads(count: int, *, tag: str = "e") -> list[bytes]:
    return [orjson.dumps({"tag": tag, "i": i}) for i in range(count)]


def _expected_shard(bus: Bus, data: bytes) -> int:
    ids = bus.shard_ids()
    return ids[(xxhash.xxh3_64_intdigest(data) * len(ids)) >> 64]


def _expected_shard_static(data: bytes, n: int) -> int:
    return (xxhash.xxh3_64_intdigest(data) * n) >> 64


def _assert_sequences_sound(storage: RecordingStorage) -> None:
    """Per shard: starts 0, len0, len0 + len1, ... and unique (shard, start + i)."""
    seen: set[tuple[int, int, int]] = set()
    for shard, runs in storage.starts_by_shard().items():
        expected = 0
        for start, size in runs:
            assert start == expected, (shard, runs)
            expected += size
        assert sum(1 for start, _ in runs if start == 0) <= 1
    for b in storage.batches:
        for i in range(len(b)):
            key = (b.nonce, b.shard_id, b.sequence_start + i)
            assert key not in seen
            seen.add(key)


# -- manual scaling ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_scale_up_and_down_allocate_new_ids_never_reused() -> None:
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}) as bus:
        assert bus.num_shards == 2
        assert bus.shard_ids() == [0, 1]
        assert await bus.scale_up(2) == [2, 3]
        assert bus.num_shards == 4
        assert bus.shard_ids() == [0, 1, 2, 3]
        assert bus.stats().active_shards == 4
        assert await bus.scale_down(2) == [0, 1]  # equal load: oldest ids go first
        assert bus.num_shards == 2
        assert bus.shard_ids() == [2, 3]
        assert await bus.scale_up(1) == [4]
        assert await bus.scale_down(1) == [2]
        assert await bus.scale_up(2) == [5, 6]
        assert bus.shard_ids() == [3, 4, 5, 6]
        assert await bus.scale_up(0) == []
        assert await bus.scale_down(0) == []
        assert bus.num_shards == 4


@pytest.mark.anyio
async def test_routing_follows_the_active_shard_list() -> None:
    storage = RecordingStorage()
    expected: dict[bytes, int] = {}
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        for step, action in enumerate(["up2", "down1", "up3", "down3", "up1"]):
            count = int(action[-1])
            if action.startswith("up"):
                await bus.scale_up(count)
            else:
                await bus.scale_down(count)
            for p in _payloads(200, tag=f"s{step}"):
                expected[p] = _expected_shard(bus, p)
                assert bus.ingest_raw(p) == expected[p]
            batch = _payloads(50, tag=f"b{step}")
            expected.update((p, _expected_shard(bus, p)) for p in batch)
            assert bus.ingest_raw_batch(batch) == 50
        assert bus.shard_ids() == [4, 5, 6, 7]  # oldest ids drained first
        await bus.flush()
    stored = storage.stored()
    assert len(stored) == len(expected) == 5 * 250
    for event in stored:  # each event stored once, on the shard it was routed to
        assert event.shard_id == expected.pop(event.raw)
    assert not expected


@pytest.mark.anyio
async def test_draining_shard_delivers_queued_events_before_removal() -> None:
    storage = GatedStorage()
    payloads = _payloads(400)
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        routed = Counter(bus.ingest_raw(p) for p in payloads)
        await storage.blocked.wait()
        result: list[list[int]] = []

        async def scale_down() -> None:
            result.append(await bus.scale_down(1))

        async with anyio.create_task_group() as tg:
            tg.start_soon(scale_down)
            await wait_until(lambda: bus.shard_ids() == [1])
            # Draining: no longer routed to, and still waiting for its events.
            assert not result
            for p in _payloads(50, tag="late"):
                assert bus.ingest_raw(p) == 1
            await anyio.sleep(0.02)
            assert not result
            storage.release()
        assert result == [[0]]
        shard0 = [e for e in storage.stored() if e.shard_id == 0]
        assert len(shard0) == routed[0]  # queued events of the removed shard delivered
        await bus.flush()
    assert storage.delivered == 450
    assert Counter(storage.delivered_payloads()) == Counter(payloads + _payloads(50, tag="late"))
    _assert_sequences_sound(storage)
    assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_events_queued_at_scale_down_are_delivered_exactly_once() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 10_000, "max_size": 10_000, "max_delay_ms": 60_000.0}
    async with Bus.open({"shards": 2, "batch": batch}, storage=storage) as bus:
        payloads = _payloads(100)
        bus.ingest_raw_batch(payloads)  # no flush: all still in rings / pending
        assert await bus.scale_down(1) == [0]
        assert storage.delivered == sum(_expected_shard_static(p, 2) == 0 for p in payloads)
    assert Counter(storage.delivered_payloads()) == Counter(payloads)
    _assert_sequences_sound(storage)


@pytest.mark.anyio
async def test_counters_never_double_count_across_cycles() -> None:
    storage = RecordingStorage()
    config = {"shards": 2, "batch": {"min_size": 8, "max_size": 64, "max_delay_ms": 1.0}}
    total = 0
    async with Bus.open(config, storage=storage) as bus:
        for cycle in range(4):
            await bus.scale_up(1 + cycle % 2)
            total += bus.ingest_raw_batch(_payloads(200, tag=f"c{cycle}a"))
            await bus.flush()
            await bus.scale_down(1 + cycle % 2)
            total += bus.ingest_raw_batch(_payloads(100, tag=f"c{cycle}b"))
            stats = bus.stats()
            assert stats.events_ingested == total
            assert stats.events_dispatched <= total
        await bus.flush()
        stats = bus.stats()
        assert stats.events_ingested == stats.events_dispatched == total == 1200
    stats = bus.stats()
    assert stats.events_ingested == stats.events_dispatched == storage.delivered == 1200
    assert stats.batches_dispatched == len(storage.batches)
    assert stats.events_dropped == 0
    assert len(set(storage.delivered_payloads())) == 1200
    _assert_sequences_sound(storage)
    assert_accounted(stats)


@pytest.mark.parametrize("ordering", ["none", "insertion_ts"])
@pytest.mark.anyio
async def test_poll_after_scale_down_reads_removed_shards_without_gaps(ordering: str) -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 4, "batch": FAST_BATCH}, storage=storage) as bus:
        first = _payloads(300, tag="first")
        bus.ingest_raw_batch(first)
        await bus.flush()
        consumed = []
        page = await bus.poll(100, ordering=ordering)
        consumed.extend(page.events)
        cursor = page.next_cursor
        removed = await bus.scale_down(2)
        assert removed == [0, 1]
        assert bus.shard_ids() == [2, 3]
        second = _payloads(200, tag="second")
        bus.ingest_raw_batch(second)
        await bus.flush()
        while True:
            page = await bus.poll(37, cursor, ordering=ordering)
            consumed.extend(page.events)
            assert page.stalled_shards == []
            cursor = page.next_cursor
            if not page.has_more:
                break
        assert Counter(e.raw for e in consumed) == Counter(first + second)
        assert {e.shard_id for e in consumed} >= {0, 1}  # the removed shards' events
        assert len({(e.shard_id, e.id) for e in consumed}) == 500
        fresh = await stored_events(bus, ordering=ordering)
        assert len(fresh) == 500


# -- bounds, cooldown, rollback -----------------------------------------------------------


@pytest.mark.anyio
async def test_scaling_respects_bounds_and_cooldown() -> None:
    scaling = {"min_shards": 2, "max_shards": 4, "cooldown_ms": 0.001, "auto_scale": False}
    async with Bus.open({"shards": 2, "scaling": scaling}) as bus:
        with pytest.raises(AtMinShards):
            await bus.scale_down(1)
        with pytest.raises(AtMaxShards):
            await bus.scale_up(3)
        assert bus.shard_ids() == [0, 1]  # a refused operation changes nothing
        assert await bus.scale_up(2) == [2, 3]
        with pytest.raises(AtMaxShards):
            await bus.scale_up(1)
        assert await bus.scale_down(5) == [0, 1]  # capped at min_shards
        assert issubclass(AtMaxShards, BusError)
    async with Bus.open({"shards": 1}) as manual:
        with pytest.raises(AtMinShards):
            await manual.scale_down(1)
    slow = {"min_shards": 1, "max_shards": 8, "cooldown_ms": 60_000.0, "auto_scale": False}
    async with Bus.open({"shards": 1, "scaling": slow}) as bus:
        assert await bus.scale_up(1) == [1]
        with pytest.raises(InCooldown):
            await bus.scale_up(1)
        with pytest.raises(InCooldown):
            await bus.scale_down(1)


class _ResumeFails(RecordingStorage):
    """Reading the resume sequence of a new shard fails once."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_for: set[int] = set()

    async def resume_sequence(self, shard_id: int, nonce: int) -> int:
        if shard_id in self.fail_for:
            self.fail_for.discard(shard_id)
            raise TransientAdapterError(f"cannot read shard {shard_id}")
        return await super().resume_sequence(shard_id, nonce)


@pytest.mark.anyio
async def test_failed_scale_up_rolls_back() -> None:
    storage = _ResumeFails()
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        storage.fail_for = {2}
        with pytest.raises(TransientAdapterError):
            await bus.scale_up(1)
        assert bus.shard_ids() == [0, 1]  # rolled back
        assert bus.num_shards == 2
        assert await bus.scale_up(1) == [3]  # the failed attempt's id is not reused
        # Several shards: the ones added before the failure stay (and the caller is
        # not told their ids: see the report), the failed one and later ones go.
        storage.fail_for = {5}
        with pytest.raises(TransientAdapterError):
            await bus.scale_up(3)
        assert bus.shard_ids() == [0, 1, 3, 4]
        assert await bus.scale_up(1) == [7]
        bus.ingest_raw_batch(_payloads(100))
    assert storage.delivered == 100
    assert {b.shard_id for b in storage.batches} <= {0, 1, 3, 4, 7}
    assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_scale_down_after_shutdown_raises_shutting_down() -> None:
    async with Bus.open({"shards": 2}) as bus:
        pass
    with pytest.raises(ShuttingDown):
        await bus.scale_down(1)


# -- automatic scaling ------------------------------------------------------------------


@pytest.mark.anyio
async def test_automatic_policy_scales_up_under_load_and_down_when_idle() -> None:
    storage = SlowStorage(0.002)
    config = {
        "shards": 1,
        "ring_capacity": 1024,
        "batch": {"min_size": 1, "max_size": 20, "max_delay_ms": 1.0},
        "scaling": {
            "min_shards": 1,
            "max_shards": 4,
            "cooldown_ms": 1,
            "metrics_window_ms": 20,
            "fill_ratio_threshold": 0.01,
            "underutilized_threshold": 0.001,
        },
    }
    async with Bus.open(config, storage=storage) as bus:
        peak = 1
        round_ = 0
        with anyio.fail_after(5):
            while bus.num_shards < 2:  # bounded wait for the first scale-up
                bus.ingest_raw_batch(_payloads(200, tag=f"r{round_}"))
                round_ += 1
                await anyio.sleep(0.002)
        assert max(bus.shard_ids()) >= 1  # a new id
        end = anyio.current_time() + 0.1
        while anyio.current_time() < end:  # keep the load on: new shards take events
            bus.ingest_raw_batch(_payloads(200, tag=f"r{round_}"))
            round_ += 1
            peak = max(peak, bus.num_shards)
            await anyio.sleep(0.002)
        assert peak >= 2
        # Load stops: rings drain, shards go idle, the policy scales back down.
        await wait_until(lambda: bus.num_shards == 1, within=10)
        await bus.flush()
    stats = bus.stats()
    assert {b.shard_id for b in storage.batches} - {0}  # new shards took events
    assert stats.events_dispatched == storage.delivered
    assert not stats.shutdown_was_lossy
    assert stats.events_ingested == stats.events_dispatched
    _assert_sequences_sound(storage)
    assert_accounted(stats)


@pytest.mark.anyio
async def test_automatic_policy_stays_within_bounds_when_idle() -> None:
    scaling = {"min_shards": 2, "max_shards": 4, "cooldown_ms": 1, "metrics_window_ms": 5}
    async with Bus.open({"shards": 4, "scaling": scaling}) as bus:
        await wait_until(lambda: bus.num_shards == 2, within=5)
        await anyio.sleep(0.05)
        assert bus.num_shards == 2


# -- thread-safe ingest racing scaling -----------------------------------------------------


class _PauseInRouting:
    """Replaces the bus's XXH3 hash function (a module global it looks up per call) so
    that one producer thread pauses *inside* routing: ``ingest_raw`` has already read
    the routing table (``self._route``) but not yet the shard count nor the shard lock.
    Every other caller hashes normally."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.producer: int | None = None
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def __call__(self, data: bytes) -> int:
        if threading.get_ident() == self.producer:
            self.producer = None
            self.entered.set()
            self.proceed.wait(5)
        return int(self.real(data))


async def _ingest_paused_across(
    bus: Bus, payload: bytes, pause: _PauseInRouting, scaling: Any
) -> dict[str, Any]:
    """Ingest ``payload`` from a thread, run ``scaling()`` on the loop while the thread
    is paused in routing, then let the thread finish; its outcome."""
    outcome: dict[str, Any] = {}

    def produce() -> None:
        pause.producer = threading.get_ident()
        try:
            outcome["shard"] = bus.ingest_raw(payload)
        except Exception as exc:  # a typed refusal (BusError) would be acceptable
            outcome["error"] = exc

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        await anyio.to_thread.run_sync(pause.entered.wait)
        outcome["scaled"] = await scaling()
    finally:
        pause.proceed.set()
        await anyio.to_thread.run_sync(thread.join)
    return outcome


@pytest.mark.anyio
async def test_thread_safe_ingest_racing_scale_down_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pause = _PauseInRouting(bus_module._xxh3)
    monkeypatch.setattr(bus_module, "_xxh3", pause)
    storage = RecordingStorage()
    config = {"shards": 2, "thread_safe": True, "batch": FAST_BATCH}
    async with Bus.open(config, storage=storage) as bus:
        payload = _payloads(1)[0]
        outcome = await _ingest_paused_across(bus, payload, pause, lambda: bus.scale_down(1))
        assert outcome["scaled"] == [0]
    if "shard" in outcome:  # accepted: then it must have been stored
        assert payload in storage.delivered_payloads()
    else:
        assert isinstance(outcome["error"], BusError), outcome
    assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_thread_safe_ingest_racing_scale_up_routes_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pause = _PauseInRouting(bus_module._xxh3)
    monkeypatch.setattr(bus_module, "_xxh3", pause)
    storage = RecordingStorage()
    config = {"shards": 2, "thread_safe": True, "batch": FAST_BATCH}
    async with Bus.open(config, storage=storage) as bus:
        # An event that lands on index 2 or 3 of a 4-shard table.
        payload = next(p for p in _payloads(100) if _expected_shard_static(p, 4) >= 2)
        outcome = await _ingest_paused_across(bus, payload, pause, lambda: bus.scale_up(2))
        assert outcome["scaled"] == [2, 3]
    assert "error" not in outcome, outcome
    assert payload in storage.delivered_payloads()
    assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_thread_safe_batch_ingest_racing_scale_down() -> None:
    storage = RecordingStorage()
    config = {"shards": 2, "thread_safe": True, "batch": FAST_BATCH}
    async with Bus.open(config, storage=storage) as bus:
        payloads = _payloads(20)
        routed = threading.Event()
        proceed = threading.Event()

        def events() -> Any:
            yield from payloads  # routed against the 2-shard table...
            routed.set()
            proceed.wait(5)  # ...while shard 0 is scaled down

        outcome: dict[str, Any] = {}

        def produce() -> None:
            try:
                outcome["accepted"] = bus.ingest_raw_batch(events())
            except Exception as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=produce)
        thread.start()
        try:
            await anyio.to_thread.run_sync(routed.wait)
            assert await bus.scale_down(1) == [0]
        finally:
            proceed.set()
            await anyio.to_thread.run_sync(thread.join)
    assert "error" not in outcome, outcome
    assert storage.delivered == outcome["accepted"]
    assert_accounted(bus.stats())


def _produce_while(bus: Bus, tid: int, stop: threading.Event, out: list[Any]) -> None:
    """A producer thread: ingest until ``stop``; ``out`` gets the events accepted, and
    any exception other than a typed refusal (as ``("error", exc)``)."""
    i = 0
    while not stop.is_set() and i < 100_000:
        raw = b'{"t":%d,"i":%d}' % (tid, i)
        i += 1
        try:
            bus.ingest_raw(raw)
        except BusError:
            continue
        except Exception as exc:
            out.append(("error", exc))
            return
        out.append(raw)


@pytest.mark.anyio
async def test_thread_safe_producers_across_scaling_lose_nothing() -> None:
    """Producer threads keep ingesting while the loop scales up and down: every event
    whose ingest returned normally is stored exactly once."""
    storage = RecordingStorage()
    config = {"shards": 2, "thread_safe": True, "batch": FAST_BATCH}
    results: list[list[Any]] = [[], []]
    stop = threading.Event()
    async with Bus.open(config, storage=storage) as bus:
        threads = [
            threading.Thread(target=_produce_while, args=(bus, t, stop, results[t]))
            for t in range(2)
        ]
        for t in threads:
            t.start()
        try:
            for _ in range(3):
                await bus.scale_up(2)
                await anyio.sleep(0.005)
                await bus.scale_down(2)
                await anyio.sleep(0.005)
        finally:
            stop.set()
            for t in threads:
                await anyio.to_thread.run_sync(t.join)
    errors = [r[1] for out in results for r in out if isinstance(r, tuple)]
    accepted = Counter(r for out in results for r in out if isinstance(r, bytes))
    stored = Counter(storage.delivered_payloads())
    assert accepted
    assert max(stored.values(), default=1) == 1
    assert not stored - accepted  # nothing stored that was not accepted
    assert not errors
    assert stored == accepted
    assert_accounted(bus.stats())
