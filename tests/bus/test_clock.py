"""Per-shard timestamps and the never-wrapping id allocator."""

from __future__ import annotations

import itertools
import threading
import time
import timeit
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.bus._clock import TIMESTAMP_LIMIT, SaturatingIdAllocator, ShardClock

U64_MAX = (1 << 64) - 1


def fake_source(values: Iterator[int]) -> Callable[[], int]:
    return lambda: next(values)


class Manual:
    """A monotonic source the test moves by hand."""

    def __init__(self, start: int) -> None:
        self.t = start

    def __call__(self) -> int:
        return self.t


# -- ShardClock --------------------------------------------------------------------------


def test_real_clock_is_strictly_increasing() -> None:
    clock = ShardClock()
    values = [clock.now() for _ in range(100_000)]
    assert all(a < b for a, b in itertools.pairwise(values))


def test_first_value_is_small_and_positive() -> None:
    # Nanoseconds since construction, not since boot or the epoch.
    clock = ShardClock()
    first = clock.now()
    assert 1 <= first < 10_000_000


def test_baseline_is_captured_at_construction() -> None:
    # The reference's TimestampGenerator assumed a baseline of 0 (seed fix).
    src = Manual(10**18)
    clock = ShardClock(src)
    src.t += 5_000
    assert clock.now() == 5_000


def test_values_are_nanoseconds() -> None:
    src = Manual(123)
    clock = ShardClock(src)
    src.t += 1_000
    a = clock.now()
    src.t += 2_500_000
    assert clock.now() - a == 2_500_000


def test_stalled_or_backwards_source_still_advances_by_one() -> None:
    src = Manual(1_000)
    clock = ShardClock(src)
    src.t += 50
    assert clock.now() == 50
    assert clock.now() == 51  # same tick
    src.t -= 40  # a source must not go back, but the output still never does
    assert clock.now() == 52
    assert clock.last == 52


def test_overflow_raises_before_reaching_u64_max() -> None:
    src = Manual(0)
    clock = ShardClock(src, last=TIMESTAMP_LIMIT - 2)
    assert clock.now() == U64_MAX - 1
    with pytest.raises(OverflowError):
        clock.now()
    assert clock.last == U64_MAX - 1  # the refused call consumed nothing
    with pytest.raises(OverflowError):
        clock.now()


def test_overflow_from_a_source_jump() -> None:
    src = Manual(0)
    clock = ShardClock(src)
    src.t = U64_MAX
    with pytest.raises(OverflowError):
        clock.now()
    assert clock.last == 0


@pytest.mark.parametrize("last", [-1, TIMESTAMP_LIMIT, TIMESTAMP_LIMIT + 1])
def test_invalid_last_is_rejected(last: int) -> None:
    with pytest.raises(ValueError, match="last"):
        ShardClock(last=last)


def test_strictly_increasing_under_thread_contention_with_the_shard_lock() -> None:
    # The contract: callers hold the shard lock. Under it, 4 threads see one sequence.
    clock = ShardClock()
    lock = threading.Lock()
    seen: list[int] = []

    def work() -> None:
        for _ in range(20_000):
            with lock:
                seen.append(clock.now())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 80_000
    assert all(a < b for a, b in itertools.pairwise(seen))


def test_now_is_cheap() -> None:
    # The reference pins < 500 ns/call in CI; allow slack for a loaded interpreter.
    clock = ShardClock()
    n = 50_000
    best = min(timeit.repeat(clock.now, number=n, repeat=5)) / n
    assert best < 2e-6


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=200))
def test_any_source_sequence_gives_strictly_increasing_values(readings: list[int]) -> None:
    clock = ShardClock(fake_source(iter([0, *readings])))
    values = [clock.now() for _ in readings]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert all(v >= r for v, r in zip(values, readings, strict=True))


def test_default_source_is_monotonic_ns() -> None:
    before = time.monotonic_ns()
    clock = ShardClock()
    elapsed = time.monotonic_ns() - before
    assert clock.now() <= elapsed + 10_000_000


# -- SaturatingIdAllocator ---------------------------------------------------------------


def test_allocator_hands_out_consecutive_ids() -> None:
    ids = SaturatingIdAllocator(5, limit=100)
    assert list(ids.allocate()) == [5]
    assert list(ids.allocate(3)) == [6, 7, 8]
    assert list(ids.allocate(0)) == []
    assert ids.next_id == 9
    assert ids.remaining == 92


def test_allocator_saturates_instead_of_wrapping_to_zero() -> None:
    # The reference's partition next_id re-issued 0 after u64::MAX (seed fix).
    ids = SaturatingIdAllocator(U64_MAX - 1)
    assert list(ids.allocate(2)) == [U64_MAX - 1, U64_MAX]
    assert ids.remaining == 0
    for _ in range(3):
        with pytest.raises(OverflowError):
            ids.allocate()
    assert ids.next_id == U64_MAX + 1


def test_allocator_is_all_or_nothing() -> None:
    ids = SaturatingIdAllocator(0, limit=4)
    with pytest.raises(OverflowError):
        ids.allocate(6)
    assert ids.next_id == 0
    assert list(ids.allocate(5)) == [0, 1, 2, 3, 4]


def test_allocator_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        SaturatingIdAllocator(-1)
    with pytest.raises(ValueError, match=">= 0"):
        SaturatingIdAllocator(0).allocate(-1)


@given(st.lists(st.integers(min_value=0, max_value=4), max_size=40))
def test_allocator_never_reissues(requests: list[int]) -> None:
    ids = SaturatingIdAllocator(0, limit=20)
    issued: list[int] = []
    for count in requests:
        try:
            issued.extend(ids.allocate(count))
        except OverflowError:
            assert count > ids.remaining
    assert issued == list(range(len(issued)))
    assert ids.next_id == len(issued)
