"""The in-memory FIFO dedup window."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from net_core.dedup import MAX_DEDUP_CAPACITY, Dedup, MemoryDedup, MemoryDedupConfig
from net_core.errors import ConfigError


def test_basic_window() -> None:
    d = MemoryDedup(capacity=2)
    assert isinstance(d, Dedup)
    assert d.is_duplicate("a") is False
    assert d.is_duplicate("a") is True
    assert d.is_duplicate("b") is False
    assert d.is_duplicate("c") is False  # evicts "a"
    assert "a" not in d
    assert d.is_duplicate("a") is False  # forgotten, so accepted again (and evicts "b")
    assert (len(d), d.duplicates, d.evictions) == (2, 1, 2)
    d.clear()
    assert (len(d), d.duplicates, d.evictions) == (0, 0, 0)


def test_fifo_not_lru() -> None:
    d = MemoryDedup(capacity=2)
    d.is_duplicate("old")
    d.is_duplicate("new")
    d.is_duplicate("old")  # a repeat does not refresh "old"
    d.is_duplicate("newest")
    assert "old" not in d
    assert "new" in d


@pytest.mark.parametrize("capacity", [0, -1, MAX_DEDUP_CAPACITY + 1])
def test_capacity_is_validated(capacity: int) -> None:
    with pytest.raises(ConfigError, match=r"^capacity: must be in \[1, 16777216\]"):
        MemoryDedup(capacity)


def test_capacity_bounds_are_accepted() -> None:
    assert MemoryDedup(1).capacity == 1
    assert MemoryDedupConfig(capacity=MAX_DEDUP_CAPACITY).capacity == MAX_DEDUP_CAPACITY


@given(st.integers(1, 40), st.lists(st.integers(0, 60), max_size=300))
def test_never_forgets_an_id_before_capacity_newer_ids_arrived(
    capacity: int, ids: list[int]
) -> None:
    d = MemoryDedup(capacity)
    first_seen: list[int] = []  # ids in the order they were (re)inserted as new
    for value in ids:
        key = str(value)
        duplicate = d.is_duplicate(key)
        if key in first_seen[-capacity:]:
            # fewer than `capacity` new ids arrived since it was inserted: must remember
            assert duplicate
        else:
            assert not duplicate
            first_seen.append(key)
        assert len(d) <= capacity


class DedupMachine(RuleBasedStateMachine):
    """Model check against a deque-based reference window."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 5
        self.dedup = MemoryDedup(self.capacity)
        self.model: deque[str] = deque()

    @rule(value=st.integers(0, 12))
    def check(self, value: int) -> None:
        key = f"id-{value}"
        expected = key in self.model
        if not expected:
            if len(self.model) == self.capacity:
                self.model.popleft()
            self.model.append(key)
        assert self.dedup.is_duplicate(key) is expected

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.dedup.clear()
        self.model.clear()

    @invariant()
    def same_contents(self) -> None:
        assert len(self.dedup) == len(self.model)
        assert all(k in self.dedup for k in self.model)


TestDedupMachine = DedupMachine.TestCase
