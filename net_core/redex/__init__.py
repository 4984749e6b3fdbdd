"""RedEX: the append-only log of net-core.

A RedEX file is a per-channel, append-only sequence of events, each identified by a
gap-free ``seq`` and verified by a 28-bit checksum. Heap-only files live in memory;
persistent files live on local disk in a manifest + generation-directory layout that is
byte-compatible with the reference implementation (``ai2070-net`` 0.18), so Python and
Rust nodes share files.

This package owns the on-disk format (pure codecs in ``_format``), the open-time recovery
planner (``_recovery``), the persistent store (``_store``: recovery, appends with
rollback, compaction through the manifest flip), the file (``_file``: columns, retention,
fsync policy), tails (``_tail``) and the manager (``_manager``). Codecs and planners
never do I/O; the store is the only module that touches the disk.

Quick start::

    from net_core.redex import Redex

    redex = Redex("/var/lib/net")
    log = redex.open_file("events/clicks", persistent=True,
                          retention={"count": {"max_events": 1_000_000}})
    seq = log.append(b"hello")
    first = log.append_batch([b"a", b"b"])
    events = log.read_range(0, log.next_seq)
"""

from net_core.redex._config import RedexFileConfig
from net_core.redex._errors import (
    FsyncError,
    LaggedError,
    PayloadTooLargeError,
    PoisonedError,
    RedexClosedError,
    RedexConfigConflictError,
    RedexIOError,
    SegmentOffsetOverflowError,
    SeqOutOfRangeError,
    SeqSpaceExhaustedError,
)
from net_core.redex._file import OrderedAppender, RedexEvent, RedexEvents, RedexFile
from net_core.redex._format import (
    ChannelNameError,
    IdxRecord,
    IdxRecordError,
    Manifest,
    ManifestError,
    RedexFormatError,
    entry_checksum,
    validate_channel_name,
)
from net_core.redex._index import Insert, RedexIndex, Remove
from net_core.redex._manager import Redex
from net_core.redex._tail import AppendWatcher, RedexTail
from net_core.redex._typed import RedexDecodeError, TypedRedexFile

__all__ = [
    "AppendWatcher",
    "ChannelNameError",
    "FsyncError",
    "IdxRecord",
    "IdxRecordError",
    "Insert",
    "LaggedError",
    "Manifest",
    "ManifestError",
    "OrderedAppender",
    "PayloadTooLargeError",
    "PoisonedError",
    "Redex",
    "RedexClosedError",
    "RedexConfigConflictError",
    "RedexDecodeError",
    "RedexEvent",
    "RedexEvents",
    "RedexFile",
    "RedexFileConfig",
    "RedexFormatError",
    "RedexIOError",
    "RedexIndex",
    "RedexTail",
    "Remove",
    "SegmentOffsetOverflowError",
    "SeqOutOfRangeError",
    "SeqSpaceExhaustedError",
    "TypedRedexFile",
    "entry_checksum",
    "validate_channel_name",
]
