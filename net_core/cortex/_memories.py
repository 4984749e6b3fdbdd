"""The Memories model: a fold of ``cortex/memories`` into memories by id, with queries
and watches.

Wire compatibility with the reference's ``MemoriesAdapter``: channel, dispatch codes
(0x10 stored, 0x11 retagged, 0x12 pinned, 0x13 unpinned, 0x14 deleted), postcard tails,
snapshot bytes and header stamping as the reference. Fold rules:

* STORED on a new id inserts (unpinned, created = updated = now); on an existing id it
  replaces content, tags and source and bumps ``updated_ns`` but **keeps** ``pinned``
  and ``created_ns``;
* RETAGGED replaces the tag list, PINNED / UNPINNED set the flag; all three bump
  ``updated_ns`` and are no-ops on unknown ids; DELETED removes; unknown codes are
  ignored.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Final, final

import attrs

from net_core.cortex._adapter import CortexAdapter, CortexEvent, Fold
from net_core.cortex._codec import (
    Memory,
    MemorySnapshot,
    decode_memory_snapshot,
    encode_memory_snapshot,
)
from net_core.cortex._errors import SnapshotDecodeError
from net_core.cortex._meta import (
    DISPATCH_MEMORY_DELETED,
    DISPATCH_MEMORY_PINNED,
    DISPATCH_MEMORY_RETAGGED,
    DISPATCH_MEMORY_STORED,
    DISPATCH_MEMORY_UNPINNED,
)
from net_core.cortex._model import ModelAdapter
from net_core.cortex._pcstruct import make_record, unpack_from
from net_core.cortex._query import Watch, check_bounds, order_and_limit, parse_order_by
from net_core.errors import DecodeError

__all__ = ["MEMORIES_CHANNEL", "MemoriesAdapter", "MemoriesFold", "MemoriesState"]

MEMORIES_CHANNEL: Final = "cortex/memories"
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF


@final
@attrs.define
class MemoriesState:
    """Folded Memories state: the memories by id and the next ``app_seq`` of our origin."""

    memories: dict[int, Memory] = attrs.field(factory=dict)
    app_seq: int = 0


@final
class MemoriesFold(Fold[MemoriesState]):
    """The Memories fold (see the module docstring)."""

    name = MEMORIES_CHANNEL
    snapshot_version = 1

    def __init__(self, origin_hash: int) -> None:
        self.origin_hash = origin_hash

    def apply(self, event: CortexEvent, state: MemoriesState) -> None:
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
        state: MemoriesState,
    ) -> None:
        """Fold one Memories event."""
        memories = state.memories
        if dispatch == DISPATCH_MEMORY_STORED:
            mid, content, tags, source, now, _ = unpack_from("usSsu", tail)
            old = memories.get(mid)
            if old is None:
                memories[mid] = make_record(Memory, mid, content, tags, source, now, now, False)
            else:
                memories[mid] = make_record(
                    Memory, mid, content, tags, source, old.created_ns, now, old.pinned
                )
        elif dispatch == DISPATCH_MEMORY_RETAGGED:
            mid, tags, now, _ = unpack_from("uSu", tail)
            old = memories.get(mid)
            if old is not None:
                memories[mid] = make_record(
                    Memory, mid, old.content, tags, old.source, old.created_ns, now, old.pinned
                )
        elif dispatch in (DISPATCH_MEMORY_PINNED, DISPATCH_MEMORY_UNPINNED):
            mid, now, _ = unpack_from("uu", tail)
            old = memories.get(mid)
            if old is not None:
                memories[mid] = make_record(
                    Memory,
                    mid,
                    old.content,
                    old.tags,
                    old.source,
                    old.created_ns,
                    now,
                    dispatch == DISPATCH_MEMORY_PINNED,
                )
        elif dispatch == DISPATCH_MEMORY_DELETED:
            mid, _ = unpack_from("u", tail)
            memories.pop(mid, None)
        # app_seq discovery: never reuse a counter of our own origin found in the log.
        if origin_hash == self.origin_hash and state.app_seq <= seq_or_ts != _U64_MAX:
            state.app_seq = seq_or_ts + 1

    def encode_state(self, state: MemoriesState) -> bytes:
        """The reference's snapshot bytes: ``{app_seq, inner: memories map}``."""
        return encode_memory_snapshot(MemorySnapshot(state.app_seq, state.memories))

    def decode_state(self, data: bytes, version: int) -> MemoriesState:
        """Decode the reference's snapshot bytes (trailing bytes ignored)."""
        try:
            snap = decode_memory_snapshot(data)
        except DecodeError as exc:
            raise SnapshotDecodeError(f"memories snapshot: {exc}") from exc
        return MemoriesState(dict(snap.memories), snap.app_seq)


