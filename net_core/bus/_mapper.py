"""Shard ids, shard states, event routing and the scaling policy of the bus.

Theory of operation. The :class:`ShardMapper` owns the set of shard ids and the state of
each::

    PROVISIONING --activate--> ACTIVE --drain / scale_down--> DRAINING
         |                                                       |
         |                          finalize_draining (>100 ms, empty)
         |                                                       v
         +------------------------remove-------------------- STOPPED --remove--> (gone)

Ids are allocated monotonically (the initial shards are ``0..n-1``) and never reused,
so a shard id names one shard's event sequence forever. Only ACTIVE shards receive
events: :meth:`ShardMapper.select` maps an event's XXH3-64 hash onto them with Lemire's
multiply-shift, ``(hash * n) >> 64``, which is unbiased where ``hash % n`` is not and
equals the reference's routing. With load metrics recorded, the shards considered are
only those whose weight is within 0.1 of the lightest (the reference's tie band); with
none recorded every ACTIVE shard is a candidate. The candidate tuple is recomputed on
every change, so ``select`` is one multiply, one shift and one index.

Scaling operations (:meth:`~ShardMapper.scale_up`, :meth:`~ShardMapper.add_provisioning`,
:meth:`~ShardMapper.scale_down`) share one cooldown and respect
``[min_shards, max_shards]``; :meth:`~ShardMapper.evaluate` turns recorded metrics into a
:data:`ScalingDecision`. Without a policy (static mode) the shard set is fixed.

Fixed reference defects: the active count is derived from the states, so repeated
activations cannot double-count it and removing a never-activated shard cannot
decrement it; a draining shard is never selected, even when nothing else is active.

Pure: time is passed in (``now_ns``), nothing here sleeps, does I/O or locks; the bus
serialises calls.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Final, TypeAlias, final

import attrs

from net_core.bus._clock import SaturatingIdAllocator
from net_core.bus._config import ScalingConfig
from net_core.errors import BusError

__all__ = [
    "DRAIN_MIN_AGE_NS",
    "WEIGHT_TOLERANCE",
    "AtMaxShards",
    "AtMinShards",
    "InCooldown",
    "InvalidShardTransition",
    "ScaleDown",
    "ScaleUp",
    "ScalingDecision",
    "ScalingError",
    "ShardMapper",
    "ShardMetrics",
    "ShardState",
]

#: A draining shard must have drained for longer than this before it can stop.
DRAIN_MIN_AGE_NS: Final = 100_000_000
#: Shards whose weight is within this of the lightest share the traffic.
WEIGHT_TOLERANCE: Final = 0.1


class ShardState(enum.Enum):
    """Lifecycle state of a shard (see the module docs for the transitions)."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"


# -- errors ------------------------------------------------------------------------------


class ScalingError(BusError):
    """A scaling operation was refused; the mapper is unchanged."""


class AtMaxShards(ScalingError):
    """The operation would exceed ``max_shards`` or the shard-id space."""

    def __init__(self) -> None:
        super().__init__("already at maximum shard count")


class AtMinShards(ScalingError):
    """The operation would go below ``min_shards``."""

    def __init__(self) -> None:
        super().__init__("already at minimum shard count")


class InCooldown(ScalingError):
    """Another scaling operation happened less than ``cooldown_ms`` ago; retry later."""

    def __init__(self) -> None:
        super().__init__("scaling operation in cooldown")


class InvalidShardTransition(ScalingError):
    """The shard is unknown, in the wrong state for the operation, or the mapper is in
    static mode (``dynamic scaling not enabled``)."""


# -- metrics and decisions ---------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class ShardMetrics:
    """Load of one shard over the last metrics window.

    ``fill_ratio`` is ring length / capacity, ``event_rate`` the events accepted in the
    window, ``weight = fill_ratio * 100 + event_rate / 1e6`` (``inf`` when draining).
    """

    shard_id: int
    fill_ratio: float
    event_rate: int
    draining: bool
    weight: float


