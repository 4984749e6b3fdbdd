"""A stateful test of a persistent RedEX file against a dict model.

Appends (single, batch, inline), reads, retention sweeps, compactions and close/reopen
are interleaved at random; after every step the file must agree with the model: which
seqs are retained with which payloads, ``next_seq``, ``len`` and ``lowest_retained_seq``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from net_core.redex import Redex, RedexFile, SeqOutOfRangeError
from net_core.redex._ops import FileOps

CHANNEL = "state/machine"
# Far in the future: the age policy evicts everything when a sweep is told it is "then".
FAR_FUTURE_NS = 2**62


class NoSyncOps(FileOps):
    """The real file operations minus fsync: this test checks logic, not durability,
    and fsync is slow (and erratic) on a busy disk."""

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: Path) -> None:
        pass

    def write_file(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)

    def truncate(self, path: Path, length: int) -> None:
        os.truncate(path, length)


OPS = NoSyncOps()

payloads = st.binary(max_size=40)
inline_payloads = st.binary(min_size=8, max_size=8)
seq_bounds = st.integers(min_value=0, max_value=80)


class RedexFileMachine(RuleBasedStateMachine):
    """The file under test, and the model it must match."""

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="redex-stateful-"))
        self.redex = Redex(self.base, ops=OPS)
        self.max_events = 8
        self.file = self._open()
        # The model: retained seq -> (payload, is_inline), and the next seq.
        self.model: dict[int, tuple[bytes, bool]] = {}
        self.next_seq = 0
        self.generation = 1

    def _options(self) -> dict[str, Any]:
        return {
            "persistent": True,
            "retention": {
                "count": {"max_events": self.max_events},
                "age": {"max_age_ms": 3_600_000},
            },
            "retention_check_every": 0,
        }

    def _open(self) -> RedexFile:
        return self.redex.open_file(CHANNEL, **self._options())

    def teardown(self) -> None:
        try:
            self.redex.close()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- appends ---------------------------------------------------------------------

    @rule(data=payloads)
    def append(self, data: bytes) -> None:
        assert self.file.append(data) == self.next_seq
        self.model[self.next_seq] = (data, False)
        self.next_seq += 1

    @rule(batch=st.lists(payloads, max_size=6))
    def append_batch(self, batch: list[bytes]) -> None:
        first = self.file.append_batch(batch)
        if not batch:
            assert first is None
            return
        assert first == self.next_seq
        for i, data in enumerate(batch):
            self.model[first + i] = (data, False)
        self.next_seq += len(batch)

    @rule(data=inline_payloads)
    def append_inline(self, data: bytes) -> None:
        assert self.file.append_inline(data) == self.next_seq
        self.model[self.next_seq] = (data, True)
        self.next_seq += 1

    # -- reads -----------------------------------------------------------------------

    @rule(start=seq_bounds, end=seq_bounds)
    def read_range(self, start: int, end: int) -> None:
        got = [(e.seq, e.payload, e.is_inline) for e in self.file.read_range(start, end)]
        want = [(s, *self.model[s]) for s in sorted(self.model) if start <= s < end]
        assert got == want

    @rule(seq=seq_bounds)
    def read_one(self, seq: int) -> None:
        if seq in self.model:
            event = self.file.read_one(seq)
            assert (event.payload, event.is_inline) == self.model[seq]
        else:
            with pytest.raises(SeqOutOfRangeError):
                self.file.read_one(seq)

    # -- retention, compaction, reopen -------------------------------------------------

    @rule()
    def sweep_count(self) -> None:
        excess = max(0, len(self.model) - self.max_events)
        assert self.file.sweep_retention() == excess
        for seq in sorted(self.model)[:excess]:
            del self.model[seq]
        if excess:
            self.generation += 1

    @rule()
    def sweep_everything_by_age(self) -> None:
        count = len(self.model)
        assert self.file.sweep_retention(now_ns=FAR_FUTURE_NS) == count
        self.model.clear()
        if count:
            self.generation += 1

    @rule()
    def compact(self) -> None:
        self.generation += 1
        assert self.file.compact() == self.generation

    @rule(max_events=st.integers(min_value=1, max_value=12))
    def close_and_reopen(self, max_events: int) -> None:
        self.file.close()
        assert self.redex.get_file(CHANNEL) is None
        self.max_events = max_events
        self.file = self._open()

    @precondition(lambda self: self.next_seq > 0)
    @rule()
    def reopen_with_a_new_manager(self) -> None:
        self.redex.close()
        self.redex = Redex(self.base, ops=OPS)
        self.file = self._open()
        assert self.redex.reports[CHANNEL].plan.dropped_corrupt == 0

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def counters_match(self) -> None:
        f = self.file
        assert len(f) == len(self.model)
        assert f.next_seq == self.next_seq
        assert f.len_and_next_seq() == (len(self.model), self.next_seq)
        assert f.lowest_retained_seq == (min(self.model) if self.model else None)
        assert f.retained_bytes == sum(len(p) for p, _ in self.model.values())
        assert f.generation == self.generation

    @invariant()
    def one_generation_on_disk(self) -> None:
        chan = self.base / "state" / "machine"
        gens = sorted(p.name for p in chan.iterdir() if p.is_dir())
        assert gens == [f"v{self.generation:010d}"]


RedexFileMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None
)
TestRedexFile = RedexFileMachine.TestCase
