"""What the Tasks and Memories adapters share: opening a model channel, stamping and
sealing writes, and handing out the generic adapter's progress and snapshots.

A model adapter wraps one :class:`~net_core.cortex.CortexAdapter` over a RedEX channel
named after the model. Writes stamp the adapter's ``origin_hash`` and the next value of
its ``app_seq`` counter (kept in the folded state, so a reopened adapter continues above
every counter of its origin found in the log) and append the sealed payload.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import attrs
import xxhash

from net_core.cortex._adapter import CortexAdapter, CortexAdapterConfig, Fold
from net_core.cortex._errors import AdapterClosedError
from net_core.cortex._meta import seal
from net_core.cortex._pcstruct import c_kernel, pack
from net_core.cortex._snapshot import Snapshot
from net_core.redex import Redex, RedexFileConfig

__all__ = ["ModelAdapter", "ModelState"]

_c_seal = c_kernel("seal_record")
_xxh3 = xxhash.xxh3_64_intdigest


class ModelState(Protocol):
    """A model's folded state carries the next counter of the adapter's origin."""

    app_seq: int


S = TypeVar("S", bound=ModelState)


class ModelAdapter(ABC, Generic[S]):
    """Base of :class:`~net_core.cortex.TasksAdapter` and
    :class:`~net_core.cortex.MemoriesAdapter` (see the module docstring)."""

    #: The RedEX channel of the model (also the fold's snapshot name).
    channel: ClassVar[str]

    def __init__(self, adapter: CortexAdapter[S], origin_hash: int) -> None:
        self._adapter = adapter
        self._state = adapter.state
        self._append = adapter.file.append
        self._counter_lock = threading.Lock()
        self.origin_hash = origin_hash
        """The producer id stamped into this adapter's events."""

    @classmethod
    @abstractmethod
    def _fold(cls, origin_hash: int) -> Fold[S]:
        """The model's fold for an adapter of ``origin_hash``."""

    @classmethod
    @abstractmethod
    def _initial_state(cls) -> S:
        """An empty state."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        redex: Redex,
        origin_hash: int,
        *,
        persistent: bool = False,
        file_config: RedexFileConfig | None = None,
        config: CortexAdapterConfig | None = None,
    ) -> AsyncIterator[Self]:
        """Open the model's channel in ``redex`` and fold it from the beginning; the
        block is entered once everything already in the log is folded."""
        file = redex.open_file(cls.channel, _file_config(persistent, file_config))
        cfg = attrs.evolve(config or CortexAdapterConfig(), origin_hash=origin_hash)
        async with CortexAdapter.open(
            file, cls._fold(origin_hash), cls._initial_state(), cfg
        ) as adapter:
            yield cls(adapter, origin_hash)

    @classmethod
    @asynccontextmanager
    async def open_from_snapshot(
        cls,
        redex: Redex,
        origin_hash: int,
        snapshot: Snapshot,
        *,
        persistent: bool = False,
        file_config: RedexFileConfig | None = None,
        config: CortexAdapterConfig | None = None,
    ) -> AsyncIterator[Self]:
        """Restore ``snapshot`` (see :meth:`CortexAdapter.open_from_snapshot`) and fold
        the events after it. A reference snapshot ``(bytes, last_seq)`` of this model
        restores as ``Snapshot(<channel>, 1, last_seq, bytes)``."""
        file = redex.open_file(cls.channel, _file_config(persistent, file_config))
        cfg = attrs.evolve(config or CortexAdapterConfig(), origin_hash=origin_hash)
        async with CortexAdapter.open_from_snapshot(
            file, cls._fold(origin_hash), snapshot, cls._initial_state, cfg
        ) as adapter:
            yield cls(adapter, origin_hash)

    # -- writes ----------------------------------------------------------------------

    def _take_counter(self) -> int:
        state = self._state
        # Under a lock so that writers on several threads never share a value; never
        # rolled back once the append was tried (a failed append leaves a gap, as in
        # the reference).
        with self._counter_lock:
            counter = state.app_seq
            state.app_seq = counter + 1
        return counter

    def _give_back(self, counter: int) -> None:
        """Return a counter taken for a write whose arguments were invalid, unless
        another writer has taken one since."""
        state = self._state
        with self._counter_lock:
            if state.app_seq == counter + 1:
                state.app_seq = counter

    def _ingest(self, op: str, dispatch: int, fmt: str, *values: Any) -> int:
        """Seal ``pack(fmt, *values)`` as a ``dispatch`` event and append it."""
        if self._adapter._closed:
            raise AdapterClosedError(op)
        counter = self._take_counter()
        try:
            if _c_seal is not None:
                payload = _c_seal(dispatch, 0, self.origin_hash, counter, _xxh3, fmt, *values)
            else:
                payload = seal(dispatch, self.origin_hash, counter, pack(fmt, *values))
        except BaseException:
            self._give_back(counter)
            raise
        return self._append(payload)

    # -- progress, snapshots, lifecycle ----------------------------------------------

    @property
    def adapter(self) -> CortexAdapter[S]:
        """The underlying generic adapter (watermarks, changes, errors)."""
        return self._adapter

    @property
    def app_seq(self) -> int:
        """The counter the next write of this adapter stamps into ``seq_or_ts``."""
        return self._state.app_seq

    async def wait_for_seq(self, seq: int, timeout: float | None = None) -> None:
        """See :meth:`CortexAdapter.wait_for_seq`."""
        await self._adapter.wait_for_seq(seq, timeout)

    async def wait_for_applied_seq(self, seq: int, timeout: float | None = None) -> None:
        """See :meth:`CortexAdapter.wait_for_applied_seq`."""
        await self._adapter.wait_for_applied_seq(seq, timeout)

    @property
    def is_running(self) -> bool:
        """Whether the fold task is running."""
        return self._adapter.is_running

    @property
    def fold_errors(self) -> int:
        """Events skipped because they failed to decode or apply."""
        return self._adapter.fold_errors

    def snapshot(self) -> Snapshot:
        """The state (the reference's snapshot bytes) and its strict-prefix watermark."""
        return self._adapter.snapshot()

    def close(self) -> None:
        """Stop the fold (idempotent); the state stays readable, the file stays open."""
        self._adapter.close()

    @abstractmethod
    def count(self) -> int:
        """Number of records."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(origin_hash={self.origin_hash:#018x}, "
            f"count={self.count()}, running={self.is_running})"
        )


def _file_config(persistent: bool, config: RedexFileConfig | None) -> RedexFileConfig:
    if config is None:
        return RedexFileConfig(persistent=persistent)
    if persistent and not config.persistent:
        return attrs.evolve(config, persistent=True)
    return config