@final
@attrs.frozen(slots=True)
class ScaleUp:
    """Add ``count`` shards."""

    count: int


@final
@attrs.frozen(slots=True)
class ScaleDown:
    """Drain ``count`` shards."""

    count: int


#: What :meth:`ShardMapper.evaluate` recommends: nothing, or a step up or down.
ScalingDecision: TypeAlias = ScaleUp | ScaleDown | None


@attrs.define(slots=True)
class _Shard:
    state: ShardState
    drain_started_ns: int = 0
    activated: bool = False


def _weight(fill_ratio: float, event_rate: int) -> float:
    return fill_ratio * 100.0 + event_rate / 1e6


@final
class ShardMapper:
    """The shard set, its states and the routing of events (see module docs).

    ``initial_shards`` ids ``0..n-1`` start ACTIVE. ``policy`` enables dynamic scaling
    (``None``: static mode, every scaling operation raises
    :class:`InvalidShardTransition`). Its ``max_shards`` is raised to ``initial_shards``
    when lower. ``max_shard_id`` bounds the id space (65535 is the reference's
    "no shard" sentinel, hence the default 65534).

    Errors: :class:`AtMaxShards`, :class:`AtMinShards`, :class:`InCooldown`,
    :class:`InvalidShardTransition` (all :class:`ScalingError`); a refused operation
    leaves the mapper unchanged.
    """

    __slots__ = (
        "_active",
        "_candidates",
        "_ids",
        "_last_scaling_ns",
        "_metrics",
        "_n",
        "_policy",
        "_route",
        "_shards",
    )

    def __init__(
        self,
        initial_shards: int,
        policy: ScalingConfig | None,
        *,
        max_shard_id: int = 65_534,
    ) -> None:
        if initial_shards < 0:
            raise ValueError(f"initial_shards must be >= 0, got {initial_shards}")
        if max_shard_id < 0:
            raise ValueError(f"max_shard_id must be >= 0, got {max_shard_id}")
        if initial_shards > max_shard_id + 1:
            raise ValueError(
                f"initial_shards ({initial_shards}) exceeds the id space 0..{max_shard_id}"
            )
        if policy is not None and policy.max_shards < initial_shards:
            policy = attrs.evolve(policy, max_shards=initial_shards)
        self._policy = policy
        self._ids = SaturatingIdAllocator(0, max_shard_id)
        # Ids are allocated in increasing order and dicts keep insertion order, so
        # iterating this dict is iterating ids in increasing order.
        self._shards: dict[int, _Shard] = {
            sid: _Shard(ShardState.ACTIVE, activated=True)
            for sid in self._ids.allocate(initial_shards)
        }
        self._metrics: dict[int, ShardMetrics] = {}
        self._last_scaling_ns: int | None = None
        self._active: tuple[int, ...] = ()
        self._candidates: tuple[int, ...] = ()
        self._n = 0
        self._route: tuple[int | None, ...] = (None,)
        self._refresh()

    # -- routing (hot path) ------------------------------------------------------------

    def reserve_ids_below(self, next_id: int) -> None:
        """Never hand out an id below ``next_id`` (ids used by an earlier run of the bus,
        whose events are still in storage)."""
        gap = next_id - self._ids.next_id
        if gap > 0:
            self._ids.allocate(min(gap, self._ids.remaining))

    def select(self, hash64: int) -> int | None:
        """The shard for an event whose XXH3-64 hash is ``hash64`` (``None``: no shard is
        ACTIVE; the event is unroutable). ``hash64`` must be in ``[0, 2**64)``; it is not
        checked (hot path)."""
        # With no candidate, _route is (None,) and _n is 0, so the index is 0: no branch.
        return self._route[(hash64 * self._n) >> 64]

    def _refresh(self) -> None:
        active = tuple(sid for sid, s in self._shards.items() if s.state is ShardState.ACTIVE)
        self._active = active
        metrics = self._metrics
        if metrics and active:
            weights = [metrics[sid].weight if sid in metrics else 0.0 for sid in active]
            cutoff = min(weights) + WEIGHT_TOLERANCE
            candidates = tuple(sid for sid, w in zip(active, weights, strict=True) if w <= cutoff)
        else:
            candidates = active
        self._candidates = candidates
        self._n = len(candidates)
        self._route = candidates or (None,)

    # -- queries -----------------------------------------------------------------------

    @property
    def policy(self) -> ScalingConfig | None:
        """The normalised scaling policy (``None`` in static mode)."""
        return self._policy

    @property
    def active_count(self) -> int:
        """Number of ACTIVE shards (always equal to ``len(active_ids())``)."""
        return len(self._active)

    @property
    def next_shard_id(self) -> int:
        """The id the next new shard gets (ids are never reused)."""
        return self._ids.next_id

    def active_ids(self) -> tuple[int, ...]:
        """Ids of the ACTIVE shards, increasing: the shards events are routed to."""
        return self._active

    def candidate_ids(self) -> tuple[int, ...]:
        """The ACTIVE shards :meth:`select` currently spreads events over."""
        return self._candidates

    def live_ids(self) -> tuple[int, ...]:
        """Ids of every shard not yet removed (any state), increasing.

        Consumers poll these: a DRAINING or STOPPED shard may still hold stored events
        until it is removed (and storage keeps them after that too; the bus remembers
        retired ids itself). PROVISIONING shards never held events; filter them out with
        :meth:`state` if polling them costs something.
        """
        return tuple(self._shards)

    def state(self, shard_id: int) -> ShardState | None:
        """State of ``shard_id``, ``None`` if it never existed or was removed."""
        shard = self._shards.get(shard_id)
        return None if shard is None else shard.state

    def metrics(self, shard_id: int) -> ShardMetrics | None:
        """The last metrics recorded for ``shard_id``, if any."""
        return self._metrics.get(shard_id)

    def in_cooldown(self, now_ns: int) -> bool:
        """Whether a scaling operation at ``now_ns`` would raise :class:`InCooldown`."""
        last = self._last_scaling_ns
        if last is None or self._policy is None:
            return False
        return now_ns - last < self._policy.cooldown_ms * 1_000_000

    # -- scaling operations ------------------------------------------------------------

    def _dynamic(self) -> ScalingConfig:
        if self._policy is None:
            raise InvalidShardTransition("dynamic scaling not enabled")
        return self._policy

    def _get(self, shard_id: int) -> _Shard:
        shard = self._shards.get(shard_id)
        if shard is None:
            raise InvalidShardTransition(f"unknown shard {shard_id}")
        return shard

    def _allocate(self, n: int, state: ShardState, now_ns: int) -> list[int]:
        # Gates shared by scale_up and add_provisioning: budget first, then cooldown.
        policy = self._dynamic()
        if n < 0:
            raise ValueError(f"count must be >= 0, got {n}")
        if n == 0:
            return []
        if len(self._active) + n > policy.max_shards or n > self._ids.remaining:
            raise AtMaxShards
        if self.in_cooldown(now_ns):
            raise InCooldown
        ids = list(self._ids.allocate(n))
        active = state is ShardState.ACTIVE
        for sid in ids:
            self._shards[sid] = _Shard(state, activated=active)
        self._last_scaling_ns = now_ns
        if active:
            self._refresh()
        return ids

    def scale_up(self, n: int, now_ns: int) -> list[int]:
        """Create ``n`` new ACTIVE shards; return their ids.

        ``n == 0`` does nothing (and does not start a cooldown). Raises
        :class:`AtMaxShards` if ``active + n > max_shards`` or the id space is spent,
        :class:`InCooldown` within ``cooldown_ms`` of the previous scaling operation.
        """
        return self._allocate(n, ShardState.ACTIVE, now_ns)

    def scale_up_provisioning(self, n: int, now_ns: int) -> list[int]:
        """Like :meth:`scale_up` (same gates, one cooldown for all ``n``), but the new
        shards are PROVISIONING: not routed to and not counted until :meth:`activate`."""
        return self._allocate(n, ShardState.PROVISIONING, now_ns)

    def add_provisioning(self, now_ns: int) -> int:
        """One new PROVISIONING shard (see :meth:`scale_up_provisioning`); its id."""
        return self._allocate(1, ShardState.PROVISIONING, now_ns)[0]

    def activate(self, shard_id: int) -> bool:
        """Make a PROVISIONING shard ACTIVE (routable).

        Idempotent: ``True`` only for the PROVISIONING -> ACTIVE transition, ``False`` if
        the shard is already ACTIVE. Raises :class:`AtMaxShards` if ``max_shards`` shards
        are already active, :class:`InvalidShardTransition` for DRAINING, STOPPED or
        unknown shards. No cooldown: provisioning took it.
        """
        policy = self._dynamic()
        shard = self._get(shard_id)
        if shard.state is ShardState.ACTIVE:
            return False
        if shard.state is not ShardState.PROVISIONING:
            raise InvalidShardTransition(
                f"cannot activate shard {shard_id} in state {shard.state.value}"
            )
        if len(self._active) >= policy.max_shards:
            raise AtMaxShards
        shard.state = ShardState.ACTIVE
        shard.activated = True
        self._refresh()
        return True

    def drain(self, shard_id: int, now_ns: int) -> bool:
        """Stop routing to ACTIVE shard ``shard_id`` (-> DRAINING); ``True`` if it changed,
        ``False`` if it was already draining.

        Raises :class:`AtMinShards` when only ``min_shards`` shards are active,
        :class:`InvalidShardTransition` for other states or unknown shards. No cooldown.
        """
        policy = self._dynamic()
        shard = self._get(shard_id)
        if shard.state is ShardState.DRAINING:
            return False
        if shard.state is not ShardState.ACTIVE:
            raise InvalidShardTransition(
                f"cannot drain shard {shard_id} in state {shard.state.value}"
            )
        if len(self._active) <= policy.min_shards:
            raise AtMinShards
        self._start_draining(shard_id, shard, now_ns)
        self._refresh()
        return True

    def _start_draining(self, shard_id: int, shard: _Shard, now_ns: int) -> None:
        shard.state = ShardState.DRAINING
        shard.drain_started_ns = now_ns
        old = self._metrics.get(shard_id)
        if old is not None:
            self._metrics[shard_id] = attrs.evolve(old, draining=True, weight=math.inf)

    def scale_down(self, n: int, now_ns: int) -> list[int]:
        """Drain ``min(n, active - min_shards)`` shards, lightest first (ties: oldest id
        first); return their ids.

        ``n == 0`` does nothing. Raises :class:`AtMinShards` when only ``min_shards``
        shards are active, :class:`InCooldown` within the cooldown.
        """
        policy = self._dynamic()
        if n < 0:
            raise ValueError(f"count must be >= 0, got {n}")
        if n == 0:
            return []
        active = self._active
        if len(active) <= policy.min_shards:
            raise AtMinShards
        if self.in_cooldown(now_ns):
            raise InCooldown
        count = min(n, len(active) - policy.min_shards)
        metrics = self._metrics

        def weight(sid: int) -> float:
            m = metrics.get(sid)
            return 0.0 if m is None else m.weight

        chosen = sorted(active, key=lambda sid: (weight(sid), sid))[:count]
        for sid in chosen:
            self._start_draining(sid, self._shards[sid], now_ns)
        self._last_scaling_ns = now_ns
        self._refresh()
        return chosen

    def finalize_draining(self, now_ns: int, is_empty: Callable[[int], bool]) -> list[int]:
        """Move DRAINING shards that have drained for more than 100 ms and for which
        ``is_empty(shard_id)`` is true to STOPPED; return their ids.

        ``is_empty`` may call back into the mapper (it sees a consistent state). Static
        mode has no draining shards and returns ``[]``.
        """
        stopped: list[int] = []
        draining = [(sid, s) for sid, s in self._shards.items() if s.state is ShardState.DRAINING]
        for sid, shard in draining:
            if now_ns - shard.drain_started_ns <= DRAIN_MIN_AGE_NS:
                continue
            if not is_empty(sid):
                continue
            # is_empty may have re-entered and changed things: re-check.
            if self._shards.get(sid) is shard and shard.state is ShardState.DRAINING:
                shard.state = ShardState.STOPPED
                stopped.append(sid)
        return stopped

    def remove(self, shard_id: int) -> bool:
        """Forget a STOPPED shard, or a PROVISIONING one that was never activated (an
        aborted add). Its id is never handed out again.

        Returns whether the shard had ever been activated, i.e. whether a count of
        activated, not-yet-removed shards must drop by one: ``False`` for an aborted
        PROVISIONING shard (the reference over-decremented here). :attr:`active_count`
        is unaffected either way (neither state is ACTIVE). Raises
        :class:`InvalidShardTransition` for ACTIVE, DRAINING or unknown shards.
        """
        self._dynamic()
        shard = self._get(shard_id)
        if shard.state not in (ShardState.STOPPED, ShardState.PROVISIONING):
            raise InvalidShardTransition(
                f"cannot remove shard {shard_id} in state {shard.state.value}"
            )
        del self._shards[shard_id]
        self._metrics.pop(shard_id, None)
        return shard.activated

    # -- metrics and the automatic policy ----------------------------------------------

    def record(self, shard_id: int, fill_ratio: float, events_in_window: int) -> ShardMetrics:
        """Store the load of ``shard_id`` over the last window (replacing the previous
        record) and re-derive the routing candidates."""
        if not math.isfinite(fill_ratio) or fill_ratio < 0:
            raise ValueError(f"fill_ratio must be a finite number >= 0, got {fill_ratio}")
        if events_in_window < 0:
            raise ValueError(f"events_in_window must be >= 0, got {events_in_window}")
        shard = self._get(shard_id)
        draining = shard.state in (ShardState.DRAINING, ShardState.STOPPED)
        m = ShardMetrics(
            shard_id=shard_id,
            fill_ratio=fill_ratio,
            event_rate=events_in_window,
            draining=draining,
            weight=math.inf if draining else _weight(fill_ratio, events_in_window),
        )
        self._metrics[shard_id] = m
        self._refresh()
        return m

    def evaluate(self, now_ns: int) -> ScalingDecision:
        """What the automatic policy recommends now, from the recorded metrics.

        ``None`` in static mode, with ``auto_scale`` off, or within the cooldown.
        Over the ACTIVE shards (shards without a record count as neither): if more than
        half are overloaded (``fill_ratio > fill_ratio_threshold``) and fewer than
        ``max_shards`` are active, :class:`ScaleUp` by ``max(1, overloaded // 2)``; else if
        more than half are idle (``fill_ratio < underutilized_threshold`` and no events
        in the window) and more than ``min_shards`` are active, :class:`ScaleDown` by
        ``max(1, idle // 2)``; both capped by the bounds and the id space.
        """
        policy = self._policy
        if policy is None or not policy.auto_scale or self.in_cooldown(now_ns):
            return None
        active = self._active
        overloaded = idle = 0
        for sid in active:
            m = self._metrics.get(sid)
            if m is None:
                continue
            if m.fill_ratio > policy.fill_ratio_threshold:
                overloaded += 1
            elif m.fill_ratio < policy.underutilized_threshold and m.event_rate == 0:
                idle += 1
        n_active = len(active)
        if overloaded > n_active // 2 and n_active < policy.max_shards:
            up = min(max(1, overloaded // 2), policy.max_shards - n_active, self._ids.remaining)
            return ScaleUp(up) if up > 0 else None
        if idle > n_active // 2 and n_active > policy.min_shards:
            return ScaleDown(min(max(1, idle // 2), n_active - policy.min_shards))
        return None

    def __repr__(self) -> str:
        mode = "static" if self._policy is None else "dynamic"
        return (
            f"ShardMapper({mode}, active={list(self._active)}, live={len(self._shards)}, "
            f"next_id={self._ids.next_id})"
        )
