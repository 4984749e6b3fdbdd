"""Tails of RedEX files: backfill then live, lag, catch-up, close, threads, cancellation."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from net_core.redex import LaggedError, Redex, RedexEvent, RedexFile, RedexTail
from net_core.redex._tail import POLL_INTERVAL

pytestmark = pytest.mark.anyio


@pytest.fixture
def redex(tmp_path: Path) -> Iterator[Redex]:
    manager = Redex(tmp_path)
    yield manager
    manager.close()


@pytest.fixture(params=["heap", "persistent"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_kind(redex: Redex, kind: str, name: str = "tail/file", **options: Any) -> RedexFile:
    return redex.open_file(name, persistent=kind == "persistent", **options)


def payload(seq: int) -> bytes:
    return b"event-%d" % seq


async def take(tail: RedexTail, n: int, seconds: float = 10.0) -> list[RedexEvent]:
    out: list[RedexEvent] = []
    with anyio.fail_after(seconds):
        while len(out) < n:
            out.append(await tail.__anext__())
    return out


async def drain(tail: RedexTail, seconds: float = 10.0) -> list[RedexEvent]:
    """Every event until the tail ends cleanly (LaggedError propagates)."""
    out: list[RedexEvent] = []
    with anyio.fail_after(seconds):
        async for event in tail:
            out.append(event)
    return out


async def until_lagged(tail: RedexTail, seconds: float = 10.0) -> tuple[list[int], LaggedError]:
    """The seqs delivered before the tail raised :class:`LaggedError`, and the error."""
    seqs: list[int] = []
    with anyio.fail_after(seconds):
        while True:
            try:
                event = await tail.__anext__()
            except LaggedError as exc:
                return seqs, exc
            seqs.append(event.seq)


async def produce(f: RedexFile, start: int, count: int, chunk: int = 7) -> None:
    """Append ``count`` events (single and batched), yielding to the loop in between."""
    seq = start
    end = start + count
    while seq < end:
        n = min(chunk, end - seq)
        if n == 1 or seq % 2:
            for s in range(seq, seq + n):
                assert f.append(payload(s)) == s
        else:
            assert f.append_batch([payload(s) for s in range(seq, seq + n)]) == seq
        seq += n
        await anyio.lowlevel.checkpoint()


# -- backfill + live -------------------------------------------------------------------


@pytest.mark.parametrize("pace", ["eager", "slow"])
@pytest.mark.parametrize("from_seq", [0, 150], ids=["from-0", "from-middle"])
async def test_backfill_then_live_without_gap_or_duplicate(
    redex: Redex, kind: str, from_seq: int, pace: str
) -> None:
    """Appends land while the tail reads history (in buffer-sized chunks), while it
    switches to live delivery, and after. The producer never runs more than ``window``
    events ahead of the consumer (< the buffer), so lagging is not an allowed outcome."""
    buffer, window = 64, 48
    f = open_kind(redex, kind, tail_buffer_size=buffer)
    f.append_batch([payload(s) for s in range(300)])
    total = 2_000
    got: list[RedexEvent] = []

    async def consume() -> None:
        async with f.tail(from_seq) as tail:
            with anyio.fail_after(10):
                while len(got) < total - from_seq:
                    got.append(await tail.__anext__())
                    if pace == "slow" and len(got) % 3 == 0:
                        await anyio.lowlevel.checkpoint()

    async def produce_paced() -> None:
        rng = random.Random(from_seq)
        seq = 300
        while seq < total:
            ahead = seq - (from_seq + len(got))
            room = min(window - ahead, total - seq, rng.randint(1, 9))
            if room > 0:
                if room == 1 or rng.random() < 0.5:
                    for s in range(seq, seq + room):
                        assert f.append(payload(s)) == s
                else:
                    assert f.append_batch([payload(s) for s in range(seq, seq + room)]) == seq
                seq += room
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(10):
            await produce_paced()
    assert [e.seq for e in got] == list(range(from_seq, total))
    assert all(e.payload == payload(e.seq) for e in got)
    assert f._tails == []


async def test_tail_from_a_future_seq_waits(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind)
    f.append_batch([payload(s) for s in range(10)])
    tail = f.tail(60)
    with anyio.move_on_after(0.1) as scope:
        await tail.__anext__()
    assert scope.cancelled_caught
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce, f, 10, 100)
        got = await take(tail, 50)
    assert [e.seq for e in got] == list(range(60, 110))
    assert tail.buffered() == 0
    tail.close()


async def test_backfill_larger_than_the_buffer_does_not_lag(redex: Redex, kind: str) -> None:
    """Our documented improvement: history is read from the file, not pushed up front
    (the reference refuses a backfill larger than the buffer with Lagged)."""
    f = open_kind(redex, kind, tail_buffer_size=8)
    f.append_batch([payload(s) for s in range(1_000)])
    tail = f.tail(0)
    assert tail.buffered() == 8
    got = await take(tail, 500)
    f.append_batch([payload(s) for s in range(1_000, 1_300)])  # while reading history
    for s in range(1_300, 1_320):
        f.append(payload(s))
    got += await take(tail, 820)
    assert len(f._tails) == 1  # caught up: live now
    for s in range(1_320, 1_328):  # exactly a buffer of live events
        f.append(payload(s))
    got += await take(tail, 8)
    assert [e.seq for e in got] == list(range(1_328))
    assert all(e.payload == payload(e.seq) for e in got)
    tail.close()


async def test_exactly_a_buffer_of_history(redex: Redex) -> None:
    f = redex.open_file("exact", tail_buffer_size=16)
    f.append_batch([payload(s) for s in range(16)])
    tail = f.tail(0)
    assert tail.buffered() == 16
    assert [e.seq for e in await take(tail, 16)] == list(range(16))
    f.append(b"live")
    assert (await tail.__anext__()).payload == b"live"
    tail.close()


# -- overflow --------------------------------------------------------------------------


async def test_live_subscriber_that_falls_behind_gets_lagged_after_its_buffer(
    redex: Redex, kind: str
) -> None:
    f = open_kind(redex, kind, tail_buffer_size=4)
    f.append(payload(0))
    tail = f.tail(0)
    assert (await tail.__anext__()).seq == 0
    for s in range(1, 11):
        f.append(payload(s))  # nobody consumes: the 5th live event overflows
    assert tail.lagged
    got, exc = await until_lagged(tail)
    assert got == [1, 2, 3, 4]
    assert "tail subscriber lagged; stream disconnected" in str(exc)
    assert f._tails == []
    with pytest.raises(StopAsyncIteration):
        await tail.__anext__()


async def test_lag_inside_one_batch(redex: Redex) -> None:
    f = redex.open_file("batchlag", tail_buffer_size=4)
    tail = f.tail(0)
    f.append_batch([payload(s) for s in range(6)])
    got, _ = await until_lagged(tail)
    assert got == [0, 1, 2, 3]


async def test_catch_up_receives_everything_in_order(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind, tail_buffer_size=4)
    tail = f.tail(0, overflow="catch_up")
    f.append_batch([payload(s) for s in range(50)])
    for s in range(50, 100):
        f.append(payload(s))
    got = await take(tail, 100)
    assert [e.seq for e in got] == list(range(100))
    assert all(e.payload == payload(e.seq) for e in got)
    # Back to live delivery once caught up.
    f.append(payload(100))
    assert (await tail.__anext__()).seq == 100
    assert len(f._tails) == 1
    tail.close()
    assert f._tails == []


async def test_catch_up_with_a_concurrent_fast_producer(redex: Redex) -> None:
    f = redex.open_file("fast", tail_buffer_size=2)
    got: list[RedexEvent] = []

    async def consume() -> None:
        async with f.tail(0, overflow="catch_up") as tail:
            got.extend(await take(tail, 3_000))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await produce(f, 0, 3_000, chunk=50)
    assert [e.seq for e in got] == list(range(3_000))


async def test_tail_from_an_evicted_seq_lags(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind, retention={"count": {"max_events": 5}}, retention_check_every=0)
    f.append_batch([payload(s) for s in range(10)])
    assert f.sweep_retention() == 5
    with pytest.raises(LaggedError, match="evicted"):
        await f.tail(0).__anext__()
    with pytest.raises(LaggedError):
        await f.tail(4).__anext__()
    tail = f.tail(5)
    assert [e.seq for e in await take(tail, 5)] == [5, 6, 7, 8, 9]
    tail.close()
    assert f._tails == []


async def test_history_evicted_while_reading_it_lags(redex: Redex) -> None:
    f = redex.open_file(
        "evicting",
        tail_buffer_size=4,
        retention={"count": {"max_events": 5}},
        retention_check_every=0,
    )
    f.append_batch([payload(s) for s in range(5)])
    tail = f.tail(0)  # first buffer: seqs 0..3
    f.append_batch([payload(s) for s in range(5, 20)])
    f.sweep_retention()  # keeps 15..19: seq 4 is gone before the tail read it
    got, _ = await until_lagged(tail)
    assert got == [0, 1, 2, 3]


# -- close -----------------------------------------------------------------------------


async def test_closing_the_file_ends_tails_after_buffered_events(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind)
    f.append(payload(0))
    tail = f.tail(0)
    assert (await tail.__anext__()).seq == 0
    f.append_batch([payload(1), payload(2)])
    f.close()
    assert [e.seq for e in await drain(tail)] == [1, 2]
    with pytest.raises(StopAsyncIteration):
        await tail.__anext__()


async def test_closing_the_file_wakes_a_waiting_tail(redex: Redex) -> None:
    f = redex.open_file("wake")
    tail = f.tail(0)
    result: list[Any] = []

    async def wait_for_end() -> None:
        result.extend(await drain(tail))
        result.append("end")

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_end)
        await anyio.sleep(0.05)
        f.close()
    assert result == ["end"]


async def test_closing_the_tail_unregisters_it(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind)
    f.append(payload(0))
    async with f.tail(0) as tail:
        assert len(f._tails) == 1
        assert (await tail.__anext__()).seq == 0
    assert f._tails == []
    with pytest.raises(StopAsyncIteration):
        await tail.__anext__()
    other = f.tail(0)
    await other.aclose()
    other.close()  # idempotent
    assert f._tails == []
    f.append(payload(1))  # no registered subscriber left to push to
    assert other.buffered() == 0


async def test_closing_a_tail_drops_its_buffer_and_ends_a_pending_read(redex: Redex) -> None:
    f = redex.open_file("pending")
    tail = f.tail(0)
    ended = anyio.Event()

    async def reader() -> None:
        with pytest.raises(StopAsyncIteration):
            await tail.__anext__()
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.03)
        tail.close()
        with anyio.fail_after(2):
            await ended.wait()


async def test_tail_on_a_closed_file_ends_immediately(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind)
    f.append_batch([payload(0), payload(1)])
    f.close()
    tail = f.tail(0)
    with anyio.fail_after(1), pytest.raises(StopAsyncIteration):
        await tail.__anext__()
    assert f._tails == []


async def test_invalid_tail_arguments(redex: Redex) -> None:
    f = redex.open_file("args")
    with pytest.raises(ValueError, match="from_seq"):
        f.tail(-1)
    with pytest.raises(ValueError, match="overflow"):
        f.tail(0, overflow="drop")  # type: ignore[arg-type]
    assert f._tails == []


# -- threads & cancellation -------------------------------------------------------------


async def test_appends_from_a_worker_thread_are_delivered(redex: Redex, kind: str) -> None:
    f = open_kind(redex, kind)
    tail = f.tail(0)
    got: list[RedexEvent] = []

    async def consume() -> None:
        got.extend(await take(tail, 200, seconds=10))

    def append_in_thread() -> None:
        for s in range(100):
            f.append(payload(s))
        f.append_batch([payload(s) for s in range(100, 200)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.01)  # the consumer is waiting on its event
        await anyio.to_thread.run_sync(append_in_thread)
    assert [e.seq for e in got] == list(range(200))
    # A single later append from a thread reaches a waiting tail within a few polls.
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, f.append, b"late")
        event = await take(tail, 1, seconds=2)
    assert event[0].payload == b"late"
    assert time.monotonic() - start < 1.0 + POLL_INTERVAL
    tail.close()


async def test_cancelled_read_leaves_the_tail_usable(redex: Redex) -> None:
    f = redex.open_file("cancel")
    tail = f.tail(0)
    for _ in range(3):
        with anyio.move_on_after(0.03) as scope:
            await tail.__anext__()
        assert scope.cancelled_caught
    f.append(b"after")
    assert (await tail.__anext__()).payload == b"after"
    with anyio.CancelScope() as scope:
        scope.cancel()
        await tail.__anext__()
    f.append(b"again")
    assert [e.payload for e in await take(tail, 1)] == [b"again"]
    assert len(f._tails) == 1
    tail.close()


# -- volume ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["heap", "heap-inline", "persistent-inline"])
async def test_ten_thousand_events_in_order(redex: Redex, variant: str) -> None:
    f = redex.open_file("bulk", persistent=variant.startswith("persistent"))
    inline = variant.endswith("inline")

    def expected(seq: int) -> tuple[bytes, bool]:
        if inline and seq % 3 == 0:
            return seq.to_bytes(8, "little"), True
        return payload(seq) * (seq % 5), False

    def write(start: int, end: int) -> None:
        for s in range(start, end):
            data, is_inline = expected(s)
            assert (f.append_inline(data) if is_inline else f.append(data)) == s

    write(0, 5_000)
    got: list[RedexEvent] = []

    async def consume() -> None:
        async with f.tail(0) as tail:
            got.extend(await take(tail, 10_000, seconds=30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for start in range(5_000, 10_000, 100):
            write(start, start + 100)
            await anyio.lowlevel.checkpoint()
    assert [e.seq for e in got] == list(range(10_000))
    assert [(e.payload, e.is_inline) for e in got] == [expected(s) for s in range(10_000)]


# -- library bugs (expected failures) --------------------------------------------------


async def test_file_close_does_not_silently_truncate_a_history_tail(redex: Redex) -> None:
    f = redex.open_file("hist", tail_buffer_size=4)
    f.append_batch([payload(s) for s in range(10)])
    tail = f.tail(0)
    f.close()
    got: list[int] = []
    try:
        async for event in tail:
            got.append(event.seq)
    except LaggedError:
        return  # an explicit signal is acceptable
    assert got == list(range(10))


async def test_file_close_does_not_silently_truncate_a_catch_up_tail(redex: Redex) -> None:
    f = redex.open_file("catchup-close", tail_buffer_size=4)
    tail = f.tail(0, overflow="catch_up")
    f.append_batch([payload(s) for s in range(10)])
    f.close()
    got: list[int] = []
    try:
        async for event in tail:
            got.append(event.seq)
    except LaggedError:
        return
    assert got == list(range(10))
