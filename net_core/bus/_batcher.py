"""Batch formation for one shard: adaptive target size, flush rules, sequence numbers.

Theory of operation. A shard's worker pops events from the ring and hands them to its
:class:`BatchAssembler` together with the current time. The assembler keeps them pending
and emits a batch when

* the pending count reaches the *target* size (a batch never exceeds ``max_size``: a
  larger pending run goes out as several batches, and a tail shorter than the target
  stays pending), or
* ``max_delay_ms`` has passed since the oldest pending event arrived. ``add`` checks this
  for the events it is given; for a quiet shard the worker calls :meth:`BatchAssembler.poll`
  when :meth:`BatchAssembler.deadline_ns` is reached (the reference's
  ``add_events(vec![])``, made explicit).

The target comes from :class:`AdaptiveBatcher`: the event rate over a sliding window,
divided by 200, clamped to ``[min_size, max_size]`` and smoothed; without ``adaptive`` it
is ``max_size``.

Every emitted batch carries ``sequence_start``, the shard's count of events emitted
before it: 0, then the size of the first batch, and so on, gap-free and strictly
increasing, so ``(nonce, shard, sequence_start + i)`` names an event forever. The counter
starts where the caller says (a restarted shard resumes) and saturates at ``2**64 - 1``.

Pure: no clocks (time is passed in as ``now_ns``), no I/O, no tasks, no locks (one worker
owns an assembler).
"""

from __future__ import annotations

from collections import deque
from typing import Final, final

import attrs

from net_core.bus._config import BatchConfig

__all__ = [
    "RECALC_INTERVAL_NS",
    "SEQUENCE_LIMIT",
    "VELOCITY_DIVISOR",
    "VELOCITY_SAMPLES_CAP",
    "AdaptiveBatcher",
    "AssembledBatch",
    "BatchAssembler",
]

#: ``sequence_start`` saturates here (the reference's ``u64::MAX``).
SEQUENCE_LIMIT: Final = (1 << 64) - 1
#: The rate window keeps at most this many samples, however bursty the input.
VELOCITY_SAMPLES_CAP: Final = 1024
#: The target is recomputed at most once per 10 ms.
RECALC_INTERVAL_NS: Final = 10_000_000
#: Target size = events per second / 200 (about 5 ms worth of events).
VELOCITY_DIVISOR: Final = 200


def _ms_to_ns(ms: float) -> int:
    return max(1, round(ms * 1_000_000))


