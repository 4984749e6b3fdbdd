"""The Tasks model: a fold of ``cortex/tasks`` into tasks by id, with queries and watches.

Wire compatibility with the reference's ``TasksAdapter``: the same channel name, dispatch
codes (0x01 created, 0x02 renamed, 0x03 completed, 0x04 deleted), postcard tails and
snapshot bytes (``{app_seq, inner}``), the same header stamping (our origin, a
per-adapter counter in ``seq_or_ts``, v2 checksum) and the same fold rules:

* CREATED inserts or fully resets a task (pending, created = updated = now);
* RENAMED / COMPLETED change an existing task and bump ``updated_ns`` (no-op if unknown);
* DELETED removes (no-op if unknown); an unknown dispatch code is ignored.

``app_seq`` (the counter stamped into our events) never goes backwards: after every
successfully applied event of our own origin it becomes at least that event's counter
plus one, so a reopened adapter never reuses a counter value.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Final, final

import attrs
import xxhash

from net_core.cortex._adapter import CortexAdapter, CortexEvent, Fold
from net_core.cortex._codec import (
    Task,
    TaskSnapshot,
    TaskStatus,
    decode_task_snapshot,
    encode_task_snapshot,
)
from net_core.cortex._errors import SnapshotDecodeError
from net_core.cortex._meta import (
    DISPATCH_TASK_COMPLETED,
    DISPATCH_TASK_CREATED,
    DISPATCH_TASK_DELETED,
    DISPATCH_TASK_RENAMED,
)
from net_core.cortex._model import ModelAdapter
from net_core.cortex._pcstruct import c_kernel, make_record, unpack_from
from net_core.cortex._query import Watch, check_bounds, order_and_limit, parse_order_by
from net_core.errors import DecodeError

__all__ = ["TASKS_CHANNEL", "TasksAdapter", "TasksFold", "TasksState"]

TASKS_CHANNEL: Final = "cortex/tasks"
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_c_fold_tasks = c_kernel("fold_tasks")
_c_seal = c_kernel("seal_record")
_xxh3 = xxhash.xxh3_64_intdigest
_PENDING: Final = TaskStatus.PENDING
_COMPLETED: Final = TaskStatus.COMPLETED


@final
@attrs.define
class TasksState:
    """Folded Tasks state: the tasks by id and the next ``app_seq`` of our origin."""

    tasks: dict[int, Task] = attrs.field(factory=dict)
    app_seq: int = 0


@final
class TasksFold(Fold[TasksState]):
    """The Tasks fold (see the module docstring); ``origin_hash`` is the adapter's own."""

    name = TASKS_CHANNEL
    snapshot_version = 1

    def __init__(self, origin_hash: int) -> None:
        self.origin_hash = origin_hash
        if _c_fold_tasks is not None:
            self.fold_batch = self._fold_batch_c

    def apply(self, event: CortexEvent, state: TasksState) -> None:
        """Fold one event (see :meth:`apply_fields`)."""
        self.apply_fields(
            event.seq,
            event.dispatch,
            event.flags,
            event.origin_hash,
            event.seq_or_ts,
            event.tail,
            state,
        )

    def apply_fields(
        self,
        seq: int,
        dispatch: int,
        flags: int,
        origin_hash: int,
        seq_or_ts: int,
        tail: bytes,
        state: TasksState,
    ) -> None:
        """Fold one Tasks event."""
        tasks = state.tasks
        if dispatch == DISPATCH_TASK_CREATED:
            task_id, title, now, _ = unpack_from("usu", tail)
            tasks[task_id] = make_record(Task, task_id, title, _PENDING, now, now)
        elif dispatch == DISPATCH_TASK_RENAMED:
            task_id, title, now, _ = unpack_from("usu", tail)
            old = tasks.get(task_id)
            if old is not None:
                tasks[task_id] = make_record(Task, task_id, title, old.status, old.created_ns, now)
        elif dispatch == DISPATCH_TASK_COMPLETED:
            task_id, now, _ = unpack_from("uu", tail)
            old = tasks.get(task_id)
            if old is not None:
                tasks[task_id] = make_record(
                    Task, task_id, old.title, _COMPLETED, old.created_ns, now
                )
        elif dispatch == DISPATCH_TASK_DELETED:
            task_id, _ = unpack_from("u", tail)
            tasks.pop(task_id, None)
        # app_seq discovery: never reuse a counter of our own origin found in the log.
        if origin_hash == self.origin_hash and state.app_seq <= seq_or_ts != _U64_MAX:
            state.app_seq = seq_or_ts + 1

    def _fold_batch_c(self, payloads: list[bytes], start: int, state: TasksState) -> int:
        """The C batch kernel (see :attr:`Fold.fold_batch`)."""
        assert _c_fold_tasks is not None  # only installed when the kernel exists
        index: int
        index, state.app_seq = _c_fold_tasks(
            payloads,
            start,
            state.tasks,
            self.origin_hash,
            state.app_seq,
            Task,
            _PENDING,
            _COMPLETED,
            _xxh3,
        )
        return index

    def encode_state(self, state: TasksState) -> bytes:
        """The reference's snapshot bytes: ``{app_seq, inner: tasks map}``."""
        return encode_task_snapshot(TaskSnapshot(state.app_seq, state.tasks))

    def decode_state(self, data: bytes, version: int) -> TasksState:
        """Decode the reference's snapshot bytes (trailing bytes ignored)."""
        try:
            snap = decode_task_snapshot(data)
        except DecodeError as exc:
            raise SnapshotDecodeError(f"tasks snapshot: {exc}") from exc
        return TasksState(dict(snap.tasks), snap.app_seq)


