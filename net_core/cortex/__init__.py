"""CortEX: typed event folds over RedEX files.

This package currently owns the pure codecs of CortEX payloads: the 24-byte
:class:`EventMeta` header with its v1/v2 checksums and dispatch codes (``_meta``), a
minimal postcard reader/writer (``_postcard``), and the event-tail and snapshot codecs of
the Tasks and Memories models (``_codec``). None of these modules does I/O.

Quick start::

    from net_core.cortex import TaskCreated, encode_task_event, open_event, seal

    dispatch, tail = encode_task_event(TaskCreated(1, "Hello", 1000))
    payload = seal(dispatch, origin_hash=0xABCD, seq_or_ts=0, tail=tail)
    meta, tail, version = open_event(payload)
"""

from net_core.cortex._codec import (
    Memory,
    MemoryDeleted,
    MemoryEvent,
    MemoryPinned,
    MemoryRetagged,
    MemorySnapshot,
    MemoryStored,
    MemoryUnpinned,
    Task,
    TaskCompleted,
    TaskCreated,
    TaskDeleted,
    TaskEvent,
    TaskRenamed,
    TaskSnapshot,
    TaskStatus,
    UnknownDispatchError,
    decode_memory_event,
    decode_memory_snapshot,
    decode_task_event,
    decode_task_snapshot,
    encode_memory_event,
    encode_memory_snapshot,
    encode_task_event,
    encode_task_snapshot,
)
from net_core.cortex._meta import (
    APPLICATION_DISPATCH_START,
    DISPATCH_MEMORY_DELETED,
    DISPATCH_MEMORY_PINNED,
    DISPATCH_MEMORY_RETAGGED,
    DISPATCH_MEMORY_STORED,
    DISPATCH_MEMORY_UNPINNED,
    DISPATCH_RAW,
    DISPATCH_TASK_COMPLETED,
    DISPATCH_TASK_CREATED,
    DISPATCH_TASK_DELETED,
    DISPATCH_TASK_RENAMED,
    EVENT_META_SIZE,
    FLAG_CAUSAL,
    FLAG_CONTINUITY_PROOF,
    ChecksumMismatch,
    EventMeta,
    EventMetaError,
    checksum_v1,
    checksum_v2,
    is_application_dispatch,
    open_event,
    seal,
)
from net_core.cortex._postcard import PostcardError, Reader, Writer

__all__ = [
    "APPLICATION_DISPATCH_START",
    "DISPATCH_MEMORY_DELETED",
    "DISPATCH_MEMORY_PINNED",
    "DISPATCH_MEMORY_RETAGGED",
    "DISPATCH_MEMORY_STORED",
    "DISPATCH_MEMORY_UNPINNED",
    "DISPATCH_RAW",
    "DISPATCH_TASK_COMPLETED",
    "DISPATCH_TASK_CREATED",
    "DISPATCH_TASK_DELETED",
    "DISPATCH_TASK_RENAMED",
    "EVENT_META_SIZE",
    "FLAG_CAUSAL",
    "FLAG_CONTINUITY_PROOF",
    "ChecksumMismatch",
    "EventMeta",
    "EventMetaError",
    "Memory",
    "MemoryDeleted",
    "MemoryEvent",
    "MemoryPinned",
    "MemoryRetagged",
    "MemorySnapshot",
    "MemoryStored",
    "MemoryUnpinned",
    "PostcardError",
    "Reader",
    "Task",
    "TaskCompleted",
    "TaskCreated",
    "TaskDeleted",
    "TaskEvent",
    "TaskRenamed",
    "TaskSnapshot",
    "TaskStatus",
    "UnknownDispatchError",
    "Writer",
    "checksum_v1",
    "checksum_v2",
    "decode_memory_event",
    "decode_memory_snapshot",
    "decode_task_event",
    "decode_task_snapshot",
    "encode_memory_event",
    "encode_memory_snapshot",
    "encode_task_event",
    "encode_task_snapshot",
    "is_application_dispatch",
    "open_event",
    "seal",
]
