"""``net redex ...``, run as a user runs it: the installed console script in a subprocess.

Channels are written with the library (one by the reference implementation), then
listed, dumped, verified, damaged, compacted and followed through the CLI. Every
read-only command is checked to leave the directory byte-for-byte unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from net_core.cli._redex import _FollowReader, _open_snapshot
from net_core.redex import Redex
from net_core.redex._format import (
    IDX_RECORD_SIZE,
    Manifest,
    encode_records,
    encode_timestamps,
    generation_dir_name,
    heap_record,
    inline_record,
)
from net_core.redex._ops import FileOps

NET = Path(sys.executable).with_name("net")
GEN1 = generation_dir_name(1)
FIVE = [b"alpha", b"bravo", b"charlie", b"delta", b"echo"]


def run_net(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}
    return subprocess.run(
        [str(NET), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def net_json(*args: str | Path) -> Any:
    result = run_net(*args, "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def make_channel(
    base: Path, name: str, payloads: list[bytes], *, inline: frozenset[int] = frozenset()
) -> list[tuple[int, bytes, int, bool]]:
    """Append ``payloads`` one by one (indices in ``inline`` with append_inline).

    Returns ``(seq, payload, ts, inline)`` of every event as the library reads it back.
    """
    with Redex(base) as redex:
        file = redex.open_file(name, persistent=True)
        for i, payload in enumerate(payloads):
            if i in inline:
                file.append_inline(payload)
            else:
                file.append(payload)
        return [(e.seq, e.payload, e.ts, e.is_inline) for e in file.read_range(0, 2**64)]


def snapshot(base: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and directory (None) under ``base``."""
    return {
        str(p.relative_to(base)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(base.rglob("*"))
    }


def write_legacy(channel_dir: Path, payloads: list[bytes], *, ts: bool = True) -> None:
    """A flat idx/dat/ts channel, as old reference versions wrote it."""
    channel_dir.mkdir(parents=True)
    records, dat = [], bytearray()
    for seq, payload in enumerate(payloads):
        records.append(heap_record(seq, len(dat), len(payload), payload))
        dat += payload
    (channel_dir / "idx").write_bytes(encode_records(records))
    (channel_dir / "dat").write_bytes(bytes(dat))
    if ts:
        (channel_dir / "ts").write_bytes(encode_timestamps(range(1_000, 1_000 + len(payloads))))


# -- ls -----------------------------------------------------------------------------------


def test_ls_json_and_text(tmp_path: Path) -> None:
    clicks = make_channel(
        tmp_path, "events/clicks", [b"hello", b"12345678", b"\x00\xff"], inline=frozenset({1})
    )
    parent = make_channel(tmp_path, "events", [b"parent"])
    make_channel(tmp_path, "empty", [])
    (tmp_path / "not-a-channel" / "deeper").mkdir(parents=True)
    before = snapshot(tmp_path)

    doc = net_json("redex", "ls", tmp_path)
    by_name = {c["name"]: c for c in doc["channels"]}
    assert [c["name"] for c in doc["channels"]] == ["empty", "events", "events/clicks"]
    assert by_name["events/clicks"] == {
        "name": "events/clicks",
        "layout": "generations",
        "generation": 1,
        "events": 3,
        "next_seq": 3,
        "lowest_seq": 0,
        "payload_bytes": 5 + 8 + 2,
        "disk_bytes": 16 + 3 * IDX_RECORD_SIZE + 7 + 3 * 8,
        "first_ts": clicks[0][2],
        "last_ts": clicks[-1][2],
    }
    assert by_name["events"]["first_ts"] == by_name["events"]["last_ts"] == parent[0][2]
    assert by_name["events"]["disk_bytes"] == 16 + 20 + 6 + 8  # not the nested channel's
    empty = by_name["empty"]
    assert (empty["events"], empty["next_seq"], empty["lowest_seq"]) == (0, 0, None)
    assert (empty["first_ts"], empty["last_ts"]) == (None, None)

    text = run_net("redex", "ls", tmp_path)
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "GEN",
        "EVENTS",
        "LOWEST",
        "NEXT_SEQ",
        "PAYLOAD",
        "DISK",
        "FIRST",
        "LAST",
    ]
    fields = {row.split()[0]: row.split() for row in rows}
    assert fields["events/clicks"][1:7] == ["1", "3", "0", "3", "15", "107"]
    assert fields["events/clicks"][7].endswith("Z")
    assert fields["events/clicks"][7][:4].isdigit()
    assert fields["empty"][3] == "-"
    assert snapshot(tmp_path) == before


