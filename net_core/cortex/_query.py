"""Query plumbing shared by the Tasks and Memories models: ordering, time bounds and
watches.

A watch is *pull-based*: it re-runs its query when the consumer asks for the next value
and the fold has applied something since the last one, and returns the result only if it
differs from the last value delivered. A slow consumer therefore sees the latest result,
never a backlog, and no background task is needed. This module never touches RedEX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Final, Generic, TypeVar, final

import anyio

from net_core.cortex._adapter import CortexAdapter

__all__ = ["ORDER_BY", "Watch", "check_bounds", "order_and_limit", "parse_order_by"]

R = TypeVar("R")

#: The order_by names both models accept, with the record attribute and direction.
ORDER_BY: Final[dict[str, tuple[str, bool]]] = {
    "id_asc": ("id", False),
    "id_desc": ("id", True),
    "created_asc": ("created_ns", False),
    "created_desc": ("created_ns", True),
    "updated_asc": ("updated_ns", False),
    "updated_desc": ("updated_ns", True),
}


def parse_order_by(value: str | None, *, verbose: bool) -> tuple[str, bool] | None:
    """Validate an ``order_by`` name (case-insensitive); ``None`` means unordered.

    The error text lists the accepted names when ``verbose`` (the Tasks wording) and is
    just ``invalid order_by "x"`` otherwise (the Memories wording), as in the reference.
    """
    if value is None:
        return None
    key = ORDER_BY.get(value.lower())
    if key is None:
        if verbose:
            names = "|".join(ORDER_BY)
            raise ValueError(f'invalid order_by "{value}" (expected one of {names})')
        raise ValueError(f'invalid order_by "{value}"')
    return key


def check_bounds(**bounds: int | None) -> None:
    """Reject time bounds that are not u64 values."""
    for name, value in bounds.items():
        if value is not None and not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
            raise ValueError(f"{name} must be a u64 nanosecond timestamp, got {value}")


def order_and_limit(records: list[R], order: tuple[str, bool] | None, limit: int | None) -> list[R]:
    """Sort ``records`` by one attribute (stable) and cut to ``limit``."""
    if order is not None:
        attr, reverse = order
        records.sort(key=attrgetter(attr), reverse=reverse)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        del records[limit:]
    return records


@final
class Watch(Generic[R]):
    """Async iterator of a query's result lists, one per distinct change.

    The first value is the current result (unless the watch came from a
    ``snapshot_and_watch_*`` call, whose snapshot already is that value). Later values
    come only when the fold applied something *and* the result differs from the last
    value delivered (whole-list equality, every field included). Consecutive changes a
    slow consumer did not ask for in time are coalesced into the latest result.
    Iteration ends once the fold task has stopped and its final result was delivered;
    :meth:`close` ends it early.
    """

    __slots__ = ("_adapter", "_closed", "_last", "_query", "_scope", "_version")

    def __init__(
        self,
        adapter: CortexAdapter[Any],
        query: Callable[[], list[R]],
        *,
        initial: list[R] | None = None,
    ) -> None:
        self._adapter = adapter
        self._query = query
        self._closed = False
        self._scope: anyio.CancelScope | None = None
        # With an initial value the watch starts "already delivered" at this version.
        self._version = adapter.state_version if initial is not None else -1
        self._last: list[R] | None = initial

    def __aiter__(self) -> Watch[R]:
        return self

    async def __anext__(self) -> list[R]:
        adapter = self._adapter
        while not self._closed:
            if self._version != adapter.state_version:
                self._version = adapter.state_version
                result = self._query()
                if result != self._last:
                    self._last = result
                    return list(result)
                continue
            if not adapter.is_running:
                break
            # close() cancels this scope, so a consumer parked here wakes up at once.
            with anyio.CancelScope() as scope:
                self._scope = scope
                await adapter.wait_changed(self._version)
            self._scope = None
        raise StopAsyncIteration

    @property
    def last(self) -> Sequence[R] | None:
        """The last value delivered (``None`` before the first)."""
        return self._last

    def close(self) -> None:
        """End the iteration, waking a consumer waiting for the next value. Idempotent."""
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()

    async def aclose(self) -> None:
        """Same as :meth:`close`."""
        self.close()

    async def __aenter__(self) -> Watch[R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