@final
class AdaptiveBatcher:
    """The batch-size target of one shard, following its event rate.

    Each :meth:`record` appends ``(now_ns, cumulative events)`` to a window bounded both
    by ``velocity_window_ms`` and by :data:`VELOCITY_SAMPLES_CAP` samples. At most every
    10 ms the rate is recomputed from the oldest and newest samples, and the target moves
    a quarter of the way to ``clamp(rate / 200, min_size, max_size)``. The target starts
    at ``min_size``; with ``adaptive=False`` it is always ``max_size``.
    """

    __slots__ = (
        "_config",
        "_count",
        "_last_recalc_ns",
        "_max",
        "_min",
        "_samples",
        "_target",
        "_window_ns",
    )

    def __init__(self, config: BatchConfig) -> None:
        self._config = config
        self._min = config.min_size
        self._max = config.max_size
        self._window_ns = _ms_to_ns(config.velocity_window_ms)
        self._samples: deque[tuple[int, int]] = deque(maxlen=VELOCITY_SAMPLES_CAP)
        self._count = 0
        self._last_recalc_ns: int | None = None
        self._target = config.min_size if config.adaptive else config.max_size

    @property
    def target(self) -> int:
        """The current target batch size."""
        return self._target

    @property
    def sample_count(self) -> int:
        """Samples in the rate window (never more than :data:`VELOCITY_SAMPLES_CAP`)."""
        return len(self._samples)

    def velocity(self) -> float:
        """Events per second over the current window (0 with fewer than 2 samples)."""
        samples = self._samples
        if len(samples) < 2:
            return 0.0
        t0, c0 = samples[0]
        t1, c1 = samples[-1]
        elapsed = t1 - t0
        if elapsed <= 0:
            return 0.0
        return (c1 - c0) * 1e9 / elapsed

    def record(self, count: int, now_ns: int) -> int:
        """Note that ``count`` events arrived at ``now_ns``; return the target size."""
        if not self._config.adaptive:
            return self._target
        self._count += count
        samples = self._samples
        samples.append((now_ns, self._count))  # maxlen evicts the oldest past the cap
        horizon = now_ns - self._window_ns
        while samples[0][0] < horizon:
            samples.popleft()  # the newest sample is never older than the horizon
        last = self._last_recalc_ns
        if last is None or now_ns - last > RECALC_INTERVAL_NS:
            self._last_recalc_ns = now_ns
            lo, hi = self._min, self._max
            raw = min(hi, max(lo, int(self.velocity() / VELOCITY_DIVISOR)))
            self._target = min(hi, max(lo, (3 * self._target + raw) // 4))
        return self._target

    def reset(self) -> None:
        """Forget the rate history; the target goes back to its initial value."""
        self._samples.clear()
        self._count = 0
        self._last_recalc_ns = None
        self._target = self._min if self._config.adaptive else self._max

    def __repr__(self) -> str:
        return f"AdaptiveBatcher(target={self._target}, samples={len(self._samples)})"


@final
@attrs.frozen(slots=True)
class AssembledBatch:
    """A batch as formed by :class:`BatchAssembler`; the bus adds shard id and nonce.

    ``events[i]`` is event number ``sequence_start + i`` of the shard and
    ``timestamps[i]`` its insertion time.
    """

    sequence_start: int
    events: list[bytes]
    timestamps: list[int]

    def __len__(self) -> int:
        return len(self.events)


@final
class BatchAssembler:
    """Forms the batches of shard ``shard_id`` and numbers them (see module docs).

    ``next_sequence`` is the ``sequence_start`` of the next batch (default 0; pass the
    stored high-water mark to resume a shard). Not thread-safe: one worker owns it.
    """

    __slots__ = (
        "_batcher",
        "_first_ns",
        "_max_delay_ns",
        "_max_size",
        "_next_sequence",
        "_pending",
        "_pending_ts",
        "shard_id",
    )

    def __init__(self, shard_id: int, config: BatchConfig, *, next_sequence: int = 0) -> None:
        if not 0 <= next_sequence <= SEQUENCE_LIMIT:
            raise ValueError(f"next_sequence must be in [0, 2**64 - 1], got {next_sequence}")
        self.shard_id = shard_id
        self._batcher = AdaptiveBatcher(config)
        self._max_size = config.max_size
        self._max_delay_ns = _ms_to_ns(config.max_delay_ms)
        self._next_sequence = next_sequence
        self._pending: list[bytes] = []
        self._pending_ts: list[int] = []
        self._first_ns: int | None = None

    @property
    def next_sequence(self) -> int:
        """``sequence_start`` of the next batch: the count of events emitted so far
        (plus the starting value), saturated at ``2**64 - 1``."""
        return self._next_sequence

    @property
    def pending(self) -> int:
        """Number of events waiting for the next batch."""
        return len(self._pending)

    @property
    def target(self) -> int:
        """The current target batch size."""
        return self._batcher.target

    @property
    def batcher(self) -> AdaptiveBatcher:
        """The adaptive size controller."""
        return self._batcher

    def deadline_ns(self) -> int | None:
        """When the pending events must go out (``None`` if nothing is pending)."""
        first = self._first_ns
        return None if first is None else first + self._max_delay_ns

    def add(self, events: list[bytes], timestamps: list[int], now_ns: int) -> list[AssembledBatch]:
        """Queue ``events`` (arrived at ``now_ns``); return the batches now due, in order.

        An empty ``events`` changes nothing and returns ``[]`` even past the deadline: use
        :meth:`poll` for time-driven flushes.
        """
        n = len(events)
        if n != len(timestamps):
            raise ValueError(f"{n} events but {len(timestamps)} timestamps")
        if n == 0:
            return []
        pending = self._pending
        if not pending:
            self._first_ns = now_ns
        target = self._batcher.record(n, now_ns)
        pending.extend(events)
        self._pending_ts.extend(timestamps)
        out: list[AssembledBatch] = []
        if len(pending) >= target:
            taken = 0
            total = len(pending)
            while total - taken >= target:
                size = min(total - taken, self._max_size)
                out.append(self._emit(taken, taken + size))
                taken += size
            self._drop_front(taken)
            # Fewer than the previous target (<= max_size) events were pending before
            # this call, so the first batch alone covered all of them: what is left
            # arrived now.
            self._first_ns = now_ns if self._pending else None
        first = self._first_ns
        if first is not None and now_ns - first >= self._max_delay_ns:
            out.extend(self.flush_all())
        return out

    def poll(self, now_ns: int) -> AssembledBatch | None:
        """The pending events as one batch if ``max_delay_ms`` has passed since the oldest
        arrived, else ``None``."""
        first = self._first_ns
        if first is None or now_ns - first < self._max_delay_ns:
            return None
        batches = self.flush_all()
        # After add(), fewer than target <= max_size events are ever left pending.
        assert len(batches) == 1
        return batches[0]

    def flush_all(self) -> list[AssembledBatch]:
        """Emit everything pending now (in batches of at most ``max_size``)."""
        total = len(self._pending)
        out: list[AssembledBatch] = []
        taken = 0
        while taken < total:
            size = min(total - taken, self._max_size)
            out.append(self._emit(taken, taken + size))
            taken += size
        self._drop_front(taken)
        self._first_ns = None
        return out

    def _emit(self, start: int, stop: int) -> AssembledBatch:
        if start == 0 and stop == len(self._pending):
            # The whole pending run: hand the lists over instead of copying them.
            events, stamps = self._pending, self._pending_ts
            self._pending, self._pending_ts = [], []
        else:
            events, stamps = self._pending[start:stop], self._pending_ts[start:stop]
        seq = self._next_sequence
        self._next_sequence = min(SEQUENCE_LIMIT, seq + len(events))
        return AssembledBatch(seq, events, stamps)

    def _drop_front(self, count: int) -> None:
        if count and self._pending:
            del self._pending[:count]
            del self._pending_ts[:count]

    def __repr__(self) -> str:
        return (
            f"BatchAssembler(shard={self.shard_id}, pending={len(self._pending)}, "
            f"next_sequence={self._next_sequence}, target={self._batcher.target})"
        )
