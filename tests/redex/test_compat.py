"""Compatibility with the reference (``ai2070-net`` 0.18): files written by one
implementation are read by the other, byte-compared, and appended to across both."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from net_core.errors import RedexError
from net_core.redex import Redex, RedexClosedError, RedexFile
from net_core.redex._format import (
    FLAG_INLINE,
    IDX_RECORD_SIZE,
    Manifest,
    decode_records,
    entry_checksum,
    generation_dir_name,
)

net = pytest.importorskip("net", reason="ai2070-net not installed")

pytestmark = pytest.mark.oracle

CHANNELS = ("compat/alpha", "compat/deep/nested/beta", "gamma")
SIZES = (0, 1, 7, 8, 9, 255, 4096, 1 << 20)
END = 2**64 - 1
MANIFEST_GEN2 = bytes.fromhex("5245444d01020000000000007e225a93")

# One step of a write plan: ("one", payload) | ("batch", [payloads]) | ("inline", 8 bytes)
Op = tuple[str, Any]
# (seq, payload, is_inline)
Entry = tuple[int, bytes, bool]


def make_plan(rng: random.Random, *, inline: bool) -> list[Op]:
    """Every payload size single and batched, random binary, a 1000-event batch."""
    plan: list[Op] = [("one", rng.randbytes(n)) for n in SIZES]
    mixed = [rng.randbytes(n) for n in SIZES]
    rng.shuffle(mixed)
    plan.append(("batch", mixed))
    plan.append(("batch", [rng.randbytes(rng.choice((0, 1, 7, 8, 9, 64))) for _ in range(1000)]))
    plan.append(("batch", [rng.randbytes(3)]))
    plan.extend(("one", rng.randbytes(rng.randrange(0, 300))) for _ in range(20))
    plan.append(("batch", [b"", b"", b""]))
    if inline:
        positions = sorted(rng.sample(range(len(plan) + 1), 6))
        for offset, pos in enumerate(positions):
            plan.insert(pos + offset, ("inline", rng.randbytes(8)))
        plan.append(("inline", b"\x00" * 8))
        plan.append(("inline", b"\xff" * 8))
    return plan


def apply_plan(f: Any, plan: Sequence[Op], start: int = 0) -> tuple[list[Entry], list[range]]:
    """Run ``plan`` on a file (ours or the reference's); returns entries and batch ranges."""
    entries: list[Entry] = []
    batches: list[range] = []
    seq = start
    for op, data in plan:
        if op == "one":
            assert f.append(data) == seq
            entries.append((seq, data, False))
            seq += 1
        elif op == "batch":
            assert f.append_batch(data) == seq
            entries.extend((seq + i, p, False) for i, p in enumerate(data))
            batches.append(range(seq, seq + len(data)))
            seq += len(data)
        else:
            assert f.append_inline(data) == seq
            entries.append((seq, data, True))
            seq += 1
    return entries, batches


def ours_entries(f: RedexFile) -> list[Entry]:
    return [(e.seq, e.payload, e.is_inline) for e in f.read_range(0, END)]


def ref_entries(f: Any) -> list[Entry]:
    return [(e.seq, bytes(e.payload), e.is_inline) for e in f.read_range(0, END)]


def ref_read(base: Path, channel: str) -> list[Entry]:
    """Open ``channel`` with a fresh reference manager, read everything, close."""
    f = net.Redex(persistent_dir=str(base)).open_file(channel, persistent=True)
    try:
        return ref_entries(f)
    finally:
        f.close()


def live_gen_dir(base: Path, channel: str) -> Path:
    chan = base.joinpath(*channel.split("/"))
    gen = Manifest.decode((chan / "manifest").read_bytes()).generation
    return chan / generation_dir_name(gen)


# -- reference writes, ours reads -------------------------------------------------------


def test_reference_writes_ours_reads(tmp_path: Path) -> None:
    ref = net.Redex(persistent_dir=str(tmp_path))
    expected: dict[str, list[Entry]] = {}
    batches: dict[str, list[range]] = {}
    ref_view: dict[str, list[tuple[int, bytes, bool, int]]] = {}
    for i, channel in enumerate(CHANNELS):
        f = ref.open_file(channel, persistent=True)
        expected[channel], batches[channel] = apply_plan(
            f, make_plan(random.Random(i), inline=False)
        )
        ref_view[channel] = [
            (e.seq, bytes(e.payload), e.is_inline, e.checksum) for e in f.read_range(0, END)
        ]
        f.close()

    with Redex(tmp_path) as ours:
        for channel in CHANNELS:
            g = ours.open_file(channel, persistent=True)
            report = ours.reports[channel]
            assert report.resolved_by == "manifest"
            assert report.plan.dropped_corrupt == report.plan.dropped_torn == 0
            assert report.plan.timestamps_filled == 0
            events = g.read_range(0, g.next_seq)
            assert [(e.seq, e.payload, e.is_inline) for e in events] == expected[channel]
            assert [(e.seq, e.payload, e.is_inline, e.checksum) for e in events] == ref_view[
                channel
            ]
            assert g.len_and_next_seq() == (len(expected[channel]), len(expected[channel]))
            by_seq = {e.seq: e.ts for e in events}
            for batch in batches[channel]:
                assert len({by_seq[s] for s in batch}) == 1, f"batch {batch} has several ts"
            assert all(ts > 0 for ts in by_seq.values())


# -- ours writes, reference reads -------------------------------------------------------


def test_ours_writes_reference_reads(tmp_path: Path) -> None:
    expected: dict[str, list[Entry]] = {}
    with Redex(tmp_path) as ours:
        for i, channel in enumerate(CHANNELS):
            f = ours.open_file(channel, persistent=True)
            expected[channel], _ = apply_plan(f, make_plan(random.Random(100 + i), inline=True))
            assert ours_entries(f) == expected[channel]
    assert any(inline for _, _, inline in expected[CHANNELS[0]])
    for channel in CHANNELS:
        f = net.Redex(persistent_dir=str(tmp_path)).open_file(channel, persistent=True)
        events = f.read_range(0, END)
        assert [(e.seq, bytes(e.payload), e.is_inline) for e in events] == expected[channel]
        assert [e.checksum for e in events] == [entry_checksum(p) for _, p, _ in expected[channel]]
        assert len(f) == len(expected[channel])
        f.close()


def test_reference_reads_ours_after_compactions(tmp_path: Path) -> None:
    channel = "compact/log"
    rng = random.Random(7)
    opts: dict[str, Any] = {
        "persistent": True,
        "retention": {"count": {"max_events": 300}},
        "retention_check_every": 0,
    }
    chan_dir = tmp_path / "compact" / "log"

    def gen_dirs() -> list[str]:
        return sorted(p.name for p in chan_dir.iterdir() if p.is_dir())

    with Redex(tmp_path) as ours:
        f = ours.open_file(channel, **opts)
        apply_plan(f, make_plan(rng, inline=True))
        assert f.sweep_retention() > 0
        assert f.generation == 2
        assert (chan_dir / "manifest").read_bytes() == MANIFEST_GEN2
        assert gen_dirs() == ["v0000000002"]
        expected = ours_entries(f)
        ours.close_file(channel)
        assert ref_read(tmp_path, channel) == expected

        f = ours.open_file(channel, **opts)
        apply_plan(f, make_plan(rng, inline=True), start=f.next_seq)
        assert f.sweep_retention() > 0
        assert f.generation == 3
        assert gen_dirs() == ["v0000000003"]
        assert len(f) == 300
        expected = ours_entries(f)
        ours.close_file(channel)
        assert ref_read(tmp_path, channel) == expected

        f = ours.open_file(channel, **opts)
        f.append_inline(b"inline-8")
        assert f.compact() == 4
        assert f.generation == 4
        assert gen_dirs() == ["v0000000004"]
        f.append(b"after compact")
        expected = ours_entries(f)
        assert any(inline for _, _, inline in expected)
        _check_compacted_layout(chan_dir / "v0000000004", expected)
    assert ref_read(tmp_path, channel) == expected


def _check_compacted_layout(gen_dir: Path, expected: list[Entry]) -> None:
    """A compacted generation is the plain format with heap offsets rebased to 0."""
    records = decode_records((gen_dir / "idx").read_bytes())
    assert [r.seq for r in records] == [s for s, _, _ in expected]
    dat = (gen_dir / "dat").read_bytes()
    offset = 0
    for rec, (_, payload, inline) in zip(records, expected, strict=True):
        assert rec.is_inline == inline
        assert rec.flags == (FLAG_INLINE if inline else 0)
        assert rec.checksum == entry_checksum(payload)
        if inline:
            assert rec.inline_payload == payload
        else:
            assert (rec.offset, rec.length) == (offset, len(payload))
            assert dat[offset : offset + len(payload)] == payload
            offset += len(payload)
    assert len(dat) == offset
    assert (gen_dir / "ts").stat().st_size == 8 * len(records)


# -- byte-for-byte ----------------------------------------------------------------------


def test_same_appends_give_identical_files(tmp_path: Path) -> None:
    ours_dir = tmp_path / "ours"
    ref_dir = tmp_path / "ref"
    plans = {c: make_plan(random.Random(200 + i), inline=False) for i, c in enumerate(CHANNELS)}
    more = {c: make_plan(random.Random(300 + i), inline=False)[:12] for i, c in enumerate(CHANNELS)}

    for session in (plans, more):
        with Redex(ours_dir) as ours:
            for channel, plan in session.items():
                f = ours.open_file(channel, persistent=True)
                apply_plan(f, plan, start=f.next_seq)
        ref = net.Redex(persistent_dir=str(ref_dir))
        for channel, plan in session.items():
            f = ref.open_file(channel, persistent=True)
            apply_plan(f, plan, start=len(f))
            f.close()

        for channel in CHANNELS:
            segments = channel.split("/")
            a = ours_dir.joinpath(*segments)
            b = ref_dir.joinpath(*segments)
            assert (a / "manifest").read_bytes() == (b / "manifest").read_bytes()
            assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
            ga = live_gen_dir(ours_dir, channel)
            gb = live_gen_dir(ref_dir, channel)
            assert ga.name == gb.name == "v0000000001"
            assert (ga / "idx").read_bytes() == (gb / "idx").read_bytes()
            assert (ga / "dat").read_bytes() == (gb / "dat").read_bytes()
            ts_len = (ga / "ts").stat().st_size
            assert ts_len == (gb / "ts").stat().st_size
            assert ts_len == 8 * (ga / "idx").stat().st_size // IDX_RECORD_SIZE


# -- round trips ------------------------------------------------------------------------


def test_round_trip_reference_then_ours_then_reference(tmp_path: Path) -> None:
    channel = "trip/ref-first"
    ref = net.Redex(persistent_dir=str(tmp_path))
    f = ref.open_file(channel, persistent=True)
    first, _ = apply_plan(f, make_plan(random.Random(1), inline=False))
    f.close()

    with Redex(tmp_path) as ours:
        g = ours.open_file(channel, persistent=True)
        assert ours_entries(g) == first
        second, _ = apply_plan(g, make_plan(random.Random(2), inline=True), start=g.next_seq)

    assert ref_read(tmp_path, channel) == first + second


def test_round_trip_ours_then_reference_then_ours(tmp_path: Path) -> None:
    channel = "trip/ours-first"
    with Redex(tmp_path) as ours:
        f = ours.open_file(channel, persistent=True)
        first, _ = apply_plan(f, make_plan(random.Random(3), inline=True))

    ref_file = net.Redex(persistent_dir=str(tmp_path)).open_file(channel, persistent=True)
    assert ref_entries(ref_file) == first
    second, _ = apply_plan(ref_file, make_plan(random.Random(4), inline=False), start=len(first))
    ref_file.close()

    with Redex(tmp_path) as ours:
        g = ours.open_file(channel, persistent=True)
        assert ours.reports[channel].plan.dropped_corrupt == 0
        assert ours_entries(g) == first + second
        assert g.next_seq == len(first) + len(second)
        assert g.append(b"ours again") == len(first) + len(second)


def test_round_trip_through_a_compacted_generation(tmp_path: Path) -> None:
    channel = "trip/compacted"
    opts: dict[str, Any] = {
        "persistent": True,
        "retention": {"count": {"max_events": 100}},
        "retention_check_every": 0,
    }
    with Redex(tmp_path) as ours:
        f = ours.open_file(channel, **opts)
        apply_plan(f, make_plan(random.Random(5), inline=True))
        f.sweep_retention()
        assert f.generation == 2
        kept = ours_entries(f)
        start = f.next_seq

    ref_file = net.Redex(persistent_dir=str(tmp_path)).open_file(channel, persistent=True)
    assert ref_entries(ref_file) == kept
    added, _ = apply_plan(ref_file, make_plan(random.Random(6), inline=False)[:15], start=start)
    ref_file.close()
    assert sorted(p.name for p in (tmp_path / "trip" / "compacted").iterdir() if p.is_dir()) == [
        "v0000000002"
    ]

    with Redex(tmp_path) as ours:
        g = ours.open_file(channel, **opts)
        assert ours_entries(g) == kept + added
        assert g.generation == 2
        assert g.sweep_retention() == len(added)
        assert g.generation == 3
        final = ours_entries(g)
    assert ref_read(tmp_path, channel) == final


def test_reference_reads_a_fully_evicted_channel_as_empty(tmp_path: Path) -> None:
    """Our compaction keeps the highest seq as a TOMBSTONE record with a deliberately
    wrong checksum; the reference drops it, so it sees an empty channel (and, being the
    reference, restarts its seqs at 0). Ours keeps its high-water mark across that."""
    channel = "drained"
    with Redex(tmp_path) as ours:
        f = ours.open_file(
            channel, persistent=True, retention={"age": {"max_age_ms": 1}}, retention_check_every=0
        )
        f.append_batch([b"a", b"b", b"c", b"d", b"e"])
        assert f.sweep_retention(now_ns=2**62) == 5
        assert f.len_and_next_seq() == (0, 5)

    ref_file = net.Redex(persistent_dir=str(tmp_path)).open_file(channel, persistent=True)
    assert ref_entries(ref_file) == []
    assert ref_file.append(b"ref") == 0  # the reference's own limitation
    ref_file.close()

    with Redex(tmp_path) as ours:
        g = ours.open_file(channel, persistent=True)
        assert ours_entries(g) == [(0, b"ref", False)]
        assert g.next_seq == 5
        assert g.append(b"ours") == 5


# -- error texts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "a" * 256, "/a", "a/", "a//b", "a b", "é", "a/./b", "a/../b", ".", "..", "a\x00b"],
)
def test_channel_name_errors_match_the_reference(tmp_path: Path, name: str) -> None:
    with pytest.raises(net.RedexError) as ref_exc:
        net.Redex().open_file(name)
    with pytest.raises(RedexError) as ours_exc:
        Redex().open_file(name)
    assert str(ours_exc.value) == str(ref_exc.value)


def test_closed_append_error_matches_the_reference() -> None:
    ref_file = net.Redex().open_file("closed")
    ref_file.close()
    with pytest.raises(net.RedexError) as ref_exc:
        ref_file.append(b"x")
    f = Redex().open_file("closed")
    f.close()
    with pytest.raises(RedexClosedError) as ours_exc:
        f.append(b"x")
    assert str(ours_exc.value) == str(ref_exc.value) == "append: file closed"
