"""RedEX: the append-only log of net-core.

A RedEX file is a per-channel, append-only sequence of events, each identified by a
gap-free ``seq`` and verified by a 28-bit checksum; persistent files live on local disk
in a manifest + generation-directory layout that is byte-compatible with the reference
implementation (``ai2070-net`` 0.18), so Python and Rust nodes share files.

This package owns the on-disk format (pure codecs in ``_format``), the open-time recovery
planner (``_recovery``) and, as it grows, the file layer, the manager, tails, retention
and compaction. The codecs and planners never do I/O; the file layer wraps them.
"""

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

__all__ = [
    "ChannelNameError",
    "IdxRecord",
    "IdxRecordError",
    "Manifest",
    "ManifestError",
    "RedexFormatError",
    "entry_checksum",
    "validate_channel_name",
]