@final
class MemoriesAdapter(ModelAdapter[MemoriesState]):
    """Memories over a RedEX channel: writes, folded state, queries and watches.

    Same lifecycle as :class:`~net_core.cortex.TasksAdapter`::

        async with MemoriesAdapter.open(redex, origin_hash=7) as memories:
            seq = memories.store(1, "the sky is blue", ["fact"], "user")
            await memories.wait_for_seq(seq)
            print(memories.list_memories(tag="fact"))
    """

    channel = MEMORIES_CHANNEL

    @classmethod
    def _fold(cls, origin_hash: int) -> MemoriesFold:
        return MemoriesFold(origin_hash)

    @classmethod
    def _initial_state(cls) -> MemoriesState:
        return MemoriesState()

    # -- writes ----------------------------------------------------------------------

    def store(
        self,
        memory_id: int,
        content: str,
        tags: Sequence[str] = (),
        source: str = "",
        now_ns: int | None = None,
    ) -> int:
        """Store (or overwrite, keeping pinned and created_ns) a memory; returns the seq."""
        now = time.time_ns() if now_ns is None else now_ns
        return self._ingest(
            "store", DISPATCH_MEMORY_STORED, "usSsu", memory_id, content, tuple(tags), source, now
        )

    def retag(self, memory_id: int, tags: Sequence[str], now_ns: int | None = None) -> int:
        """Replace a memory's tags (no-op if unknown); returns the seq."""
        now = time.time_ns() if now_ns is None else now_ns
        return self._ingest("retag", DISPATCH_MEMORY_RETAGGED, "uSu", memory_id, tuple(tags), now)

    def pin(self, memory_id: int, now_ns: int | None = None) -> int:
        """Pin a memory (no-op if unknown); returns the seq."""
        now = time.time_ns() if now_ns is None else now_ns
        return self._ingest("pin", DISPATCH_MEMORY_PINNED, "uu", memory_id, now)

    def unpin(self, memory_id: int, now_ns: int | None = None) -> int:
        """Unpin a memory (no-op if unknown); returns the seq."""
        now = time.time_ns() if now_ns is None else now_ns
        return self._ingest("unpin", DISPATCH_MEMORY_UNPINNED, "uu", memory_id, now)

    def delete(self, memory_id: int) -> int:
        """Delete a memory (no-op if unknown); returns the seq."""
        return self._ingest("delete", DISPATCH_MEMORY_DELETED, "u", memory_id)

    # -- reads -----------------------------------------------------------------------

    @property
    def memories(self) -> dict[int, Memory]:
        """The folded memories by id (live view: do not mutate)."""
        return self._adapter.state.memories

    def count(self) -> int:
        """Number of memories."""
        return len(self._adapter.state.memories)

    def get(self, memory_id: int) -> Memory | None:
        """The memory with ``memory_id``, or ``None``."""
        return self._adapter.state.memories.get(memory_id)

    def _query(
        self,
        *,
        source: str | None,
        content_contains: str | None,
        tag: str | None,
        any_tag: Collection[str] | None,
        all_tags: Collection[str] | None,
        pinned: bool | None,
        created_after_ns: int | None,
        created_before_ns: int | None,
        updated_after_ns: int | None,
        updated_before_ns: int | None,
        order_by: str | None,
        limit: int | None,
        default_order: str | None,
    ) -> _MemoryQuery:
        check_bounds(
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
        )
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        for name, tags in (("any_tag", any_tag), ("all_tags", all_tags)):
            if isinstance(tags, str):
                raise TypeError(f"{name} takes a list of tags, not a str")
        return _MemoryQuery(
            self._adapter,
            source,
            content_contains.lower() if content_contains is not None else None,
            tag,
            frozenset(any_tag) if any_tag else None,
            frozenset(all_tags) if all_tags else None,
            pinned,
            (created_after_ns, created_before_ns, updated_after_ns, updated_before_ns),
            parse_order_by(order_by if order_by is not None else default_order, verbose=False),
            limit,
        )

    def list_memories(
        self,
        *,
        source: str | None = None,
        content_contains: str | None = None,
        tag: str | None = None,
        any_tag: Collection[str] | None = None,
        all_tags: Collection[str] | None = None,
        pinned: bool | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
        updated_after_ns: int | None = None,
        updated_before_ns: int | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Memory]:
        """Memories matching every given filter.

        ``source`` is an exact match; ``content_contains`` is case-insensitive; ``tag`` is
        exact, case-sensitive membership; ``any_tag`` needs one of the tags, ``all_tags``
        all of them (an empty list means no constraint); time bounds are inclusive;
        ``order_by`` as for tasks (without it: insertion order); ``limit`` after ordering.
        """
        return self._query(
            source=source,
            content_contains=content_contains,
            tag=tag,
            any_tag=any_tag,
            all_tags=all_tags,
            pinned=pinned,
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
            order_by=order_by,
            limit=limit,
            default_order=None,
        )()

    def watch_memories(
        self,
        *,
        source: str | None = None,
        content_contains: str | None = None,
        tag: str | None = None,
        any_tag: Collection[str] | None = None,
        all_tags: Collection[str] | None = None,
        pinned: bool | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
        updated_after_ns: int | None = None,
        updated_before_ns: int | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Watch[Memory]:
        """Watch a query (filters of :meth:`list_memories`; default order ``id_asc``)."""
        return Watch(
            self._adapter,
            self._query(
                source=source,
                content_contains=content_contains,
                tag=tag,
                any_tag=any_tag,
                all_tags=all_tags,
                pinned=pinned,
                created_after_ns=created_after_ns,
                created_before_ns=created_before_ns,
                updated_after_ns=updated_after_ns,
                updated_before_ns=updated_before_ns,
                order_by=order_by,
                limit=limit,
                default_order="id_asc",
            ),
        )

    def snapshot_and_watch_memories(
        self,
        *,
        source: str | None = None,
        content_contains: str | None = None,
        tag: str | None = None,
        any_tag: Collection[str] | None = None,
        all_tags: Collection[str] | None = None,
        pinned: bool | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
        updated_after_ns: int | None = None,
        updated_before_ns: int | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[Memory], Watch[Memory]]:
        """The current result and a watch of later different results (see
        :meth:`TasksAdapter.snapshot_and_watch_tasks`)."""
        query = self._query(
            source=source,
            content_contains=content_contains,
            tag=tag,
            any_tag=any_tag,
            all_tags=all_tags,
            pinned=pinned,
            created_after_ns=created_after_ns,
            created_before_ns=created_before_ns,
            updated_after_ns=updated_after_ns,
            updated_before_ns=updated_before_ns,
            order_by=order_by,
            limit=limit,
            default_order="id_asc",
        )
        current = query()
        return list(current), Watch(self._adapter, query, initial=current)


@final
class _MemoryQuery:
    """A compiled Memories query: call it to run it against the current state."""

    __slots__ = (
        "adapter",
        "all_tags",
        "any_tag",
        "bounds",
        "content",
        "limit",
        "order",
        "pinned",
        "source",
        "tag",
    )

    def __init__(
        self,
        adapter: CortexAdapter[MemoriesState],
        source: str | None,
        content: str | None,
        tag: str | None,
        any_tag: frozenset[str] | None,
        all_tags: frozenset[str] | None,
        pinned: bool | None,
        bounds: tuple[int | None, int | None, int | None, int | None],
        order: tuple[str, bool] | None,
        limit: int | None,
    ) -> None:
        self.adapter = adapter
        self.source = source
        self.content = content
        self.tag = tag
        self.any_tag = any_tag
        self.all_tags = all_tags
        self.pinned = pinned
        self.bounds = bounds
        self.order = order
        self.limit = limit

    def _match(self, m: Memory) -> bool:
        if self.source is not None and m.source != self.source:
            return False
        if self.content is not None and self.content not in m.content.lower():
            return False
        if self.tag is not None and self.tag not in m.tags:
            return False
        if self.any_tag is not None and self.any_tag.isdisjoint(m.tags):
            return False
        if self.all_tags is not None and not self.all_tags.issubset(m.tags):
            return False
        if self.pinned is not None and m.pinned != self.pinned:
            return False
        ca, cb, ua, ub = self.bounds
        return (
            (ca is None or m.created_ns >= ca)
            and (cb is None or m.created_ns <= cb)
            and (ua is None or m.updated_ns >= ua)
            and (ub is None or m.updated_ns <= ub)
        )

    def __call__(self) -> list[Memory]:
        match = self._match
        return order_and_limit(
            [m for m in self.adapter.state.memories.values() if match(m)],
            self.order,
            self.limit,
        )