def _status(value: TaskStatus | str | None) -> TaskStatus | None:
    if value is None or isinstance(value, TaskStatus):
        return value
    lowered = value.lower()
    if lowered == "pending":
        return TaskStatus.PENDING
    if lowered == "completed":
        return TaskStatus.COMPLETED
    raise ValueError(f"invalid status \"{value}\" (expected 'pending' or 'completed')")


@final
class TasksAdapter(ModelAdapter[TasksState]):
    """Tasks over a RedEX channel: writes, folded state, queries and watches.

    Open with :meth:`open` or :meth:`open_from_snapshot` (async context managers); the
    block is entered once the fold has caught up with everything already in the log::

        async with TasksAdapter.open(redex, origin_hash=7) as tasks:
            seq = tasks.create(1, "write the docs")
            await tasks.wait_for_seq(seq)
            print(tasks.list_tasks(status="pending"))
    """

    channel = TASKS_CHANNEL

    @classmethod
    def _fold(cls, origin_hash: int) -> TasksFold:
        return TasksFold(origin_hash)

    @classmethod
    def _initial_state(cls) -> TasksState:
        return TasksState()

    # -- writes ----------------------------------------------------------------------

    def create(self, task_id: int, title: str, now_ns: int | None = None) -> int:
        """Create (or fully reset) a pending task; returns the RedEX seq."""
        now = time.time_ns() if now_ns is None else now_ns
        if _c_seal is None or self._adapter._closed:
            return self._ingest("create", DISPATCH_TASK_CREATED, "usu", task_id, title, now)
        # _ingest() inlined: create is the hot write.
        state = self._state
        with self._counter_lock:
            counter = state.app_seq
            state.app_seq = counter + 1
        try:
            payload = _c_seal(1, 0, self.origin_hash, counter, _xxh3, "usu", task_id, title, now)
        except BaseException:
            self._give_back(counter)
            raise
        return self._append(payload)

    def rename(self, task_id: int, new_title: str, now_ns: int | None = None) -> int:
        """Rename a task (a no-op in the fold if it does not exist); returns the seq."""
        now = time.time_ns() if now_ns is None else now_ns
        return self._ingest("rename", DISPATCH_TASK_RENAMED, "usu", task_id, new_title, now)

    def complete(self, task_id: int, now_ns: int | None = None) -> int:
        """Mark a task completed (a no-op if it does not exist); returns the seq."""
        now = time.time_ns() if now_ns is None else now_ns
        return self._ingest("complete", DISPATCH_TASK_COMPLETED, "uu", task_id, now)

    def delete(self, task_id: int) -> int:
        """Delete a task (a no-op if it does not exist); returns the seq."""
        return self._ingest("delete", DISPATCH_TASK_DELETED, "u", task_id)

    # -- reads -----------------------------------------------------------------------

    @property
    def tasks(self) -> dict[int, Task]:
        """The folded tasks by id (live view: do not mutate)."""
        return self._adapter.state.tasks

    def count(self) -> int:
        """Number of tasks."""
        return len(self._adapter.state.tasks)

    def get(self, task_id: int) -> Task | None:
        """The task with ``task_id``, or ``None``."""
        return self._adapter.state.tasks.get(task_id)

    def list_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        title_contains: str | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
        updated_after_ns: int | None = None,
        updated_before_ns: int | None = None,
        where_id_in: Collection[int] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks matching every given filter.

        ``status`` is ``"pending"`` / ``"completed"`` (case-insensitive) or a
        :class:`TaskStatus`; ``title_contains`` matches case-insensitively; the four time
        bounds are inclusive (after: ``>=``, before: ``<=``); ``order_by`` is one of
        ``id_asc, id_desc, created_asc, created_desc, updated_asc, updated_desc``
        (case-insensitive, stable); without it the order is the state's (insertion)
        order. ``limit`` applies after ordering.
        """
        return self._query(
            status=status,
            title_contains=title_contains,
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
            where_id_in=where_id_in,
            order_by=order_by,
            limit=limit,
            default_order=None,
        )()

    def _query(
        self,
        *,
        status: TaskStatus | str | None,
        title_contains: str | None,
        created_after_ns: int | None,
        created_before_ns: int | None,
        updated_after_ns: int | None,
        updated_before_ns: int | None,
        where_id_in: Collection[int] | None,
        order_by: str | None,
        limit: int | None,
        default_order: str | None,
    ) -> _TaskQuery:
        check_bounds(
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
        )
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return _TaskQuery(
            self._adapter,
            _status(status),
            title_contains.lower() if title_contains is not None else None,
            created_after_ns,
            created_before_ns,
            updated_after_ns,
            updated_before_ns,
            frozenset(where_id_in) if where_id_in is not None else None,
            parse_order_by(order_by if order_by is not None else default_order, verbose=True),
            limit,
        )

    def watch_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        title_contains: str | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
        updated_after_ns: int | None = None,
        updated_before_ns: int | None = None,
        where_id_in: Collection[int] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Watch[Task]:
        """Watch a query (same filters as :meth:`list_tasks`; default order ``id_asc``).

        The first value is the current result; then one value per distinct change.
        """
        query = self._query(
            status=status,
            title_contains=title_contains,
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
            where_id_in=where_id_in,
            order_by=order_by,
            limit=limit,
            default_order="id_asc",
        )
        return Watch(self._adapter, query)

    def snapshot_and_watch_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        title_contains: str | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
        updated_after_ns: int | None = None,
        updated_before_ns: int | None = None,
        where_id_in: Collection[int] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[Task], Watch[Task]]:
        """The current result and a watch of later *different* results, atomically: no
        change between the two is lost, and the watch never repeats the snapshot first."""
        query = self._query(
            status=status,
            title_contains=title_contains,
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
            where_id_in=where_id_in,
            order_by=order_by,
            limit=limit,
            default_order="id_asc",
        )
        current = query()
        return list(current), Watch(self._adapter, query, initial=current)


@final
class _TaskQuery:
    """A compiled Tasks query: call it to run it against the current state."""

    __slots__ = (
        "adapter",
        "created_after",
        "created_before",
        "ids",
        "limit",
        "order",
        "status",
        "title",
        "updated_after",
        "updated_before",
    )

    def __init__(
        self,
        adapter: CortexAdapter[TasksState],
        status: TaskStatus | None,
        title: str | None,
        created_after: int | None,
        created_before: int | None,
        updated_after: int | None,
        updated_before: int | None,
        ids: frozenset[int] | None,
        order: tuple[str, bool] | None,
        limit: int | None,
    ) -> None:
        self.adapter = adapter
        self.status = status
        self.title = title
        self.created_after = created_after
        self.created_before = created_before
        self.updated_after = updated_after
        self.updated_before = updated_before
        self.ids = ids
        self.order = order
        self.limit = limit

    def __call__(self) -> list[Task]:
        tasks = self.adapter.state.tasks
        if self.ids is not None:
            candidates = [tasks[i] for i in self.ids if i in tasks]
            if self.order is None:
                candidates.sort(key=lambda t: t.id)
        else:
            candidates = list(tasks.values())
        status, title = self.status, self.title
        ca, cb = self.created_after, self.created_before
        ua, ub = self.updated_after, self.updated_before
        if status is not None or title is not None or ca is not None or cb is not None:
            candidates = [
                t
                for t in candidates
                if (status is None or t.status == status)
                and (title is None or title in t.title.lower())
                and (ca is None or t.created_ns >= ca)
                and (cb is None or t.created_ns <= cb)
            ]
        if ua is not None or ub is not None:
            candidates = [
                t
                for t in candidates
                if (ua is None or t.updated_ns >= ua) and (ub is None or t.updated_ns <= ub)
            ]
        return order_and_limit(candidates, self.order, self.limit)
