"""A hypothesis state machine of the generic CortEX fold against a model of it.

The fold under test keeps a ``dict`` of key -> value: dispatch 0x80 sets a key, 0x81
sets a key too but raises (a *fold* error) unless the fold instance is "healed". The
machine appends good events (v2 and legacy v1 checksums), undecodable payloads (bad
checksum, shorter than the header, bad postcard tail) and failing events, takes
snapshots at random points and replaces the adapter by a restore from one of them or a
fresh open, under either policy. After every step it waits for the fold and checks
the state, both watermarks, ``fold_errors`` and ``is_running`` against the model: a
plain re-computation of the fold over the log from the adapter's start position.

The machine is synchronous; the adapter lives in an anyio blocking portal (one event
loop thread), run once on asyncio and once on trio.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Final

import anyio.from_thread
import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from net_core.cortex import (
    CortexAdapter,
    CortexAdapterConfig,
    CortexEvent,
    EventMeta,
    Fold,
    FoldErrorPolicy,
    FoldStoppedError,
    Snapshot,
    checksum_v1,
    seal,
)
from net_core.cortex._pcstruct import pack, unpack_from
from net_core.redex import Redex, RedexFile

SET: Final = 0x80
BOOM: Final = 0x81
ORIGIN: Final = 0x51A7E
DECODE_KINDS: Final = frozenset({"bad_checksum", "short", "bad_postcard"})


class Boom(RuntimeError):
    """The injected fold error."""


class KeyValueFold(Fold[dict[int, int]]):
    """Sets keys; BOOM events fail unless ``healed``; a bad tail is a decode error."""

    name = "kv"
    snapshot_version = 1

    def __init__(self, *, healed: bool) -> None:
        self.healed = healed

    def apply(self, event: CortexEvent, state: dict[int, int]) -> None:
        key, value, _ = unpack_from("uu", event.tail)  # PostcardError is a DecodeError
        if event.dispatch == BOOM and not self.healed:
            raise Boom(f"boom at seq {event.seq}")
        state[key] = value

    def encode_state(self, state: dict[int, int]) -> bytes:
        out = [len(state)]
        for key in sorted(state):
            out += [key, state[key]]
        return pack("u" * len(out), *out)

    def decode_state(self, data: bytes, version: int) -> dict[int, int]:
        (n, pos) = unpack_from("u", data)
        values = unpack_from("u" * (2 * n), data, pos)[:-1]
        return dict(zip(values[::2], values[1::2], strict=True))


@attrs.frozen
class Entry:
    """One logged event as the model sees it."""

    kind: str  # "set" | "boom" | one of DECODE_KINDS
    key: int = 0
    value: int = 0


@attrs.frozen
class Outcome:
    """What the fold of a log must produce."""

    state: dict[int, int]
    applied: int  # -1: none
    folded: int  # -1: none
    errors: int
    halted: bool


def model_fold(
    log: list[Entry], start: int, initial: dict[int, int], policy: FoldErrorPolicy, healed: bool
) -> Outcome:
    """The fold semantics, written plainly: decode errors are always skipped, fold errors
    halt under ``stop`` and are skipped under ``log_and_continue``; the applied watermark
    is the strict prefix, the folded one the last processed seq."""
    state = dict(initial)
    applied = folded = start - 1
    intact = True
    errors = 0
    for seq in range(start, len(log)):
        entry = log[seq]
        if entry.kind in DECODE_KINDS or (entry.kind == "boom" and not healed):
            errors += 1
            if entry.kind == "boom" and policy is FoldErrorPolicy.STOP:
                return Outcome(state, applied, folded, errors, True)
            intact = False
            folded = seq
            continue
        state[entry.key] = entry.value
        folded = seq
        if intact:
            applied = seq
    return Outcome(state, applied, folded, errors, False)


@attrs.frozen
class Taken:
    """A snapshot and the model state it must contain."""

    snapshot: Snapshot
    state: dict[int, int]


keys = st.integers(0, 5)
values = st.integers(0, 2**64 - 1)
policies = st.sampled_from(list(FoldErrorPolicy))


class FoldMachine(RuleBasedStateMachine):
    """See the module docstring."""

    backend = "asyncio"
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] = (
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.portal = self._portal_cm.__enter__()
        self.redex = Redex()
        self.file: RedexFile = self.redex.open_file("stateful/kv")
        self.log: list[Entry] = []
        self._adapter_cm: AbstractContextManager[CortexAdapter[dict[int, int]]] | None = None
        self.adapter: CortexAdapter[dict[int, int]] | None = None
        # The model of the running adapter.
        self.start = 0
        self.initial: dict[int, int] = {}
        self.policy = FoldErrorPolicy.STOP
        self.healed = False

    # -- plumbing ----------------------------------------------------------------------

    def _replace(
        self, cm: Any, start: int, initial: dict[int, int], policy: Any, healed: bool
    ) -> None:
        self._close_adapter()
        wrapped = self.portal.wrap_async_context_manager(cm)
        self.adapter = wrapped.__enter__()
        self._adapter_cm = wrapped
        self.start, self.initial, self.policy, self.healed = start, initial, policy, healed

    def _close_adapter(self) -> None:
        if self._adapter_cm is not None:
            self._adapter_cm.__exit__(None, None, None)
            self._adapter_cm = None

    def _append(self, payload: bytes, entry: Entry) -> None:
        assert self.adapter is not None
        seq = self.portal.call(self.adapter.ingest_payload, payload)
        assert seq == len(self.log)
        self.log.append(entry)

    def expected(self) -> Outcome:
        return model_fold(self.log, self.start, self.initial, self.policy, self.healed)

    def sync(self) -> Outcome:
        """Wait until the fold has processed the whole log (or halted)."""
        adapter = self.adapter
        assert adapter is not None
        want = self.expected()
        last = len(self.log) - 1
        try:
            self.portal.call(adapter.wait_for_seq, last, 10.0)
        except FoldStoppedError:
            assert want.halted, "the fold stopped but the model says it runs"
        else:
            assert not want.halted, "the fold passed the seq that must halt it"
        return want

    def teardown(self) -> None:
        try:
            self._close_adapter()
            self.redex.close()
        finally:
            self._portal_cm.__exit__(None, None, None)

    # -- rules -------------------------------------------------------------------------

    @initialize(policy=policies, healed=st.booleans())
    def open_adapter(self, policy: FoldErrorPolicy, healed: bool) -> None:
        cfg = CortexAdapterConfig(error_policy=policy, origin_hash=ORIGIN)
        self._replace(
            CortexAdapter.open(self.file, KeyValueFold(healed=healed), {}, cfg),
            0,
            {},
            policy,
            healed,
        )

    @rule(key=keys, value=values)
    def ingest_set(self, key: int, value: int) -> None:
        self._append(
            seal(SET, ORIGIN, len(self.log), pack("uu", key, value)), Entry("set", key, value)
        )

    @rule(key=keys, value=values)
    def ingest_legacy_v1(self, key: int, value: int) -> None:
        tail = pack("uu", key, value)
        header = EventMeta(SET, 0, ORIGIN, len(self.log), checksum_v1(tail)).encode()
        self._append(header + tail, Entry("set", key, value))

    @rule(key=keys, value=values)
    def ingest_failing(self, key: int, value: int) -> None:
        self._append(
            seal(BOOM, ORIGIN, len(self.log), pack("uu", key, value)), Entry("boom", key, value)
        )

    @rule(key=keys, value=values, byte=st.integers(20, 23), flip=st.integers(1, 255))
    def ingest_bad_checksum(self, key: int, value: int, byte: int, flip: int) -> None:
        payload = bytearray(seal(SET, ORIGIN, len(self.log), pack("uu", key, value)))
        payload[byte] ^= flip
        self._append(bytes(payload), Entry("bad_checksum"))

    @rule(data=st.binary(max_size=23))
    def ingest_short(self, data: bytes) -> None:
        self._append(data, Entry("short"))

    @rule(tail=st.sampled_from([b"", b"\x01", b"\x80", b"\x01\xff", b"\xff" * 11]))
    def ingest_bad_postcard(self, tail: bytes) -> None:
        self._append(seal(SET, ORIGIN, len(self.log), tail), Entry("bad_postcard"))

    @rule(target=snapshots)
    def take_snapshot(self) -> Taken:
        want = self.sync()
        assert self.adapter is not None
        snap = self.portal.call(self.adapter.snapshot)
        assert snap.applied_through_seq == (want.applied if want.applied >= 0 else None)
        return Taken(snap, want.state)

    @rule(taken=snapshots, policy=policies, healed=st.booleans())
    def restore(self, taken: Taken, policy: FoldErrorPolicy, healed: bool) -> None:
        cfg = CortexAdapterConfig(error_policy=policy, origin_hash=ORIGIN)
        last = taken.snapshot.applied_through_seq
        cm = CortexAdapter.open_from_snapshot(
            self.file, KeyValueFold(healed=healed), taken.snapshot, dict, cfg
        )
        self._replace(cm, 0 if last is None else last + 1, taken.state, policy, healed)
        assert self.adapter is not None
        assert self.adapter.start_seq == self.start
        assert self.adapter.snapshot_discarded is None

    @rule(policy=policies, healed=st.booleans())
    def reopen_from_the_beginning(self, policy: FoldErrorPolicy, healed: bool) -> None:
        cfg = CortexAdapterConfig(error_policy=policy, origin_hash=ORIGIN)
        self._replace(
            CortexAdapter.open(self.file, KeyValueFold(healed=healed), {}, cfg),
            0,
            {},
            policy,
            healed,
        )

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        adapter = self.adapter
        if adapter is None:
            return
        want = self.sync()

        def observe() -> tuple[dict[int, int], int | None, int | None, int, bool]:
            return (
                dict(adapter.state),
                adapter.applied_through_seq,
                adapter.folded_through_seq,
                adapter.fold_errors,
                adapter.is_running,
            )

        state, applied, folded, errors, running = self.portal.call(observe)
        assert state == want.state
        assert applied == (want.applied if want.applied >= 0 else None)
        assert folded == (want.folded if want.folded >= 0 else None)
        assert errors == want.errors
        assert running is not want.halted
        assert applied is None or (folded is not None and applied <= folded)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fold_matches_its_model(backend: str) -> None:
    machine = type(f"FoldMachine_{backend}", (FoldMachine,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=75,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_model_fold_examples() -> None:
    """The model itself, on hand-checked logs (so the machine checks against something
    known to be right)."""
    stop, lac = FoldErrorPolicy.STOP, FoldErrorPolicy.LOG_AND_CONTINUE
    log = [Entry("set", 1, 10), Entry("short"), Entry("set", 2, 20), Entry("boom", 3, 30)]
    log.append(Entry("set", 4, 40))
    assert model_fold(log, 0, {}, stop, False) == Outcome({1: 10, 2: 20}, 0, 2, 2, True)
    assert model_fold(log, 0, {}, lac, False) == Outcome({1: 10, 2: 20, 4: 40}, 0, 4, 2, False)
    assert model_fold(log, 0, {}, stop, True) == Outcome(
        {1: 10, 2: 20, 3: 30, 4: 40}, 0, 4, 1, False
    )
    # A restore after seq 0 re-attempts the skipped seq 1 and the failing seq 3.
    assert model_fold(log, 1, {1: 10}, lac, True) == Outcome(
        {1: 10, 2: 20, 3: 30, 4: 40}, 0, 4, 1, False
    )
    assert model_fold([], 0, {}, stop, False) == Outcome({}, -1, -1, 0, False)
