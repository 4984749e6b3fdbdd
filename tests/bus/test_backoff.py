"""Jittered exponential retry backoff."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.bus._backoff import retry_backoff_ms

U64_MAX = (1 << 64) - 1

# The reference's pinned bounds per attempt (bus.rs retry_backoff tests).
BOUNDS = {
    0: (75, 125),
    1: (150, 250),
    2: (300, 500),
    3: (600, 1000),
    4: (1200, 2000),
    5: (2400, 4000),
    6: (2400, 4000),
    50: (2400, 4000),
}


@pytest.mark.parametrize(("attempt", "bounds"), BOUNDS.items())
def test_bounds_per_attempt(attempt: int, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    for shard in range(2_000):
        delay = retry_backoff_ms(shard, attempt)
        assert lo <= delay <= hi, (shard, attempt, delay)


def test_capped_at_attempt_five() -> None:
    assert max(retry_backoff_ms(s, a) for s in range(500) for a in range(5, 40)) <= 4000


@pytest.mark.parametrize("attempt", range(8))
def test_decorrelated_across_shards(attempt: int) -> None:
    # The reference relaxed this to >= 4/16 because of SipHash drift; XXH3 is stable.
    values = {retry_backoff_ms(shard, attempt) for shard in range(16)}
    assert len(values) >= 8


def test_jitter_spreads_over_the_whole_band() -> None:
    factors = [retry_backoff_ms(s, 0) / 100 for s in range(10_000)]
    assert statistics.fmean(factors) == pytest.approx(1.0, abs=0.01)
    assert min(factors) < 0.76
    assert max(factors) > 1.24


def test_same_shard_differs_across_attempts_beyond_doubling() -> None:
    # Each attempt re-draws its jitter: the ratio between attempts is not exactly 2.
    ratios = {retry_backoff_ms(7, a + 1) / retry_backoff_ms(7, a) for a in range(4)}
    assert ratios != {2.0}


def test_deterministic_and_independent_of_pythons_hash_seed() -> None:
    here = [retry_backoff_ms(s, a) for s in range(4) for a in range(3)]
    assert here == [retry_backoff_ms(s, a) for s in range(4) for a in range(3)]
    code = (
        "from net_core.bus._backoff import retry_backoff_ms;"
        "print(repr([retry_backoff_ms(s, a) for s in range(4) for a in range(3)]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert out.strip() == repr(here)


@pytest.mark.parametrize(("shard", "attempt"), [(-1, 0), (0, -1), (U64_MAX + 1, 0)])
def test_rejects_out_of_range_arguments(shard: int, attempt: int) -> None:
    with pytest.raises(ValueError, match="shard_id and attempt"):
        retry_backoff_ms(shard, attempt)


@given(st.integers(min_value=0, max_value=U64_MAX), st.integers(min_value=0, max_value=U64_MAX))
def test_always_within_a_quarter_of_the_base_and_at_least_one_ms(shard: int, attempt: int) -> None:
    base = 100.0 * 2 ** min(attempt, 5)
    delay = retry_backoff_ms(shard, attempt)
    assert 0.75 * base <= delay < 1.25 * base
    assert delay >= 1.0
