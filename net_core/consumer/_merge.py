"""Polling several shards as one stream: :class:`PollMerger`.

Theory of operation (the reference's ``PollMerger::poll``, step by step):

1. ``limit == 0`` or no shard to read gives an empty response. The shards are the
   request's list, else the *live* shard set at call time (never a stale ``0..n``).
2. Each shard is asked for ``max(1, ceil(limit / shards)) * over_fetch`` events
   (``over_fetch`` = 2, or 3 with a filter, since filtering happens after retrieval),
   at most :data:`PER_SHARD_FETCH_CAP`; hitting the cap sets
   ``truncated_at_per_shard_cap``.
3. All shards are read concurrently; a shard whose read fails with an
   :class:`~net_core.errors.AdapterError` is logged, skipped and listed in
   ``failed_shards``; its position is kept.
4. With a filter, each shard's position moves to the backend's ``next_id`` (past the
   events the filter drops), and only the events that parse as JSON and match are kept.
5. ``insertion_ts`` ordering merges the shards by ``(insertion_ts, shard_id)``, each
   shard's events staying in position order; ``none`` concatenates them in shard order.
6. The result is cut to ``limit``. A shard whose kept events were cut goes back to its
   input position, then every shard that returned events (all of them without a
   filter) moves to the id of the last event it returned. So a shard's position is
   always just past what the client has been given or has been filtered away: resuming
   from any returned cursor yields no gap and no duplicate.
7. ``has_more`` is true when some shard has more, events were cut, or everything read
   was filtered out, and only if the poll made progress (returned events or moved a
   position). A shard claiming more while nothing progressed is reported in
   ``stalled_shards`` instead of looping the client forever.
8. ``next_cursor`` encodes the new positions after progress; otherwise it is the input
   cursor text verbatim (``None`` without one), so a client never rewinds.

Differences from the reference, each fixing one of its defects: no-progress polls echo the
cursor (0.18 behaviour, HEAD returns None); the shard list is de-duplicated (a repeated
id returned duplicate events); positions only move forward; the ``insertion_ts`` merge
keeps each shard's events in position order even when a shard's timestamps go backwards
(they restart with the bus), where a global sort would leave gaps; and failed shards are
reported.

The merger holds no state between polls: cancelling :meth:`PollMerger.poll` loses
nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, final

import anyio
import attrs

from net_core.bus._storage import ShardPollResult, StorageBackend, StoredEvent, compare_positions
from net_core.config import ConfigError, one_of
from net_core.consumer._cursor import MAX_SHARD_ID, CompositeCursor
from net_core.consumer._filter import Filter
from net_core.errors import AdapterError

__all__ = [
    "ORDERINGS",
    "PER_SHARD_FETCH_CAP",
    "PollMerger",
    "PollRequest",
    "PollResponse",
]

log = logging.getLogger("net_core.consumer")

#: Most events asked of one shard in one poll (the reference's value).
PER_SHARD_FETCH_CAP = 10_000

#: The accepted values of :attr:`PollRequest.ordering`.
ORDERINGS = ("none", "insertion_ts")

_USIZE_MAX = (1 << 64) - 1


def _check_limit(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"must be an integer, got {type(value).__name__} {value!r}", path=attribute.name
        )
    if not 0 <= value <= _USIZE_MAX:
        raise ConfigError(f"must be in [0, {_USIZE_MAX}], got {value}", path=attribute.name)


def _check_cursor(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str | CompositeCursor):
        raise ConfigError(
            f"must be cursor text or a CompositeCursor, got {type(value).__name__}",
            path=attribute.name,
        )


def _to_filter(value: Filter | str | bytes | Mapping[str, Any] | None) -> Filter | None:
    return None if value is None else Filter.parse(value)


def _to_shards(value: Iterable[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"must be a list of shard ids, got {type(value).__name__}", path="shards")
    shards: list[int] = []
    for shard in value:
        if isinstance(shard, bool) or not isinstance(shard, int):
            raise ConfigError(f"shard id must be an integer, got {shard!r}", path="shards")
        if not 0 <= shard <= MAX_SHARD_ID:
            raise ConfigError(
                f"shard id must be in [0, {MAX_SHARD_ID}], got {shard}", path="shards"
            )
        shards.append(shard)
    return tuple(shards)


@final
@attrs.frozen(slots=True)
class PollRequest:
    """One poll: up to ``limit`` events after ``cursor``.

    ``cursor`` is a token from a previous response (or a :class:`CompositeCursor`);
    ``None`` reads from the beginning. ``filter`` is a :class:`Filter` or anything
    :meth:`Filter.parse` takes (JSON text or data). ``ordering`` is ``"none"`` (shard
    by shard) or ``"insertion_ts"``. ``shards`` restricts the poll to those shard ids
    (default: the live shards).
    """

    limit: int = attrs.field(validator=_check_limit)
    cursor: str | CompositeCursor | None = attrs.field(default=None, validator=_check_cursor)
    filter: Filter | None = attrs.field(default=None, converter=_to_filter)
    ordering: str = attrs.field(default="none", validator=one_of(*ORDERINGS))
    shards: tuple[int, ...] | None = attrs.field(default=None, converter=_to_shards)


@final
@attrs.frozen(slots=True)
class PollResponse:
    """What a poll returned.

    ``next_cursor`` resumes right after ``events`` (pass it as the next request's
    cursor); ``has_more`` says polling again now would return more. The diagnostics:
    ``truncated_at_per_shard_cap`` (the limit asked more of a shard than
    :data:`PER_SHARD_FETCH_CAP`), ``stalled_shards`` (shards claiming more events while
    the poll could not progress) and ``failed_shards`` (shards whose read failed and
    were skipped; their events are still ahead of the cursor).
    """

    events: list[StoredEvent]
    next_cursor: str | None
    has_more: bool
    truncated_at_per_shard_cap: bool = False
    stalled_shards: list[int] = attrs.field(factory=list)
    failed_shards: list[int] = attrs.field(factory=list)

    @classmethod
    def empty(cls, next_cursor: str | None = None) -> PollResponse:
        """No events, nothing more, ``next_cursor`` as given."""
        return cls([], next_cursor, has_more=False)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[StoredEvent]:
        return iter(self.events)


@final
class PollMerger:
    """Reads a storage backend's shards as one stream with resumable cursors.

    ``live_shards`` returns the ids of the shards that exist now; it is called at every
    poll that does not name its shards, so the merger follows scaling.
    """

    __slots__ = ("_backend", "_live_shards", "_read_timeout")

    def __init__(
        self,
        backend: StorageBackend,
        live_shards: Callable[[], Sequence[int]],
        *,
        read_timeout: float | None = None,
    ) -> None:
        self._backend = backend
        self._live_shards = live_shards
        # Each shard read is bounded: a read that takes longer counts as a failed shard
        # (reported in failed_shards, position kept), never a hung poll.
        self._read_timeout = read_timeout

    @property
    def backend(self) -> StorageBackend:
        """The storage backend polled."""
        return self._backend

    async def poll(self, request: PollRequest) -> PollResponse:
        """Run one poll (see the module docstring for the algorithm).

        Raises :class:`~net_core.consumer.InvalidCursor` for a malformed cursor (before
        reading anything). Errors of the backend other than
        :class:`~net_core.errors.AdapterError` propagate.
        """
        given = request.cursor
        if isinstance(given, str):
            start = CompositeCursor.decode(given)
            echo: str | None = given
        elif given is not None:
            start = given
            echo = given.encode()
        else:
            start = CompositeCursor()
            echo = None

        if request.limit == 0:
            return PollResponse.empty(echo)
        wanted = request.shards if request.shards is not None else self._live_shards()
        shards = list(dict.fromkeys(wanted))
        if not shards:
            return PollResponse.empty(echo)

        limit = request.limit
        filt = request.filter
        over_fetch = 3 if filt is not None else 2
        unclamped = max(1, -(-limit // len(shards))) * over_fetch
        per_shard = min(unclamped, PER_SHARD_FETCH_CAP)

        results = await self._read(shards, start, per_shard)

        positions = dict(start)
        more: list[int] = []
        failed: list[int] = []
        kept: list[list[StoredEvent]] = []
        unparseable = 0
        for shard, result in zip(shards, results, strict=True):
            if result is None:
                failed.append(shard)
                kept.append([])
                continue
            if result.has_more:
                more.append(shard)
            events = result.events
            if filt is not None:
                # The shard is read up to the backend's position even where the filter
                # drops everything (no endless re-reading of filtered-out events).
                reached = result.next_id
                if reached is None and events:
                    reached = events[-1].id
                if reached is not None:
                    _advance(positions, shard, reached)
                matching = []
                for event in events:
                    verdict = filt.matches_raw(event.raw)
                    if verdict is None:
                        unparseable += 1
                    elif verdict:
                        matching.append(event)
                events = matching
            kept.append(events)
        if unparseable:
            log.warning(
                "poll: dropped %d event(s) that are not JSON from a filtered poll", unparseable
            )

        # (index of the shard in `shards`, event), in delivery order, cut at limit + 1.
        ordered: Iterable[tuple[int, StoredEvent]]
        if request.ordering == "insertion_ts":
            ordered = (
                (index, event)
                for _ts, _shard, index, event in heapq.merge(
                    *(
                        [(event.insertion_ts, event.shard_id, index, event) for event in events]
                        for index, events in enumerate(kept)
                    )
                )
            )
        else:
            ordered = ((index, event) for index, events in enumerate(kept) for event in events)
        delivered = list(itertools.islice(ordered, limit + 1))
        had_extra = len(delivered) > limit
        del delivered[limit:]

        returned = [0] * len(shards)
        last: list[StoredEvent | None] = [None] * len(shards)
        for index, event in delivered:
            returned[index] += 1
            last[index] = event

        for index, shard in enumerate(shards):
            cut = returned[index] < len(kept[index])
            if filt is not None and cut:
                # Matches of this shard were cut: resume from the last one delivered.
                if shard in start:
                    positions[shard] = start[shard]
                else:
                    positions.pop(shard, None)
            final_event = last[index]
            if final_event is not None and (filt is None or cut):
                _advance(positions, shard, final_event.id)

        events_out = [event for _index, event in delivered]
        advanced = positions != dict(start)
        progressed = bool(events_out) or advanced
        all_filtered = filt is not None and not events_out and advanced
        has_more = (bool(more) or had_extra or all_filtered) and progressed
        stalled = more if (more and not progressed) else []
        if stalled:
            log.warning("poll: shard(s) %s report more events but returned none", stalled)
        return PollResponse(
            events_out,
            CompositeCursor(positions).encode() if progressed else echo,
            has_more,
            truncated_at_per_shard_cap=unclamped > PER_SHARD_FETCH_CAP,
            stalled_shards=stalled,
            failed_shards=failed,
        )

    async def _read(
        self, shards: list[int], start: CompositeCursor, limit: int
    ) -> list[ShardPollResult | None]:
        """Every shard's read, in shard-list order; ``None`` where it failed."""
        results: list[ShardPollResult | None] = [None] * len(shards)
        errors: list[Exception] = []

        timeout = self._read_timeout

        async def read(index: int, shard: int) -> None:
            try:
                if timeout is None:
                    results[index] = await self._backend.read_shard(shard, start.get(shard), limit)
                else:
                    with anyio.fail_after(timeout):
                        results[index] = await self._backend.read_shard(
                            shard, start.get(shard), limit
                        )
            except AdapterError as exc:
                log.warning("poll: reading shard %d failed, skipped: %s", shard, exc)
            except TimeoutError:
                log.warning("poll: reading shard %d timed out after %g s, skipped", shard, timeout)
            except Exception as exc:  # re-raised below, outside the task group
                errors.append(exc)

        if len(shards) == 1:
            await read(0, shards[0])
        else:
            async with anyio.create_task_group() as tg:
                for index, shard in enumerate(shards):
                    tg.start_soon(read, index, shard)
        if errors:
            raise errors[0]
        return results


def _advance(positions: dict[int, str], shard: int, position: str) -> None:
    """Move ``shard`` to ``position`` if that is ahead (a cursor never regresses)."""
    current = positions.get(shard)
    if current is None or compare_positions(position, current) > 0:
        positions[shard] = position
