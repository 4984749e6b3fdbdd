"""The event bus end to end: config, ingest and routing, ring backpressure modes, typed
errors, the batching pipeline, dispatch (retries, fatal errors, timeouts), the flush
barrier, shutdown draining, restart on the redex backend and polling through the bus.

Storage is a real ``MemoryStorage`` subclass from :mod:`tests.bus.backends` that records
every batch (and can gate, fail or slow down writes), or the real ``redex`` backend.
"""

from __future__ import annotations

import inspect
import itertools
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
import xxhash

from net_core.bus import (
    Backpressure,
    Batch,
    Bus,
    BusConfig,
    IngestError,
    MemoryStorage,
    Sampled,
    ShuttingDown,
    Unrouted,
)
from net_core.bus._nonce import process_nonce
from net_core.config import ConfigError
from net_core.errors import (
    BackpressureError,
    ClosedError,
    FatalAdapterError,
    UnknownPluginError,
)
from tests.bus.backends import (
    FailingStorage,
    GatedStorage,
    RecordingStorage,
    SlowStorage,
    assert_accounted,
    stored_events,
    wait_until,
)

#: Batches go out at once (one event is enough, 1 ms delay): tests see writes quickly.
FAST_BATCH = {"min_size": 1, "max_size": 1000, "max_delay_ms": 1.0}


def _shard_of(data: bytes, n: int) -> int:
    return (xxhash.xxh3_64_intdigest(data) * n) >> 64


def _payloads(count: int, *, tag: str = "e") -> list[bytes]:
    return [orjson.dumps({"tag": tag, "i": i}) for i in range(count)]


def _assert_gap_free(storage: RecordingStorage, *, first: dict[int, int] | None = None) -> None:
    """Per shard, batch starts are 0 (or ``first[shard]``), len0, len0 + len1, ..."""
    for shard, runs in storage.starts_by_shard().items():
        expected = (first or {}).get(shard, 0)
        for start, size in runs:
            assert size > 0
            assert start == expected, (shard, runs)
            expected += size


# -- config -----------------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    config = BusConfig()
    assert config.shards >= 1
    assert config.ring_capacity >= 1024
    assert config.ring_capacity & (config.ring_capacity - 1) == 0
    assert config.backpressure == "drop_newest"
    assert config.storage.backend == "memory"
    bus = Bus()
    assert bus.config == config
    assert isinstance(bus.storage, MemoryStorage)


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"shards": 0}, "shards"),
        ({"shards": -1}, "shards"),
        ({"shards": 65_536}, "shards"),
        ({"shards": "4"}, "shards"),
        ({"ring_capacity": 1000}, "ring_capacity"),
        ({"ring_capacity": 512}, "ring_capacity"),
        ({"ring_capacity": 0}, "ring_capacity"),
        ({"ring_capacity": 3072}, "ring_capacity"),
        ({"backpressure": "drop_everything"}, "backpressure"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"sample_rate": float("nan")}, "sample_rate"),
        ({"batch": {"min_size": 0}}, "batch.min_size"),
        ({"batch": {"min_size": 10, "max_size": 5}}, "batch.max_size"),
        ({"batch": {"max_delay_ms": 0}}, "batch.max_delay_ms"),
        ({"batch": {"max_delay_ms": -5}}, "batch.max_delay_ms"),
        ({"batch": {"velocity_window_ms": 0}}, "batch.velocity_window_ms"),
        ({"adapter_timeout_ms": 0}, "adapter_timeout_ms"),
        ({"adapter_timeout_ms": float("inf")}, "adapter_timeout_ms"),
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"storage": {"backend": 3}}, "storage.backend"),
        ({"scaling": {"min_shards": 3, "max_shards": 2}}, "scaling.max_shards"),
        ({"scaling": {"fill_ratio_threshold": 0}}, "scaling.fill_ratio_threshold"),
    ],
)
def test_invalid_config_raises_config_error_with_field_path(
    config: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Bus(config)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        Bus({"shards": 2, "ring_size": 1024})


@pytest.mark.parametrize("capacity", [1024, 2048, 1 << 20])
def test_ring_capacity_powers_of_two_from_1024_are_accepted(capacity: int) -> None:
    assert Bus({"ring_capacity": capacity}).config.ring_capacity == capacity


def test_storage_backend_options_are_validated_with_field_path() -> None:
    with pytest.raises(ConfigError) as info:
        Bus({"storage": {"backend": "memory", "options": {"max_events_per_shard": 0}}})
    assert info.value.path is not None
    assert info.value.path.endswith("max_events_per_shard")
    with pytest.raises(ConfigError) as info:
        Bus({"storage": {"backend": "redex", "options": {}}})
    assert info.value.path is not None
    assert info.value.path.endswith("data_dir")
    assert "missing" in str(info.value)
    with pytest.raises(ConfigError, match="unknown field"):
        Bus({"storage": {"backend": "redex", "options": {"data_dir": "d", "bogus": 1}}})


def test_storage_option_error_path_is_relative_to_the_bus_config() -> None:
    with pytest.raises(ConfigError) as info:
        Bus({"storage": {"backend": "memory", "options": {"max_events_per_shard": 0}}})
    assert info.value.path == "storage.options.max_events_per_shard"


def test_unknown_storage_backend_lists_the_alternatives() -> None:
    with pytest.raises(UnknownPluginError) as info:
        Bus({"storage": {"backend": "nope"}})
    assert info.value.name == "nope"
    assert {"memory", "redex"} <= set(info.value.available)
    assert "available:" in str(info.value)
    assert "memory" in str(info.value)
    assert "redex" in str(info.value)


# -- ingest and routing -----------------------------------------------------------------


def test_ingest_methods_are_synchronous() -> None:
    for name in ("ingest", "ingest_raw", "ingest_batch", "ingest_raw_batch"):
        assert not inspect.iscoroutinefunction(getattr(Bus, name)), name


@pytest.mark.anyio
async def test_ingest_returns_shard_id_and_stores_orjson_bytes() -> None:
    storage = RecordingStorage()
    obj = {"z": 1, "a": [1, 2], "text": "héllo"}
    async with Bus.open({"shards": 4, "batch": FAST_BATCH}, storage=storage) as bus:
        shard = bus.ingest(obj)
        raw = orjson.dumps(obj)  # compact, keys in insertion order
        assert shard == _shard_of(raw, 4)
        assert isinstance(shard, int)
        await bus.flush()
    (event,) = storage.stored()
    assert event.raw == raw
    assert event.shard_id == shard
    assert event.parse() == obj


@pytest.mark.anyio
async def test_ingest_raw_takes_bytes_or_text_verbatim() -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 3, "batch": FAST_BATCH}, storage=storage) as bus:
        a = bus.ingest_raw(b'{"k": 1}')
        b = bus.ingest_raw('{"k": "é"}')
        c = bus.ingest_raw(b"not json at all")  # no validation on the raw path
        assert a == _shard_of(b'{"k": 1}', 3)
        assert b == _shard_of('{"k": "é"}'.encode(), 3)
        assert c == _shard_of(b"not json at all", 3)
        with pytest.raises(TypeError):
            bus.ingest_raw(42)  # type: ignore[arg-type]
        await bus.flush()
    raws = {e.raw for e in storage.stored()}
    assert raws == {b'{"k": 1}', '{"k": "é"}'.encode(), b"not json at all"}


