"""``RedexFile.watch_appends`` (notification-only subscriptions) and
``RedexTail.next_batch``."""

from __future__ import annotations

import threading

import anyio
import pytest

from net_core.redex import LaggedError, Redex

pytestmark = pytest.mark.anyio


async def test_watcher_returns_at_once_when_the_file_already_grew() -> None:
    f = Redex().open_file("w")
    watcher = f.watch_appends()
    f.append(b"a")
    with anyio.fail_after(1):
        assert await watcher.wait(0) is True
    watcher.close()


async def test_watcher_wakes_on_append_and_on_close() -> None:
    f = Redex().open_file("w")
    watcher = f.watch_appends()
    woke: list[bool] = []

    async def wait(seen: int) -> None:
        woke.append(await watcher.wait(seen))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, 0)
        await anyio.sleep(0.01)
        assert woke == []
        f.append(b"x")
    assert woke == [True]
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, 1)
        await anyio.sleep(0.01)
        f.close()
    assert woke == [True, False]
    assert await watcher.wait(1) is False  # closed stays closed


async def test_watcher_sees_appends_from_other_threads() -> None:
    f = Redex().open_file("w")
    watcher = f.watch_appends()
    thread = threading.Thread(target=lambda: f.append(b"t"))
    thread.start()
    with anyio.fail_after(2):
        assert await watcher.wait(0)
    thread.join()


async def test_closing_the_watcher_unregisters_it() -> None:
    f = Redex().open_file("w")
    watcher = f.watch_appends()
    watcher.close()
    assert await watcher.wait(0) is False
    f.append(b"no one is told")
    watcher.close()  # idempotent
    assert f.watch_appends() is not watcher


async def test_watcher_on_a_closed_file_returns_false() -> None:
    f = Redex().open_file("w")
    f.close()
    assert await f.watch_appends().wait(0) is False


async def test_next_batch_returns_what_is_buffered_up_to_the_limit() -> None:
    f = Redex().open_file("b")
    for i in range(10):
        f.append(bytes([i]))
    tail = f.tail(0)
    first = await tail.next_batch(4)
    assert [e.seq for e in first] == [0, 1, 2, 3]
    rest = await tail.next_batch()
    assert [e.payload for e in rest] == [bytes([i]) for i in range(4, 10)]
    f.append(b"live")
    assert [e.payload for e in await tail.next_batch()] == [b"live"]
    with pytest.raises(ValueError, match="limit"):
        await tail.next_batch(0)
    f.close()
    assert await tail.next_batch() == []


async def test_next_batch_raises_lagged_like_anext() -> None:
    redex = Redex()
    f = redex.open_file("l", tail_buffer_size=4)
    tail = f.tail(0)  # an empty file: the tail is live at once, with a 4-event buffer
    for i in range(10):
        f.append(bytes([i]))
    got = await tail.next_batch()
    assert len(got) == 4
    with pytest.raises(LaggedError):
        await tail.next_batch()