def test_ls_legacy_broken_and_empty(tmp_path: Path) -> None:
    write_legacy(tmp_path / "old" / "flat", [b"one", b"two"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest").write_bytes(Manifest(3).encode())
    before = snapshot(tmp_path)

    doc = net_json("redex", "ls", tmp_path)
    by_name = {c["name"]: c for c in doc["channels"]}
    assert set(by_name) == {"old/flat", "broken"}
    legacy = by_name["old/flat"]
    assert legacy["layout"] == "legacy"
    assert legacy["generation"] is None
    assert (legacy["events"], legacy["next_seq"], legacy["payload_bytes"]) == (2, 2, 6)
    assert (legacy["first_ts"], legacy["last_ts"]) == (1_000, 1_001)
    assert "no complete generation" in by_name["broken"]["error"]
    text = run_net("redex", "ls", tmp_path)
    assert text.returncode == 0
    assert "legacy" in text.stdout
    assert "broken: error:" in text.stdout
    assert snapshot(tmp_path) == before  # nothing migrated

    empty = tmp_path / "nothing-here"
    empty.mkdir()
    assert net_json("redex", "ls", empty) == {"channels": []}
    result = run_net("redex", "ls", empty)
    assert (result.returncode, result.stdout) == (0, "")
    assert "no channels" in result.stderr


# -- dump ---------------------------------------------------------------------------------


def test_dump_json_lines_round_trip(tmp_path: Path) -> None:
    payloads = [b"hello", b"ABCDEFGH", b"", bytes(range(256)), b'\n"quoted"\n']
    written = make_channel(tmp_path, "c", payloads, inline=frozenset({1}))
    before = snapshot(tmp_path)

    result = run_net("redex", "dump", tmp_path, "c", "--json")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [list(line) for line in lines] == [["seq", "ts", "payload", "inline"]] * 5
    assert [
        (e["seq"], base64.b64decode(e["payload"]), e["ts"], e["inline"]) for e in lines
    ] == written
    assert [e["inline"] for e in lines] == [False, True, False, False, False]

    window = json_lines(
        run_net("redex", "dump", tmp_path, "c", "--json", "--from", "1", "--to", "3").stdout
    )
    assert [e["seq"] for e in window] == [1, 2]
    assert (
        run_net("redex", "dump", tmp_path, "c", "--json", "--from", "3", "--to", "3").stdout == ""
    )
    assert [
        e["seq"]
        for e in json_lines(run_net("redex", "dump", tmp_path, "c", "--json", "--from", "4").stdout)
    ] == [4]
    assert snapshot(tmp_path) == before


def test_dump_text_previews(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", [b"hello world", b"\x00\x01\xfe", b"x" * 100, b"", bytes(40)])
    result = run_net("redex", "dump", tmp_path, "c")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    seq, stamp, length, preview = lines[0].split(" ", 3)
    assert (seq, length, preview) == ("0", "11", "hello world")
    assert stamp.endswith("Z")
    assert len(stamp) == len("2025-01-01T00:00:00.000000000Z")
    assert lines[1].split(" ", 3)[2:] == ["3", "hex:0001fe"]
    assert lines[2].endswith(" 100 " + "x" * 60 + "...")
    assert lines[3].split(" ", 3)[2:] == ["0", ""]
    assert lines[4].endswith("hex:" + "00" * 32 + "...")


def test_dump_skips_evicted_and_tombstoned_seqs(tmp_path: Path) -> None:
    with Redex(tmp_path) as redex:
        file = redex.open_file(
            "c", persistent=True, retention={"count": {"max_events": 5}}, retention_check_every=0
        )
        file.append_batch([b"e%d" % i for i in range(5000)])
        assert file.sweep_retention() == 4995
    gen = tmp_path / "c" / generation_dir_name(2)
    dat = bytearray((gen / "dat").read_bytes())
    dat[0] ^= 0xFF  # seq 4995 fails its checksum: read as tombstoned
    (gen / "dat").write_bytes(bytes(dat))
    lines = json_lines(run_net("redex", "dump", tmp_path, "c", "--json").stdout)
    assert [e["seq"] for e in lines] == [4996, 4997, 4998, 4999]
    assert base64.b64decode(lines[0]["payload"]) == b"e4996"


def test_dump_streams_into_a_closed_pipe_quietly(tmp_path: Path) -> None:
    with Redex(tmp_path) as redex:
        redex.open_file("big", persistent=True).append_batch(
            [b"%08d" % i * 8 for i in range(40_000)]
        )
    proc = subprocess.Popen(
        [str(NET), "redex", "dump", str(tmp_path), "big"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"0 ")
    proc.stdout.close()  # like `| head -1`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err == b""


# -- verify -------------------------------------------------------------------------------


def verify(base: Path, name: str = "c") -> tuple[int, dict[str, Any]]:
    result = run_net("redex", "verify", base, name, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def kinds(doc: dict[str, Any]) -> list[str]:
    return sorted({p["kind"] for p in doc["problems"]})


def test_verify_clean_channel(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", FIVE, inline=frozenset())
    status, doc = verify(tmp_path)
    assert status == 0
    assert doc == {
        "channel": "c",
        "generation": 1,
        "ok": True,
        "events": 5,
        "next_seq": 5,
        "problems": [],
        "notes": [],
    }
    text = run_net("redex", "verify", tmp_path, "c")
    assert text.returncode == 0
    assert text.stdout == "c (generation 1): OK, 5 events, next_seq 5\n"


def gen1(base: Path) -> Path:
    return base / "c" / GEN1


def flip_payload_byte(base: Path) -> None:
    dat = bytearray((gen1(base) / "dat").read_bytes())
    dat[len(b"alphabravo") + 2] ^= 0x20  # inside "charlie" (seq 2)
    (gen1(base) / "dat").write_bytes(bytes(dat))


def truncate_idx_mid_record(base: Path) -> None:
    idx = gen1(base) / "idx"
    idx.write_bytes(idx.read_bytes()[: 4 * IDX_RECORD_SIZE + 7])


def add_orphan_generation(base: Path) -> None:
    shutil.copytree(gen1(base), base / "c" / generation_dir_name(2))
    (base / "c" / "manifest").write_bytes(Manifest(1).encode())


def garbage_manifest(base: Path) -> None:
    (base / "c" / "manifest").write_bytes(b"this is no manifest")


def remove_manifest(base: Path) -> None:
    (base / "c" / "manifest").unlink()


def manifest_to_missing_generation(base: Path) -> None:
    (base / "c" / "manifest").write_bytes(Manifest(7).encode())


def manifest_to_incomplete_generation(base: Path) -> None:
    incomplete = base / "c" / generation_dir_name(7)
    incomplete.mkdir()
    (incomplete / "idx").write_bytes(b"")
    (base / "c" / "manifest").write_bytes(Manifest(7).encode())


def stale_manifest_tmp(base: Path) -> None:
    (base / "c" / "manifest.tmp").write_bytes(Manifest(2).encode())


def dat_trailing_garbage(base: Path) -> None:
    with (gen1(base) / "dat").open("ab") as f:
        f.write(b"garbage")


def torn_dat(base: Path) -> None:
    dat = gen1(base) / "dat"
    dat.write_bytes(dat.read_bytes()[:-2])  # "echo" (seq 4) lost its last 2 bytes


def short_ts(base: Path) -> None:
    ts = gen1(base) / "ts"
    ts.write_bytes(ts.read_bytes()[:-8])


def seq_goes_backwards(base: Path) -> None:
    idx = bytearray((gen1(base) / "idx").read_bytes())
    idx[3 * IDX_RECORD_SIZE : 3 * IDX_RECORD_SIZE + 8] = struct.pack("<Q", 1)
    (gen1(base) / "idx").write_bytes(bytes(idx))


def record_past_end_of_dat(base: Path) -> None:
    idx = bytearray((gen1(base) / "idx").read_bytes())
    idx[IDX_RECORD_SIZE + 8 : IDX_RECORD_SIZE + 12] = struct.pack("<I", 10_000)  # seq 1
    (gen1(base) / "idx").write_bytes(bytes(idx))


def legacy_files_beside_generations(base: Path) -> None:
    for name in ("idx", "dat", "ts"):
        shutil.copy(gen1(base) / name, base / "c" / name)


DAMAGES: list[tuple[Callable[[Path], None], list[str], list[int]]] = [
    (flip_payload_byte, ["corrupt_record"], [2]),
    (truncate_idx_mid_record, ["dat_trailing_bytes", "idx_torn", "ts_length_mismatch"], []),
    (add_orphan_generation, ["orphan_generation"], []),
    (garbage_manifest, ["manifest_invalid"], []),
    (remove_manifest, ["manifest_missing"], []),
    (manifest_to_missing_generation, ["manifest_generation_missing"], []),
    (
        manifest_to_incomplete_generation,
        ["manifest_generation_incomplete", "orphan_generation"],
        [],
    ),
    (stale_manifest_tmp, ["stale_manifest_tmp"], []),
    (dat_trailing_garbage, ["dat_trailing_bytes"], []),
    (torn_dat, ["dat_torn", "dat_trailing_bytes"], [4]),
    (short_ts, ["ts_length_mismatch"], []),
    (seq_goes_backwards, ["seq_not_increasing"], [1]),
    (record_past_end_of_dat, ["corrupt_record"], [1]),
    (legacy_files_beside_generations, ["legacy_layout"], []),
]


@pytest.mark.parametrize(
    ("damage", "expected", "seqs"), DAMAGES, ids=[d[0].__name__ for d in DAMAGES]
)
def test_verify_reports_damage_without_touching_files(
    tmp_path: Path, damage: Callable[[Path], None], expected: list[str], seqs: list[int]
) -> None:
    make_channel(tmp_path, "c", FIVE)
    damage(tmp_path)
    before = snapshot(tmp_path)
    status, doc = verify(tmp_path)
    assert status == 1
    assert doc["ok"] is False
    assert kinds(doc) == expected
    assert sorted(p["seq"] for p in doc["problems"] if "seq" in p) == seqs
    assert all(set(p) <= {"kind", "detail", "seq"} and p["detail"] for p in doc["problems"])
    text = run_net("redex", "verify", tmp_path, "c")
    assert text.returncode == 1
    for kind in expected:
        assert f"problem: {kind}" in text.stdout
    assert snapshot(tmp_path) == before


def test_verify_lists_every_problem_at_once(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", FIVE)
    flip_payload_byte(tmp_path)
    truncate_idx_mid_record(tmp_path)
    orphan = tmp_path / "c" / generation_dir_name(2)  # incomplete, so v1 stays live
    orphan.mkdir()
    (orphan / "idx").write_bytes(b"")
    garbage_manifest(tmp_path)
    stale_manifest_tmp(tmp_path)
    before = snapshot(tmp_path)
    status, doc = verify(tmp_path)
    assert status == 1
    assert doc["generation"] == 1
    assert kinds(doc) == [
        "corrupt_record",
        "dat_trailing_bytes",
        "idx_torn",
        "manifest_invalid",
        "orphan_generation",
        "stale_manifest_tmp",
        "ts_length_mismatch",
    ]
    [corrupt] = [p for p in doc["problems"] if p["kind"] == "corrupt_record"]
    assert corrupt["seq"] == 2
    assert "checksum mismatch" in corrupt["detail"]
    assert doc["events"] == 3  # alpha, bravo, delta: charlie corrupt, echo torn
    assert snapshot(tmp_path) == before


def test_verify_legacy_layout(tmp_path: Path) -> None:
    write_legacy(tmp_path / "c", [b"one", b"two"], ts=False)
    status, doc = verify(tmp_path)
    assert status == 1
    assert doc["generation"] is None
    assert kinds(doc) == ["legacy_layout", "ts_length_mismatch"]


def test_verify_tombstones_are_notes(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", FIVE)
    flip_payload_byte(tmp_path)
    Redex(tmp_path).open_file("c", persistent=True).close()  # recovery tombstones seq 2
    status, doc = verify(tmp_path)
    assert status == 0
    assert doc["ok"] is True
    assert doc["problems"] == []
    assert [(n["kind"], n["seq"]) for n in doc["notes"]] == [("tombstone", 2)]
    text = run_net("redex", "verify", tmp_path, "c")
    assert text.returncode == 0
    assert "OK with 1 note(s)" in text.stdout

    # Age retention that evicts everything leaves only the high-water tombstone.
    with Redex(tmp_path) as redex:
        file = redex.open_file("d", persistent=True, retention={"age": {"max_age_ms": 1}})
        file.append(b"old")
        assert file.sweep_retention(now_ns=time.time_ns() + 10**9) == 1
    status, doc = verify(tmp_path, "d")
    assert status == 0
    [note] = doc["notes"]
    assert (note["kind"], note["seq"]) == ("tombstone", 0)
    assert "high-water" in note["detail"]
    assert (doc["events"], doc["next_seq"]) == (0, 1)


# -- compact ------------------------------------------------------------------------------


def test_compact_with_max_events(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", [b"event-%d" % i for i in range(10)])
    doc = net_json("redex", "compact", tmp_path, "c", "--max-events", "3")
    assert doc["channel"] == "c"
    assert doc["retention"] == {"count": {"max_events": 3}}
    assert doc["evicted"] == 7
    assert (doc["old_generation"], doc["new_generation"]) == (1, 2)
    assert doc["before"] == {
        "generation": 1,
        "events": 10,
        "next_seq": 10,
        "lowest_seq": 0,
        "payload_bytes": 70,
    }
    assert doc["after"] == {
        "generation": 2,
        "events": 3,
        "next_seq": 10,
        "lowest_seq": 7,
        "payload_bytes": 21,
    }
    assert doc["open"] == {
        "resolved_by": "manifest",
        "swept": [],
        "dropped_corrupt": 0,
        "dropped_torn": 0,
        "timestamps_filled": 0,
    }
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir()) == [
        generation_dir_name(2)
    ]
    lines = json_lines(run_net("redex", "dump", tmp_path, "c", "--json").stdout)
    assert [base64.b64decode(e["payload"]) for e in lines] == [b"event-7", b"event-8", b"event-9"]
    assert verify(tmp_path)[0] == 0

    text = run_net("redex", "compact", tmp_path, "c", "--max-events", "1", "--progress")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == "c: generation 2 -> 3, evicted 2"
    assert "sweeping retention ['count']" in text.stderr


@pytest.mark.oracle
def test_compact_result_is_read_by_the_reference(tmp_path: Path) -> None:
    reference = pytest.importorskip("net", reason="ai2070-net not installed")
    make_channel(tmp_path, "c", [b"event-%d" % i for i in range(10)], inline=frozenset())
    result = run_net(
        "redex",
        "compact",
        tmp_path,
        "c",
        "--max-events",
        "4",
        "--max-bytes",
        "1000",
        "--max-age-ms",
        "3600000",
    )
    assert result.returncode == 0, result.stderr
    file = reference.Redex(persistent_dir=str(tmp_path)).open_file("c", persistent=True)
    try:
        events = [(e.seq, bytes(e.payload)) for e in file.read_range(0, 2**63)]
    finally:
        file.close()
    assert events == [(i, b"event-%d" % i) for i in range(6, 10)]


def test_compact_without_policy_rewrites_and_drops_tombstones(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", FIVE)
    flip_payload_byte(tmp_path)
    add_orphan_generation(tmp_path)
    doc = net_json("redex", "compact", tmp_path, "c")
    assert doc["evicted"] == 0
    assert doc["retention"] == {}
    assert doc["open"]["dropped_corrupt"] == 1
    assert doc["open"]["swept"] == [generation_dir_name(2)]
    assert (doc["old_generation"], doc["new_generation"]) == (1, 2)
    assert doc["after"]["events"] == 4
    status, after = verify(tmp_path)
    assert (status, after["problems"], after["notes"]) == (0, [], [])


def test_compact_migrates_a_legacy_channel(tmp_path: Path) -> None:
    write_legacy(tmp_path / "c", [b"one", b"two", b"three"])
    doc = net_json("redex", "compact", tmp_path, "c", "--max-events", "2")
    assert doc["open"]["resolved_by"] == "migrated"
    assert (doc["old_generation"], doc["new_generation"], doc["evicted"]) == (1, 2, 1)
    assert not (tmp_path / "c" / "idx").exists()
    lines = json_lines(run_net("redex", "dump", tmp_path, "c", "--json").stdout)
    assert [(e["seq"], e["ts"]) for e in lines] == [(1, 1_001), (2, 1_002)]
    assert verify(tmp_path)[0] == 0


def test_compact_with_plugin_policies(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", [b"x"] * 6)
    doc = net_json(
        "redex",
        "compact",
        tmp_path,
        "c",
        "--retention",
        'calendar={"period":"day","keep":7}',
        "--retention",
        'count_watermark={"high": 4, "low": 2}',
    )
    assert doc["retention"] == {
        "calendar": {"period": "day", "keep": 7},
        "count_watermark": {"high": 4, "low": 2},
    }
    assert doc["after"]["events"] == 2


def test_compact_errors(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", FIVE)
    unknown = run_net("redex", "compact", tmp_path, "c", "--retention", "nope={}")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("net: error: retention.nope: unknown retention 'nope'")
    bad_options = run_net(
        "redex",
        "compact",
        tmp_path,
        "c",
        "--json",
        "--retention",
        'calendar={"period":"fortnight","keep":1}',
    )
    assert bad_options.returncode == 1
    assert json.loads(bad_options.stdout)["error"]["type"] == "ConfigError"
    for argv in (
        ["--retention", "calendar={not json"],
        ["--retention", "count=[1]"],
        ["--max-events", "0"],
        ["--max-events", "2", "--retention", 'count={"max_events":3}'],
    ):
        result = run_net("redex", "compact", tmp_path, "c", *argv)
        assert result.returncode == 2, argv
        assert "usage:" in result.stderr

    missing = run_net("redex", "compact", tmp_path, "nope/x", "--max-events", "1")
    assert missing.returncode == 1
    assert missing.stderr == f"net: error: no channel 'nope/x' under {tmp_path}\n"
    assert not (tmp_path / "nope").exists()  # compact never creates a channel

    with Redex(tmp_path) as redex:
        redex.open_file("c", persistent=True)
        busy = run_net("redex", "compact", tmp_path, "c")
    assert busy.returncode == 1
    assert "open in another process" in busy.stderr


# -- tail ---------------------------------------------------------------------------------


def test_tail_without_follow_is_dump_from(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", FIVE, inline=frozenset())
    tail = run_net("redex", "tail", tmp_path, "c", "--from", "2", "--json")
    dump = run_net("redex", "dump", tmp_path, "c", "--from", "2", "--json")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == dump.stdout
    assert [e["seq"] for e in json_lines(tail.stdout)] == [2, 3, 4]
    text = run_net("redex", "tail", tmp_path, "c", "--no-follow")
    assert text.stdout == run_net("redex", "dump", tmp_path, "c").stdout


class Lines:
    """Lines of a subprocess's stdout, read by a thread, awaited with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def take(self, n: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            out.append(json.loads(self._queue.get(timeout=max(0.01, deadline - time.monotonic()))))
        return out

    def quiet(self, wait: float) -> bool:
        time.sleep(wait)
        return self._queue.empty()


@pytest.fixture
def follow(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], Lines]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], Lines]:
        proc = subprocess.Popen(
            [str(NET), "redex", "tail", str(tmp_path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        return proc, Lines(proc.stdout)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def payloads_of(events: list[dict[str, Any]]) -> list[tuple[int, bytes, bool]]:
    return [(e["seq"], base64.b64decode(e["payload"]), e["inline"]) for e in events]


def test_tail_follow_sees_appends_of_another_process(
    tmp_path: Path, follow: Callable[..., tuple[subprocess.Popen[str], Lines]]
) -> None:
    make_channel(tmp_path, "c", [b"first", b"second"])
    proc, lines = follow("c", "--follow", "--json", "--from", "1", "--poll-ms", "20")
    assert payloads_of(lines.take(1)) == [(1, b"second", False)]

    # The writer holds the channel's lock; the follower's read-only polling needs none.
    with Redex(tmp_path) as redex:
        file = redex.open_file(
            "c", persistent=True, retention={"count": {"max_events": 3}}, retention_check_every=0
        )
        file.append(b"third")
        file.append_inline(b"INLINE!!")
        file.append_batch([b"b1", b"b2"])
        got = lines.take(4)
        assert payloads_of(got) == [
            (2, b"third", False),
            (3, b"INLINE!!", True),
            (4, b"b1", False),
            (5, b"b2", False),
        ]
        assert [e["ts"] for e in got] == [e.ts for e in file.read_range(2, 6)]

        # Compaction moves the channel to a new generation: nothing is repeated or lost.
        assert file.sweep_retention() == 3
        assert file.generation == 2
        file.append(b"after-compaction")
        assert payloads_of(lines.take(1)) == [(6, b"after-compaction", False)]
        assert lines.quiet(0.3)
        for i in range(2000):
            file.append(b"burst-%d" % i)
        burst = lines.take(2000)
        assert [e["seq"] for e in burst] == list(range(7, 2007))

    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err == ""


def test_tail_follow_from_an_empty_channel_until_terminated(
    tmp_path: Path, follow: Callable[..., tuple[subprocess.Popen[str], Lines]]
) -> None:
    make_channel(tmp_path, "c", [])
    before = snapshot(tmp_path)
    proc, lines = follow("c", "--follow", "--json", "--poll-ms", "20")
    assert lines.quiet(0.3)
    assert snapshot(tmp_path) == before
    with Redex(tmp_path) as redex:
        redex.open_file("c", persistent=True).append(b"hello")
        assert payloads_of(lines.take(1)) == [(0, b"hello", False)]
    proc.terminate()
    proc.communicate(timeout=10)


# -- the follow reader, in process: torn and in-flight appends -------------------------------


def test_follow_reader_waits_for_torn_and_in_flight_records(tmp_path: Path) -> None:
    make_channel(tmp_path, "c", [b"zero"])
    gen = gen1(tmp_path)
    reader = _FollowReader(tmp_path / "c", last_seq=-1)
    try:
        assert [(e.seq, e.payload) for e in reader.poll()] == [(0, b"zero")]
        assert reader.poll() == []

        def append_raw(idx: bytes = b"", dat: bytes = b"", ts: bytes = b"") -> None:
            for name, data in (("dat", dat), ("idx", idx), ("ts", ts)):
                with (gen / name).open("ab") as f:
                    f.write(data)

        # Half an idx record: nothing yet.
        record = heap_record(1, 4, 3, b"one").encode()
        append_raw(dat=b"one", idx=record[:9])
        assert reader.poll() == []
        # The whole record, but not its ts entry: waits (then takes "now" after a grace).
        append_raw(idx=record[9:])
        assert reader.poll() == []
        append_raw(ts=struct.pack("<Q", 123))
        assert [(e.seq, e.payload, e.ts) for e in reader.poll()] == [(1, b"one", 123)]
        # A heap record whose payload is not in dat yet (torn tail): waits for it.
        append_raw(idx=heap_record(2, 7, 3, b"two").encode(), ts=struct.pack("<Q", 124))
        assert reader.poll() == []
        append_raw(dat=b"two")
        assert [e.seq for e in reader.poll()] == [2]
        # A corrupt record in the middle is skipped, like recovery tombstones it.
        bad = heap_record(3, 10, 5, b"three").encode()
        append_raw(
            dat=b"thrEE",
            idx=bad + inline_record(4, b"four....").encode(),
            ts=struct.pack("<2Q", 125, 126),
        )
        assert [(e.seq, e.is_inline) for e in reader.poll()] == [(4, True)]
        # A writer that died between its idx and ts writes: printed after the grace.
        append_raw(dat=b"five", idx=heap_record(5, 15, 4, b"five").encode())
        assert reader.poll() == []
        time.sleep(1.1)
        [late] = reader.poll()
        assert late.seq == 5
        assert abs(late.ts - time.time_ns()) < 10**10
    finally:
        reader.close()


def test_read_only_commands_on_a_live_channel(tmp_path: Path) -> None:
    """A writer appends and compacts (count retention) while ls/dump/verify run."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with Redex(tmp_path) as redex:
                file = redex.open_file(
                    "live",
                    persistent=True,
                    retention={"count": {"max_events": 200}},
                    retention_check_every=100,
                )
                i = 0
                while not stop.is_set():
                    file.append(b"event-%d" % i)
                    i += 1
                    time.sleep(0.0005)
        except BaseException as exc:
            errors.append(exc)

    make_channel(tmp_path, "live", [])
    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.2)
        for _ in range(3):
            status, doc = verify(tmp_path, "live")
            assert (status, doc["problems"]) == (0, []), doc
            seqs = [
                e["seq"]
                for e in json_lines(run_net("redex", "dump", tmp_path, "live", "--json").stdout)
            ]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert 0 < len(seqs) <= 300
            [entry] = net_json("redex", "ls", tmp_path)["channels"]
            assert "error" not in entry
    finally:
        stop.set()
        writer.join()
    assert errors == []


# -- a compaction racing a read-only open ---------------------------------------------------


class CompactsDuringOpen(FileOps):
    """Read-only ops under which a writer compacts (sweeping the generation the reader
    resolved) just before the reader reads that generation's idx."""

    def __init__(self, compact: Callable[[], object], times: int = 1) -> None:
        self._compact = compact
        self._left = times

    def read_file(self, path: Path) -> bytes | None:
        if path.name == "idx" and self._left:
            self._left -= 1
            self._compact()
        return super().read_file(path)


def test_library_read_only_open_racing_a_compaction(tmp_path: Path) -> None:
    with Redex(tmp_path) as writer:
        file = writer.open_file("c", persistent=True)
        file.append_batch([b"a", b"b", b"c"])
        reader = Redex(tmp_path, read_only=True, ops=CompactsDuringOpen(file.compact))
        seen = reader.open_file("c", persistent=True)
        # Either the three events (re-resolved to generation 2) or an error; not silence.
        assert (len(seen), seen.next_seq) == (3, 3)


def test_cli_snapshot_retries_when_a_compaction_races_the_open(tmp_path: Path) -> None:
    with Redex(tmp_path) as writer:
        file = writer.open_file("c", persistent=True)
        file.append_batch([b"a", b"b", b"c"])
        reader = Redex(tmp_path, read_only=True, ops=CompactsDuringOpen(file.compact, times=2))
        seen = _open_snapshot(reader, tmp_path / "c", "c")
        assert (len(seen), seen.next_seq, seen.generation) == (3, 3, 3)


# -- reference-written channels ----------------------------------------------------------------


@pytest.mark.oracle
def test_reference_written_channel(tmp_path: Path) -> None:
    reference = pytest.importorskip("net", reason="ai2070-net not installed")
    file = reference.Redex(persistent_dir=str(tmp_path)).open_file("ref/chan", persistent=True)
    payloads = [b"from-rust-%d" % i for i in range(4)]
    for payload in payloads:
        file.append(payload)
    file.close()
    before = snapshot(tmp_path)

    [entry] = net_json("redex", "ls", tmp_path)["channels"]
    assert (entry["name"], entry["generation"], entry["events"], entry["next_seq"]) == (
        "ref/chan",
        1,
        4,
        4,
    )
    events = json_lines(run_net("redex", "dump", tmp_path, "ref/chan", "--json").stdout)
    assert [base64.b64decode(e["payload"]) for e in events] == payloads
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert verify(tmp_path, "ref/chan")[0] == 0
    assert snapshot(tmp_path) == before


# -- errors ---------------------------------------------------------------------------------


def test_missing_directory_and_channel(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    for argv in (
        ["ls", missing],
        ["dump", missing, "c"],
        ["verify", missing, "c"],
        ["tail", missing, "c"],
        ["compact", missing, "c"],
    ):
        result = run_net("redex", *argv)
        assert result.returncode == 1, argv
        assert result.stderr == f"net: error: no such directory: {missing}\n"
        doc = json.loads(run_net("redex", *argv, "--json").stdout)
        assert doc == {
            "error": {"type": "ChannelNotFoundError", "message": f"no such directory: {missing}"}
        }
    make_channel(tmp_path, "c", [b"x"])
    for command in ("dump", "verify", "tail", "compact"):
        result = run_net("redex", command, tmp_path, "d")
        assert result.returncode == 1
        assert result.stderr == f"net: error: no channel 'd' under {tmp_path}\n"
    (tmp_path / "plain").mkdir()
    result = run_net("redex", "dump", tmp_path, "plain")
    assert result.returncode == 1
    assert "is not a RedEX channel" in result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad name", "invalid character ' ' in channel name"),
        ("/abs", "invalid channel name format: must not start or end with '/'"),
        ("a/../b", 'invalid channel name format: segment ".." is reserved'),
    ],
)
def test_invalid_channel_names(tmp_path: Path, name: str, message: str) -> None:
    for command in ("dump", "verify", "tail", "compact"):
        result = run_net("redex", command, tmp_path, name)
        assert (result.returncode, result.stderr) == (1, f"net: error: {message}\n")
    doc = json.loads(run_net("redex", "verify", tmp_path, name, "--json").stdout)
    assert doc == {"error": {"type": "ChannelNameError", "message": message}}


def test_legacy_channel_cannot_be_dumped_read_only(tmp_path: Path) -> None:
    write_legacy(tmp_path / "c", [b"one"])
    result = run_net("redex", "dump", tmp_path, "c")
    assert result.returncode == 1
    assert "legacy flat layout" in result.stderr
    assert (tmp_path / "c" / "idx").exists()  # not migrated


@pytest.mark.parametrize(
    "argv",
    [
        ["redex"],
        ["redex", "nope"],
        ["redex", "dump"],
        ["redex", "dump", ".", "c", "--from", "-1"],
        ["redex", "dump", ".", "c", "--to", "x"],
        ["redex", "tail", ".", "c", "--poll-ms", "0"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = run_net(*argv)
    assert result.returncode == 2
    assert "usage:" in result.stderr