@pytest.mark.anyio
async def test_batch_ingest_returns_count_accepted() -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        assert bus.ingest_batch([{"i": i} for i in range(100)]) == 100
        assert bus.ingest_raw_batch([b"a", "b", b"c"]) == 3
        assert bus.ingest_raw_batch([]) == 0
        assert bus.ingest_batch([]) == 0
        assert bus.ingest_raw_batch(iter([b"x", b"y"])) == 2  # any iterable
    assert storage.delivered == 105
    assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_batch_ingest_keeps_per_shard_order_and_routing() -> None:
    storage = RecordingStorage()
    payloads = _payloads(500)
    async with Bus.open({"shards": 3, "batch": FAST_BATCH}, storage=storage) as bus:
        assert bus.ingest_raw_batch(payloads) == 500
    by_shard: dict[int, list[bytes]] = {}
    for p in payloads:
        by_shard.setdefault(_shard_of(p, 3), []).append(p)
    for shard, expected in by_shard.items():
        got = [b.events for b in storage.batches if b.shard_id == shard]
        assert [e for events in got for e in events] == expected


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8])
@pytest.mark.anyio
async def test_shard_is_lemire_mapping_of_xxh3(n: int) -> None:
    rng = random.Random(n)
    payloads = [rng.randbytes(rng.randint(0, 64)) for _ in range(300)]
    objs = [{"r": rng.random(), "k": rng.randint(0, 10**9)} for _ in range(100)]
    storage = RecordingStorage()
    async with Bus.open({"shards": n, "batch": FAST_BATCH}, storage=storage) as bus:
        assert bus.num_shards == n
        assert bus.shard_ids() == list(range(n))
        for p in payloads:
            expected = (xxhash.xxh3_64_intdigest(p) * n) >> 64
            assert bus.ingest_raw(p) == expected
        for obj in objs:
            assert bus.ingest(obj) == _shard_of(orjson.dumps(obj), n)
    for batch in storage.batches:
        for event in batch.events:
            assert _shard_of(event, n) == batch.shard_id
    if n > 1:  # not `hash % n`: for random payloads the two disagree on most events
        modulo = sum(xxhash.xxh3_64_intdigest(p) % n == _shard_of(p, n) for p in payloads)
        assert modulo < 250


# -- ring backpressure modes ---------------------------------------------------------------


async def _full_ring_bus(
    bus: Any, storage: GatedStorage, *, capacity: int = 1024
) -> tuple[bytes, list[bytes]]:
    """Park the single worker at the closed gate with one event, then fill the ring."""
    first = b'{"first":true}'
    assert bus.ingest_raw(first) == 0
    with anyio.fail_after(5):
        await storage.blocked.wait()
    fill = _payloads(capacity, tag="fill")
    for p in fill:
        assert bus.ingest_raw(p) == 0
    return first, fill


