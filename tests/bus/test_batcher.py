"""Adaptive batch sizing, batch assembly and per-shard sequence numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.bus._batcher import (
    SEQUENCE_LIMIT,
    VELOCITY_SAMPLES_CAP,
    AdaptiveBatcher,
    AssembledBatch,
    BatchAssembler,
)
from net_core.bus._config import BatchConfig

MS = 1_000_000
U64_MAX = (1 << 64) - 1


def fixed(max_size: int = 100, max_delay_ms: float = 10.0) -> BatchConfig:
    return BatchConfig(min_size=1, max_size=max_size, max_delay_ms=max_delay_ms, adaptive=False)


def events(n: int, start: int = 0) -> tuple[list[bytes], list[int]]:
    return [b"e%d" % i for i in range(start, start + n)], list(range(start + 1, start + n + 1))


def add(asm: BatchAssembler, n: int, now_ns: int, start: int = 0) -> list[AssembledBatch]:
    evs, ts = events(n, start)
    return asm.add(evs, ts, now_ns)


# -- AdaptiveBatcher ---------------------------------------------------------------------


def test_non_adaptive_target_is_always_max_size() -> None:
    b = AdaptiveBatcher(fixed(max_size=500))
    assert b.target == 500
    for i in range(100):
        assert b.record(10_000, i * MS) == 500
    assert b.sample_count == 0


def test_adaptive_target_starts_at_min_size() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=10, max_size=1000))
    assert b.target == 10


def test_ema_arithmetic() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=10, max_size=1000, velocity_window_ms=100))
    assert b.record(0, 0) == 10  # one sample: velocity 0, target stays at min
    # 2000 events in 20 ms = 100,000 ev/s -> raw 500 -> (3*10 + 500) // 4 = 132.
    assert b.record(2000, 20 * MS) == 132
    assert b.velocity() == pytest.approx(100_000)


def test_recalculates_at_most_every_10_ms() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=10, max_size=1000))
    b.record(0, 0)
    first = b.record(2000, 20 * MS)
    assert b.record(100_000, 25 * MS) == first  # 5 ms later: not recomputed
    assert b.record(0, 30 * MS) == first  # exactly 10 ms after: still not (> 10 ms)
    assert b.record(0, 31 * MS) > first


def test_grows_above_min_under_sustained_high_velocity() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=100, max_size=10_000))
    target = b.target
    for i in range(1, 1000):  # 5,000 events per ms = 5M ev/s -> raw clamps to max
        target = b.record(5_000, i * MS)
    assert target > 9_000


def test_shrinks_back_towards_min_when_idle() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=100, max_size=10_000))
    for i in range(1, 500):
        b.record(5_000, i * MS)
    high = b.target
    for i in range(500, 3000, 11):
        b.record(1, i * MS)
    assert b.target < high // 10


def test_samples_are_capped_by_count_as_well_as_time() -> None:
    # A burst inside one window must not grow the sample deque without bound (seed fix).
    b = AdaptiveBatcher(BatchConfig(min_size=1, max_size=100, velocity_window_ms=60_000))
    for i in range(10_000):
        b.record(1, i)
    assert b.sample_count == VELOCITY_SAMPLES_CAP


def test_samples_older_than_the_window_are_evicted() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=1, max_size=100, velocity_window_ms=100))
    for i in range(50):
        b.record(1, i * MS)
    assert b.sample_count == 50
    b.record(1, 1000 * MS)
    assert b.sample_count == 1
    assert b.velocity() == 0.0


def test_reset_restores_min_size() -> None:
    b = AdaptiveBatcher(BatchConfig(min_size=10, max_size=1000))
    for i in range(1, 200):
        b.record(5_000, i * MS)
    assert b.target > 10
    b.reset()
    assert b.target == 10
    assert b.sample_count == 0


# -- BatchAssembler: flush rules ---------------------------------------------------------


def test_non_adaptive_flushes_at_max_size() -> None:
    asm = BatchAssembler(0, fixed(max_size=100))
    assert add(asm, 50, 0) == []
    [batch] = add(asm, 50, 1 * MS, start=50)
    assert batch.sequence_start == 0
    assert len(batch) == 100
    assert batch.events == [b"e%d" % i for i in range(100)]
    assert batch.timestamps == list(range(1, 101))
    assert asm.pending == 0
    assert asm.deadline_ns() is None


def test_partial_batch_flushes_after_max_delay_via_poll() -> None:
    asm = BatchAssembler(3, fixed(max_size=100, max_delay_ms=10))
    assert add(asm, 5, 1_000) == []
    assert asm.deadline_ns() == 1_000 + 10 * MS
    assert asm.poll(1_000 + 10 * MS - 1) is None
    # An empty add never flushes, even past the deadline (the explicit twin is poll).
    assert asm.add([], [], 50 * MS) == []
    assert asm.pending == 5
    batch = asm.poll(1_000 + 10 * MS)
    assert batch is not None
    assert (batch.sequence_start, len(batch)) == (0, 5)
    assert asm.poll(100 * MS) is None
    assert asm.deadline_ns() is None


def test_add_before_max_delay_returns_nothing() -> None:
    asm = BatchAssembler(0, fixed(max_size=100, max_delay_ms=10))
    assert add(asm, 5, 0) == []
    assert asm.add([], [], 9 * MS) == []
    assert asm.poll(9 * MS) is None


def test_add_after_max_delay_flushes_everything_pending() -> None:
    asm = BatchAssembler(0, fixed(max_size=100, max_delay_ms=10))
    add(asm, 5, 0)
    [batch] = add(asm, 5, 11 * MS, start=5)
    assert len(batch) == 10
    assert asm.pending == 0


def test_deadline_counts_from_the_first_pending_event() -> None:
    asm = BatchAssembler(0, fixed(max_size=100, max_delay_ms=10))
    add(asm, 1, 2 * MS)
    add(asm, 1, 8 * MS, start=1)
    assert asm.deadline_ns() == 12 * MS


def test_batches_never_exceed_max_size_and_a_short_tail_waits() -> None:
    asm = BatchAssembler(0, fixed(max_size=100, max_delay_ms=10))
    batches = add(asm, 250, 5 * MS)
    assert [(b.sequence_start, len(b)) for b in batches] == [(0, 100), (100, 100)]
    assert asm.pending == 50
    assert asm.deadline_ns() == 15 * MS
    [tail] = asm.flush_all()
    assert (tail.sequence_start, len(tail)) == (200, 50)
    assert tail.events[0] == b"e200"


def test_a_large_chunk_goes_out_in_max_size_batches() -> None:
    # The reference emitted a 10,000-event final-sweep chunk as one batch; we split it.
    cfg = BatchConfig(min_size=1000, max_size=10_000)
    asm = BatchAssembler(0, cfg)
    batches = add(asm, 25_000, 0)
    assert [len(b) for b in batches] == [10_000, 10_000, 5_000]
    assert [b.sequence_start for b in batches] == [0, 10_000, 20_000]
    assert asm.next_sequence == 25_000


def test_adaptive_flushes_once_target_is_reached() -> None:
    asm = BatchAssembler(0, BatchConfig(min_size=10, max_size=100))
    assert add(asm, 9, 0) == []
    [batch] = add(asm, 16, 1, start=9)
    assert len(batch) == 25  # everything pending, still <= max_size


def test_flush_all_with_nothing_pending() -> None:
    asm = BatchAssembler(0, fixed())
    assert asm.flush_all() == []
    assert asm.next_sequence == 0


def test_mismatched_timestamps_are_rejected() -> None:
    asm = BatchAssembler(0, fixed())
    with pytest.raises(ValueError, match="timestamps"):
        asm.add([b"a", b"b"], [1], 0)
    assert asm.pending == 0


# -- BatchAssembler: sequence numbers ----------------------------------------------------


def test_sequence_start_counts_events() -> None:
    asm = BatchAssembler(0, fixed(max_size=100))
    [a] = add(asm, 100, 0)
    add(asm, 50, 1, start=100)
    [b] = asm.flush_all()
    add(asm, 1, 2, start=150)
    [c] = asm.flush_all()
    assert [a.sequence_start, b.sequence_start, c.sequence_start] == [0, 100, 150]


def test_next_sequence_mirrors_emitted_counts() -> None:
    asm = BatchAssembler(0, fixed(max_size=100))
    seen = []
    for n in (10, 7, 33):
        add(asm, n, 0)
        asm.flush_all()
        seen.append(asm.next_sequence)
    assert seen == [10, 17, 50]


def test_sequence_resumes_from_a_given_start() -> None:
    asm = BatchAssembler(0, fixed(max_size=100), next_sequence=24_000)
    add(asm, 3, 0)
    [batch] = asm.flush_all()
    assert batch.sequence_start == 24_000
    assert asm.next_sequence == 24_003


def test_sequence_saturates_at_u64_max() -> None:
    asm = BatchAssembler(0, fixed(max_size=100), next_sequence=U64_MAX - 5)
    add(asm, 10, 0)
    [a] = asm.flush_all()
    assert a.sequence_start == U64_MAX - 5
    assert asm.next_sequence == U64_MAX == SEQUENCE_LIMIT
    add(asm, 10, 0)
    [b] = asm.flush_all()
    assert b.sequence_start == U64_MAX
    assert asm.next_sequence == U64_MAX


@pytest.mark.parametrize("start", [-1, U64_MAX + 1])
def test_invalid_next_sequence_is_rejected(start: int) -> None:
    with pytest.raises(ValueError, match="next_sequence"):
        BatchAssembler(0, fixed(), next_sequence=start)


# -- BatchAssembler: random interleavings ------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40), st.integers(0, 4 * MS)),
        st.tuples(st.just("poll"), st.just(0), st.integers(0, 15 * MS)),
        st.tuples(st.just("flush"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@given(
    ops=ops,
    min_size=st.integers(1, 8),
    extra=st.integers(0, 20),
    adaptive=st.booleans(),
    start=st.one_of(st.integers(0, 1000), st.just(U64_MAX - 30)),
)
def test_batches_are_gap_free_ordered_and_complete(
    ops: list[tuple[str, int, int]], min_size: int, extra: int, adaptive: bool, start: int
) -> None:
    cfg = BatchConfig(
        min_size=min_size,
        max_size=min_size + extra,
        max_delay_ms=10,
        adaptive=adaptive,
        velocity_window_ms=20,
    )
    asm = BatchAssembler(1, cfg, next_sequence=start)
    now = 0
    fed = 0
    emitted: list[AssembledBatch] = []
    for op, n, dt in ops:
        now += dt
        deadline = asm.deadline_ns()
        if op == "add":
            evs, ts = events(n, fed)
            fed += n
            out = asm.add(evs, ts, now)
        elif op == "poll":
            batch = asm.poll(now)
            out = [] if batch is None else [batch]
            # poll flushes exactly when the deadline has been reached.
            assert (batch is not None) == (deadline is not None and now >= deadline)
        else:
            out = asm.flush_all()
            assert asm.pending == 0
        emitted.extend(out)
        for batch in out:
            assert 1 <= len(batch) <= cfg.max_size
            assert len(batch.events) == len(batch.timestamps)
        assert asm.pending <= cfg.max_size
        assert (asm.deadline_ns() is None) == (asm.pending == 0)
        assert sum(map(len, emitted)) + asm.pending == fed
    emitted.extend(asm.flush_all())
    # Every event exactly once, in order, with its own timestamp.
    assert [e for b in emitted for e in b.events] == events(fed)[0]
    assert [t for b in emitted for t in b.timestamps] == events(fed)[1]
    # Sequence numbers: gap-free, counting events, saturating at u64::MAX.
    expected = start
    for batch in emitted:
        assert batch.sequence_start == expected
        expected = min(U64_MAX, expected + len(batch))
    assert asm.next_sequence == expected
    if start + fed <= U64_MAX:
        starts = [b.sequence_start for b in emitted]
        assert starts == sorted(set(starts))  # strictly increasing
