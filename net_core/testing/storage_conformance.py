"""The conformance suite of bus storage backends, shared by every backend and plugin.

Subclass :class:`StorageBackendConformance` once per backend, name the subclass
``Test...`` so pytest collects it, and say how to build the backend::

    from net_core.testing.storage_conformance import StorageBackendConformance

    class TestMyStorage(StorageBackendConformance):
        supports_restart = True  # the backend keeps its data across close/open

        async def open_backend(self) -> StorageBackend:
            backend = MyStorage(MyConfig(path=str(self.tmp_path / "data")))
            await backend.open()
            return backend

The suite is pytest + anyio only (its tests are ``@pytest.mark.anyio``; your
``conftest.py`` decides which anyio backends they run on). ``self.tmp_path`` is the
test's temporary directory. A backend that needs other fixtures (a server URL, a key
prefix) takes them in an autouse fixture of the subclass and keeps them on ``self``::

        @pytest.fixture(autouse=True)
        def _server(self, redis_url: str, redis_prefix: str) -> None:
            self.url, self.prefix = redis_url, redis_prefix

Every call of :meth:`~StorageBackendConformance.open_backend` within one test must reach
the same stored data (the restart tests close a backend and open another one over it);
different tests must not see each other's data.

What is checked: order and isolation per shard, exclusive cursors, paging (every event
exactly once), exact ``has_more``, limits (0, larger than the content, ``2**63``), unknown
shards, byte-exact payloads (non-UTF-8 and empty included), timestamps, shard ids and
dedup ids, idempotent retries (or identical dedup ids on the duplicates, for backends
with ``dedups = False``), health and double close, restarts, and concurrent reads while
writing.

This module must depend on nothing but pytest, anyio and net_core.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.lowlevel
import pytest

from net_core.bus._storage import (
    Batch,
    ShardPollResult,
    StorageBackend,
    StoredEvent,
    compare_positions,
)

__all__ = ["StorageBackendConformance", "make_batch", "read_all"]

_NONCE = 0x5EED_0F_CAFE_F00D


def make_batch(
    shard_id: int,
    sequence_start: int,
    payloads: Sequence[bytes],
    *,
    nonce: int = _NONCE,
    first_ts: int | None = None,
) -> Batch:
    """A batch of ``payloads`` for ``shard_id`` with strictly increasing timestamps.

    Timestamps default to ``1_000_000 * (sequence_start + i + 1)`` so that re-making the
    same batch (a retry) gives the same timestamps.
    """
    base = 1_000_000 * (sequence_start + 1) if first_ts is None else first_ts
    return Batch(
        shard_id=shard_id,
        sequence_start=sequence_start,
        nonce=nonce,
        events=list(payloads),
        timestamps=[base + 1_000_000 * i for i in range(len(payloads))],
    )


async def read_all(
    backend: StorageBackend, shard_id: int, *, page: int = 1000, after: str | None = None
) -> list[StoredEvent]:
    """Every event of ``shard_id`` after ``after``, paging ``page`` at a time.

    Checks on the way that each page is consistent (``next_id`` is the last id,
    ``has_more`` false only on the last page) and that the cursor advances.
    """
    out: list[StoredEvent] = []
    cursor = after
    while True:
        result = await backend.read_shard(shard_id, cursor, page)
        _check_page(result, page)
        out.extend(result.events)
        if not result.has_more:
            return out
        assert result.next_id is not None
        cursor = result.next_id


def _check_page(result: ShardPollResult, limit: int) -> None:
    assert len(result.events) <= max(limit, 0)
    if result.events:
        assert result.next_id == result.events[-1].id
    else:
        assert result.next_id is None
    if result.has_more:
        assert len(result.events) == limit, "has_more with a short page"


def _payloads(prefix: str, n: int) -> list[bytes]:
    return [f'{{"{prefix}":{i}}}'.encode() for i in range(n)]


def _assert_increasing(events: Sequence[StoredEvent]) -> None:
    for a, b in itertools.pairwise(events):
        assert compare_positions(a.id, b.id) < 0, f"positions not increasing: {a.id} then {b.id}"


class StorageBackendConformance:
    """The contract of :class:`~net_core.bus._storage.StorageBackend`, as tests.

    Subclasses implement :meth:`open_backend` (and set :attr:`supports_restart` for
    backends that keep data across close/open); see the module docstring.
    """

    #: Whether closing a backend and opening another one keeps the data (persistent
    #: backends); the restart tests are skipped otherwise.
    supports_restart: ClassVar[bool] = False
    #: Events written by the larger tests (paging, concurrency); lower it for slow
    #: backends.
    bulk_events: ClassVar[int] = 500

    tmp_path: Path

    @pytest.fixture(autouse=True)
    def _conformance_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    async def open_backend(self) -> StorageBackend:
        """Build and ``open()`` a backend over this test's storage."""
        raise NotImplementedError(f"{type(self).__name__} must implement open_backend()")

    async def reopen_backend(self) -> StorageBackend:
        """Open a backend over the data of the (closed) previous one: a restart.

        The default calls :meth:`open_backend` again, which is right whenever
        ``open_backend`` always reaches the same data within a test.
        """
        return await self.open_backend()

    @contextlib.asynccontextmanager
    async def opened(self, *, reopen: bool = False) -> AsyncIterator[StorageBackend]:
        """A backend from :meth:`open_backend` (or :meth:`reopen_backend`), closed at exit."""
        backend = await (self.reopen_backend() if reopen else self.open_backend())
        try:
            yield backend
        finally:
            with anyio.CancelScope(shield=True):
                await backend.close()

    async def write(self, backend: StorageBackend, *batches: Batch) -> None:
        """Write ``batches`` in order, then ``flush()``."""
        for batch in batches:
            await backend.write_batch(batch)
        await backend.flush()

    # -- order, isolation, cursors ---------------------------------------------------

    @pytest.mark.anyio
    async def test_write_then_read_one_shard_in_order(self) -> None:
        async with self.opened() as backend:
            first = make_batch(0, 0, _payloads("a", 5))
            second = make_batch(0, 5, _payloads("a", 5)[::-1])
            await self.write(backend, first, second)
            result = await backend.read_shard(0, None, 100)
            assert [e.raw for e in result.events] == [*first.events, *second.events]
            assert not result.has_more
            _assert_increasing(result.events)

    @pytest.mark.anyio
    async def test_shards_are_isolated(self) -> None:
        async with self.opened() as backend:
            await self.write(
                backend,
                make_batch(0, 0, _payloads("zero", 3)),
                make_batch(1, 0, _payloads("one", 4)),
                make_batch(7, 0, _payloads("seven", 2)),
                make_batch(0, 3, _payloads("zero-again", 1)),
            )
            zero = await read_all(backend, 0)
            one = await read_all(backend, 1)
            seven = await read_all(backend, 7)
            assert [e.raw for e in zero] == [*_payloads("zero", 3), *_payloads("zero-again", 1)]
            assert [e.raw for e in one] == _payloads("one", 4)
            assert [e.raw for e in seven] == _payloads("seven", 2)
            assert {e.shard_id for e in zero} == {0}
            assert {e.shard_id for e in one} == {1}
            assert {e.shard_id for e in seven} == {7}

    @pytest.mark.anyio
    async def test_cursor_is_exclusive(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, _payloads("e", 6)))
            events = (await backend.read_shard(0, None, 100)).events
            for k, event in enumerate(events):
                later = await backend.read_shard(0, event.id, 100)
                assert [e.id for e in later.events] == [e.id for e in events[k + 1 :]]
                assert not later.has_more
            last = await backend.read_shard(0, events[-1].id, 100)
            assert last == ShardPollResult([], None, False)

    @pytest.mark.anyio
    async def test_cursor_continues_across_later_writes(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, _payloads("a", 3)))
            first = await backend.read_shard(0, None, 100)
            await self.write(backend, make_batch(0, 3, _payloads("b", 2)))
            second = await backend.read_shard(0, first.next_id, 100)
            assert [e.raw for e in second.events] == _payloads("b", 2)
            assert compare_positions(first.events[-1].id, second.events[0].id) < 0

    # -- paging and limits -----------------------------------------------------------

    @pytest.mark.anyio
    @pytest.mark.parametrize("page", [1, 2, 3, 7, 64])
    async def test_paging_yields_every_event_once_in_order(self, page: int) -> None:
        total = min(self.bulk_events, 130)
        payloads = _payloads("p", total)
        async with self.opened() as backend:
            await self.write(
                backend,
                *(make_batch(2, s, payloads[s : s + 16]) for s in range(0, total, 16)),
            )
            events = await read_all(backend, 2, page=page)
            assert [e.raw for e in events] == payloads
            assert len({e.id for e in events}) == total
            _assert_increasing(events)

    @pytest.mark.anyio
    async def test_has_more_is_exact_at_boundaries(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, _payloads("h", 10)))
            exact = await backend.read_shard(0, None, 10)
            assert len(exact.events) == 10
            assert not exact.has_more
            short = await backend.read_shard(0, None, 9)
            assert len(short.events) == 9
            assert short.has_more
            rest = await backend.read_shard(0, short.next_id, 1)
            assert len(rest.events) == 1
            assert not rest.has_more
            two_pages = await backend.read_shard(0, None, 5)
            assert two_pages.has_more
            end = await backend.read_shard(0, two_pages.next_id, 5)
            assert len(end.events) == 5
            assert not end.has_more

    @pytest.mark.anyio
    async def test_limit_zero_returns_nothing(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, _payloads("z", 3)))
            assert await backend.read_shard(0, None, 0) == ShardPollResult([], None, False)

    @pytest.mark.anyio
    async def test_limit_larger_than_content(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, _payloads("l", 4)))
            result = await backend.read_shard(0, None, 1000)
            assert len(result.events) == 4
            assert not result.has_more
            assert result.next_id == result.events[-1].id

    @pytest.mark.anyio
    async def test_huge_limit_does_not_overflow(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, _payloads("x", 4)))
            for limit in (2**63 - 1, 2**63, 2**64 - 1):
                result = await backend.read_shard(0, None, limit)
                assert [e.raw for e in result.events] == _payloads("x", 4)
                assert not result.has_more
                after_first = await backend.read_shard(0, result.events[0].id, limit)
                assert len(after_first.events) == 3

    @pytest.mark.anyio
    async def test_unknown_shard_is_empty(self) -> None:
        async with self.opened() as backend:
            assert await backend.read_shard(3, None, 10) == ShardPollResult([], None, False)
            await self.write(backend, make_batch(0, 0, _payloads("k", 1)))
            assert await backend.read_shard(3, None, 10) == ShardPollResult([], None, False)
            assert await backend.read_shard(4, None, 0) == ShardPollResult([], None, False)

    @pytest.mark.anyio
    async def test_next_id_is_last_returned_id(self) -> None:
        async with self.opened() as backend:
            empty = await backend.read_shard(0, None, 10)
            assert empty.next_id is None
            await self.write(backend, make_batch(0, 0, _payloads("n", 3)))
            for limit in (1, 2, 3, 4):
                result = await backend.read_shard(0, None, limit)
                assert result.next_id == result.events[-1].id
            drained = await backend.read_shard(0, result.next_id, 10)
            assert drained.next_id is None
            assert drained.events == []

    # -- what is stored --------------------------------------------------------------

    @pytest.mark.anyio
    async def test_raw_bytes_round_trip_byte_exact(self) -> None:
        payloads = [
            b"",
            b"\x00",
            b"\xff\xfe\x00\x80 not utf-8 \xc3\x28",
            bytes(range(256)),
            '{"k": "ünïcödé ✓", "n": 1.50}'.encode(),
            b'{"spaced" :  [1, 2 ,3] }',
            b"x" * 70_000,
        ]
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, payloads))
            events = await read_all(backend, 0)
            assert [e.raw for e in events] == payloads
            assert all(type(e.raw) is bytes for e in events)

    @pytest.mark.anyio
    async def test_insertion_ts_and_shard_id_preserved(self) -> None:
        batch = make_batch(5, 0, _payloads("t", 4), first_ts=2**62 + 17)
        async with self.opened() as backend:
            await self.write(backend, batch)
            events = await read_all(backend, 5)
            assert [e.insertion_ts for e in events] == list(batch.timestamps)
            assert [e.shard_id for e in events] == [5] * 4

    @pytest.mark.anyio
    async def test_dedup_ids_match_the_batch(self) -> None:
        batches = [
            make_batch(3, 0, _payloads("d", 3), nonce=0xABC),
            make_batch(3, 3, _payloads("d", 2), nonce=0xABC),
            make_batch(3, 0, _payloads("other producer", 2), nonce=2**64 - 1),
        ]
        expected = [b.dedup_id(i) for b in batches for i in range(len(b))]
        async with self.opened() as backend:
            await self.write(backend, *batches)
            events = await read_all(backend, 3)
            reported = [e.dedup_id for e in events]
            if any(d is not None for d in reported):
                assert reported == expected
            assert [e.raw for e in events] == [p for b in batches for p in b.events]

    # -- idempotency -----------------------------------------------------------------

    async def _check_retry(self, backend: StorageBackend, shard: int, batches: list[Batch]) -> None:
        events = await read_all(backend, shard)
        written = [(b, i) for b in batches for i in range(len(b))]
        if type(backend).dedups:
            unique = list(dict.fromkeys((b.nonce, b.sequence_start + i) for b, i in written))
            assert len(events) == len(unique), "a retried batch was stored twice"
        else:
            by_id: dict[str | None, list[bytes]] = {}
            for event in events:
                by_id.setdefault(event.dedup_id, []).append(event.raw)
            assert None not in by_id, "a backend that does not dedup must store dedup ids"
            for raws in by_id.values():
                assert len(set(raws)) == 1, "copies with one dedup id differ"

    @pytest.mark.anyio
    async def test_retried_batch_is_not_duplicated(self) -> None:
        batch = make_batch(0, 0, _payloads("r", 4))
        async with self.opened() as backend:
            await self.write(backend, batch, batch)
            await self._check_retry(backend, 0, [batch, batch])
            events = await read_all(backend, 0)
            if type(backend).dedups:
                assert [e.raw for e in events] == list(batch.events)
            then = make_batch(0, 4, _payloads("after", 2))
            await self.write(backend, then, batch)
            events = await read_all(backend, 0)
            if type(backend).dedups:
                assert [e.raw for e in events] == [*batch.events, *then.events]

    @pytest.mark.anyio
    async def test_other_producer_with_same_sequence_is_kept(self) -> None:
        mine = make_batch(0, 0, _payloads("mine", 3), nonce=1)
        theirs = make_batch(0, 0, _payloads("theirs", 3), nonce=2)
        async with self.opened() as backend:
            await self.write(backend, mine, theirs)
            events = await read_all(backend, 0)
            assert [e.raw for e in events] == [*mine.events, *theirs.events]

    @pytest.mark.anyio
    async def test_same_sequence_on_other_shard_is_kept(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, [b"a"]), make_batch(1, 0, [b"b"]))
            assert [e.raw for e in await read_all(backend, 1)] == [b"b"]

    # -- lifecycle -------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_health_and_double_close(self) -> None:
        backend = await self.open_backend()
        try:
            assert await backend.health()
            await self.write(backend, make_batch(0, 0, [b"{}"]))
            assert await backend.health()
        finally:
            await backend.close()
        await backend.close()

    @pytest.mark.anyio
    async def test_empty_batch_is_a_no_op(self) -> None:
        async with self.opened() as backend:
            await self.write(backend, make_batch(0, 0, []))
            assert await backend.read_shard(0, None, 10) == ShardPollResult([], None, False)

    @pytest.mark.anyio
    async def test_restart_keeps_events_ids_and_dedup(self) -> None:
        if not self.supports_restart:
            pytest.skip(f"{type(self).__name__} does not keep data across restarts")
        first = make_batch(0, 0, _payloads("before", 3))
        other = make_batch(4, 0, _payloads("other", 2))
        async with self.opened() as backend:
            await self.write(backend, first, other)
            before = await read_all(backend, 0)
            before_other = await read_all(backend, 4)
        async with self.opened(reopen=True) as backend:
            assert await read_all(backend, 0) == before
            assert await read_all(backend, 4) == before_other
            await self.write(backend, first)
            await self._check_retry(backend, 0, [first, first])
            nxt = make_batch(0, 3, _payloads("after", 2))
            await self.write(backend, nxt)
            after = await read_all(backend, 0)
            if type(backend).dedups:
                assert after[:3] == before
                assert [e.raw for e in after[3:]] == list(nxt.events)
        async with self.opened(reopen=True) as backend:
            assert await read_all(backend, 0) == after

    # -- concurrency -----------------------------------------------------------------

    @pytest.mark.anyio
    async def test_concurrent_reads_while_writing(self) -> None:
        shards = [0, 1, 2, 3]
        per_batch = 10
        batches = max(2, self.bulk_events // (per_batch * len(shards)))
        seen: dict[int, list[StoredEvent]] = {s: [] for s in shards}
        async with self.opened() as backend:

            async def writer(shard: int) -> None:
                for b in range(batches):
                    payloads = [
                        f'{{"s":{shard},"i":{b * per_batch + i}}}'.encode()
                        for i in range(per_batch)
                    ]
                    await backend.write_batch(make_batch(shard, b * per_batch, payloads))
                    await anyio.lowlevel.checkpoint()

            async def reader(shard: int, done: anyio.Event) -> None:
                cursor: str | None = None
                while True:
                    finished = done.is_set()
                    result = await backend.read_shard(shard, cursor, 7)
                    _check_page(result, 7)
                    seen[shard].extend(result.events)
                    if result.next_id is not None:
                        cursor = result.next_id
                    if finished and not result.has_more:
                        return
                    if result.events:
                        await anyio.lowlevel.checkpoint()
                    else:
                        # Caught up: back off like a consumer would, so the writers
                        # (possibly in worker threads) are not starved of the GIL.
                        await anyio.sleep(0.001)

            done = anyio.Event()
            async with anyio.create_task_group() as readers:
                for shard in shards:
                    readers.start_soon(reader, shard, done)
                async with anyio.create_task_group() as writers:
                    for shard in shards:
                        writers.start_soon(writer, shard)
                await backend.flush()
                done.set()
        for shard in shards:
            got = [e.parse() for e in seen[shard]]
            assert got == [{"s": shard, "i": i} for i in range(batches * per_batch)]
            _assert_increasing(seen[shard])
