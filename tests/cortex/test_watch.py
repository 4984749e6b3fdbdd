"""Watches of Tasks and Memories queries (reference §3.11).

Pinned: the first value is immediate; later values come only for relevant changes and
are deduplicated; subscribers are independent; limit and order are respected and the
default order is ``id_asc``; ``snapshot_and_watch_*`` returns the current state and
delivers every later change, including one racing the call; iteration ends after the
fold stops; ``close()`` ends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import anyio
import pytest

from net_core.cortex import (
    MemoriesAdapter,
    Memory,
    Task,
    TasksAdapter,
    TaskStatus,
    Watch,
)
from net_core.redex import Redex

pytestmark = pytest.mark.anyio

R = TypeVar("R")

ORIGIN = 0x5EED
PENDING, COMPLETED = TaskStatus.PENDING, TaskStatus.COMPLETED
QUIET = 0.15  # how long a watch must stay silent after a folded irrelevant change


async def next_value(watch: Watch[R]) -> list[R]:
    with anyio.fail_after(5):
        return await watch.__anext__()


async def assert_silent(watch: Watch[Any]) -> None:
    """The watch has nothing to deliver (the changes it could see are already folded)."""
    with anyio.move_on_after(QUIET) as scope:
        value = await watch.__anext__()
        pytest.fail(f"unexpected emission {value!r}")
    assert scope.cancelled_caught


async def assert_ended(watch: Watch[Any]) -> None:
    with anyio.fail_after(5), pytest.raises(StopAsyncIteration):
        await watch.__anext__()


def ids(records: list[Task] | list[Memory]) -> list[int]:
    return [r.id for r in records]


@pytest.fixture
async def tasks() -> AsyncIterator[TasksAdapter]:
    with Redex() as redex:
        async with TasksAdapter.open(redex, ORIGIN) as t:
            yield t


@pytest.fixture
async def memories() -> AsyncIterator[MemoriesAdapter]:
    with Redex() as redex:
        async with MemoriesAdapter.open(redex, ORIGIN) as m:
            yield m


async def settle(adapter: TasksAdapter | MemoriesAdapter, seq: int) -> None:
    await adapter.wait_for_seq(seq, timeout=5)


# -- first value, relevance, dedup ---------------------------------------------------------


async def test_first_value_is_immediate_and_in_id_order_by_default(tasks: TasksAdapter) -> None:
    for i in (5, 2, 9, 1):
        tasks.create(i, f"t{i}", 10 * i)
    await settle(tasks, 3)
    watch = tasks.watch_tasks()
    assert watch.last is None
    first = await next_value(watch)
    assert ids(first) == [1, 2, 5, 9]
    assert first == sorted(tasks.tasks.values())
    assert watch.last == first
    # Without new changes there is nothing more.
    await assert_silent(watch)


async def test_first_value_of_an_empty_state_is_an_empty_list(tasks: TasksAdapter) -> None:
    watch = tasks.watch_tasks(status="completed")
    assert await next_value(watch) == []
    await settle(tasks, tasks.create(1, "pending", 1))
    await assert_silent(watch)  # still [] : not delivered again
    await settle(tasks, tasks.complete(1, 2))
    assert await next_value(watch) == [Task(1, "pending", COMPLETED, 1, 2)]


async def test_emits_only_on_relevant_changes(tasks: TasksAdapter) -> None:
    tasks.create(1, "alpha docs", 1)
    await settle(tasks, tasks.create(2, "beta", 2))
    watch = tasks.watch_tasks(title_contains="DOCS")
    assert ids(await next_value(watch)) == [1]
    # Changes to tasks outside the result do not emit.
    tasks.rename(2, "gamma", 3)
    tasks.complete(2, 4)
    await settle(tasks, tasks.create(3, "delta", 5))
    await assert_silent(watch)
    # A change inside the result emits, with every field compared (updated_ns too).
    await settle(tasks, tasks.complete(1, 6))
    assert await next_value(watch) == [Task(1, "alpha docs", COMPLETED, 1, 6)]
    # A task entering the result emits.
    await settle(tasks, tasks.rename(3, "more docs", 7))
    assert ids(await next_value(watch)) == [1, 3]
    # Leaving it too.
    await settle(tasks, tasks.delete(1))
    assert ids(await next_value(watch)) == [3]


async def test_identical_results_are_deduplicated(tasks: TasksAdapter) -> None:
    await settle(tasks, tasks.create(1, "a", 1))
    watch = tasks.watch_tasks()
    assert await next_value(watch) == [Task(1, "a", PENDING, 1, 1)]
    # Re-creating with identical fields changes nothing visible.
    await settle(tasks, tasks.create(1, "a", 1))
    await assert_silent(watch)
    # A -> B -> A while the consumer is not looking: the result equals the last value.
    tasks.rename(1, "b", 1)
    await settle(tasks, tasks.rename(1, "a", 1))
    await assert_silent(watch)
    # No-ops on unknown ids.
    tasks.rename(7, "x", 1)
    await settle(tasks, tasks.delete(7))
    await assert_silent(watch)


async def test_a_slow_consumer_gets_the_latest_value(tasks: TasksAdapter) -> None:
    watch = tasks.watch_tasks()
    assert await next_value(watch) == []
    last = 0
    for i in range(50):
        last = tasks.create(i, f"t{i}", i)
    await settle(tasks, last)
    value = await next_value(watch)
    assert ids(value) == list(range(50))
    await assert_silent(watch)


async def test_a_consumer_waiting_sees_each_change(tasks: TasksAdapter) -> None:
    watch = tasks.watch_tasks()
    assert await next_value(watch) == []
    seen: list[list[int]] = []
    async with anyio.create_task_group() as tg:

        async def consume() -> None:
            async for value in watch:
                seen.append(ids(value))
                if len(value) == 3:
                    return

        tg.start_soon(consume)
        for i in range(3):
            await anyio.sleep(0.02)  # the consumer is parked in the watch
            await settle(tasks, tasks.create(i, "x", i))
    assert seen == [[0], [0, 1], [0, 1, 2]]


# -- subscribers, order, limit -------------------------------------------------------------


async def test_subscribers_are_independent(tasks: TasksAdapter) -> None:
    pending = tasks.watch_tasks(status="pending")
    done = tasks.watch_tasks(status="completed")
    all_a = tasks.watch_tasks()
    all_b = tasks.watch_tasks()
    for w in (pending, done, all_a, all_b):
        assert await next_value(w) == []
    await settle(tasks, tasks.create(1, "x", 1))
    assert ids(await next_value(pending)) == [1]
    assert ids(await next_value(all_a)) == [1]
    await assert_silent(done)
    await settle(tasks, tasks.complete(1, 2))
    assert await next_value(pending) == []
    assert ids(await next_value(done)) == [1]
    # all_b missed both changes: it gets only the latest state, once.
    assert await next_value(all_b) == [Task(1, "x", COMPLETED, 1, 2)]
    await assert_silent(all_b)
    all_a.close()
    await assert_ended(all_a)
    await settle(tasks, tasks.create(2, "y", 3))
    assert ids(await next_value(all_b)) == [1, 2]
    assert ids(await next_value(pending)) == [2]


async def test_limit_and_order_are_respected(tasks: TasksAdapter) -> None:
    for i, created in enumerate((30, 10, 20)):
        tasks.create(i, f"t{i}", created)
    await settle(tasks, 2)
    newest = tasks.watch_tasks(order_by="CREATED_DESC", limit=2)
    assert ids(await next_value(newest)) == [0, 2]
    # An older task does not enter the top two: no emission.
    await settle(tasks, tasks.create(3, "old", 5))
    await assert_silent(newest)
    # A newer one does.
    await settle(tasks, tasks.create(4, "new", 40))
    assert ids(await next_value(newest)) == [4, 0]
    by_id_desc = tasks.watch_tasks(order_by="id_desc", limit=1)
    assert ids(await next_value(by_id_desc)) == [4]
    await settle(tasks, tasks.delete(4))
    assert ids(await next_value(by_id_desc)) == [3]
    assert ids(await next_value(newest)) == [0, 2]
    empty = tasks.watch_tasks(limit=0)
    assert await next_value(empty) == []
    await settle(tasks, tasks.create(9, "x", 9))
    await assert_silent(empty)


async def test_watch_validates_its_query_up_front(tasks: TasksAdapter) -> None:
    with pytest.raises(ValueError, match="invalid status"):
        tasks.watch_tasks(status="done")
    with pytest.raises(ValueError, match="invalid order_by"):
        tasks.snapshot_and_watch_tasks(order_by="sideways")
    with pytest.raises(ValueError, match="limit"):
        tasks.watch_tasks(limit=-1)


# -- snapshot_and_watch --------------------------------------------------------------------


async def test_snapshot_and_watch_reflects_current_state_and_delivers_later_changes(
    tasks: TasksAdapter,
) -> None:
    for i in (3, 1, 2):
        tasks.create(i, f"t{i}", i)
    await settle(tasks, 2)
    snapshot, watch = tasks.snapshot_and_watch_tasks()
    assert ids(snapshot) == [1, 2, 3]  # default order id_asc
    assert snapshot == sorted(tasks.tasks.values())
    # The watch does not repeat the snapshot.
    await assert_silent(watch)
    await settle(tasks, tasks.complete(2, 10))
    value = await next_value(watch)
    assert value[1] == Task(2, "t2", COMPLETED, 2, 10)
    # The snapshot list is the caller's copy.
    snapshot.clear()
    await settle(tasks, tasks.delete(1))
    assert ids(await next_value(watch)) == [2, 3]


async def test_snapshot_and_watch_does_not_lose_a_racing_mutation(tasks: TasksAdapter) -> None:
    await settle(tasks, tasks.create(1, "a", 1))
    # Appended but not folded yet when the call runs (no checkpoint in between).
    tasks.create(2, "b", 2)
    snapshot, watch = tasks.snapshot_and_watch_tasks()
    assert ids(snapshot) == [1]
    assert ids(await next_value(watch)) == [1, 2]


async def test_snapshot_and_watch_with_filters_and_limit(tasks: TasksAdapter) -> None:
    for i in range(5):
        tasks.create(i, "docs" if i % 2 else "other", i)
    await settle(tasks, 4)
    snapshot, watch = tasks.snapshot_and_watch_tasks(
        title_contains="DOCS", order_by="updated_desc", limit=1
    )
    assert ids(snapshot) == [3]
    await settle(tasks, tasks.create(9, "other", 99))
    await assert_silent(watch)
    await settle(tasks, tasks.rename(1, "docs again", 100))
    assert await next_value(watch) == [Task(1, "docs again", PENDING, 1, 100)]


# -- ending --------------------------------------------------------------------------------


async def test_iteration_ends_after_the_fold_stops() -> None:
    with Redex() as redex:
        async with TasksAdapter.open(redex, ORIGIN) as t:
            watch = t.watch_tasks()
            assert await next_value(watch) == []
            ended = anyio.Event()
            values: list[list[Task]] = []

            async def consume() -> None:
                async for value in watch:
                    values.append(value)
                ended.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await anyio.sleep(0.02)
                t.close()
                with anyio.fail_after(5):
                    await ended.wait()
            assert values == []
            assert not t.is_running
            # A watch opened on a stopped adapter gives the current result, then ends.
            late = t.watch_tasks()
            assert await next_value(late) == []
            await assert_ended(late)


async def test_final_changes_are_delivered_before_the_end() -> None:
    with Redex() as redex:
        async with TasksAdapter.open(redex, ORIGIN) as t:
            watch = t.watch_tasks()
            assert await next_value(watch) == []
            await settle(t, t.create(1, "last", 1))
            t.close()
            assert ids(await next_value(watch)) == [1]
            await assert_ended(watch)


async def test_closing_the_file_ends_the_watch() -> None:
    redex = Redex()
    async with TasksAdapter.open(redex, ORIGIN) as t:
        watch = t.watch_tasks()
        assert await next_value(watch) == []
        redex.close()
        await assert_ended(watch)
        assert not t.is_running


async def test_close_ends_the_watch_and_is_idempotent(tasks: TasksAdapter) -> None:
    watch = tasks.watch_tasks()
    assert await next_value(watch) == []
    watch.close()
    watch.close()
    await assert_ended(watch)
    await settle(tasks, tasks.create(1, "x", 1))
    await assert_ended(watch)
    await watch.aclose()
    async with tasks.watch_tasks() as scoped:
        assert ids(await next_value(scoped)) == [1]
    await assert_ended(scoped)


async def test_close_from_another_task_wakes_a_parked_consumer(tasks: TasksAdapter) -> None:
    watch = tasks.watch_tasks()
    assert await next_value(watch) == []
    done = anyio.Event()

    async def consume() -> None:
        async for _ in watch:
            pytest.fail("no value expected")
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.02)
        watch.close()
        # The parked consumer wakes up at the next fold change at the latest.
        await settle(tasks, tasks.create(1, "x", 1))
        with anyio.fail_after(5):
            await done.wait()


async def test_close_wakes_a_parked_consumer_without_further_changes(
    tasks: TasksAdapter,
) -> None:
    watch = tasks.watch_tasks()
    assert await next_value(watch) == []
    done = anyio.Event()

    async def consume() -> None:
        async for _ in watch:
            pytest.fail("no value expected")
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.02)
        watch.close()
        with anyio.move_on_after(1):
            await done.wait()
        tg.cancel_scope.cancel()
    assert done.is_set(), "the consumer is still parked after close()"


# -- memories ------------------------------------------------------------------------------


async def test_memories_watch(memories: MemoriesAdapter) -> None:
    memories.store(2, "b", ["fact"], "user", 2)
    await settle(memories, memories.store(1, "a", ["todo"], "user", 1))
    facts = memories.watch_memories(tag="fact")
    pinned = memories.watch_memories(pinned=True, order_by="updated_desc")
    assert ids(await next_value(facts)) == [2]
    assert await next_value(pinned) == []
    await settle(memories, memories.pin(1, 3))
    assert await next_value(pinned) == [Memory(1, "a", ("todo",), "user", 1, 3, True)]
    await assert_silent(facts)
    await settle(memories, memories.retag(1, ["fact", "todo"], 4))
    assert ids(await next_value(facts)) == [1, 2]  # id_asc by default
    assert ids(await next_value(pinned)) == [1]
    # A re-store with identical content keeps pinned/created: only updated_ns changes.
    await settle(memories, memories.store(1, "a", ["fact", "todo"], "user", 4))
    await assert_silent(facts)
    await assert_silent(pinned)


async def test_memories_snapshot_and_watch(memories: MemoriesAdapter) -> None:
    await settle(memories, memories.store(1, "a", ["x"], "s", 1))
    memories.store(2, "b", ["x"], "s", 2)  # racing: appended, not folded yet
    snapshot, watch = memories.snapshot_and_watch_memories(any_tag=["x", "y"])
    assert ids(snapshot) == [1]
    assert ids(await next_value(watch)) == [1, 2]
    await settle(memories, memories.retag(2, ["z"], 3))
    assert ids(await next_value(watch)) == [1]
    memories.close()
    await assert_ended(watch)
