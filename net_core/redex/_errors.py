"""The errors of the RedEX layer, one class per failure a caller can act on.

Messages follow the reference's texts where it has one (``payload too large: 10 bytes
(max 4)``, ``file closed``, ``tail subscriber lagged; stream disconnected``) so that logs
read the same on Python and Rust nodes.
"""

from __future__ import annotations

from net_core.errors import BrokenError, ClosedError, ConfigError, RedexError

__all__ = [
    "FsyncError",
    "LaggedError",
    "PayloadTooLargeError",
    "PoisonedError",
    "RedexClosedError",
    "RedexConfigConflictError",
    "RedexIOError",
    "SegmentOffsetOverflowError",
    "SeqOutOfRangeError",
    "SeqSpaceExhaustedError",
]


class RedexClosedError(RedexError, ClosedError):
    """The file (or manager) was closed by its owner."""

    def __init__(self, op: str = "append") -> None:
        self.op = op
        super().__init__(f"{op}: file closed")


class PayloadTooLargeError(RedexError, ValueError):
    """The payload does not fit in the file's remaining heap capacity (no seq was used)."""

    def __init__(self, size: int, maximum: int) -> None:
        self.size = size
        self.maximum = maximum
        super().__init__(f"payload too large: {size} bytes (max {maximum})")


class SegmentOffsetOverflowError(RedexError):
    """A persistent file's ``dat`` offset would not fit the on-disk u32 field (no seq was
    used). Compaction rebases offsets to 0; heap-only files have no offsets and never
    raise this (unlike the reference's, which hit it after 4 GiB of lifetime bytes).
    """

    def __init__(self, offset: int) -> None:
        self.offset = offset
        super().__init__(f"segment offset overflow: offset {offset} exceeds u32::MAX")


class SeqOutOfRangeError(RedexError, LookupError):
    """A seq outside the retained range ``[lo, hi)`` was asked for."""

    def __init__(self, seq: int, lo: int, hi: int) -> None:
        self.seq = seq
        self.lo = lo
        self.hi = hi
        super().__init__(f"sequence {seq} is outside the retained range [{lo}, {hi})")


class SeqSpaceExhaustedError(RedexError):
    """The file has handed out every u64 sequence number; re-create the channel."""


class RedexIOError(RedexError, OSError):
    """A disk operation failed; the cause is in ``__cause__``. State was rolled back."""


class FsyncError(RedexIOError):
    """A background fsync failed. Raised by the next ``append``/``sync`` on the file so the
    failure is never silent; ``sync()`` retries it."""


class PoisonedError(RedexError, BrokenError):
    """A failed write could not be rolled back, so disk and memory may disagree.

    Every later append, sync and compaction raises this until the file is closed and
    opened again (the open-time recovery walk repairs the files).
    """

    def __init__(self, channel: str, cause: str) -> None:
        self.channel = channel
        super().__init__(
            f"channel {channel!r} is poisoned: partial-write rollback could not restore "
            f"on-disk state to match in-memory ({cause}); close and re-open the channel"
        )


class LaggedError(RedexError):
    """A tail subscriber fell more than its buffer behind (or asked for evicted history);
    the tail is disconnected. Re-tail from a seq you still need, or from ``next_seq``."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        text = "tail subscriber lagged; stream disconnected"
        super().__init__(f"{text} ({detail})" if detail else text)


class RedexConfigConflictError(RedexError, ConfigError):
    """``open_file`` was called for an open channel with a different configuration."""
