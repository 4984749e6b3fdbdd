"""Property: random interleavings of ingest (single and batch), scale up/down, flush,
polling with a cursor the consumer keeps across steps, and restarts (shutdown + reopen on
the same redex data dir and nonce file) never lose or duplicate an event.

At the end, every event whose ingest returned normally was reported delivered by the
buses' stats, and the consumer, resuming from its own cursor through every restart, has
read each of them exactly once, with gap-free producer sequences per shard.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from net_core.bus import Bus, StoredEvent
from net_core.bus._mapper import AtMinShards
from tests.bus.backends import assert_accounted

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.integers(1, 30)),
        st.tuples(st.just("batch"), st.integers(0, 120)),
        st.tuples(st.just("up"), st.integers(1, 2)),
        st.tuples(st.just("down"), st.integers(1, 2)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("poll"), st.integers(1, 60)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=30,
)


class _Run:
    """One example: the bus of the moment, what producers got accepted, what the
    consumer read."""

    def __init__(self, root: Path, batch: dict[str, Any], ordering: str) -> None:
        self.config = {
            "shards": 2,
            "ring_capacity": 1 << 16,
            "batch": batch,
            "producer_nonce_path": str(root / "nonce"),
            "storage": {"backend": "redex", "options": {"data_dir": str(root / "data")}},
        }
        self.ordering = ordering
        self.stack: AsyncExitStack | None = None
        self.bus: Any = None
        self.accepted: list[bytes] = []
        self.delivered = 0  # events_dispatched summed over the closed buses
        self.cursor: str | None = None
        self.consumed: list[StoredEvent] = []
        self.seen: set[tuple[int, str]] = set()
        self.counter = 0

    async def open(self) -> None:
        self.stack = AsyncExitStack()
        self.bus = await self.stack.enter_async_context(Bus.open(self.config))

    async def close(self) -> None:
        assert self.stack is not None
        await self.stack.aclose()
        stats = self.bus.stats()
        assert self.bus.closed
        assert not stats.shutdown_was_lossy
        assert stats.events_dropped == 0
        assert stats.events_ingested == stats.events_dispatched
        assert_accounted(stats)
        self.delivered += stats.events_dispatched
        self.stack = None

    def payload(self) -> bytes:
        self.counter += 1
        return orjson.dumps({"n": self.counter})

    async def poll(self, limit: int) -> bool:
        resp = await self.bus.poll(limit, self.cursor, ordering=self.ordering)
        assert len(resp.events) <= limit
        assert resp.stalled_shards == []
        assert resp.failed_shards == []
        for event in resp.events:
            key = (event.shard_id, event.id)
            assert key not in self.seen, f"read twice: {event}"
            self.seen.add(key)
            self.consumed.append(event)
        if resp.next_cursor is not None:
            self.cursor = resp.next_cursor
        else:
            assert self.cursor is None
            assert not resp.events
        return bool(resp.has_more)

    async def step(self, op: str, arg: int) -> None:
        bus = self.bus
        if op == "ingest":
            for _ in range(arg):
                p = self.payload()
                shard = bus.ingest(orjson.loads(p))
                assert shard in bus.shard_ids()
                self.accepted.append(p)
        elif op == "batch":
            items = [self.payload() for _ in range(arg)]
            assert bus.ingest_raw_batch(items) == arg
            self.accepted.extend(items)
        elif op == "up":
            before = set(bus.shard_ids())
            new = await bus.scale_up(arg)
            assert len(new) == arg
            assert not before & set(new)
            assert set(bus.shard_ids()) == before | set(new)
        elif op == "down":
            if bus.num_shards == 1:
                with pytest.raises(AtMinShards):
                    await bus.scale_down(arg)
            else:
                gone = await bus.scale_down(arg)
                assert gone
                assert not set(gone) & set(bus.shard_ids())
                assert bus.num_shards >= 1
        elif op == "flush":
            await bus.flush()
            assert bus.stats().events_dispatched == bus.stats().events_ingested
        elif op == "poll":
            await self.poll(arg)
        elif op == "restart":
            await self.close()
            await self.open()
        else:  # pragma: no cover
            raise AssertionError(op)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=_ops,
    min_size=st.integers(1, 64),
    max_delay_ms=st.sampled_from([0.5, 1.0, 5.0]),
    ordering=st.sampled_from(["none", "insertion_ts"]),
)
@pytest.mark.anyio
async def test_random_interleavings_never_lose_or_duplicate(
    anyio_backend: str,
    ops: list[tuple[str, int]],
    min_size: int,
    max_delay_ms: float,
    ordering: str,
) -> None:
    batch = {"min_size": min_size, "max_size": max(min_size, 128), "max_delay_ms": max_delay_ms}
    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(Path(tmp), batch, ordering)
        await run.open()
        try:
            for op, arg in ops:
                await run.step(op, arg)
        finally:
            await run.close()
        # Everything accepted was delivered (by the buses' own count)...
        assert run.delivered == len(run.accepted)
        # ...and a consumer resuming from its cursor on a fresh bus reads each once.
        await run.open()
        try:
            while await run.poll(50):
                pass
            assert not await run.poll(50)  # drained: nothing more
        finally:
            await run.close()
    raws = Counter(e.raw for e in run.consumed)
    assert raws == Counter(run.accepted)
    assert max(raws.values(), default=1) == 1
    dedup_ids = [e.dedup_id for e in run.consumed]
    assert len(set(dedup_ids)) == len(dedup_ids)
    # Producer sequences per (nonce, shard) are gap-free across scaling and restarts.
    sequences: dict[tuple[str, int], list[int]] = {}
    for e in run.consumed:
        assert e.dedup_id is not None
        nonce, shard, start, index = e.dedup_id.split(":")
        assert int(shard) == e.shard_id
        sequences.setdefault((nonce, e.shard_id), []).append(int(start) + int(index))
    assert len({nonce for nonce, _ in sequences}) <= 1
    for key, seqs in sequences.items():
        assert sorted(seqs) == list(range(len(seqs))), key