def _one_shard(mode: str, **extra: Any) -> dict[str, Any]:
    return {"shards": 1, "ring_capacity": 1024, "backpressure": mode, "batch": FAST_BATCH} | extra


@pytest.mark.parametrize("batch_path", [False, True], ids=["single", "batch"])
@pytest.mark.anyio
async def test_drop_newest_refuses_and_counts_ring_full(batch_path: bool) -> None:
    storage = GatedStorage()
    async with Bus.open(_one_shard("drop_newest"), storage=storage) as bus:
        first, fill = await _full_ring_bus(bus, storage)
        extra = _payloads(10, tag="extra")
        if batch_path:
            assert bus.ingest_raw_batch(extra) == 0
        else:
            for p in extra:
                with pytest.raises(Backpressure):
                    bus.ingest_raw(p)
        stats = bus.stats()
        assert stats.dropped["ring_full"] == 10
        assert stats.events_dropped == 10
        assert stats.events_refused == 0
        assert stats.events_ingested == 1 + 1024
        storage.release()
    assert storage.delivered_payloads() == [first, *fill]
    stats = bus.stats()
    assert stats.events_dispatched == 1025
    assert not stats.shutdown_was_lossy
    assert_accounted(stats)


@pytest.mark.parametrize("batch_path", [False, True], ids=["single", "batch"])
@pytest.mark.anyio
async def test_drop_oldest_accepts_and_evicts_oldest(batch_path: bool) -> None:
    storage = GatedStorage()
    async with Bus.open(_one_shard("drop_oldest"), storage=storage) as bus:
        first, fill = await _full_ring_bus(bus, storage)
        extra = _payloads(10, tag="extra")
        if batch_path:
            assert bus.ingest_raw_batch(extra) == 10
        else:
            for p in extra:
                assert bus.ingest_raw(p) == 0
        stats = bus.stats()
        assert stats.dropped["evicted_oldest"] == 10
        assert stats.dropped["ring_full"] == 0
        assert stats.events_ingested == 1 + 1024 + 10  # evicted events were accepted
        storage.release()
    # The ten oldest queued events were evicted; the one already at the gate was not.
    assert storage.delivered_payloads() == [first, *fill[10:], *extra]
    stats = bus.stats()
    assert stats.events_dispatched == 1025
    assert stats.events_dropped == 10
    assert_accounted(stats)


@pytest.mark.parametrize("batch_path", [False, True], ids=["single", "batch"])
@pytest.mark.anyio
async def test_fail_producer_refuses_without_counting_a_drop(batch_path: bool) -> None:
    storage = GatedStorage()
    async with Bus.open(_one_shard("fail_producer"), storage=storage) as bus:
        first, fill = await _full_ring_bus(bus, storage)
        extra = _payloads(10, tag="extra")
        if batch_path:
            assert bus.ingest_raw_batch(extra) == 0
        else:
            for p in extra:
                with pytest.raises(Backpressure):
                    bus.ingest_raw(p)
        stats = bus.stats()
        assert stats.events_refused == 10
        assert stats.events_dropped == 0
        assert sum(stats.dropped.values()) == 0
        storage.release()
    assert storage.delivered_payloads() == [first, *fill]
    stats = bus.stats()
    assert stats.events_ingested == stats.events_dispatched == 1025
    assert_accounted(stats)


@pytest.mark.parametrize("batch_path", [False, True], ids=["single", "batch"])
@pytest.mark.anyio
async def test_sample_keeps_about_rate_of_new_events(batch_path: bool) -> None:
    storage = GatedStorage()
    rate = 0.25
    async with Bus.open(_one_shard("sample", sample_rate=rate), storage=storage) as bus:
        first, fill = await _full_ring_bus(bus, storage)
        extra = _payloads(400, tag="extra")
        kept: list[bytes] = []
        if batch_path:
            accepted = bus.ingest_raw_batch(extra)
        else:
            accepted = 0
            for p in extra:
                try:
                    assert bus.ingest_raw(p) == 0
                except Sampled:
                    continue
                kept.append(p)
                accepted += 1
        assert abs(accepted - rate * 400) <= 20
        stats = bus.stats()
        assert stats.dropped["sampled"] == 400 - accepted
        assert stats.dropped["evicted_oldest"] == accepted  # room made by evicting
        assert stats.events_ingested == 1025 + accepted
        storage.release()
    delivered = storage.delivered_payloads()
    assert len(delivered) == 1025
    assert delivered[0] == first
    assert delivered[1 : 1025 - accepted] == fill[accepted:]  # oldest evicted
    if kept:
        assert delivered[1025 - accepted :] == kept
    assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_ring_holds_exactly_capacity_events() -> None:
    storage = GatedStorage()
    async with Bus.open(_one_shard("drop_newest"), storage=storage) as bus:
        await _full_ring_bus(bus, storage)
        with pytest.raises(Backpressure):
            bus.ingest_raw(b"one too many")
        storage.release()


# -- typed errors --------------------------------------------------------------------------


