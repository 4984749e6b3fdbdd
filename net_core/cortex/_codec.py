"""Codecs of the Tasks and Memories models: event tails and snapshot bytes.

An event tail is the postcard encoding of the event's fields in declaration order; the
``EventMeta`` dispatch code (see :mod:`net_core.cortex._meta`) says which event it is:

=====  ===================  ==========================================
code   event                tail fields
=====  ===================  ==========================================
0x01   :class:`TaskCreated`     id u64, title String, now_ns u64
0x02   :class:`TaskRenamed`     id u64, new_title String, now_ns u64
0x03   :class:`TaskCompleted`   id u64, now_ns u64
0x04   :class:`TaskDeleted`     id u64
0x10   :class:`MemoryStored`    id u64, content String, tags Vec<String>,
                                source String, now_ns u64
0x11   :class:`MemoryRetagged`  id u64, tags Vec<String>, now_ns u64
0x12   :class:`MemoryPinned`    id u64, now_ns u64
0x13   :class:`MemoryUnpinned`  id u64, now_ns u64
0x14   :class:`MemoryDeleted`   id u64
=====  ===================  ==========================================

A snapshot is postcard ``{app_seq u64, inner Vec<u8>}`` where ``inner`` is the postcard
encoding of the state: a map (varint count, then ``id u64`` key and record) whose entry
order is unspecified. Like the reference, decoders ignore trailing bytes after a valid
value, and a repeated map key keeps its last record.

Decoders raise only :class:`~net_core.errors.DecodeError` subclasses. This module never
does I/O and never folds events into state.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple, final

import attrs

from net_core.cortex._meta import (
    DISPATCH_MEMORY_DELETED,
    DISPATCH_MEMORY_PINNED,
    DISPATCH_MEMORY_RETAGGED,
    DISPATCH_MEMORY_STORED,
    DISPATCH_MEMORY_UNPINNED,
    DISPATCH_TASK_COMPLETED,
    DISPATCH_TASK_CREATED,
    DISPATCH_TASK_DELETED,
    DISPATCH_TASK_RENAMED,
)
from net_core.cortex._postcard import U64_MAX, PostcardError, Reader, Writer
from net_core.errors import CortexError, DecodeError

__all__ = [
    "Memory",
    "MemoryDeleted",
    "MemoryEvent",
    "MemoryPinned",
    "MemoryRetagged",
    "MemorySnapshot",
    "MemoryStored",
    "MemoryUnpinned",
    "Task",
    "TaskCompleted",
    "TaskCreated",
    "TaskDeleted",
    "TaskEvent",
    "TaskRenamed",
    "TaskSnapshot",
    "TaskStatus",
    "UnknownDispatchError",
    "decode_memory_event",
    "decode_memory_snapshot",
    "decode_task_event",
    "decode_task_snapshot",
    "encode_memory_event",
    "encode_memory_snapshot",
    "encode_task_event",
    "encode_task_snapshot",
]


class UnknownDispatchError(DecodeError, CortexError):
    """The dispatch code does not name an event of the model being decoded.

    The reference fold ignores such events; a caller that folds should do the same.
    """

    def __init__(self, model: str, dispatch: int) -> None:
        self.model = model
        self.dispatch = dispatch
        super().__init__(f"{model}: unknown dispatch code {dispatch:#04x}")


def _u64(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{attr.name} must be a u64, got {value}")


def _tags(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(value)


# -- Tasks -------------------------------------------------------------------------------


@final
@attrs.frozen
class TaskCreated:
    """0x01: create (or fully reset) task ``id`` as pending, stamped ``now_ns``."""

    id: int = attrs.field(validator=_u64)
    title: str
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class TaskRenamed:
    """0x02: set the title of task ``id`` (no-op on an unknown id)."""

    id: int = attrs.field(validator=_u64)
    new_title: str
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class TaskCompleted:
    """0x03: mark task ``id`` completed (no-op on an unknown id)."""

    id: int = attrs.field(validator=_u64)
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class TaskDeleted:
    """0x04: remove task ``id`` (no-op on an unknown id)."""

    id: int = attrs.field(validator=_u64)


TaskEvent = TaskCreated | TaskRenamed | TaskCompleted | TaskDeleted
"""Any event of the Tasks model."""


def encode_task_event(event: TaskEvent) -> tuple[int, bytes]:
    """Return ``(dispatch, tail)`` for a Tasks event."""
    w = Writer()
    w.u64(event.id)
    if isinstance(event, TaskCreated):
        w.str(event.title)
        w.u64(event.now_ns)
        return DISPATCH_TASK_CREATED, w.getvalue()
    if isinstance(event, TaskRenamed):
        w.str(event.new_title)
        w.u64(event.now_ns)
        return DISPATCH_TASK_RENAMED, w.getvalue()
    if isinstance(event, TaskCompleted):
        w.u64(event.now_ns)
        return DISPATCH_TASK_COMPLETED, w.getvalue()
    return DISPATCH_TASK_DELETED, w.getvalue()


def decode_task_event(dispatch: int, tail: bytes | bytearray | memoryview) -> TaskEvent:
    """Decode the tail of a Tasks event; trailing bytes are ignored as in the reference.

    Raises :class:`UnknownDispatchError` for a code outside 0x01-0x04 and
    :class:`~net_core.cortex.PostcardError` for a malformed tail.
    """
    r = Reader(tail)
    if dispatch == DISPATCH_TASK_CREATED:
        return TaskCreated(r.u64(), r.str(), r.u64())
    if dispatch == DISPATCH_TASK_RENAMED:
        return TaskRenamed(r.u64(), r.str(), r.u64())
    if dispatch == DISPATCH_TASK_COMPLETED:
        return TaskCompleted(r.u64(), r.u64())
    if dispatch == DISPATCH_TASK_DELETED:
        return TaskDeleted(r.u64())
    raise UnknownDispatchError("tasks", dispatch)


class TaskStatus(enum.IntEnum):
    """Status of a task; the value is its postcard variant index."""

    PENDING = 0
    COMPLETED = 1


class Task(NamedTuple):
    """One task record, in postcard field order (an immutable named tuple: cheap to build
    in a fold, safe to hand out from queries)."""

    id: int
    title: str
    status: TaskStatus
    created_ns: int
    updated_ns: int


@final
@attrs.frozen
class TaskSnapshot:
    """Decoded Tasks snapshot: the adapter's ``app_seq`` and the tasks by id."""

    app_seq: int = attrs.field(validator=_u64)
    tasks: dict[int, Task] = attrs.field(factory=dict)


