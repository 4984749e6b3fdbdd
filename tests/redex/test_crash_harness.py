"""SIGKILL crash harness for persistent RedEX files.

Each round starts a fresh child process (``crash_child.py``) on a channel directory,
reads its acknowledgements, and kills it with SIGKILL at a random point: after a random
delay (sometimes before or during the open and its recovery), after a random number of
acknowledgements, or just after a retention sweep (a compaction) started. The directory
is left exactly as the kill left it for the next round's child, whose open must recover
it; the parent checks a *copy* of it:

* reopening recovers without finding a corrupt record, and leaves exactly one
  generation directory, named by the manifest;
* every payload is the deterministic payload of its seq (nothing torn or misplaced),
  and seqs strictly increase;
* every acknowledged seq that retention did not evict is present, and the eviction
  point is the one of the last sweep that completed or the one that was running;
* records that were never acknowledged only appear past the last acknowledged one;
* ``next_seq`` never goes backwards, and the next child opens exactly the state checked;
* after a clean close the files are a fixed point of the recovery walk, and
  ``net redex verify`` (run on some rounds) reports no problem.

Rounds run in two lanes (two directories, one thread each) to use both cores. The seed
is printed on failure; rerun one with ``REDEX_CRASH_SEED=<seed>``, and change the number
of rounds with ``REDEX_CRASH_ROUNDS``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

from net_core.redex import Redex
from net_core.redex._format import Manifest, generation_dir_name, parse_generation_dir_name
from net_core.redex._recovery import plan_recovery
from tests.redex.crash_child import CHANNEL, payload_for

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = int(os.environ.get("REDEX_CRASH_ROUNDS", "200"))
LANES = 2
#: Run ``net redex verify`` on every Nth round of a lane (it is a subprocess: slow).
CLI_VERIFY_EVERY = 25


@attrs.define
class Lane:
    """What the parent knows about one channel directory across rounds."""

    index: int
    base: Path
    keep: int
    acked: set[int] = attrs.field(factory=set)
    max_acked: int = -1
    #: Lowest retained seq as of the last check (0 before anything was evicted).
    low: int = 0
    #: next_seq as of the last check (None before the first).
    next_seq: int | None = None
    rounds: int = 0
    kills_in_sweep: int = 0
    cli_runs: int = 0


@attrs.define
class Child:
    """What one child reported before it died."""

    opened: tuple[int, int | None] | None = None
    acks: list[int] = attrs.field(factory=list)
    sweeps_started: list[int] = attrs.field(factory=list)
    sweeps_done: list[int] = attrs.field(factory=list)
    in_sweep: bool = False


def _parse(line: str, child: Child) -> None:
    kind, *rest = line.split()
    if kind == "O":
        child.opened = (int(rest[0]), None if rest[1] == "-" else int(rest[1]))
    elif kind in ("A", "I"):
        child.acks.append(int(rest[0]))
    elif kind == "B":
        first, count = int(rest[0]), int(rest[1])
        child.acks.extend(range(first, first + count))
    elif kind == "S":
        child.sweeps_started.append(int(rest[0]))
        child.in_sweep = True
    elif kind == "E":
        child.sweeps_done.append(int(rest[0]))
        child.in_sweep = False
    else:  # pragma: no cover - protocol error
        raise AssertionError(f"unexpected child line {line!r}")


def run_child(lane: Lane, rng: random.Random, seed: int, stderr_path: Path) -> Child:
    """Start a child, kill it with SIGKILL at a random point, return its reports."""
    mode = rng.choice(("delay", "acks", "acks", "sweep", "sweep"))
    ack_target = rng.randint(1, 250)
    sweep_target = rng.randint(1, 2)
    start = time.monotonic()
    kill_at = start + (rng.uniform(0.0, 0.3) if mode == "delay" else 5.0)
    child = Child()
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(lane.base), str(seed), str(lane.keep)],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    eof = False
    try:
        while not eof:
            timeout = kill_at - time.monotonic()
            if timeout <= 0:
                break
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                eof = True
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                _parse(raw.decode(), child)
            if mode == "acks" and len(child.acks) >= ack_target:
                kill_at = min(kill_at, time.monotonic() + rng.uniform(0.0, 0.002))
            elif mode == "sweep" and len(child.sweeps_started) >= sweep_target:
                kill_at = min(kill_at, time.monotonic() + rng.uniform(0.0, 0.04))
            elif mode == "sweep" and len(child.acks) > 3000:
                kill_at = time.monotonic()  # this child sweeps rarely; don't wait for it
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Lines the child wrote before it died are acknowledgements too.
        rest = proc.stdout.read()
        proc.stdout.close()
    buf += rest
    *lines, _torn = buf.split(b"\n")
    for raw in lines:
        _parse(raw.decode(), child)
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(
            f"child exited by itself with status {proc.returncode}:\n"
            + stderr_path.read_text(errors="replace")
        )
    return child


def check_round(lane: Lane, child: Child, work: Path, cli_verify: bool) -> None:
    """Verify a copy of the crashed directory against what the child acknowledged."""
    # The child's open saw exactly the state the previous check saw.
    if child.opened is not None and lane.next_seq is not None:
        assert child.opened[0] == lane.next_seq, "open after a crash changed next_seq"
        if child.opened[1] is not None:
            assert child.opened[1] == lane.low, "open after a crash changed the retained set"
    acked_now = set(child.acks)
    assert not (acked_now & lane.acked), "a seq was acknowledged twice"
    lane.acked |= acked_now
    if child.acks:
        lane.max_acked = max(lane.max_acked, *child.acks)

    copy = work / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(lane.base, copy, symlinks=True)
    redex = Redex(copy)
    f = redex.open_file(
        CHANNEL,
        persistent=True,
        retention={"count": {"max_events": lane.keep}},
        retention_check_every=0,
    )
    try:
        report = redex.reports[CHANNEL]
        assert report.plan.dropped_corrupt == 0, "a SIGKILL produced a corrupt record"
        events = list(f)
        seqs = [e.seq for e in events]
        next_seq = f.next_seq
        generation = f.generation
    finally:
        redex.close()
    assert generation is not None
    for e in events:
        assert e.payload == payload_for(e.seq, e.is_inline), f"seq {e.seq}: wrong payload"
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seqs not increasing"

    # Retention: the lowest retained seq is where the last completed sweep left it, or
    # where the sweep that was running when the child died would have left it.
    possible = {lane.low}
    if child.sweeps_done:
        possible = {child.sweeps_done[-1]}
    if child.in_sweep:
        possible.add(child.sweeps_started[-1])
    low = seqs[0] if seqs else next_seq
    assert low in possible, f"lowest retained seq {low}, expected one of {sorted(possible)}"
    for bound, done in zip(child.sweeps_started, child.sweeps_done, strict=False):
        assert bound == done, "a sweep left a different lowest seq than it announced"

    present = set(seqs)
    missing = sorted(s for s in lane.acked if s >= low and s not in present)
    assert not missing, f"acknowledged seqs lost: {missing[:20]}"
    unacked = sorted(present - lane.acked)
    assert all(s > lane.max_acked for s in unacked), f"unacknowledged seqs {unacked[:20]}"
    assert next_seq == (seqs[-1] + 1 if seqs else next_seq)
    assert next_seq >= lane.max_acked + 1
    if lane.next_seq is not None:
        assert next_seq >= lane.next_seq, "next_seq went backwards"

    # Exactly one generation, named by the manifest, and nothing left to repair.
    chan = copy / CHANNEL
    gens = sorted(p.name for p in chan.iterdir() if parse_generation_dir_name(p.name))
    assert gens == [generation_dir_name(generation)]
    assert Manifest.decode((chan / "manifest").read_bytes()).generation == generation
    assert not (chan / "manifest.tmp").exists()
    gen = chan / generation_dir_name(generation)
    plan = plan_recovery(
        (gen / "idx").read_bytes(),
        (gen / "dat").read_bytes(),
        (gen / "ts").read_bytes(),
        now_ns=time.time_ns(),
    )
    assert not plan.changes_files, "a clean reopen + close left work for the next open"
    assert list(plan.seqs) == seqs
    if cli_verify:
        _cli_verify(copy, lane)

    lane.acked |= present  # what survived is durable from now on
    lane.max_acked = max(lane.max_acked, *present) if present else lane.max_acked
    lane.low = low
    lane.next_seq = next_seq


def _cli_verify(base: Path, lane: Lane) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "net_core.cli", "redex", "verify", str(base), CHANNEL, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 2 and "invalid choice" in proc.stderr:
        return  # `net redex verify` is not available in this build
    assert proc.returncode == 0, f"net redex verify: {proc.stdout}{proc.stderr}"
    verdict = json.loads(proc.stdout)
    assert verdict["ok"] is True, verdict
    lane.cli_runs += 1


def run_lane(lane: Lane, seeds: list[int], work: Path, failures: list[str]) -> None:
    for n, seed in enumerate(seeds):
        rng = random.Random(seed)
        try:
            child = run_child(lane, rng, seed, work / "stderr")
            lane.kills_in_sweep += child.in_sweep
            check_round(lane, child, work, cli_verify=(n + 1) % CLI_VERIFY_EVERY == 0)
        except BaseException as exc:
            failures.append(f"lane {lane.index} round {n} (seed {seed}): {exc!r}")
            return
        lane.rounds += 1


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    master = int(os.environ.get("REDEX_CRASH_SEED", random.randrange(2**32)))
    print(f"crash harness master seed: {master} (REDEX_CRASH_SEED={master})")
    seeder = random.Random(master)
    per_lane = [ROUNDS // LANES + (1 if i < ROUNDS % LANES else 0) for i in range(LANES)]
    lanes = []
    threads = []
    failures: list[str] = []
    started = time.monotonic()
    for i in range(LANES):
        keep = (16, 100)[i % 2]
        lane = Lane(i, tmp_path / f"lane{i}" / "base", keep)
        work = tmp_path / f"lane{i}" / "work"
        lane.base.mkdir(parents=True)
        work.mkdir()
        seeds = [seeder.randrange(2**63) for _ in range(per_lane[i])]
        lanes.append(lane)
        threads.append(threading.Thread(target=run_lane, args=(lane, seeds, work, failures)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    summary = ", ".join(
        f"lane {lane.index}: {lane.rounds} rounds, {lane.kills_in_sweep} kills mid-sweep, "
        f"next_seq {lane.next_seq}, {lane.cli_runs} CLI verifies"
        for lane in lanes
    )
    print(f"crash harness: {summary}; {elapsed:.1f}s")
    assert not failures, f"master seed {master}: " + "; ".join(failures)
    assert sum(lane.rounds for lane in lanes) == ROUNDS
    # The random kill points must actually have hit compactions now and then.
    if ROUNDS >= 100:
        assert sum(lane.kills_in_sweep for lane in lanes) >= 5
