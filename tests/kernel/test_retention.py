"""Built-in retention policies: exact semantics and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.errors import ConfigError
from net_core.plugins import PluginManager
from net_core.retention import (
    ENTRY_OVERHEAD,
    AgeRetention,
    BytesRetention,
    CombinedRetention,
    CountRetention,
    RetentionPolicyError,
    RetentionView,
    accounted_size,
)

MS = 1_000_000


def view(timestamps: list[int], payload_lens: list[int] | None = None) -> RetentionView:
    lens = payload_lens if payload_lens is not None else [0] * len(timestamps)
    return RetentionView.of(timestamps, [accounted_size(n) for n in lens])


def test_count_keeps_the_newest() -> None:
    policy = CountRetention(max_events=3)
    assert policy.eviction_count(view([1, 2, 3, 4, 5]), 0) == 2
    assert policy.eviction_count(view([1, 2, 3]), 0) == 0
    assert policy.eviction_count(view([]), 0) == 0


def test_bytes_accounts_index_record_plus_payload() -> None:
    assert accounted_size(5) == ENTRY_OVERHEAD + 5
    assert accounted_size(8, inline=True) == ENTRY_OVERHEAD
    # sizes 30, 30, 30 (10-byte payloads): 60 fits two.
    policy = BytesRetention(max_bytes=60)
    assert policy.eviction_count(view([1, 2, 3], [10, 10, 10]), 0) == 1
    assert BytesRetention(max_bytes=59).eviction_count(view([1, 2, 3], [10, 10, 10]), 0) == 2
    # An entry larger than the budget on its own goes too.
    assert BytesRetention(max_bytes=25).eviction_count(view([1, 2], [1, 100]), 0) == 2


def test_age_keeps_an_entry_exactly_at_the_cutoff() -> None:
    policy = AgeRetention(max_age_ms=10)
    now = 100 * MS
    cutoff = now - 10 * MS
    v = view([cutoff - 2, cutoff - 1, cutoff, cutoff + 1])
    assert policy.eviction_count(v, now) == 2  # the entry at the cutoff is retained


def test_age_evicts_only_the_leading_run() -> None:
    policy = AgeRetention(max_age_ms=1)
    now = 10 * MS
    # A wall-clock step back put an old stamp behind a new one: it waits its turn.
    assert policy.eviction_count(view([0, 20 * MS, 0]), now) == 1


def test_combined_evicts_the_largest_count() -> None:
    combined = CombinedRetention((CountRetention(4), BytesRetention(ENTRY_OVERHEAD * 2)))
    assert combined.eviction_count(view([1, 2, 3, 4, 5]), 0) == 3
    assert CombinedRetention(()).eviction_count(view([1, 2]), 0) == 0


@pytest.mark.parametrize("bad", [-1, 3, 1.5, None, True])
def test_combined_rejects_a_policy_answer_outside_the_log(bad: object) -> None:
    class Buggy:
        def eviction_count(self, view: RetentionView, now_ns: int) -> object:
            return bad

    with pytest.raises(RetentionPolicyError, match=r"expected an integer in \[0, 2\]"):
        CombinedRetention((Buggy(),)).eviction_count(view([1, 2]), 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "field"),
    [(CountRetention, "max_events"), (BytesRetention, "max_bytes"), (AgeRetention, "max_age_ms")],
)
def test_limits_are_validated(cls: type, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: must be >= 1, got 0$"):
        cls(0)
    with pytest.raises(ConfigError, match=rf"^{field}: must be an integer, got str"):
        cls("5")


def test_retention_from_config_builds_a_combination() -> None:
    pm = PluginManager(discover=False)
    combined = pm.retention_from_config({"count": {"max_events": 2}, "age": {"max_age_ms": 5}})
    assert combined.policies == (CountRetention(2), AgeRetention(5))
    with pytest.raises(ConfigError, match=r"^retention\.bytes\.max_bytes: must be >= 1, got -4$"):
        pm.retention_from_config({"bytes": {"max_bytes": -4}})
    with pytest.raises(ConfigError, match=r"^retention: expected a table"):
        pm.retention_from_config(["count"])  # type: ignore[arg-type]


# -- properties -------------------------------------------------------------------------

entries = st.lists(
    st.tuples(st.integers(0, 10**12), st.integers(0, 2000), st.booleans()), max_size=60
)
policies = st.lists(
    st.one_of(
        st.builds(CountRetention, st.integers(1, 70)),
        st.builds(BytesRetention, st.integers(1, 80_000)),
        st.builds(AgeRetention, st.integers(1, 10**6)),
    ),
    max_size=4,
)


def _view(items: list[tuple[int, int, bool]]) -> RetentionView:
    return RetentionView.of(
        [ts for ts, _, _ in items], [accounted_size(n, inline=i) for _, n, i in items]
    )


def _kept_by(policy: object, v: RetentionView, now: int, index: int) -> bool:
    return index >= policy.eviction_count(v, now)  # type: ignore[attr-defined]


@given(entries, policies, st.integers(0, 2 * 10**12))
def test_an_entry_every_policy_keeps_is_never_evicted(
    items: list[tuple[int, int, bool]], chosen: list[object], now: int
) -> None:
    v = _view(items)
    combined = CombinedRetention(tuple(chosen))  # type: ignore[arg-type]
    evicted = combined.eviction_count(v, now)
    assert 0 <= evicted <= len(v)
    for index in range(len(v)):
        kept_by_all = all(_kept_by(p, v, now, index) for p in chosen)
        assert kept_by_all == (index >= evicted)


@given(entries, st.integers(1, 70))
def test_count_property(items: list[tuple[int, int, bool]], limit: int) -> None:
    v = _view(items)
    evicted = CountRetention(limit).eviction_count(v, 0)
    assert len(v) - evicted == min(len(v), limit)


@given(entries, st.integers(1, 80_000))
def test_bytes_property_keeps_the_longest_fitting_suffix(
    items: list[tuple[int, int, bool]], limit: int
) -> None:
    v = _view(items)
    evicted = BytesRetention(limit).eviction_count(v, 0)
    kept = list(v.sizes[evicted:])
    assert sum(kept) <= limit
    if evicted:  # one more entry would not have fitted
        assert sum(kept) + v.sizes[evicted - 1] > limit


@given(entries, st.integers(1, 10**6), st.integers(0, 2 * 10**12))
def test_age_property(items: list[tuple[int, int, bool]], max_age_ms: int, now: int) -> None:
    v = _view(items)
    evicted = AgeRetention(max_age_ms).eviction_count(v, now)
    cutoff = now - max_age_ms * MS
    assert all(ts < cutoff for ts in v.timestamps[:evicted])
    if evicted < len(v):
        assert v.timestamps[evicted] >= cutoff
