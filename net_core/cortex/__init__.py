"""CortEX: fold a RedEX log into queryable state, compatible with the reference.

Layers, bottom up:

* codecs (no I/O): the 24-byte :class:`EventMeta` header with v1/v2 checksums and
  dispatch codes (``_meta``), postcard (``_postcard``, ``_pcstruct``), the Tasks and
  Memories event tails and snapshot bytes (``_codec``), the :class:`Snapshot` envelope;
* :class:`CortexAdapter`: tails a RedEX file and applies a user :class:`Fold`, with
  strict-prefix and progress watermarks, error policies, waits, a changes stream and
  snapshots (``_adapter``); :class:`SnapshotStore` with its anti-rewind high-water mark;
* the models :class:`TasksAdapter` and :class:`MemoriesAdapter` with queries and
  watches.

Quick start::

    from net_core.redex import Redex
    from net_core.cortex import TasksAdapter

    redex = Redex()
    async with TasksAdapter.open(redex, origin_hash=0xABCD) as tasks:
        seq = tasks.create(1, "write the docs")
        await tasks.wait_for_seq(seq)
        print(tasks.list_tasks(status="pending", order_by="created_desc"))
"""

from net_core.cortex._adapter import (
    Change,
    ChangeStream,
    CortexAdapter,
    CortexAdapterConfig,
    CortexEvent,
    Fold,
    FoldErrorPolicy,
)
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
from net_core.cortex._errors import (
    AdapterClosedError,
    FoldStoppedError,
    FoldTimeoutError,
    SnapshotAheadError,
    SnapshotDecodeError,
    SnapshotMismatchError,
    SnapshotUnsupportedError,
)
from net_core.cortex._memories import (
    MEMORIES_CHANNEL,
    MemoriesAdapter,
    MemoriesFold,
    MemoriesState,
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
    open_raw,
    seal,
)
from net_core.cortex._model import ModelAdapter
from net_core.cortex._postcard import PostcardError, Reader, Writer
from net_core.cortex._query import Watch
from net_core.cortex._snapshot import Snapshot
from net_core.cortex._snapshot_store import SnapshotStore, StateSnapshot
from net_core.cortex._tasks import TASKS_CHANNEL, TasksAdapter, TasksFold, TasksState

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
    "MEMORIES_CHANNEL",
    "TASKS_CHANNEL",
    "AdapterClosedError",
    "Change",
    "ChangeStream",
    "ChecksumMismatch",
    "CortexAdapter",
    "CortexAdapterConfig",
    "CortexEvent",
    "EventMeta",
    "EventMetaError",
    "Fold",
    "FoldErrorPolicy",
    "FoldStoppedError",
    "FoldTimeoutError",
    "MemoriesAdapter",
    "MemoriesFold",
    "MemoriesState",
    "Memory",
    "MemoryDeleted",
    "MemoryEvent",
    "MemoryPinned",
    "MemoryRetagged",
    "MemorySnapshot",
    "MemoryStored",
    "MemoryUnpinned",
    "ModelAdapter",
    "PostcardError",
    "Reader",
    "Snapshot",
    "SnapshotAheadError",
    "SnapshotDecodeError",
    "SnapshotMismatchError",
    "SnapshotStore",
    "SnapshotUnsupportedError",
    "StateSnapshot",
    "Task",
    "TaskCompleted",
    "TaskCreated",
    "TaskDeleted",
    "TaskEvent",
    "TaskRenamed",
    "TaskSnapshot",
    "TaskStatus",
    "TasksAdapter",
    "TasksFold",
    "TasksState",
    "UnknownDispatchError",
    "Watch",
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
    "open_raw",
    "seal",
]