def encode_task_snapshot(snapshot: TaskSnapshot) -> bytes:
    """Encode a Tasks snapshot (map entries in ``snapshot.tasks`` iteration order)."""
    inner = Writer()
    inner.u64(len(snapshot.tasks))
    for key, task in snapshot.tasks.items():
        inner.u64(key)
        inner.u64(task.id)
        inner.str(task.title)
        inner.variant(int(task.status))
        inner.u64(task.created_ns)
        inner.u64(task.updated_ns)
    outer = Writer()
    outer.u64(snapshot.app_seq)
    outer.bytes(inner.getvalue())
    return outer.getvalue()


def _read_task(r: Reader) -> Task:
    task_id, title = r.u64(), r.str()
    start = r.position
    index = r.variant()
    try:
        status = TaskStatus(index)
    except ValueError as exc:
        raise PostcardError(f"task status: unknown variant {index} at offset {start}") from exc
    return Task(task_id, title, status, r.u64(), r.u64())


def decode_task_snapshot(data: bytes | bytearray | memoryview) -> TaskSnapshot:
    """Decode a Tasks snapshot as produced by ``TasksAdapter.snapshot()``."""
    outer = Reader(data)
    app_seq = outer.u64()
    inner = Reader(outer.bytes())
    tasks: dict[int, Task] = {}
    for _ in range(_map_count(inner)):
        key = inner.u64()
        tasks[key] = _read_task(inner)
    return TaskSnapshot(app_seq, tasks)


# -- Memories ----------------------------------------------------------------------------


@final
@attrs.frozen
class MemoryStored:
    """0x10: store memory ``id`` (an existing one keeps its pinned flag and created_ns)."""

    id: int = attrs.field(validator=_u64)
    content: str
    tags: tuple[str, ...] = attrs.field(converter=_tags)
    source: str
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class MemoryRetagged:
    """0x11: replace the tag list of memory ``id`` (no-op on an unknown id)."""

    id: int = attrs.field(validator=_u64)
    tags: tuple[str, ...] = attrs.field(converter=_tags)
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class MemoryPinned:
    """0x12: pin memory ``id`` (no-op on an unknown id)."""

    id: int = attrs.field(validator=_u64)
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class MemoryUnpinned:
    """0x13: unpin memory ``id`` (no-op on an unknown id)."""

    id: int = attrs.field(validator=_u64)
    now_ns: int = attrs.field(validator=_u64)


@final
@attrs.frozen
class MemoryDeleted:
    """0x14: remove memory ``id``."""

    id: int = attrs.field(validator=_u64)


