"""The errors of the CortEX fold layer, one class per failure a caller can act on.

Decoding errors of payloads and snapshots belong to the :class:`~net_core.errors.DecodeError`
family (and to :class:`~net_core.errors.CortexError`); everything else here is a
:class:`~net_core.errors.CortexError`.
"""

from __future__ import annotations

from net_core.errors import ClosedError, CortexError, DecodeError

__all__ = [
    "AdapterClosedError",
    "FoldStoppedError",
    "FoldTimeoutError",
    "SnapshotAheadError",
    "SnapshotDecodeError",
    "SnapshotMismatchError",
    "SnapshotUnsupportedError",
]


class AdapterClosedError(CortexError, ClosedError):
    """The adapter was closed by its owner; ``op`` names what was refused."""

    def __init__(self, op: str) -> None:
        self.op = op
        super().__init__(f"{op} failed: adapter closed")


class FoldStoppedError(CortexError):
    """The fold stopped before reaching the awaited seq.

    ``folded_through_seq`` / ``applied_through_seq`` are the watermarks at the stop
    (``None``: nothing yet); ``reason`` says why the fold stopped (the halting error
    under the ``stop`` policy, history evicted before it was folded, the adapter or
    the file closed).
    """

    def __init__(
        self,
        op: str,
        *,
        folded_through_seq: int | None,
        applied_through_seq: int | None,
        reason: str,
    ) -> None:
        self.op = op
        self.folded_through_seq = folded_through_seq
        self.applied_through_seq = applied_through_seq
        self.reason = reason
        super().__init__(
            f"{op}: fold task stopped; folded_through={folded_through_seq} "
            f"applied_through={applied_through_seq} ({reason})"
        )


class FoldTimeoutError(CortexError, TimeoutError):
    """A wait for a watermark timed out while the fold was still running."""

    def __init__(self, op: str, seq: int, timeout: float, reached: int | None) -> None:
        self.seq = seq
        self.timeout = timeout
        self.reached = reached
        super().__init__(f"{op}: seq {seq} not reached within {timeout:g} s (at {reached})")


class SnapshotDecodeError(DecodeError, CortexError):
    """Snapshot bytes are malformed (bad envelope, checksum or state encoding)."""


class SnapshotMismatchError(CortexError, ValueError):
    """The snapshot was taken from another kind of fold than the one restoring it."""


class SnapshotUnsupportedError(CortexError):
    """The fold has no state codec, so it cannot be snapshotted or restored."""


class SnapshotAheadError(CortexError, ValueError):
    """The snapshot covers seqs the log does not have (it belongs to another log, or the
    log lost its tail). Restoring it would hide new appends from the fold.
    """

    def __init__(self, applied_through_seq: int, next_seq: int) -> None:
        self.applied_through_seq = applied_through_seq
        self.next_seq = next_seq
        super().__init__(
            f"snapshot covers seqs through {applied_through_seq} but the log's next seq is "
            f"{next_seq}; it was taken from another log or this log lost its tail"
        )
