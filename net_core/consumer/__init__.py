"""The consumer side of the bus: polling shards back as one stream.

A consumer asks for up to ``limit`` events after a cursor; :class:`PollMerger` reads
every shard of a :class:`~net_core.bus._storage.StorageBackend` concurrently, optionally
filters the events (:class:`Filter`, the reference's JSON predicate language) and orders
them by insertion time, and returns them with the cursor to resume from. Cursors
(:class:`CompositeCursor`) are opaque tokens holding one exclusive position per shard,
byte-compatible with the reference's, so a Python node resumes a cursor a Rust node
handed out and back.

This package owns the cursor codec (``_cursor``), the filter language (``_filter``) and
the poll algorithm (``_merge``). The codec and the filter are pure; the merger's only I/O
is the backend's ``read_shard``. It never writes to storage.

Quick start::

    from net_core.consumer import PollMerger, PollRequest

    merger = PollMerger(backend, live_shards=lambda: [0, 1, 2])
    clicks = {"path": "type", "value": "click"}
    cursor = None
    while True:
        page = await merger.poll(PollRequest(100, cursor, filter=clicks))
        handle(page.events)
        cursor = page.next_cursor
        if not page.has_more:
            break
"""

from net_core.consumer._cursor import CompositeCursor, InvalidCursor
from net_core.consumer._filter import Filter, InvalidFilter
from net_core.consumer._merge import (
    PER_SHARD_FETCH_CAP,
    PollMerger,
    PollRequest,
    PollResponse,
)

__all__ = [
    "PER_SHARD_FETCH_CAP",
    "CompositeCursor",
    "Filter",
    "InvalidCursor",
    "InvalidFilter",
    "PollMerger",
    "PollRequest",
    "PollResponse",
]