def test_ingest_error_types_and_texts() -> None:
    assert str(Backpressure()) == "backpressure: ring buffer full"
    assert str(Sampled()) == "event dropped due to sampling"
    assert str(Unrouted()) == "event has no routable shard"
    assert str(ShuttingDown()) == "event bus is shutting down"
    for cls in (Backpressure, Sampled, Unrouted, ShuttingDown):
        assert issubclass(cls, IngestError)
    assert issubclass(Backpressure, BackpressureError)
    assert issubclass(ShuttingDown, ClosedError)


def test_ingest_before_start_is_unrouted_and_counted() -> None:
    # No shard is active until the bus is started: the only way to reach Unrouted
    # through the public API (the scaling bounds keep >= 1 active shard).
    bus = Bus({"shards": 2})
    with pytest.raises(Unrouted):
        bus.ingest({"a": 1})
    assert bus.ingest_raw_batch([b"1", b"2"]) == 0
    stats = bus.stats()
    assert stats.dropped["unrouted"] == 3
    assert stats.events_ingested == 0
    assert_accounted(stats)


@pytest.mark.anyio
async def test_every_ingest_after_shutdown_raises_shutting_down() -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 2}, storage=storage) as bus:
        bus.ingest({"before": True})
    assert bus.closed
    with pytest.raises(ShuttingDown):
        bus.ingest({"after": True})
    with pytest.raises(ShuttingDown):
        bus.ingest_raw(b"after")
    with pytest.raises(ShuttingDown):
        bus.ingest_batch([{"after": True}])
    with pytest.raises(ShuttingDown):
        bus.ingest_raw_batch([b"after"])
    with pytest.raises(ShuttingDown):
        await bus.scale_up(1)
    assert storage.delivered == 1
    assert bus.stats().events_ingested == 1


@pytest.mark.anyio
async def test_ingest_while_shutdown_drains_raises_shutting_down() -> None:
    storage = GatedStorage()
    async with Bus.open({"shards": 1, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest({"i": 0})
        await storage.blocked.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.shutdown)
            await wait_until(lambda: "closing" in repr(bus))
            with pytest.raises(ShuttingDown):
                bus.ingest({"i": 1})
            with pytest.raises(ShuttingDown):
                bus.ingest_raw_batch([b"x"])
            assert not bus.closed
            storage.release()
    assert bus.closed
    assert storage.delivered == 1


# -- pipeline: batching, sequences, dedup ids, nonce ---------------------------------------


@pytest.mark.anyio
async def test_batches_form_by_size_then_by_delay() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 10, "max_size": 10, "max_delay_ms": 80.0, "adaptive": False}
    async with Bus.open({"shards": 1, "batch": batch}, storage=storage) as bus:
        t0 = anyio.current_time()
        bus.ingest_raw_batch(_payloads(35))
        await wait_until(lambda: storage.delivered >= 30)
        assert [len(b) for b in storage.batches] == [10, 10, 10]  # by size, at once
        assert anyio.current_time() - t0 < 0.08
        await wait_until(lambda: storage.delivered == 35)  # the tail: by delay
        assert anyio.current_time() - t0 >= 0.08
        assert [len(b) for b in storage.batches] == [10, 10, 10, 5]
    _assert_gap_free(storage)


@pytest.mark.anyio
async def test_adaptive_batches_grow_under_load_and_never_exceed_max_size() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 10, "max_size": 2000, "max_delay_ms": 2.0, "velocity_window_ms": 50.0}
    async with Bus.open({"shards": 1, "batch": batch}, storage=storage) as bus:
        for round_ in range(60):
            bus.ingest_raw_batch(_payloads(1000, tag=f"r{round_}"))
            await anyio.sleep(0.001)
    sizes = [len(b) for b in storage.batches]
    assert sum(sizes) == 60_000
    assert max(sizes) <= 2000
    assert max(sizes) > 100  # the target followed the rate well above min_size
    _assert_gap_free(storage)


@pytest.mark.anyio
async def test_non_adaptive_batches_use_max_size() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 1, "max_size": 64, "max_delay_ms": 1000.0, "adaptive": False}
    async with Bus.open({"shards": 1, "batch": batch}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(640))
        await wait_until(lambda: storage.delivered == 640)
    assert [len(b) for b in storage.batches] == [64] * 10


@pytest.mark.anyio
async def test_sequence_start_is_gap_free_per_shard() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 5, "max_size": 50, "max_delay_ms": 1.0}
    async with Bus.open({"shards": 4, "batch": batch}, storage=storage) as bus:
        rng = random.Random(7)
        for round_ in range(40):
            bus.ingest_raw_batch(_payloads(rng.randint(1, 120), tag=f"r{round_}"))
            for i in range(rng.randint(0, 20)):
                bus.ingest({"single": i, "round": round_})
            await anyio.sleep(rng.choice([0, 0.001, 0.003]))
    runs = storage.starts_by_shard()
    assert set(runs) == {0, 1, 2, 3}
    assert sum(len(r) for r in runs.values()) > 40
    _assert_gap_free(storage)
    for shard, starts in runs.items():
        values = [s for s, _ in starts]
        assert values == sorted(set(values)), shard  # strictly increasing
    assert bus.stats().batches_dispatched == len(storage.batches)
    assert bus.stats().events_dispatched == storage.delivered


