"""The storage-backend contract of the bus, and the values that cross it.

A backend persists batches per shard, in order, and reads a shard back from an exclusive
position. The bus calls :meth:`StorageBackend.write_batch` from one task per shard (so
writes of one shard never overlap) and the consumer calls
:meth:`StorageBackend.read_shard` concurrently for several shards.

Contract (checked by :mod:`net_core.testing.storage_conformance`):

* ``write_batch`` appends the batch's events to its shard in order, atomically (all or
  none), and is **idempotent under retry**: writing a batch again with the same
  ``nonce``, ``shard_id`` and ``sequence_start`` must not duplicate events, or the backend
  must store the dedup ids so consumers can drop the copies (say which in ``dedups``).
* Errors: raise :class:`~net_core.errors.TransientAdapterError` for failures worth
  retrying (timeouts, lost connections) and :class:`~net_core.errors.FatalAdapterError`
  for the rest. Never block forever; the bus also bounds every call by its
  ``adapter_timeout``.
* ``read_shard(shard, after, limit)`` returns up to ``limit`` events with positions
  strictly after ``after`` (``None``: from the start), ``next_id`` = the position of the
  last event returned (``None`` if none), and ``has_more`` when more events follow.
  Positions are opaque strings that :func:`compare_positions` orders.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, final

import attrs
import orjson

__all__ = [
    "Batch",
    "ShardPollResult",
    "StorageBackend",
    "StoredEvent",
    "compare_positions",
    "dedup_id",
]


def dedup_id(nonce: int, shard_id: int, sequence_start: int, index: int) -> str:
    """The stable id of event ``index`` of a batch: ``{nonce:x}:{shard}:{start}:{index}``."""
    return f"{nonce:x}:{shard_id}:{sequence_start}:{index}"


@final
@attrs.frozen(slots=True)
class Batch:
    """Events of one shard on their way to storage.

    ``sequence_start`` counts *events* per shard (0, then the size of the first batch,
    ...), so ``(nonce, shard_id, sequence_start + i)`` names an event forever.
    ``timestamps[i]`` is the insertion time of ``events[i]`` (wall-clock unix ns, strictly
    increasing per shard).
    """

    shard_id: int
    sequence_start: int
    nonce: int
    events: Sequence[bytes]
    timestamps: Sequence[int]

    def __len__(self) -> int:
        return len(self.events)

    def dedup_id(self, index: int) -> str:
        """The stable dedup id of event ``index``."""
        return dedup_id(self.nonce, self.shard_id, self.sequence_start, index)


class StoredEvent(NamedTuple):
    """An event read back from storage (immutable).

    ``id`` is its position in the shard (an exclusive cursor value), ``raw`` the bytes
    as ingested, ``insertion_ts`` its insertion time, ``dedup_id`` its stable id when the
    backend stores it. A named tuple rather than an attrs class: polls build one per
    event, and this is about three times cheaper to construct.
    """

    id: str
    raw: bytes
    insertion_ts: int
    shard_id: int
    dedup_id: str | None = None

    def parse(self) -> Any:
        """The event decoded as JSON."""
        return orjson.loads(self.raw)

    @property
    def raw_str(self) -> str:
        """The raw bytes as text (``UnicodeDecodeError`` if they are not UTF-8)."""
        return self.raw.decode("utf-8")


@final
@attrs.frozen(slots=True)
class ShardPollResult:
    """What one shard returned to a poll."""

    events: list[StoredEvent]
    next_id: str | None
    has_more: bool


class StorageBackend(abc.ABC):
    """Base class of bus storage backends (see the module docstring for the contract)."""

    #: Name under which the backend is registered (``net_storage_backends`` hook).
    name: ClassVar[str] = "abstract"
    #: Whether re-writing a batch is a no-op (True) or leaves duplicates carrying the
    #: same dedup ids for consumers to drop (False).
    dedups: ClassVar[bool] = True

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect / create what the backend needs (called once by the bus)."""

    @abc.abstractmethod
    async def write_batch(self, batch: Batch) -> None:
        """Persist ``batch`` (see the contract)."""

    @abc.abstractmethod
    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        """Read up to ``limit`` events of ``shard_id`` strictly after ``after``."""

    async def flush(self) -> None:  # noqa: B027 - optional hook
        """Make previously written batches durable/visible (no-op by default)."""

    async def health(self) -> bool:
        """Whether the backend can serve requests right now."""
        return True

    async def resume_sequence(self, shard_id: int, nonce: int) -> int:
        """The next ``sequence_start`` for batches of ``(shard_id, nonce)``: one past the
        last event of that producer already stored (0 if none). A restarted producer with
        a persisted nonce continues here, so its dedup ids never repeat."""
        return 0

    async def known_shards(self) -> list[int]:
        """Shard ids that hold stored events (from earlier runs too), sorted."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the backend is not used afterwards."""


_REDIS_ID = re.compile(r"^(\d+)-(\d+)$")


def compare_positions(a: str, b: str) -> int:
    """Order two shard positions: ``-1``, ``0`` or ``1``.

    ``ms-seq`` ids (Redis streams) compare as number pairs, decimal ids (RedEX, memory,
    JetStream) numerically, anything else as strings (the reference's rule).
    """
    ma, mb = _REDIS_ID.match(a), _REDIS_ID.match(b)
    if ma and mb:
        ka = (int(ma[1]), int(ma[2]))
        kb = (int(mb[1]), int(mb[2]))
        return (ka > kb) - (ka < kb)
    if a.isdigit() and b.isdigit() and a.isascii() and b.isascii():
        ia, ib = int(a), int(b)
        return (ia > ib) - (ia < ib)
    return (a > b) - (a < b)
