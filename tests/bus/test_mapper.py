"""Shard ids, states, Lemire routing and the scaling policy of the ShardMapper."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from net_core.bus._config import ScalingConfig
from net_core.bus._mapper import (
    DRAIN_MIN_AGE_NS,
    AtMaxShards,
    AtMinShards,
    InCooldown,
    InvalidShardTransition,
    ScaleDown,
    ScaleUp,
    ScalingError,
    ShardMapper,
    ShardState,
)
from net_core.errors import BusError

MS = 1_000_000
U64 = 1 << 64


def policy(**kw: object) -> ScalingConfig:
    base: dict[str, object] = {"min_shards": 1, "max_shards": 16, "cooldown_ms": 0.001}
    base.update(kw)
    return ScalingConfig(**base)  # type: ignore[arg-type]


def lemire(h: int, ids: tuple[int, ...]) -> int:
    return ids[(h * len(ids)) >> 64]


def spread(n: int) -> list[int]:
    """``n`` hashes evenly spread over the 64-bit space (the midpoints of ``n`` slices)."""
    return [((2 * i + 1) << 64) // (2 * n) for i in range(n)]


def stop_and_remove(m: ShardMapper, sid: int, now: int) -> None:
    m.drain(sid, now)
    assert m.finalize_draining(now + DRAIN_MIN_AGE_NS + 1, lambda _s: True) == [sid]
    assert m.remove(sid) is True


# -- errors ------------------------------------------------------------------------------


def test_error_texts_and_hierarchy() -> None:
    assert str(AtMaxShards()) == "already at maximum shard count"
    assert str(AtMinShards()) == "already at minimum shard count"
    assert str(InCooldown()) == "scaling operation in cooldown"
    for cls in (AtMaxShards, AtMinShards, InCooldown, InvalidShardTransition):
        assert issubclass(cls, ScalingError)
    assert issubclass(ScalingError, BusError)


# -- routing -----------------------------------------------------------------------------


def test_lemire_is_uniform_within_five_percent_over_three_shards() -> None:
    m = ShardMapper(3, None)
    counts = Counter(m.select(h) for h in spread(30_000))
    assert set(counts) == {0, 1, 2}
    for c in counts.values():
        assert 9_500 <= c <= 10_500


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 17, 64, 1000])
def test_lemire_slices_differ_by_at_most_one_hash(n: int) -> None:
    # Shard k owns the hashes [ceil(k * 2**64 / n), ceil((k + 1) * 2**64 / n)): every
    # slice holds floor or ceil of 2**64 / n hashes, so there is no modulo bias.
    m = ShardMapper(n, None)
    firsts = [-(-(k << 64) // n) for k in range(n + 1)]
    for k in range(n):
        assert m.select(firsts[k]) == k
        assert m.select(firsts[k + 1] - 1) == k
    sizes = {firsts[k + 1] - firsts[k] for k in range(n)}
    assert max(sizes) - min(sizes) <= 1


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=50), st.integers(1, 12))
def test_select_is_xxh3_lemire_over_the_active_list(payloads: list[bytes], n: int) -> None:
    m = ShardMapper(n, None)
    for b in payloads:
        h = xxhash.xxh3_64_intdigest(b)
        assert m.select(h) == (h * n) >> 64


@given(st.lists(st.binary(max_size=32), min_size=1, max_size=50))
def test_select_follows_the_active_list_after_scaling(payloads: list[bytes]) -> None:
    m = ShardMapper(4, policy())
    m.drain(1, 0)
    m.scale_up(2, 10 * MS)
    assert m.active_ids() == (0, 2, 3, 4, 5)
    for b in payloads:
        h = xxhash.xxh3_64_intdigest(b)
        assert m.select(h) == lemire(h, (0, 2, 3, 4, 5))


def test_select_extremes() -> None:
    m = ShardMapper(7, None)
    assert m.select(0) == 0
    assert m.select(U64 - 1) == 6


def test_no_shards_select_none() -> None:
    assert ShardMapper(0, None).select(12345) is None
    assert ShardMapper(0, policy()).select(U64 - 1) is None


def test_provisioning_shards_are_not_selectable() -> None:
    m = ShardMapper(0, policy())
    sid = m.add_provisioning(0)
    assert m.state(sid) is ShardState.PROVISIONING
    assert m.active_count == 0
    assert m.select(99) is None
    assert m.activate(sid) is True
    assert m.select(99) == sid


def test_draining_shard_is_never_selected() -> None:
    m = ShardMapper(3, policy())
    m.drain(1, 0)
    assert {m.select(h) for h in spread(3000)} == {0, 2}
    assert m.active_ids() == (0, 2)


def test_metrics_restrict_candidates_to_the_light_band() -> None:
    m = ShardMapper(4, policy())
    m.record(0, 0.50, 0)  # weight 50
    m.record(1, 0.0005, 0)  # weight 0.05: within 0.1 of the lightest
    m.record(2, 0.0, 20_000)  # weight 0.02: the lightest
    # shard 3 has no record: weight 0, the lightest
    assert m.candidate_ids() == (1, 2, 3)
    for h in spread(300):
        assert m.select(h) == lemire(h, (1, 2, 3))
    m.record(0, 0.0, 0)
    assert m.candidate_ids() == (0, 1, 2, 3)


def test_record_rejects_nonsense() -> None:
    m = ShardMapper(2, policy())
    with pytest.raises(ValueError, match="fill_ratio"):
        m.record(0, float("nan"), 0)
    with pytest.raises(ValueError, match="events_in_window"):
        m.record(0, 0.5, -1)
    with pytest.raises(InvalidShardTransition):
        m.record(9, 0.5, 0)


def test_select_is_unaffected_by_failed_operations() -> None:
    m = ShardMapper(2, policy(min_shards=2, max_shards=2))
    before = [m.select(h) for h in spread(100)]
    with pytest.raises(AtMaxShards):
        m.scale_up(1, 0)
    with pytest.raises(AtMinShards):
        m.scale_down(1, 0)
    assert [m.select(h) for h in spread(100)] == before


# -- static mode -------------------------------------------------------------------------


def test_static_mode_fixed_set_and_no_scaling() -> None:
    m = ShardMapper(4, None)
    assert m.policy is None
    assert m.active_ids() == (0, 1, 2, 3)
    assert m.live_ids() == (0, 1, 2, 3)
    calls: list[Callable[[], object]] = [
        lambda: m.scale_up(1, 0),
        lambda: m.scale_up_provisioning(1, 0),
        lambda: m.add_provisioning(0),
        lambda: m.scale_down(1, 0),
        lambda: m.activate(0),
        lambda: m.drain(0, 0),
        lambda: m.remove(0),
    ]
    for call in calls:
        with pytest.raises(InvalidShardTransition, match="dynamic scaling not enabled"):
            call()
    assert m.finalize_draining(10**12, lambda _s: True) == []
    assert m.evaluate(10**12) is None
    assert m.active_count == 4


def test_initial_shards_must_fit_the_id_space() -> None:
    assert ShardMapper(65_535, None).active_count == 65_535  # ids 0..65534
    with pytest.raises(ValueError, match="id space"):
        ShardMapper(65_536, None)
    with pytest.raises(ValueError, match="initial_shards"):
        ShardMapper(-1, None)


def test_policy_is_normalised_max_raised_to_initial_count() -> None:
    m = ShardMapper(8, policy(max_shards=4))
    assert m.policy is not None
    assert m.policy.max_shards == 8
    assert m.active_count == 8


# -- scale_up / provisioning / activate --------------------------------------------------


def test_scale_up_allocates_new_ids_and_respects_max() -> None:
    m = ShardMapper(2, policy(max_shards=4))
    assert m.scale_up(2, 0) == [2, 3]
    assert m.active_count == 4
    with pytest.raises(AtMaxShards):
        m.scale_up(1, 10 * MS)
    assert m.active_ids() == (0, 1, 2, 3)
    assert m.next_shard_id == 4


def test_scale_up_all_or_nothing() -> None:
    m = ShardMapper(2, policy(max_shards=4))
    with pytest.raises(AtMaxShards):
        m.scale_up(3, 0)
    assert m.active_count == 2
    assert m.next_shard_id == 2
    assert not m.in_cooldown(0)


def test_scale_up_zero_is_a_noop_without_cooldown_bump() -> None:
    m = ShardMapper(1, policy(cooldown_ms=1000))
    assert m.scale_up(0, 0) == []
    assert m.scale_down(0, 0) == []
    assert not m.in_cooldown(0)
    assert m.scale_up(1, 0) == [1]


def test_two_scale_ups_in_one_cooldown_window() -> None:
    m = ShardMapper(1, policy(cooldown_ms=1000))
    assert m.scale_up(1, 5 * MS) == [1]
    with pytest.raises(InCooldown):
        m.scale_up(1, 5 * MS + 1000 * MS - 1)
    assert m.active_count == 2
    assert m.scale_up(1, 5 * MS + 1000 * MS) == [2]


def test_all_scaling_operations_share_the_cooldown() -> None:
    m = ShardMapper(3, policy(cooldown_ms=1000))
    m.add_provisioning(0)
    with pytest.raises(InCooldown):
        m.scale_down(1, 1)
    with pytest.raises(InCooldown):
        m.scale_up(1, 2)
    # activate and drain are follow-ups of a scaling decision, not new ones.
    assert m.activate(3) is True
    assert m.drain(0, 3) is True


def test_budget_is_checked_before_cooldown() -> None:
    m = ShardMapper(2, policy(max_shards=3, cooldown_ms=1000))
    m.scale_up(1, 0)
    with pytest.raises(AtMaxShards):
        m.scale_up(1, 1)


def test_id_space_exhaustion_is_at_max_shards_and_ids_are_not_reused() -> None:
    m = ShardMapper(3, policy(max_shards=100), max_shard_id=4)
    assert m.scale_up(2, 0) == [3, 4]
    stop_and_remove(m, 0, 1 * MS)
    with pytest.raises(AtMaxShards):
        m.scale_up(1, 10**10)
    with pytest.raises(AtMaxShards):
        m.add_provisioning(10**10)
    assert m.live_ids() == (1, 2, 3, 4)


def test_add_provisioning_is_not_counted_until_activated() -> None:
    m = ShardMapper(2, policy(max_shards=3))
    sid = m.add_provisioning(0)
    assert sid == 2
    assert m.active_count == 2
    assert m.state(sid) is ShardState.PROVISIONING
    assert sid in m.live_ids()
    assert sid not in m.active_ids()


def test_scale_up_provisioning_takes_one_cooldown_for_all() -> None:
    m = ShardMapper(1, policy(cooldown_ms=1000))
    assert m.scale_up_provisioning(3, 0) == [1, 2, 3]
    assert m.active_count == 1
    assert [m.activate(s) for s in (1, 2, 3)] == [True, True, True]
    assert m.active_count == 4


def test_activate_is_idempotent() -> None:
    m = ShardMapper(1, policy())
    sid = m.add_provisioning(0)
    assert m.activate(sid) is True
    assert m.active_count == 2
    for _ in range(3):
        assert m.activate(sid) is False
    assert m.active_count == 2
    assert m.activate(0) is False


def test_activate_beyond_max_is_at_max_shards() -> None:
    m = ShardMapper(1, policy(max_shards=2))
    sid = m.add_provisioning(0)
    m.scale_up(1, 10 * MS)
    assert m.active_count == 2
    with pytest.raises(AtMaxShards):
        m.activate(sid)
    assert m.state(sid) is ShardState.PROVISIONING
    assert m.active_count == 2


def test_activate_rejects_draining_stopped_and_unknown() -> None:
    m = ShardMapper(3, policy())
    m.drain(0, 0)
    with pytest.raises(InvalidShardTransition, match="draining"):
        m.activate(0)
    m.finalize_draining(DRAIN_MIN_AGE_NS + 1, lambda _s: True)
    with pytest.raises(InvalidShardTransition, match="stopped"):
        m.activate(0)
    with pytest.raises(InvalidShardTransition, match="unknown"):
        m.activate(42)


# -- drain / scale_down / finalize / remove ----------------------------------------------


def test_drain_removes_from_selection_and_is_idempotent() -> None:
    m = ShardMapper(3, policy())
    assert m.drain(1, 0) is True
    assert m.drain(1, 5) is False
    assert m.state(1) is ShardState.DRAINING
    assert m.active_count == 2
    assert m.live_ids() == (0, 1, 2)


def test_drain_respects_min_shards() -> None:
    m = ShardMapper(2, policy(min_shards=2))
    with pytest.raises(AtMinShards):
        m.drain(0, 0)
    assert m.active_count == 2


def test_drain_rejects_provisioning_and_unknown() -> None:
    m = ShardMapper(2, policy())
    sid = m.add_provisioning(0)
    with pytest.raises(InvalidShardTransition):
        m.drain(sid, 0)
    with pytest.raises(InvalidShardTransition):
        m.drain(99, 0)


def test_scale_down_respects_min_and_picks_oldest_first_without_metrics() -> None:
    m = ShardMapper(5, policy(min_shards=2))
    assert m.scale_down(10, 0) == [0, 1, 2]
    assert m.active_ids() == (3, 4)
    with pytest.raises(AtMinShards):
        m.scale_down(1, 10**10)


def test_scale_down_picks_the_lightest_shards() -> None:
    m = ShardMapper(4, policy())
    m.record(0, 0.9, 0)
    m.record(1, 0.0, 5)
    m.record(2, 0.0, 0)
    m.record(3, 0.2, 0)
    assert m.scale_down(2, 0) == [2, 1]
    assert m.metrics(2) is not None
    assert m.metrics(2).draining  # type: ignore[union-attr]


def test_scale_down_respects_cooldown() -> None:
    m = ShardMapper(4, policy(cooldown_ms=1000))
    m.scale_down(1, 0)
    with pytest.raises(InCooldown):
        m.scale_down(1, 999 * MS)
    assert m.active_count == 3


def test_finalize_draining_waits_over_100_ms_and_for_empty() -> None:
    m = ShardMapper(3, policy())
    m.drain(0, 1_000)
    m.drain(1, 1_000)
    assert m.finalize_draining(1_000 + DRAIN_MIN_AGE_NS, lambda _s: True) == []
    not_empty = {1}
    assert m.finalize_draining(1_001 + DRAIN_MIN_AGE_NS, lambda s: s not in not_empty) == [0]
    assert m.state(0) is ShardState.STOPPED
    assert m.state(1) is ShardState.DRAINING
    not_empty.clear()
    assert m.finalize_draining(10**12, lambda s: s not in not_empty) == [1]
    assert m.active_count == 1


def test_finalize_draining_callback_may_reenter_the_mapper() -> None:
    m = ShardMapper(4, policy())
    m.scale_down(2, 0)

    def is_empty(sid: int) -> bool:
        assert m.state(sid) is ShardState.DRAINING
        _ = (m.active_ids(), m.live_ids(), m.select(sid), m.evaluate(0))
        m.record(sid, 0.0, 0)
        if sid == 0:
            m.drain(2, 0)  # starts draining another shard: not finalized this round
        return True

    assert m.finalize_draining(DRAIN_MIN_AGE_NS + 1, is_empty) == [0, 1]
    assert m.state(2) is ShardState.DRAINING


def test_remove_stopped_and_never_activated() -> None:
    m = ShardMapper(3, policy())
    sid = m.add_provisioning(0)
    assert m.remove(sid) is False  # never activated: must not decrement anybody's count
    assert m.state(sid) is None
    assert m.active_count == 3
    stop_and_remove(m, 0, 10 * MS)
    assert m.active_count == 2
    assert m.live_ids() == (1, 2)


def test_remove_rejects_active_draining_and_unknown() -> None:
    m = ShardMapper(3, policy())
    with pytest.raises(InvalidShardTransition, match="active"):
        m.remove(0)
    m.drain(0, 0)
    with pytest.raises(InvalidShardTransition, match="draining"):
        m.remove(0)
    with pytest.raises(InvalidShardTransition, match="unknown"):
        m.remove(77)


def test_rollback_of_an_aborted_add_does_not_over_decrement() -> None:
    # Seed: "num_shards decremented on rollback that never incremented it".
    m = ShardMapper(2, policy())
    counted = m.active_count
    sid = m.add_provisioning(0)
    if m.remove(sid):
        counted -= 1
    assert counted == m.active_count == 2


def test_ids_are_never_reused_across_add_remove_cycles() -> None:
    m = ShardMapper(2, policy())
    seen = {0, 1}
    now = 0
    for cycle in range(20):
        now += 10 * MS
        sid = m.add_provisioning(now)
        assert sid not in seen
        seen.add(sid)
        if cycle % 3 == 0:
            assert m.remove(sid) is False
            continue
        m.activate(sid)
        now += 10 * MS
        [victim] = m.scale_down(1, now)
        now += DRAIN_MIN_AGE_NS + 1
        assert m.finalize_draining(now, lambda _s: True) == [victim]
        assert m.remove(victim) is True
    assert m.next_shard_id == 22
    assert m.active_count == 2


# -- evaluate ----------------------------------------------------------------------------


def test_evaluate_none_without_metrics_or_when_auto_scale_is_off() -> None:
    assert ShardMapper(4, policy()).evaluate(0) is None
    m = ShardMapper(2, policy(auto_scale=False))
    m.record(0, 0.99, 100)
    m.record(1, 0.99, 100)
    assert m.evaluate(0) is None


def test_evaluate_scales_up_on_high_fill() -> None:
    m = ShardMapper(4, policy(max_shards=16))
    for sid in range(3):
        m.record(sid, 0.8, 1000)
    assert m.evaluate(0) == ScaleUp(1)  # 3 overloaded of 4 -> max(1, 3 // 2)
    m.record(3, 0.9, 1000)
    assert m.evaluate(0) == ScaleUp(2)


def test_evaluate_needs_more_than_half_overloaded() -> None:
    m = ShardMapper(4, policy())
    m.record(0, 0.8, 1000)
    m.record(1, 0.8, 1000)
    assert m.evaluate(0) is None


def test_evaluate_scales_down_on_underutilisation() -> None:
    m = ShardMapper(6, policy(min_shards=2))
    for sid in range(6):
        m.record(sid, 0.0, 0)
    assert m.evaluate(0) == ScaleDown(3)
    m.record(0, 0.0, 1)  # any event in the window: not idle
    m.record(1, 0.5, 0)
    assert m.evaluate(0) == ScaleDown(2)


def test_evaluate_never_beyond_bounds() -> None:
    m = ShardMapper(4, policy(max_shards=4, min_shards=4))
    for sid in range(4):
        m.record(sid, 0.95, 10)
    assert m.evaluate(0) is None
    for sid in range(4):
        m.record(sid, 0.0, 0)
    assert m.evaluate(0) is None
    m2 = ShardMapper(4, policy(max_shards=5))
    for sid in range(4):
        m2.record(sid, 0.95, 10)
    assert m2.evaluate(0) == ScaleUp(1)  # max(1, 4 // 2) capped by max - active
    m3 = ShardMapper(4, policy(max_shards=100), max_shard_id=3)
    for sid in range(4):
        m3.record(sid, 0.95, 10)
    assert m3.evaluate(0) is None  # the id space is spent


def test_evaluate_respects_cooldown() -> None:
    m = ShardMapper(2, policy(cooldown_ms=1000))
    m.scale_up(1, 0)
    for sid in range(3):
        m.record(sid, 0.95, 10)
    assert m.evaluate(999 * MS) is None
    assert m.evaluate(1000 * MS) == ScaleUp(1)


def test_evaluate_ignores_draining_shards() -> None:
    m = ShardMapper(3, policy())
    m.record(0, 0.95, 10)
    m.drain(0, 0)
    m.record(0, 0.95, 10)
    m.record(1, 0.5, 10)
    m.record(2, 0.5, 10)
    assert m.metrics(0) is not None
    assert m.metrics(0).weight == float("inf")  # type: ignore[union-attr]
    assert m.evaluate(0) is None


def test_repr_mentions_mode() -> None:
    assert "static" in repr(ShardMapper(1, None))
    assert "dynamic" in repr(ShardMapper(1, policy()))


# -- stateful ----------------------------------------------------------------------------


class MapperMachine(RuleBasedStateMachine):
    """Random interleavings of every mapper operation against a simple model."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.cfg = policy(min_shards=1, max_shards=6, cooldown_ms=5)
        self.m = ShardMapper(2, self.cfg, max_shard_id=40)
        self.now = 0
        self.issued: list[int] = [0, 1]
        self.activated_live: set[int] = {0, 1}  # the model of "num_shards"
        self.removed: set[int] = set()

    @rule(target=ids)
    def initial(self) -> object:
        return multiple(0, 1)

    @rule(
        dt=st.one_of(
            st.sampled_from([1, 6 * MS, DRAIN_MIN_AGE_NS, DRAIN_MIN_AGE_NS + 1]),
            st.integers(0, 300 * MS),
        )
    )
    def advance(self, dt: int) -> None:
        self.now += dt

    def _new_ids(self, ids: list[int]) -> None:
        assert all(i not in self.issued for i in ids)
        assert ids == sorted(ids)
        if ids:
            assert ids[0] > max(self.issued)
        self.issued.extend(ids)

    @rule(target=ids, n=st.integers(0, 3))
    def scale_up(self, n: int) -> object:
        try:
            new = self.m.scale_up(n, self.now)
        except (AtMaxShards, InCooldown):
            return multiple()
        self._new_ids(new)
        self.activated_live.update(new)
        return multiple(*new)

    @rule(target=ids)
    def add_provisioning(self) -> object:
        try:
            sid = self.m.add_provisioning(self.now)
        except (AtMaxShards, InCooldown):
            return multiple()
        self._new_ids([sid])
        return sid

    @rule(sid=ids)
    def activate(self, sid: int) -> None:
        before = self.m.state(sid)
        try:
            changed = self.m.activate(sid)
        except (AtMaxShards, InvalidShardTransition):
            assert self.m.state(sid) == before
            return
        assert changed == (before is ShardState.PROVISIONING)
        self.activated_live.add(sid)

    @rule(sid=ids)
    def drain(self, sid: int) -> None:
        before = self.m.state(sid)
        try:
            changed = self.m.drain(sid, self.now)
        except (AtMinShards, InvalidShardTransition):
            assert self.m.state(sid) == before
            return
        assert changed == (before is ShardState.ACTIVE)

    @rule(n=st.integers(0, 3))
    def scale_down(self, n: int) -> None:
        try:
            drained = self.m.scale_down(n, self.now)
        except (AtMinShards, InCooldown):
            return
        assert len(drained) <= n
        assert all(self.m.state(s) is ShardState.DRAINING for s in drained)

    @rule(full=st.sets(st.integers(0, 40)))
    def finalize(self, full: set[int]) -> None:
        stopped = self.m.finalize_draining(self.now, lambda s: s not in full)
        assert not set(stopped) & full
        assert all(self.m.state(s) is ShardState.STOPPED for s in stopped)

    @rule(sid=ids)
    def remove(self, sid: int) -> None:
        before = self.m.state(sid)
        try:
            was_activated = self.m.remove(sid)
        except InvalidShardTransition:
            # Unknown (None, e.g. already removed), ACTIVE or DRAINING.
            assert before not in (ShardState.STOPPED, ShardState.PROVISIONING)
            return
        assert before in (ShardState.STOPPED, ShardState.PROVISIONING)
        assert was_activated == (sid in self.activated_live)
        self.activated_live.discard(sid)
        self.removed.add(sid)

    def _stopped(self) -> list[int]:
        return [s for s in self.m.live_ids() if self.m.state(s) is ShardState.STOPPED]

    @precondition(lambda self: bool(self._stopped()))
    @rule(pick=st.integers(0, 10))
    def remove_a_stopped_shard(self, pick: int) -> None:
        stopped = self._stopped()
        self.remove(stopped[pick % len(stopped)])

    @rule(sid=ids, fill=st.floats(0, 1), events=st.integers(0, 10))
    def record(self, sid: int, fill: float, events: int) -> None:
        if self.m.state(sid) is None:
            with pytest.raises(InvalidShardTransition):
                self.m.record(sid, fill, events)
        else:
            self.m.record(sid, fill, events)

    @rule()
    def evaluate(self) -> None:
        decision = self.m.evaluate(self.now)
        n = self.m.active_count
        if isinstance(decision, ScaleUp):
            assert 1 <= decision.count <= self.cfg.max_shards - n
        elif isinstance(decision, ScaleDown):
            assert 1 <= decision.count <= n - self.cfg.min_shards

    # -- invariants

    @invariant()
    def active_count_equals_active_states(self) -> None:
        states = {s: self.m.state(s) for s in self.m.live_ids()}
        active = tuple(s for s, st_ in states.items() if st_ is ShardState.ACTIVE)
        assert self.m.active_count == len(active)
        assert self.m.active_ids() == active
        assert self.cfg.min_shards <= self.m.active_count <= self.cfg.max_shards

    @invariant()
    def ids_unique_increasing_never_reused(self) -> None:
        live = self.m.live_ids()
        assert list(live) == sorted(set(live))
        assert not set(live) & self.removed
        assert set(live) <= set(self.issued)
        assert self.issued == sorted(set(self.issued))
        assert self.m.next_shard_id == max(self.issued) + 1

    @invariant()
    def activated_count_matches_model(self) -> None:
        # What the bus's "num_shards" would be when gated on remove()'s answer.
        live_activated = {
            s for s in self.m.live_ids() if self.m.state(s) is not ShardState.PROVISIONING
        }
        assert live_activated == self.activated_live

    @invariant()
    def select_returns_only_active_ids(self) -> None:
        active = set(self.m.active_ids())
        candidates = self.m.candidate_ids()
        assert set(candidates) <= active
        assert bool(candidates) == bool(active)
        for h in itertools.chain(spread(37), [U64 - 1]):
            sid = self.m.select(h)
            if active:
                assert sid in active
                assert sid == lemire(h, candidates)
            else:
                assert sid is None


MapperMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestMapperMachine = MapperMachine.TestCase
