"""A live secondary index over a RedEX file: key -> set of values, kept by a tail.

:class:`RedexIndex` tails a file and feeds every event through a *projection* that
returns :class:`Insert` / :class:`Remove` operations on a map of sets (a key whose set
becomes empty disappears). It runs inside its own task group for as long as its
``async with`` block lasts.

Lag recovery: if the tail lags (the index fell more than the tail buffer behind, or
asked for evicted history), the index cannot know what it missed, so it clears itself,
counts the reset in :attr:`RedexIndex.lag_resets` and re-tails **live only** from the
file's ``next_seq``. Consecutive resets back off 0, 5, 20, 60, then 250 ms; any delivered
event resets the backoff. A downstream that needs completeness watches ``lag_resets``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final

import anyio
import anyio.abc
import attrs

from net_core.redex._errors import LaggedError
from net_core.redex._file import RedexEvent, RedexFile

__all__ = ["LAG_BACKOFF_MS", "Insert", "RedexIndex", "Remove"]

log = logging.getLogger("net_core.redex")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)

#: Delay before re-tailing after the 1st, 2nd, 3rd, 4th and later consecutive lag reset.
LAG_BACKOFF_MS: Final = (0, 5, 20, 60, 250)


@final
@attrs.frozen(slots=True)
class Insert(Generic[K, V]):
    """Add ``value`` to the set of ``key``."""

    key: K
    value: V


@final
@attrs.frozen(slots=True)
class Remove(Generic[K, V]):
    """Remove ``value`` from the set of ``key`` (the key goes when its set is empty)."""

    key: K
    value: V


Projection = Callable[[Any], Iterable[Insert[K, V] | Remove[K, V]]]


@final
class RedexIndex(Generic[K, V]):
    """Secondary index kept up to date by tailing a file (see the module docstring).

    ``projection(value)`` receives ``decode(event)`` (the event itself when ``decode`` is
    ``None``) and returns the operations. A ``decode`` or projection error skips that
    event and counts it in :attr:`skipped`. ``from_seq`` is where the index starts
    (``0``: the whole retained history).
    """

    __slots__ = (
        "_data",
        "_decode",
        "_file",
        "_from_seq",
        "_projection",
        "_tg",
        "_updated",
        "applied_through",
        "lag_resets",
        "skipped",
    )

    def __init__(
        self,
        file: RedexFile,
        projection: Projection[K, V],
        *,
        decode: Callable[[RedexEvent], Any] | None = None,
        from_seq: int = 0,
    ) -> None:
        self._file = file
        self._projection = projection
        self._decode = decode
        self._from_seq = from_seq
        self._data: dict[K, set[V]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._updated: anyio.Event | None = None
        #: Times the index was cleared after a lag.
        self.lag_resets = 0
        #: Events skipped because decode or projection raised.
        self.skipped = 0
        #: Seq of the last event applied (``None`` before the first).
        self.applied_through: int | None = None

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> RedexIndex[K, V]:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def _run(self) -> None:
        from_seq = self._from_seq
        streak = 0
        while True:
            try:
                async with self._file.tail(from_seq) as events:
                    async for event in events:
                        streak = 0
                        self._apply(event)
                return  # the file was closed
            except LaggedError as exc:
                self._data.clear()
                self.lag_resets += 1
                streak += 1
                if streak == 1 or (self.lag_resets & (self.lag_resets - 1)) == 0:
                    log.warning(
                        "index over %r lagged (%s); cleared and re-tailing live (reset %d)",
                        self._file.name,
                        exc,
                        self.lag_resets,
                    )
                delay = LAG_BACKOFF_MS[min(streak, len(LAG_BACKOFF_MS)) - 1]
                if delay:
                    await anyio.sleep(delay / 1000)
                from_seq = self._file.next_seq
                self._notify()

    def _apply(self, event: RedexEvent) -> None:
        try:
            value = self._decode(event) if self._decode is not None else event
            ops = list(self._projection(value))
        except Exception as exc:
            self.skipped += 1
            log.warning("index over %r skipped seq %d: %s", self._file.name, event.seq, exc)
            ops = []
        data = self._data
        for op in ops:
            if isinstance(op, Insert):
                data.setdefault(op.key, set()).add(op.value)
            elif isinstance(op, Remove):
                values = data.get(op.key)
                if values is not None:
                    values.discard(op.value)
                    if not values:
                        del data[op.key]
            else:
                self.skipped += 1
        self.applied_through = event.seq
        self._notify()

    def _notify(self) -> None:
        if self._updated is not None:
            self._updated.set()
            self._updated = None

    async def wait_for_seq(self, seq: int) -> None:
        """Wait until the event at ``seq`` (or a later one) has been applied."""
        while self.applied_through is None or self.applied_through < seq:
            if self._updated is None:
                self._updated = anyio.Event()
            await self._updated.wait()

    # -- reads -----------------------------------------------------------------------

    def get(self, key: K) -> frozenset[V]:
        """The values of ``key`` (empty when absent)."""
        return frozenset(self._data.get(key, ()))

    def contains(self, key: K, value: V | None = None) -> bool:
        """Whether ``key`` is present (and holds ``value``, when given)."""
        values = self._data.get(key)
        if values is None:
            return False
        return value is None or value in values

    def keys(self) -> Iterator[K]:
        """Iterate over a snapshot of the keys."""
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (
            f"RedexIndex({self._file.name!r}, keys={len(self._data)}, "
            f"lag_resets={self.lag_resets}, applied_through={self.applied_through})"
        )