@pytest.mark.anyio
async def test_dedup_ids_name_nonce_shard_start_and_index() -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 3, "batch": {"min_size": 7}}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(200))
        nonce = bus.nonce
    assert nonce == process_nonce()
    by_shard = sorted(storage.batches, key=lambda b: b.shard_id)
    expected = [
        f"{nonce:x}:{b.shard_id}:{b.sequence_start}:{i}" for b in by_shard for i in range(len(b))
    ]
    stored = storage.stored()  # shard by shard, write order
    assert [e.dedup_id for e in stored] == expected
    assert len(set(expected)) == 200
    for b in storage.batches:
        assert b.nonce == nonce
        assert Batch(b.shard_id, b.sequence_start, b.nonce, b.events, b.timestamps).dedup_id(1) == (
            f"{nonce:x}:{b.shard_id}:{b.sequence_start}:1"
        )


@pytest.mark.anyio
async def test_producer_nonce_is_persisted_and_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "nonce")
    first = RecordingStorage()
    async with Bus.open({"shards": 2, "producer_nonce_path": path}, storage=first) as bus_a:
        nonce_a = bus_a.nonce
        bus_a.ingest({"a": 1})
        second = RecordingStorage()
        async with Bus.open({"shards": 2, "producer_nonce_path": path}, storage=second) as bus_b:
            assert bus_b.nonce == nonce_a
            bus_b.ingest({"b": 1})
    data = (tmp_path / "nonce").read_bytes()
    assert len(data) == 9
    assert data[0] == 1
    assert int.from_bytes(data[1:], "little") == nonce_a
    assert nonce_a != 0
    assert {b.nonce for b in first.batches + second.batches} == {nonce_a}
    # A later bus on the same file keeps it.
    async with Bus.open({"shards": 1, "producer_nonce_path": path}) as bus_c:
        assert bus_c.nonce == nonce_a


@pytest.mark.anyio
async def test_without_path_buses_share_the_process_nonce(tmp_path: Path) -> None:
    async with Bus.open({"shards": 1}) as a, Bus.open({"shards": 1}) as b:
        assert a.nonce == b.nonce == process_nonce() != 0
    async with Bus.open({"shards": 1, "producer_nonce_path": str(tmp_path / "n")}) as c:
        assert c.nonce != process_nonce()


@pytest.mark.anyio
async def test_insertion_timestamps_strictly_increase_per_shard() -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 1, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(100))
    stamps = [t for b in storage.batches for t in b.timestamps]
    assert all(a < b for a, b in itertools.pairwise(stamps))


# -- dispatch: retries, fatal errors, timeouts --------------------------------------------


@pytest.mark.anyio
async def test_transient_failures_are_retried_until_delivered() -> None:
    storage = FailingStorage(fail_first=3)
    config = {"shards": 1, "retries": 3, "batch": {"min_size": 100, "max_size": 1000}}
    async with Bus.open(config, storage=storage) as bus:
        assert bus.ingest_raw_batch(_payloads(1000)) == 1000
        await bus.flush()
        assert storage.delivered == 1000
    stats = bus.stats()
    assert storage.failures == 3
    assert storage.attempts == len(storage.batches) + 3
    assert stats.events_dispatched == 1000
    assert stats.events_dropped == 0
    assert not stats.shutdown_was_lossy
    assert sorted(storage.delivered_payloads()) == sorted(_payloads(1000))
    _assert_gap_free(storage)
    assert_accounted(stats)


