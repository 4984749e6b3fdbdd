"""PollMerger over the real in-process MemoryStorage: the reference's poll algorithm,
its pinned invariants, and no gaps / no duplicates when paging from any cursor."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from net_core.bus._memory import MemoryStorage
from net_core.bus._storage import Batch, ShardPollResult, StorageBackend, StoredEvent
from net_core.config import ConfigError
from net_core.consumer import (
    PER_SHARD_FETCH_CAP,
    CompositeCursor,
    Filter,
    InvalidCursor,
    PollMerger,
    PollRequest,
    PollResponse,
)
from net_core.errors import TransientAdapterError

pytestmark = pytest.mark.anyio


class Store:
    """A MemoryStorage filled through write_batch, remembering what went in."""

    def __init__(self, backend: Delegating | None = None) -> None:
        self.memory = backend.inner if backend is not None else MemoryStorage()
        self.backend: StorageBackend = backend if backend is not None else self.memory
        self._next_seq: dict[int, int] = {}
        self._clock: dict[int, int] = {}

    async def add(
        self, shard: int, events: Sequence[bytes | dict[str, Any]], timestamps: Sequence[int] = ()
    ) -> None:
        raw = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in events]
        if not timestamps:
            start = self._clock.get(shard, 0)
            timestamps = [start + 10 * (i + 1) for i in range(len(raw))]
        if timestamps:
            self._clock[shard] = max(self._clock.get(shard, 0), timestamps[-1])
        seq = self._next_seq.get(shard, 0)
        self._next_seq[shard] = seq + len(raw)
        await self.memory.write_batch(Batch(shard, seq, 7, raw, list(timestamps)))

    def merger(self, live: Sequence[int] | None = None) -> PollMerger:
        shards = list(live) if live is not None else sorted(self._next_seq)
        return PollMerger(self.backend, lambda: shards)


class Delegating(StorageBackend):
    """A real backend that stores in a MemoryStorage and records every read."""

    name: ClassVar[str] = "delegating"

    def __init__(self, inner: MemoryStorage) -> None:
        self.inner = inner
        self.reads: list[tuple[int, str | None, int]] = []

    async def write_batch(self, batch: Batch) -> None:
        await self.inner.write_batch(batch)

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        self.reads.append((shard_id, after, limit))
        return await self.inner.read_shard(shard_id, after, limit)


class Stalling(Delegating):
    """Shard ``stalled`` claims more events but never returns any."""

    def __init__(self, inner: MemoryStorage, stalled: int) -> None:
        super().__init__(inner)
        self.stalled = stalled

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        if shard_id == self.stalled:
            return ShardPollResult([], None, has_more=True)
        return await super().read_shard(shard_id, after, limit)


class Failing(Delegating):
    """Reads of the shards in ``failing`` raise ``error``."""

    def __init__(self, inner: MemoryStorage, failing: set[int], error: Exception) -> None:
        super().__init__(inner)
        self.failing = failing
        self.error = error

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        if shard_id in self.failing:
            await anyio.lowlevel.checkpoint()
            raise self.error
        return await super().read_shard(shard_id, after, limit)


class Slow(Delegating):
    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        await anyio.sleep(10)
        return await super().read_shard(shard_id, after, limit)


def ids(response: PollResponse) -> list[tuple[int, str]]:
    return [(e.shard_id, e.id) for e in response.events]


def decoded(cursor: str | None) -> dict[int, str]:
    assert cursor is not None
    return dict(CompositeCursor.decode(cursor))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def drain(merger: PollMerger, **request: Any) -> list[StoredEvent]:
    """Page until has_more is false; asserts the loop ends."""
    out: list[StoredEvent] = []
    cursor = request.pop("cursor", None)
    for _ in range(10_000):
        page = await merger.poll(PollRequest(cursor=cursor, **request))
        out.extend(page.events)
        cursor = page.next_cursor
        if not page.has_more:
            return out
    pytest.fail("paging did not terminate")


# -- empty requests ---------------------------------------------------------------------


async def test_limit_zero_is_empty() -> None:
    store = Store()
    await store.add(0, [{"i": 1}])
    merger = store.merger()
    assert await merger.poll(PollRequest(0)) == PollResponse.empty()
    cursor = CompositeCursor({0: "0"}).encode()
    response = await merger.poll(PollRequest(0, cursor))
    assert response.events == []
    assert response.next_cursor == cursor  # no progress: the cursor comes back verbatim
    assert not response.has_more


async def test_explicit_empty_shard_list_is_empty() -> None:
    store = Store()
    await store.add(0, [{"i": 1}])
    response = await store.merger().poll(PollRequest(10, shards=[]))
    assert response == PollResponse.empty()


async def test_no_live_shards_is_empty() -> None:
    store = Store()
    await store.add(0, [{"i": 1}])
    assert await store.merger(live=[]).poll(PollRequest(10)) == PollResponse.empty()


# -- limits ----------------------------------------------------------------------------


async def test_limit_two_of_three_events() -> None:
    store = Store()
    await store.add(0, [{"i": i} for i in range(3)])
    merger = store.merger()
    first = await merger.poll(PollRequest(2))
    assert ids(first) == [(0, "1"), (0, "2")]
    assert first.has_more
    assert decoded(first.next_cursor) == {0: "2"}
    second = await merger.poll(PollRequest(2, first.next_cursor))
    assert ids(second) == [(0, "3")]
    assert not second.has_more


async def test_limit_below_shard_count_uses_ceil_division() -> None:
    inner = MemoryStorage()
    backend = Delegating(inner)
    store = Store(backend)
    for shard in range(8):
        await store.add(shard, [{"s": shard, "i": i} for i in range(3)])
    response = await store.merger().poll(PollRequest(3))
    assert len(response.events) == 3
    assert response.has_more
    assert {limit for _, _, limit in backend.reads} == {2}  # max(1, ceil(3/8)) * 2


@pytest.mark.parametrize(
    ("limit", "shards", "filtered", "per_shard"),
    [
        (3, 2, False, 4),  # observed on 0.18: XRANGE COUNT 5 = 4 + 1
        (100, 2, True, 150),
        (50_000, 1, False, PER_SHARD_FETCH_CAP),
        (1, 2, True, 3),
        (1, 1, False, 2),
    ],
)
async def test_per_shard_fetch_size(
    limit: int, shards: int, filtered: bool, per_shard: int
) -> None:
    backend = Delegating(MemoryStorage())
    store = Store(backend)
    for shard in range(shards):
        await store.add(shard, [{"i": 0}])
    filt = {"path": "i", "value": 0} if filtered else None
    await store.merger().poll(PollRequest(limit, filter=filt))
    assert [limit_ for _, _, limit_ in backend.reads] == [per_shard] * shards


@pytest.mark.parametrize(
    ("limit", "filtered", "truncated"),
    [
        (50_000, False, True),
        (5_000, False, False),  # 5000 * 2 is exactly the cap
        (5_001, False, True),
        (100, False, False),
        (3_333, True, False),
        (3_334, True, True),  # 3334 * 3 > cap
    ],
)
async def test_truncated_at_per_shard_cap(limit: int, filtered: bool, truncated: bool) -> None:
    store = Store()
    await store.add(0, [{"i": 1}])
    filt = {"path": "i", "value": 1} if filtered else None
    response = await store.merger().poll(PollRequest(limit, filter=filt))
    assert response.truncated_at_per_shard_cap is truncated
    assert len(response.events) == 1


async def test_paging_a_large_shard_like_the_reference() -> None:
    # Observed on 0.18: poll(7000) over 25,000 events paged 7000, 7000, 7000, 4000.
    store = Store()
    await store.add(0, [b"{}"] * 25_000)
    merger = store.merger()
    sizes = []
    cursor = None
    while True:
        page = await merger.poll(PollRequest(7000, cursor))
        sizes.append((len(page), page.has_more))
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert sizes == [(7000, True), (7000, True), (7000, True), (4000, False)]


async def test_limit_above_the_cap_returns_at_most_the_cap_per_shard() -> None:
    store = Store()
    await store.add(0, [b"{}"] * (PER_SHARD_FETCH_CAP + 5))
    response = await store.merger().poll(PollRequest(50_000))
    assert len(response) == PER_SHARD_FETCH_CAP
    assert response.has_more
    assert response.truncated_at_per_shard_cap


# -- pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ["none", "insertion_ts"])
async def test_pagination_across_shards_has_no_gaps_or_duplicates(ordering: str) -> None:
    store = Store()
    for shard in range(3):
        await store.add(shard, [{"s": shard, "i": i} for i in range(7 + 3 * shard)])
    merger = store.merger()
    for limit in (1, 2, 3, 5, 100):
        got = await drain(merger, limit=limit, ordering=ordering)
        keys = [(e.shard_id, int(e.id)) for e in got]
        assert len(keys) == len(set(keys)) == 7 + 10 + 13
        for shard in range(3):
            mine = [pos for s, pos in keys if s == shard]
            assert mine == sorted(mine)


async def test_ordering_none_follows_the_shard_list() -> None:
    store = Store()
    await store.add(0, [{"s": 0}], [5])
    await store.add(1, [{"s": 1}], [1])
    response = await store.merger().poll(PollRequest(10, shards=[1, 0]))
    assert ids(response) == [(1, "1"), (0, "1")]


async def test_insertion_ts_ties_break_by_shard_then_position() -> None:
    store = Store()
    await store.add(1, [{"s": 1, "i": 0}, {"s": 1, "i": 1}, {"s": 1, "i": 2}], [10, 10, 20])
    await store.add(0, [{"s": 0, "i": 0}, {"s": 0, "i": 1}], [10, 20])
    merger = store.merger(live=[1, 0])
    expected = [(0, "1"), (1, "1"), (1, "2"), (0, "2"), (1, "3")]
    for _ in range(3):  # deterministic across polls
        response = await merger.poll(PollRequest(10, ordering="insertion_ts"))
        assert ids(response) == expected


async def test_insertion_ts_with_timestamps_that_restart() -> None:
    # Timestamps are per bus instance: after a restart a shard's clock starts over.
    store = Store()
    await store.add(0, [{"i": i} for i in range(4)], [100, 200, 5, 6])
    await store.add(1, [{"i": i} for i in range(4)], [50, 150, 250, 350])
    merger = store.merger()
    for limit in (1, 2, 3):
        got = await drain(merger, limit=limit, ordering="insertion_ts")
        keys = [(e.shard_id, int(e.id)) for e in got]
        assert sorted(keys) == sorted({(s, p) for s in (0, 1) for p in range(1, 5)})
        assert len(keys) == 8


# -- cursors --------------------------------------------------------------------------------


async def test_no_progress_echoes_the_cursor_verbatim() -> None:
    store = Store()
    await store.add(0, [{"i": 1}, {"i": 2}])
    merger = store.merger()
    # A hand-made cursor at the end, with spaces in its JSON (0.18 returns it as is).
    cursor = b64('{ "0" : "2" }')
    response = await merger.poll(PollRequest(10, cursor))
    assert response.events == []
    assert response.next_cursor == cursor
    assert not response.has_more
    # Without a cursor and without progress there is nothing to return.
    assert (await store.merger(live=[5]).poll(PollRequest(10))).next_cursor is None


async def test_a_composite_cursor_object_is_accepted() -> None:
    store = Store()
    await store.add(0, [{"i": 1}, {"i": 2}])
    response = await store.merger().poll(PollRequest(10, CompositeCursor({0: "1"})))
    assert ids(response) == [(0, "2")]


async def test_positions_of_shards_not_polled_are_carried_through() -> None:
    store = Store()
    await store.add(0, [{"i": 1}, {"i": 2}, {"i": 3}])
    await store.add(1, [{"i": 1}])
    cursor = CompositeCursor({0: "1", 5: "9", 1: "1"}).encode()
    response = await store.merger().poll(PollRequest(10, cursor, shards=[0]))
    assert decoded(response.next_cursor) == {0: "3", 1: "1", 5: "9"}


async def test_invalid_cursor_raises_before_reading() -> None:
    backend = Delegating(MemoryStorage())
    merger = PollMerger(backend, lambda: [0])
    with pytest.raises(InvalidCursor, match="Invalid padding"):
        await merger.poll(PollRequest(10, "e30"))
    with pytest.raises(InvalidCursor):
        await merger.poll(PollRequest(0, "!!!!"))
    assert backend.reads == []


async def test_default_shards_are_the_live_set_at_call_time() -> None:
    store = Store()
    for shard in range(3):
        await store.add(shard, [{"s": shard}])
    live = [0, 1, 2]
    merger = PollMerger(store.memory, lambda: live)
    live[:] = [1, 2]  # scaled down: shard 0 is gone
    response = await merger.poll(PollRequest(10))
    assert sorted(ids(response)) == [(1, "1"), (2, "1")]
    live[:] = [0]
    response = await merger.poll(PollRequest(10, response.next_cursor))
    assert ids(response) == [(0, "1")]
    assert decoded(response.next_cursor) == {0: "1", 1: "1", 2: "1"}


async def test_repeated_shards_are_read_once() -> None:
    backend = Delegating(MemoryStorage())
    store = Store(backend)
    await store.add(0, [{"i": 1}, {"i": 2}])
    response = await store.merger().poll(PollRequest(10, shards=[0, 0, 0]))
    assert ids(response) == [(0, "1"), (0, "2")]
    assert [shard for shard, _, _ in backend.reads] == [0]


# -- filters -------------------------------------------------------------------------------


async def test_filtered_poll_advances_past_fully_filtered_shards() -> None:
    store = Store()
    await store.add(0, [{"type": "noise"}] * 20)
    await store.add(1, [{"type": "noise"}] * 5 + [{"type": "token"}])
    merger = store.merger()
    tokens = {"path": "type", "value": "token"}
    first = await merger.poll(PollRequest(1, filter=tokens))
    # 3 per shard: shard 1's token is not reached yet, everything read was noise
    assert first.events == []
    assert first.has_more
    assert decoded(first.next_cursor) == {0: "3", 1: "3"}
    got = await drain(merger, limit=1, filter=tokens, cursor=first.next_cursor)
    assert ids(PollResponse(got, None, False)) == [(1, "6")]


async def test_everything_filtered_still_returns_a_cursor() -> None:
    store = Store()
    await store.add(0, [{"type": "noise"}] * 3)
    response = await store.merger().poll(PollRequest(10, filter={"path": "type", "value": "x"}))
    assert response.events == []
    assert decoded(response.next_cursor) == {0: "3"}
    assert response.has_more  # everything read was filtered out: poll again
    again = await store.merger().poll(
        PollRequest(10, response.next_cursor, filter={"path": "type", "value": "x"})
    )
    assert again.next_cursor == response.next_cursor
    assert not again.has_more


@pytest.mark.parametrize("ordering", ["none", "insertion_ts"])
async def test_filter_and_truncation_never_strand_matches(ordering: str) -> None:
    store = Store()
    for shard in range(3):
        events = [{"s": shard, "i": i, "type": "b" if i % 2 else "a"} for i in range(6)]
        await store.add(shard, events)
    merger = store.merger()
    wanted = {"path": "type", "value": "b"}
    for limit in (1, 2, 4):
        got = await drain(merger, limit=limit, filter=wanted, ordering=ordering)
        keys = sorted((e.shard_id, int(e.id)) for e in got)
        assert keys == [(s, p) for s in range(3) for p in (2, 4, 6)]


async def test_filtered_insertion_ts_poll_like_the_reference() -> None:
    # 0.18: poll(1, type == "b", insertion_ts) over 2 shards returned the earliest
    # match and a cursor only for the shard it came from.
    store = Store()
    await store.add(0, [{"type": "a"}, {"type": "b"}], [1, 3])
    await store.add(1, [{"type": "b"}, {"type": "a"}], [2, 4])
    wanted = {"path": "type", "value": "b"}
    merger = store.merger()
    response = await merger.poll(PollRequest(1, filter=wanted, ordering="insertion_ts"))
    assert ids(response) == [(1, "1")]
    assert decoded(response.next_cursor) == {1: "2"}
    assert response.has_more
    rest = await drain(merger, limit=1, filter=wanted, cursor=response.next_cursor)
    assert ids(PollResponse(rest, None, False)) == [(0, "2")]


async def test_unparseable_events_are_dropped_from_filtered_polls_only() -> None:
    store = Store()
    await store.add(0, [b"not json", {"k": 1}, b"{broken", {"k": 2}, b"\xff"])
    merger = store.merger()
    everything = await merger.poll(PollRequest(10))
    assert len(everything) == 5
    for limit in (1, 2, 10):
        matching = await drain(merger, limit=limit, filter={"$not": {"path": "k", "value": 9}})
        assert [e.raw for e in matching] == [b'{"k": 1}', b'{"k": 2}']


async def test_filter_forms_in_requests() -> None:
    store = Store()
    await store.add(0, [{"k": 1}, {"k": 2}])
    merger = store.merger()
    for filt in ('{"path":"k","value":2}', b'{"path":"k","value":2}', {"path": "k", "value": 2}):
        assert ids(await merger.poll(PollRequest(10, filter=filt))) == [(0, "2")]
    assert ids(await merger.poll(PollRequest(10, filter=Filter.eq("k", 2.0)))) == []


# -- stalled and failed shards ---------------------------------------------------------------


async def test_stalled_shard_suppresses_has_more_and_is_reported() -> None:
    inner = MemoryStorage()
    store = Store(Stalling(inner, stalled=1))
    await store.add(0, [{"i": 1}])
    merger = PollMerger(store.backend, lambda: [0, 1])
    first = await merger.poll(PollRequest(10))
    assert ids(first) == [(0, "1")]
    assert first.has_more  # shard 1 claims more and the poll progressed
    assert first.stalled_shards == []
    second = await merger.poll(PollRequest(10, first.next_cursor))
    assert second.events == []
    assert not second.has_more  # no progress: do not spin the client
    assert second.stalled_shards == [1]
    assert second.next_cursor == first.next_cursor
    alone = await PollMerger(store.backend, lambda: [1]).poll(PollRequest(10))
    assert alone.stalled_shards == [1]
    assert alone.next_cursor is None
    assert not alone.has_more


async def test_failed_shard_is_skipped_and_reported() -> None:
    inner = MemoryStorage()
    failing = Failing(inner, {1}, TransientAdapterError("transient error: timeout"))
    store = Store(failing)
    for shard in range(3):
        await store.add(shard, [{"s": shard, "i": i} for i in range(2)])
    merger = PollMerger(failing, lambda: [0, 1, 2])
    start = CompositeCursor({1: "1"}).encode()
    response = await merger.poll(PollRequest(10, start))
    assert sorted(ids(response)) == [(0, "1"), (0, "2"), (2, "1"), (2, "2")]
    assert response.failed_shards == [1]
    assert decoded(response.next_cursor) == {0: "2", 1: "1", 2: "2"}
    failing.failing.clear()  # the shard recovers: its events were not skipped
    later = await merger.poll(PollRequest(10, response.next_cursor))
    assert ids(later) == [(1, "2")]
    assert later.failed_shards == []


async def test_all_shards_failing_makes_no_progress() -> None:
    failing = Failing(MemoryStorage(), {0, 1}, TransientAdapterError("down"))
    store = Store(failing)
    await store.add(0, [{"i": 1}])
    response = await PollMerger(failing, lambda: [0, 1]).poll(PollRequest(10, "e30="))
    assert response.events == []
    assert response.failed_shards == [0, 1]
    assert response.next_cursor == "e30="
    assert not response.has_more


async def test_errors_outside_the_adapter_family_propagate_unwrapped() -> None:
    failing = Failing(MemoryStorage(), {1}, RuntimeError("bug in a backend"))
    with pytest.raises(RuntimeError, match="bug in a backend"):
        await PollMerger(failing, lambda: [0, 1]).poll(PollRequest(10))


async def test_a_cancelled_poll_changes_nothing() -> None:
    inner = MemoryStorage()
    store = Store(Slow(inner))
    await store.add(0, [{"i": 1}])
    with anyio.move_on_after(0.05) as scope:
        await PollMerger(store.backend, lambda: [0, 1]).poll(PollRequest(10))
    assert scope.cancelled_caught
    assert ids(await PollMerger(inner, lambda: [0, 1]).poll(PollRequest(10))) == [(0, "1")]


# -- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": -1},
        {"limit": 2**64},
        {"limit": 1.5},
        {"limit": True},
        {"limit": 1, "ordering": "newest"},
        {"limit": 1, "shards": [65_536]},
        {"limit": 1, "shards": [-1]},
        {"limit": 1, "shards": ["0"]},
        {"limit": 1, "shards": 3},
        {"limit": 1, "cursor": 5},
    ],
)
def test_request_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        PollRequest(**kwargs)


def test_request_filter_is_parsed_eagerly() -> None:
    with pytest.raises(Exception, match="invalid filter"):
        PollRequest(1, filter="{}")
    assert PollRequest(1, filter='{"path":"a","value":1}').filter == Filter.eq("a", 1)
    assert PollRequest(1, shards=[3, 1]).shards == (3, 1)


def test_response_is_a_sequence_of_events() -> None:
    event = StoredEvent("1", b"{}", 1, 0)
    response = PollResponse([event], "e30=", has_more=False)
    assert len(response) == 1
    assert list(response) == [event]
    assert response.stalled_shards == response.failed_shards == []


# -- the paging property ----------------------------------------------------------------------

FILTERS = [
    None,
    {"path": "k", "value": 1},
    {"$not": {"path": "k", "value": 1}},
    {"$or": [{"path": "k", "value": 0}, {"path": "k", "value": 3}]},
    {"$and": []},
    {"path": "k", "value": 1.0},
]


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    shard_ids = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4, unique=True))
    shards = {}
    for shard in shard_ids:
        size = draw(st.integers(0, 25))
        keys = draw(st.lists(st.integers(0, 3), min_size=size, max_size=size))
        junk = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        steps = draw(st.lists(st.integers(1, 3), min_size=size, max_size=size))
        cuts = draw(st.lists(st.integers(0, size), max_size=2))
        shards[shard] = (keys, junk, steps, sorted(set(cuts)))
    return {
        "shards": shards,
        "limit": draw(st.integers(1, 12)),
        "filter": draw(st.sampled_from(FILTERS)),
        "ordering": draw(st.sampled_from(["none", "insertion_ts"])),
        "order": draw(st.permutations(shard_ids)),
    }


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(layouts())
async def test_paging_yields_exactly_the_matching_events(layout: dict[str, Any]) -> None:
    store = Store()
    expected: dict[int, list[str]] = {}
    total = 0
    spec = layout["filter"]
    filt = Filter.parse(spec) if spec is not None else None
    for shard, (keys, junk, steps, cuts) in layout["shards"].items():
        raw = [
            b"junk" if bad else json.dumps({"k": k, "s": shard}).encode()
            for k, bad in zip(keys, junk, strict=True)
        ]
        stamps, clock = [], 0
        for step in steps:
            clock += step
            stamps.append(clock)
        bounds = [0, *cuts, len(raw)]
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                await store.add(shard, raw[lo:hi], stamps[lo:hi])
        total += len(raw)
        expected[shard] = [
            str(i + 1) for i, r in enumerate(raw) if filt is None or filt.matches_raw(r) is True
        ]
    merger = PollMerger(store.memory, lambda: layout["order"])
    seen: dict[int, list[str]] = {shard: [] for shard in layout["shards"]}
    cursor: str | None = None
    for _ in range(total + 10):
        page = await merger.poll(
            PollRequest(layout["limit"], cursor, filter=spec, ordering=layout["ordering"])
        )
        assert len(page.events) <= layout["limit"]
        assert page.stalled_shards == page.failed_shards == []
        if layout["ordering"] == "insertion_ts":
            keys = [(e.insertion_ts, e.shard_id, int(e.id)) for e in page.events]
            assert keys == sorted(keys)
        for event in page.events:
            seen[event.shard_id].append(event.id)
        assert page.next_cursor is not None or cursor is None
        cursor = page.next_cursor
        if not page.has_more:
            break
    else:
        pytest.fail("paging did not terminate")
    assert seen == expected  # same events, per-shard order, no duplicates
    # Everything is consumed: another poll returns nothing and keeps the cursor.
    final = await merger.poll(
        PollRequest(layout["limit"], cursor, filter=spec, ordering=layout["ordering"])
    )
    assert final.events == []
    assert not final.has_more
    assert final.next_cursor == cursor


class _HangingShardStorage(StorageBackend):
    """Shard 1 never answers (a stuck backend); shard 0 is a real memory store."""

    name = "hanging"

    def __init__(self) -> None:
        self.inner = MemoryStorage()

    async def write_batch(self, batch: Batch) -> None:
        await self.inner.write_batch(batch)

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        if shard_id == 1:
            await anyio.sleep_forever()
        return await self.inner.read_shard(shard_id, after, limit)


@pytest.mark.anyio
async def test_a_hanging_shard_read_times_out_as_a_failed_shard() -> None:
    backend = _HangingShardStorage()
    await backend.write_batch(Batch(0, 0, 7, [b'{"a":1}'], [1]))
    merger = PollMerger(backend, lambda: [0, 1], read_timeout=0.05)
    with anyio.fail_after(5):
        response = await merger.poll(PollRequest(limit=10))
    assert [e.raw for e in response.events] == [b'{"a":1}']
    assert response.failed_shards == [1]