MemoryEvent = MemoryStored | MemoryRetagged | MemoryPinned | MemoryUnpinned | MemoryDeleted
"""Any event of the Memories model."""


def encode_memory_event(event: MemoryEvent) -> tuple[int, bytes]:
    """Return ``(dispatch, tail)`` for a Memories event."""
    w = Writer()
    w.u64(event.id)
    if isinstance(event, MemoryStored):
        w.str(event.content)
        w.seq(event.tags, w.str)
        w.str(event.source)
        w.u64(event.now_ns)
        return DISPATCH_MEMORY_STORED, w.getvalue()
    if isinstance(event, MemoryRetagged):
        w.seq(event.tags, w.str)
        w.u64(event.now_ns)
        return DISPATCH_MEMORY_RETAGGED, w.getvalue()
    if isinstance(event, MemoryPinned):
        w.u64(event.now_ns)
        return DISPATCH_MEMORY_PINNED, w.getvalue()
    if isinstance(event, MemoryUnpinned):
        w.u64(event.now_ns)
        return DISPATCH_MEMORY_UNPINNED, w.getvalue()
    return DISPATCH_MEMORY_DELETED, w.getvalue()


def decode_memory_event(dispatch: int, tail: bytes | bytearray | memoryview) -> MemoryEvent:
    """Decode the tail of a Memories event; trailing bytes are ignored as in the reference.

    Raises :class:`UnknownDispatchError` for a code outside 0x10-0x14 and
    :class:`~net_core.cortex.PostcardError` for a malformed tail.
    """
    r = Reader(tail)
    if dispatch == DISPATCH_MEMORY_STORED:
        return MemoryStored(r.u64(), r.str(), r.seq(r.str), r.str(), r.u64())
    if dispatch == DISPATCH_MEMORY_RETAGGED:
        return MemoryRetagged(r.u64(), r.seq(r.str), r.u64())
    if dispatch == DISPATCH_MEMORY_PINNED:
        return MemoryPinned(r.u64(), r.u64())
    if dispatch == DISPATCH_MEMORY_UNPINNED:
        return MemoryUnpinned(r.u64(), r.u64())
    if dispatch == DISPATCH_MEMORY_DELETED:
        return MemoryDeleted(r.u64())
    raise UnknownDispatchError("memories", dispatch)


class Memory(NamedTuple):
    """One memory record, in postcard field order (an immutable named tuple; ``tags`` is a
    tuple, order kept, duplicates allowed)."""

    id: int
    content: str
    tags: tuple[str, ...]
    source: str
    created_ns: int
    updated_ns: int
    pinned: bool


@final
@attrs.frozen
class MemorySnapshot:
    """Decoded Memories snapshot: the adapter's ``app_seq`` and the memories by id."""

    app_seq: int = attrs.field(validator=_u64)
    memories: dict[int, Memory] = attrs.field(factory=dict)


def encode_memory_snapshot(snapshot: MemorySnapshot) -> bytes:
    """Encode a Memories snapshot (entries in ``snapshot.memories`` iteration order)."""
    inner = Writer()
    inner.u64(len(snapshot.memories))
    for key, memory in snapshot.memories.items():
        inner.u64(key)
        inner.u64(memory.id)
        inner.str(memory.content)
        inner.seq(memory.tags, inner.str)
        inner.str(memory.source)
        inner.u64(memory.created_ns)
        inner.u64(memory.updated_ns)
        inner.bool(memory.pinned)
    outer = Writer()
    outer.u64(snapshot.app_seq)
    outer.bytes(inner.getvalue())
    return outer.getvalue()


def decode_memory_snapshot(data: bytes | bytearray | memoryview) -> MemorySnapshot:
    """Decode a Memories snapshot as produced by ``MemoriesAdapter.snapshot()``."""
    outer = Reader(data)
    app_seq = outer.u64()
    inner = Reader(outer.bytes())
    memories: dict[int, Memory] = {}
    for _ in range(_map_count(inner)):
        key = inner.u64()
        memories[key] = Memory(
            inner.u64(),
            inner.str(),
            tuple(inner.seq(inner.str)),
            inner.str(),
            inner.u64(),
            inner.u64(),
            inner.bool(),
        )
    return MemorySnapshot(app_seq, memories)


_MIN_ENTRY_BYTES: Final = 2


def _map_count(r: Reader) -> int:
    """Read a map's entry count, rejecting counts the remaining bytes cannot hold."""
    start = r.position
    count = r.u64()
    if count * _MIN_ENTRY_BYTES > r.remaining:
        raise PostcardError(f"map: count {count} exceeds the bytes left at offset {start}")
    return count