@pytest.mark.anyio
async def test_transient_failures_beyond_retries_are_dropped_as_adapter_failed() -> None:
    storage = FailingStorage(fail_first=1)
    async with Bus.open({"shards": 1, "retries": 0, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(20, tag="lost"))
        await bus.flush()
        bus.ingest_raw_batch(_payloads(5, tag="kept"))
    stats = bus.stats()
    assert storage.attempts == 2
    assert stats.dropped["adapter_failed"] == 20
    assert storage.delivered_payloads() == _payloads(5, tag="kept")
    assert stats.shutdown_was_lossy
    assert_accounted(stats)


@pytest.mark.parametrize("error", [FatalAdapterError, RuntimeError], ids=["fatal", "bug"])
@pytest.mark.anyio
async def test_fatal_error_drops_the_batch_once_without_retry(error: type[Exception]) -> None:
    storage = FailingStorage(fail_first=1, error=error)  # type: ignore[arg-type]
    async with Bus.open({"shards": 1, "retries": 3, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(20, tag="lost"))
        await bus.flush()
        assert storage.attempts == 1  # tried exactly once
        bus.ingest_raw_batch(_payloads(5, tag="kept"))
    stats = bus.stats()
    assert stats.dropped["adapter_rejected"] == 20
    assert stats.events_dispatched == 5
    assert storage.delivered_payloads() == _payloads(5, tag="kept")
    assert stats.shutdown_was_lossy
    # The worker went on numbering after the dropped batch (no sequence reuse).
    assert storage.batches[0].sequence_start == 20
    assert_accounted(stats)


class _SlowFirstWrite(RecordingStorage):
    """The first write sleeps far beyond the bus's adapter timeout."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def _before_write(self, batch: Batch) -> None:
        if self.attempts == 1:
            await anyio.sleep(self.delay)


@pytest.mark.anyio
async def test_write_beyond_adapter_timeout_is_dropped_as_adapter_failed() -> None:
    storage = _SlowFirstWrite(delay=10.0)
    config = {"shards": 1, "adapter_timeout_ms": 30, "batch": FAST_BATCH}
    t0 = anyio.current_time()
    async with Bus.open(config, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(10, tag="lost"))
        await bus.flush()
        bus.ingest_raw_batch(_payloads(3, tag="kept"))
    assert anyio.current_time() - t0 < 5
    stats = bus.stats()
    assert stats.dropped["adapter_failed"] == 10
    assert storage.delivered_payloads() == _payloads(3, tag="kept")
    assert stats.shutdown_was_lossy
    assert_accounted(stats)


# -- flush ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_flush_is_a_delivery_barrier() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 1000, "max_delay_ms": 250.0}
    async with Bus.open({"shards": 4, "batch": batch}, storage=storage) as bus:
        for i in range(50):
            bus.ingest({"i": i})
        t0 = anyio.current_time()
        await bus.flush()
        elapsed = anyio.current_time() - t0
        assert storage.delivered == 50  # measured at the backend, when flush returns
        assert storage.calls["flush"] == 1
        assert elapsed < 0.25  # forced out, not waited for max_delay
        await bus.flush()  # nothing pending: returns
        assert storage.delivered == 50


@pytest.mark.anyio
async def test_flush_waits_for_retries() -> None:
    storage = FailingStorage(fail_first=1)
    async with Bus.open({"shards": 1, "retries": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(30))
        await bus.flush()
        assert storage.delivered == 30
        assert storage.attempts == 2


# -- shutdown ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_with_exit_shuts_down_and_delivers() -> None:
    storage = RecordingStorage()
    batch = {"min_size": 10_000, "max_size": 10_000, "max_delay_ms": 60_000.0}
    async with Bus.open({"shards": 2, "batch": batch}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(300))
        assert repr(bus).startswith("Bus(open")
    assert bus.closed
    assert repr(bus).startswith("Bus(closed")
    assert storage.closed
    assert storage.calls == Counter({"open": 1, "flush": 1, "close": 1})
    assert sorted(storage.delivered_payloads()) == sorted(_payloads(300))
    stats = bus.stats()
    assert not stats.shutdown_was_lossy
    assert stats.events_ingested == stats.events_dispatched == 300
    assert_accounted(stats)


@pytest.mark.anyio
async def test_shutdown_is_idempotent() -> None:
    storage = RecordingStorage()
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_batch([{"i": i} for i in range(10)])
        first = await bus.shutdown()
        second = await bus.shutdown()
        assert first == second
        assert bus.closed
    assert await bus.shutdown() == first
    assert storage.calls["close"] == 1
    assert storage.calls["flush"] == 1
    assert storage.delivered == 10


@pytest.mark.anyio
async def test_concurrent_shutdowns_close_storage_once() -> None:
    storage = SlowStorage(0.005)
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_batch([{"i": i} for i in range(50)])
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.shutdown)
            tg.start_soon(bus.shutdown)
    assert storage.delivered == 50
    assert storage.calls["close"] == 1
    assert storage.calls["flush"] == 1


@pytest.mark.anyio
async def test_slow_backend_loses_nothing_at_shutdown() -> None:
    storage = SlowStorage(0.002)
    batch = {"min_size": 50, "max_size": 100, "max_delay_ms": 5.0}
    payloads = _payloads(5000)
    async with Bus.open({"shards": 4, "batch": batch}, storage=storage) as bus:
        assert bus.ingest_raw_batch(payloads) == 5000
        # shutdown right away: most events are still in rings / pending batches
    assert sorted(storage.delivered_payloads()) == sorted(payloads)
    stats = bus.stats()
    assert not stats.shutdown_was_lossy
    assert stats.events_dispatched == 5000
    _assert_gap_free(storage)
    assert_accounted(stats)


def _produce_until_shutdown(
    bus: Bus, tid: int, started: threading.Barrier, out: list[bytes]
) -> None:
    """A producer thread: ingest until the bus refuses with ShuttingDown; ``out`` gets
    every event whose ingest returned normally."""
    started.wait()
    for i in range(200_000):
        raw = b'{"t":%d,"i":%d}' % (tid, i)
        try:
            if i % 3:
                bus.ingest_raw(raw)
            else:
                bus.ingest(orjson.loads(raw))
        except ShuttingDown:
            return
        except Backpressure:
            continue
        out.append(raw)


@pytest.mark.anyio
async def test_shutdown_racing_four_producer_threads_keeps_every_accepted_event() -> None:
    for _round in range(3):
        storage = RecordingStorage()
        accepted: list[list[bytes]] = [[] for _ in range(4)]
        config = {"shards": 4, "thread_safe": True, "batch": FAST_BATCH}
        async with Bus.open(config, storage=storage) as bus:
            started = threading.Barrier(5)
            threads = [
                threading.Thread(
                    target=_produce_until_shutdown, args=(bus, t, started, accepted[t])
                )
                for t in range(4)
            ]
            for t in threads:
                t.start()
            await anyio.to_thread.run_sync(started.wait)
            await anyio.sleep(0.02)
            stats = await bus.shutdown()
            for t in threads:
                await anyio.to_thread.run_sync(t.join)
        everything = [raw for out in accepted for raw in out]
        assert everything, "the producers never ran"
        stored = Counter(storage.delivered_payloads())
        assert stored == Counter(everything)  # each accepted event exactly once
        assert max(stored.values()) == 1
        assert not stats.shutdown_was_lossy
        assert stats.events_ingested == len(everything)
        assert_accounted(bus.stats())


@pytest.mark.anyio
async def test_shutdown_timeout_counts_what_is_left_as_lossy() -> None:
    storage = GatedStorage()
    async with Bus.open({"shards": 1, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(10))
        await storage.blocked.wait()
        bus.ingest_raw_batch(_payloads(5, tag="queued"))
        stats = await bus.shutdown(timeout=0.05)  # the gate never opens
    assert bus.closed
    assert stats.shutdown_was_lossy
    assert stats.dropped["shutdown"] == 15
    assert stats.events_dispatched == 0
    assert storage.delivered == 0
    assert storage.calls["close"] == 1
    assert_accounted(stats)


@pytest.mark.anyio
async def test_timed_out_shutdown_does_not_cancel_the_caller() -> None:
    storage = GatedStorage()
    reached = False
    async with Bus.open({"shards": 1, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(_payloads(10))
        await storage.blocked.wait()
        await bus.shutdown(timeout=0.05)
        await anyio.lowlevel.checkpoint()
        reached = True
    assert reached


@pytest.mark.anyio
async def test_exception_in_open_block_propagates_unwrapped() -> None:
    with pytest.raises(ValueError, match="boom"):
        await _raise_inside_open(RecordingStorage())


async def _raise_inside_open(storage: RecordingStorage) -> None:
    async with Bus.open({"shards": 1}, storage=storage) as bus:
        bus.ingest({"a": 1})
        raise ValueError("boom")


@pytest.mark.anyio
async def test_exception_in_open_block_still_shuts_down() -> None:
    storage = RecordingStorage()
    with pytest.raises(ValueError, match="boom"):
        await _raise_inside_open(storage)
    assert storage.closed
    assert storage.delivered == 1
    assert storage.calls["close"] == 1


@pytest.mark.anyio
async def test_open_failure_propagates_unwrapped(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await _open_with_nonce(str(tmp_path / "missing" / "nonce"))


async def _open_with_nonce(path: str) -> None:
    async with Bus.open({"shards": 1, "producer_nonce_path": path}):
        pass


# -- restart on the redex backend ------------------------------------------------------


def _redex_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "shards": 2,
        "batch": {"min_size": 16, "max_size": 64, "max_delay_ms": 1.0},
        "producer_nonce_path": str(tmp_path / "nonce"),
        "storage": {"backend": "redex", "options": {"data_dir": str(tmp_path / "data")}},
    } | extra


def _sequences(events: list[Any]) -> dict[tuple[str, int], list[int]]:
    """(nonce, shard) -> producer sequence of each event, in stored order."""
    out: dict[tuple[str, int], list[int]] = {}
    for e in events:
        nonce, shard, start, index = e.dedup_id.split(":")
        assert int(shard) == e.shard_id
        out.setdefault((nonce, int(shard)), []).append(int(start) + int(index))
    return out


@pytest.mark.anyio
async def test_restart_on_redex_continues_sequences_without_duplicates(tmp_path: Path) -> None:
    run1 = _payloads(400, tag="run1")
    run2 = _payloads(400, tag="run2")
    async with Bus.open(_redex_config(tmp_path)) as bus:
        assert bus.ingest_raw_batch(run1) == 400
        await bus.flush()
        first_page = await stored_events(bus)
        cursor = None
        while True:  # the consumer's cursor at the end of run 1
            resp = await bus.poll(1000, cursor)
            cursor = resp.next_cursor
            if not resp.has_more:
                break
        nonce = bus.nonce
    assert not bus.stats().shutdown_was_lossy
    assert len(first_page) == 400

    async with Bus.open(_redex_config(tmp_path)) as bus2:
        assert bus2.nonce == nonce
        assert bus2.ingest_raw_batch(run2) == 400
        await bus2.flush()
        everything = await stored_events(bus2)
        resumed = await bus2.poll(10_000, cursor)  # run-1 cursor resumes in run 2
    assert sorted(e.raw for e in resumed.events) == sorted(run2)
    assert not resumed.has_more
    raws = [e.raw for e in everything]
    assert sorted(raws) == sorted(run1 + run2)
    assert len({e.dedup_id for e in everything}) == 800
    for (n, _shard), seqs in _sequences(everything).items():
        assert n == f"{nonce:x}"
        assert seqs == list(range(len(seqs)))  # continued where run 1 stopped

    # A third bus sees both runs, once each.
    async with Bus.open(_redex_config(tmp_path)) as bus3:
        again = await stored_events(bus3, ordering="insertion_ts")
    assert Counter(e.raw for e in again) == Counter(run1 + run2)


@pytest.mark.anyio
async def test_restart_keeps_earlier_shards_readable_and_their_ids_unused(
    tmp_path: Path,
) -> None:
    run1 = _payloads(300, tag="run1")
    async with Bus.open(_redex_config(tmp_path)) as bus:
        assert await bus.scale_up(2) == [2, 3]
        bus.ingest_raw_batch(run1)
        assert await bus.scale_down(1) == [0]
    async with Bus.open(_redex_config(tmp_path)) as bus2:
        assert bus2.shard_ids() == [0, 1]  # the configured shards, again
        assert await bus2.scale_up(1) == [4]  # 2 and 3 hold stored events: not reused
        run2 = _payloads(100, tag="run2")
        bus2.ingest_raw_batch(run2)
        await bus2.flush()
        everything = await stored_events(bus2)
    assert Counter(e.raw for e in everything) == Counter(run1 + run2)
    assert {2, 3} <= {e.shard_id for e in everything}
    for seqs in _sequences(everything).values():
        assert seqs == list(range(len(seqs)))


@pytest.mark.anyio
async def test_poll_after_shutdown_is_refused(tmp_path: Path) -> None:
    async with Bus.open(_redex_config(tmp_path)) as bus:
        bus.ingest_batch([{"i": i} for i in range(10)])
    with pytest.raises(ClosedError):
        await bus.poll(100)


@pytest.mark.anyio
async def test_flush_after_shutdown_raises_shutting_down() -> None:
    async with Bus.open({"shards": 1}) as bus:
        bus.ingest({"i": 1})
    with pytest.raises(ShuttingDown):
        await bus.flush()


# -- poll through the bus --------------------------------------------------------------


@pytest.mark.parametrize("ordering", ["none", "insertion_ts"])
@pytest.mark.anyio
async def test_poll_resumes_from_every_cursor_without_gaps(ordering: str) -> None:
    storage = RecordingStorage()
    payloads = _payloads(300)
    async with Bus.open({"shards": 3, "batch": FAST_BATCH}, storage=storage) as bus:
        bus.ingest_raw_batch(payloads)
        await bus.flush()
        pages = []
        cursor = None
        while True:
            resp = await bus.poll(37, cursor, ordering=ordering)
            assert len(resp.events) <= 37
            assert resp.truncated_at_per_shard_cap is False
            assert resp.stalled_shards == []
            pages.append(resp)
            cursor = resp.next_cursor
            if not resp.has_more:
                break
        flat = [e for p in pages for e in p.events]
        assert sorted(e.raw for e in flat) == sorted(payloads)
        assert len({(e.shard_id, e.id) for e in flat}) == 300
        if ordering == "insertion_ts":
            for page in pages:
                stamps = [e.insertion_ts for e in page.events]
                assert stamps == sorted(stamps)
        # Resuming from the k-th cursor yields exactly the events after page k.
        consumed = 0
        for page in pages:
            consumed += len(page.events)
            assert page.next_cursor is not None  # every page made progress
            rest = []
            c = page.next_cursor
            while True:
                r = await bus.poll(1000, c, ordering=ordering)
                rest.extend(r.events)
                c = r.next_cursor
                if not r.has_more:
                    break
            assert sorted(e.raw for e in rest) == sorted(e.raw for e in flat[consumed:])


@pytest.mark.anyio
async def test_poll_response_fields_and_filter() -> None:
    async with Bus.open({"shards": 2, "batch": FAST_BATCH}) as bus:
        empty = await bus.poll(10)
        assert empty.events == []
        assert empty.next_cursor is None
        assert empty.has_more is False
        for i in range(30):
            bus.ingest({"type": "click" if i % 3 == 0 else "view", "i": i})
        await bus.flush()
        resp = await bus.poll(5)
        assert len(resp.events) == 5
        assert resp.has_more is True
        assert isinstance(resp.next_cursor, str)
        assert resp.truncated_at_per_shard_cap is False
        assert resp.stalled_shards == []
        assert (await bus.poll(0)).events == []
        big = await bus.poll(50_000, shards=[0])
        assert big.truncated_at_per_shard_cap is True
        clicks = []
        cursor = None
        while True:
            r = await bus.poll(3, cursor, {"path": "type", "value": "click"})
            clicks.extend(e.parse()["i"] for e in r.events)
            cursor = r.next_cursor
            if not r.has_more:
                break
        assert sorted(clicks) == list(range(0, 30, 3))
        with pytest.raises(ConfigError):
            await bus.poll(10, ordering="random")


@pytest.mark.anyio
async def test_stats_account_for_every_event() -> None:
    storage = GatedStorage()
    config = _one_shard("drop_newest")
    async with Bus.open(config, storage=storage) as bus:
        await _full_ring_bus(bus, storage)
        assert bus.ingest_raw_batch(_payloads(5, tag="x")) == 0
        storage.release()
        await bus.flush()
        bus.ingest_batch([{"after": i} for i in range(7)])
    stats = bus.stats()
    assert stats.events_ingested == 1025 + 7
    assert stats.events_dispatched == 1032
    assert stats.batches_dispatched == len(storage.batches)
    assert stats.active_shards == 1
    assert_accounted(stats)
