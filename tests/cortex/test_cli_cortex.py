"""``net cortex tasks list`` / ``net cortex memories list`` over persistent RedEX directories.

Data is written with our adapters and with the reference's (``net.TasksAdapter`` /
``net.MemoriesAdapter`` over ``net.Redex(persistent_dir=...)``); the command runs through
``net_core.cli._main.main`` with stdout captured (once as the installed console script).
Listings are checked against explicit expected records and, for every filter, against the
reference's own query over the same directory. Every run is also checked to leave the
directory byte-for-byte unchanged, including while a writer keeps the channel open.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from net_core.cli._main import main
from net_core.cortex import (
    DISPATCH_TASK_CREATED,
    MEMORIES_CHANNEL,
    TASKS_CHANNEL,
    MemoriesAdapter,
    TasksAdapter,
    seal,
)
from net_core.cortex._pcstruct import pack
from net_core.redex import Redex

NET = Path(sys.executable).with_name("net")
ORIGIN = 0x5EED


# -- running the command ------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> list[dict[str, Any]]:
    status, out, err = run_cli(capsys, *args, "--json")
    assert status == 0, err + out
    doc = json.loads(out)
    assert isinstance(doc, list)
    return doc


def usage_error(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    return capsys.readouterr().err


def tree_digest(base: Path) -> dict[str, str]:
    """Every file under ``base`` with the hash of its bytes (and every directory)."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(base):
        for d in dirs:
            found[os.path.relpath(os.path.join(root, d), base) + "/"] = "dir"
        for f in files:
            path = os.path.join(root, f)
            found[os.path.relpath(path, base)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


# -- the data -----------------------------------------------------------------------------


def write_tasks(tasks: Any) -> int:
    """A fixed history on any Tasks adapter (ours or the reference's); returns the last seq."""
    for i in range(1, 21):
        tasks.create(i, f"Task {i} {'alpha' if i % 3 == 0 else 'beta'}", 1_000 + 10 * i)
    for i in (2, 4, 6, 8):
        tasks.complete(i, 2_000 + i)
    tasks.rename(5, "Renamed ALPHA five", 3_000)
    tasks.delete(7)
    tasks.complete(99, 3_500)  # unknown id: a no-op
    return int(tasks.create(3, "Task 3 reborn", 4_000))  # a re-create resets the task


def write_memories(memories: Any) -> int:
    """A fixed history on any Memories adapter; returns the last seq."""
    tag_sets: list[list[str]] = [["a", "b"], ["a"], ["b", "c"], []]
    for i in range(1, 13):
        memories.store(
            i, f"memory {i} {'Sky' if i % 2 else 'sea'}", tag_sets[i % 4], f"src{i % 3}", 100 + i
        )
    for i in (2, 3, 5):
        memories.pin(i, 200 + i)
    memories.unpin(3, 300)
    memories.retag(4, ["c", "A"], 400)
    memories.store(5, "memory 5 rewritten", ["z"], "src9", 500)  # keeps pinned and created
    return int(memories.delete(6))


#: What ``write_tasks`` leaves, ordered by id.
EXPECTED_TASKS: list[dict[str, Any]] = []
for _i in range(1, 21):
    if _i == 7:
        continue
    _title = f"Task {_i} {'alpha' if _i % 3 == 0 else 'beta'}"
    _created = _updated = 1_000 + 10 * _i
    _status = "pending"
    if _i in (2, 4, 6, 8):
        _status, _updated = "completed", 2_000 + _i
    if _i == 5:
        _title, _updated = "Renamed ALPHA five", 3_000
    if _i == 3:
        _title, _created, _updated = "Task 3 reborn", 4_000, 4_000
    EXPECTED_TASKS.append(
        {
            "id": _i,
            "title": _title,
            "status": _status,
            "created_ns": _created,
            "updated_ns": _updated,
        }
    )


def write_ours(base: Path) -> None:
    """Both channels under ``base``, written and folded by our adapters."""

    async def go() -> None:
        with Redex(base) as redex:
            async with TasksAdapter.open(redex, ORIGIN, persistent=True) as tasks:
                await tasks.wait_for_seq(write_tasks(tasks))
            async with MemoriesAdapter.open(redex, ORIGIN, persistent=True) as memories:
                await memories.wait_for_seq(write_memories(memories))

    anyio.run(go)


@pytest.fixture
def ours_dir(tmp_path: Path) -> Path:
    base = tmp_path / "ours"
    write_ours(base)
    return base


# -- tasks: output ------------------------------------------------------------------------


def test_tasks_json_is_the_plain_list_of_records(
    capsys: pytest.CaptureFixture[str], ours_dir: Path
) -> None:
    before = tree_digest(ours_dir)
    assert cli_json(capsys, "cortex", "tasks", "list", "--dir", ours_dir) == EXPECTED_TASKS
    assert tree_digest(ours_dir) == before


def test_tasks_text_is_an_aligned_table(capsys: pytest.CaptureFixture[str], ours_dir: Path) -> None:
    status, out, err = run_cli(
        capsys, "cortex", "tasks", "list", "--dir", ours_dir, "--status", "completed"
    )
    assert status == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "CREATED", "UPDATED", "TITLE"]
    assert lines[-1] == "4 of 19 tasks"
    rows = lines[1:-1]
    assert [r.split()[0] for r in rows] == ["2", "4", "6", "8"]
    # Aligned: every column starts where its header does.
    starts = [lines[0].index(h) for h in ("STATUS", "CREATED", "UPDATED", "TITLE")]
    completed = [t for t in EXPECTED_TASKS if t["status"] == "completed"]
    for row, task in zip(rows, completed, strict=True):
        assert row[starts[0] :].startswith("completed ")
        assert row[starts[1] :].startswith("1970-01-01T00:00:00.000001")
        assert row[starts[2] :].startswith(f"1970-01-01T00:00:00.00000{task['updated_ns']}Z")
        assert row[starts[3] :] == task["title"]


def test_text_escapes_control_characters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async def go() -> None:
        with Redex(tmp_path) as redex:
            async with TasksAdapter.open(redex, ORIGIN, persistent=True) as tasks:
                await tasks.wait_for_seq(tasks.create(1, "two\nlines\tand a tab", 5))

    anyio.run(go)
    status, out, _ = run_cli(capsys, "cortex", "tasks", "list", "--dir", tmp_path)
    assert status == 0
    assert out.splitlines()[1].endswith("two\\nlines\\tand a tab")
    assert len(out.splitlines()) == 3
    doc = cli_json(capsys, "cortex", "tasks", "list", "--dir", tmp_path)
    assert doc[0]["title"] == "two\nlines\tand a tab"


def test_empty_result_prints_only_the_count(
    capsys: pytest.CaptureFixture[str], ours_dir: Path
) -> None:
    status, out, _ = run_cli(
        capsys, "cortex", "tasks", "list", "--dir", ours_dir, "--title-contains", "nothing"
    )
    assert status == 0
    assert out == "0 of 19 tasks\n"
    assert cli_json(capsys, "cortex", "tasks", "list", "--dir", ours_dir, "--limit", "0") == []


# -- tasks: filters -----------------------------------------------------------------------


def ids(doc: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in doc]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--status", "pending"], [1, 3, 5, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),
        (["--status", "COMPLETED"], [2, 4, 6, 8]),
        (["--title-contains", "ALPHA"], [5, 6, 9, 12, 15, 18]),
        (["--created-after", "1050", "--created-before", "1090"], [5, 6, 8, 9]),
        (["--updated-after", "2004", "--updated-before", "3000"], [4, 5, 6, 8]),
        (["--order-by", "created_desc", "--limit", "3"], [3, 20, 19]),
        (["--order-by", "UPDATED_ASC", "--limit", "2"], [1, 9]),
        (["--order-by", "id_desc", "--status", "completed", "--limit", "2"], [8, 6]),
        (["--id", "3", "--id", "7", "--id", "0x0b"], [3, 11]),
        (["--status", "pending", "--title-contains", "beta", "--limit", "4"], [1, 10, 11, 13]),
    ],
)
def test_tasks_filters(
    capsys: pytest.CaptureFixture[str], ours_dir: Path, options: list[str], expected: list[int]
) -> None:
    assert ids(cli_json(capsys, "cortex", "tasks", "list", "--dir", ours_dir, *options)) == expected


def test_time_bounds_accept_iso_8601(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stamps = [
        datetime(2026, 5, 1, 11, 59, 59, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC),
        datetime(2026, 5, 2, 0, 0, 0, tzinfo=UTC),
    ]

    async def go() -> None:
        with Redex(tmp_path) as redex:
            async with TasksAdapter.open(redex, ORIGIN, persistent=True) as tasks:
                for i, stamp in enumerate(stamps):
                    seq = tasks.create(i, f"t{i}", int(stamp.timestamp()) * 1_000_000_000)
                await tasks.wait_for_seq(seq)

    anyio.run(go)
    base = ["cortex", "tasks", "list", "--dir", str(tmp_path)]
    assert ids(cli_json(capsys, *base, "--created-after", "2026-05-01T12:00:00Z")) == [1, 2]
    assert ids(cli_json(capsys, *base, "--created-after", "2026-05-01T12:00:00")) == [1, 2]
    assert ids(cli_json(capsys, *base, "--created-before", "2026-05-01T14:00:00+02:00")) == [0, 1]
    assert ids(cli_json(capsys, *base, "--created-after", "2026-05-02")) == [2]
    one_ns_late = str(int(stamps[1].timestamp()) * 1_000_000_000 + 1)
    assert ids(cli_json(capsys, *base, "--created-after", one_ns_late)) == [2]


# -- memories -----------------------------------------------------------------------------


EXPECTED_MEMORY_5 = {
    "id": 5,
    "content": "memory 5 rewritten",
    "tags": ["z"],
    "source": "src9",
    "pinned": True,
    "created_ns": 105,
    "updated_ns": 500,
}


def test_memories_json(capsys: pytest.CaptureFixture[str], ours_dir: Path) -> None:
    before = tree_digest(ours_dir)
    doc = cli_json(capsys, "cortex", "memories", "list", "--dir", ours_dir)
    assert ids(doc) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    assert doc[4] == EXPECTED_MEMORY_5
    assert doc[0] == {
        "id": 1,
        "content": "memory 1 Sky",
        "tags": ["a"],
        "source": "src1",
        "pinned": False,
        "created_ns": 101,
        "updated_ns": 101,
    }
    assert doc[3]["tags"] == ["c", "A"]
    assert [r["pinned"] for r in doc[:5]] == [False, True, False, False, True]
    assert tree_digest(ours_dir) == before


def test_memories_text(capsys: pytest.CaptureFixture[str], ours_dir: Path) -> None:
    status, out, err = run_cli(
        capsys, "cortex", "memories", "list", "--dir", ours_dir, "--source", "src0"
    )
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "PINNED",
        "SOURCE",
        "TAGS",
        "CREATED",
        "UPDATED",
        "CONTENT",
    ]
    assert lines[-1] == "3 of 11 memories"
    assert [line.split()[:4] for line in lines[1:-1]] == [
        ["3", "no", "src0", "-"],
        ["9", "no", "src0", "a"],
        ["12", "no", "src0", "a,b"],
    ]
    content = lines[0].index("CONTENT")
    assert [line[content:] for line in lines[1:-1]] == [
        "memory 3 Sky",
        "memory 9 Sky",
        "memory 12 sea",
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--source", "src1"], [1, 4, 7, 10]),
        (["--content-contains", "SKY"], [1, 3, 7, 9, 11]),
        (["--tag", "a"], [1, 8, 9, 12]),
        (["--tag", "A"], [4]),
        (["--any-tag", "c", "--any-tag", "z"], [2, 4, 5, 10]),
        (["--all-tags", "a", "--all-tags", "b"], [8, 12]),
        (["--pinned"], [2, 5]),
        (["--unpinned", "--limit", "3"], [1, 3, 4]),
        (["--created-after", "110"], [10, 11, 12]),
        (["--updated-after", "300", "--updated-before", "400"], [3, 4]),
        (["--order-by", "updated_desc", "--limit", "3"], [5, 4, 3]),
        (["--order-by", "created_asc", "--content-contains", "sea", "--limit", "2"], [2, 4]),
    ],
)
def test_memories_filters(
    capsys: pytest.CaptureFixture[str], ours_dir: Path, options: list[str], expected: list[int]
) -> None:
    doc = cli_json(capsys, "cortex", "memories", "list", "--dir", ours_dir, *options)
    assert ids(doc) == expected


# -- fold problems and errors -------------------------------------------------------------


def test_skipped_events_are_reported_on_stderr_in_both_modes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = pack("usu", 1, "kept", 10)
    damaged = bytearray(seal(DISPATCH_TASK_CREATED, ORIGIN, 1, pack("usu", 2, "lost", 20)))
    damaged[-1] ^= 0xFF  # breaks the checksum
    with Redex(tmp_path) as redex:
        file = redex.open_file(TASKS_CHANNEL, persistent=True)
        file.append(seal(DISPATCH_TASK_CREATED, ORIGIN, 0, good))
        file.append(bytes(damaged))
        file.append(b"junk")  # shorter than the 24-byte header
        file.append(seal(DISPATCH_TASK_CREATED, ORIGIN, 2, pack("usu", 3, "also kept", 30)))
    status, out, err = run_cli(capsys, "cortex", "tasks", "list", "--dir", tmp_path, "--json")
    assert status == 0
    assert ids(json.loads(out)) == [1, 3]
    assert "net: warning: cortex/tasks: 2 event(s) could not be folded and were skipped" in err
    status, out, err = run_cli(capsys, "cortex", "tasks", "list", "--dir", tmp_path)
    assert status == 0
    assert out.splitlines()[-1] == "2 of 2 tasks"
    assert "2 event(s) could not be folded" in err


def test_a_clean_fold_prints_nothing_on_stderr(
    capsys: pytest.CaptureFixture[str], ours_dir: Path
) -> None:
    status, _, err = run_cli(capsys, "cortex", "memories", "list", "--dir", ours_dir, "--json")
    assert status == 0
    assert err == ""


def test_missing_directory_and_channel_are_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    status, out, err = run_cli(capsys, "cortex", "tasks", "list", "--dir", missing)
    assert (status, out) == (1, "")
    assert err == f"net: error: no such directory: {missing}\n"
    status, out, err = run_cli(capsys, "cortex", "tasks", "list", "--dir", missing, "--json")
    assert status == 1
    assert json.loads(out) == {
        "error": {"type": "ChannelNotFoundError", "message": f"no such directory: {missing}"}
    }
    assert not missing.exists()
    # A directory with tasks only has no memories channel.
    with Redex(tmp_path) as redex:
        redex.open_file(TASKS_CHANNEL, persistent=True).append(
            seal(DISPATCH_TASK_CREATED, ORIGIN, 0, pack("usu", 1, "x", 1))
        )
    before = tree_digest(tmp_path)
    status, out, _ = run_cli(capsys, "cortex", "memories", "list", "--dir", tmp_path, "--json")
    assert status == 1
    assert json.loads(out)["error"] == {
        "type": "ChannelNotFoundError",
        "message": f"no channel {MEMORIES_CHANNEL!r} under {tmp_path}",
    }
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--status", "done"], "invalid choice: 'done'"),
        (["--limit", "-1"], "must be >= 0"),
        (["--order-by", "title_asc"], "invalid choice: 'title_asc'"),
        (["--created-after", "yesterday"], "not a timestamp: 'yesterday'"),
        (["--created-after", "-5"], "out of range"),
        (["--updated-before", str(2**64)], "out of range"),
        (["--id", "x"], "not an integer"),
    ],
)
def test_bad_task_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], ours_dir: Path, options: list[str], complaint: str
) -> None:
    err = usage_error(capsys, "cortex", "tasks", "list", "--dir", ours_dir, *options)
    assert complaint in err


def test_bad_memory_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], ours_dir: Path
) -> None:
    err = usage_error(
        capsys, "cortex", "memories", "list", "--dir", ours_dir, "--pinned", "--unpinned"
    )
    assert "not allowed with argument" in err
    assert "required: --dir" in usage_error(capsys, "cortex", "memories", "list")
    assert "invalid choice" in usage_error(capsys, "cortex", "notes", "list", "--dir", ours_dir)


# -- read-only on a live directory --------------------------------------------------------


@pytest.mark.anyio
async def test_listing_while_our_writer_keeps_appending(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def listing() -> list[dict[str, Any]]:
        return cli_json(capsys, "cortex", "tasks", "list", "--dir", tmp_path)

    with Redex(tmp_path) as redex:
        async with TasksAdapter.open(redex, ORIGIN, persistent=True) as tasks:
            for i in range(5):
                seq = tasks.create(i, f"t{i}", i)
            await tasks.wait_for_seq(seq)
            before = tree_digest(tmp_path)
            assert ids(await anyio.to_thread.run_sync(listing)) == [0, 1, 2, 3, 4]
            assert tree_digest(tmp_path) == before
            tasks.complete(2, 50)
            await tasks.wait_for_seq(tasks.delete(0))
            seen = await anyio.to_thread.run_sync(listing)
            assert ids(seen) == [1, 2, 3, 4]
            assert seen[1]["status"] == "completed"
            # The writer goes on after the reader has gone: nothing was held or changed.
            await tasks.wait_for_seq(tasks.create(9, "after", 90))
        assert tasks.count() == 5


# -- the reference as writer and oracle ---------------------------------------------------


@pytest.fixture
def ref() -> Any:
    return pytest.importorskip(
        "net", reason="the reference implementation (ai2070-net, a dev dependency) is missing"
    )


@contextmanager
def reference_writer(ref: Any, base: Path) -> Iterator[tuple[Any, Any]]:
    """The reference's adapters on ``base``, holding the fixed histories; stays open (a
    live writer) for the block, then closes the channels."""
    redex = ref.Redex(persistent_dir=str(base))
    tasks = ref.TasksAdapter.open(redex, ORIGIN, persistent=True)
    memories = ref.MemoriesAdapter.open(redex, ORIGIN, persistent=True)
    try:
        tasks.wait_for_seq(write_tasks(tasks))
        memories.wait_for_seq(write_memories(memories))
        yield tasks, memories
    finally:
        tasks.close()
        memories.close()
        for channel in (TASKS_CHANNEL, MEMORIES_CHANNEL):
            redex.open_file(channel, persistent=True).close()


def ref_task(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "status": t.status,
        "created_ns": t.created_ns,
        "updated_ns": t.updated_ns,
    }


def ref_memory(m: Any) -> dict[str, Any]:
    return {
        "id": m.id,
        "content": m.content,
        "tags": list(m.tags),
        "source": m.source,
        "pinned": m.pinned,
        "created_ns": m.created_ns,
        "updated_ns": m.updated_ns,
    }


#: (CLI options, the same query as reference keyword arguments); always ordered, since
#: the reference's unordered listing is in hash-map order.
TASK_QUERIES: list[tuple[list[str], dict[str, Any]]] = [
    ([], {}),
    (["--status", "pending"], {"status": "pending"}),
    (["--status", "completed"], {"status": "completed"}),
    (["--title-contains", "alpha"], {"title_contains": "alpha"}),
    (
        ["--created-after", "1050", "--created-before", "1150"],
        {"created_after_ns": 1050, "created_before_ns": 1150},
    ),
    (
        ["--updated-after", "2004", "--updated-before", "4000"],
        {"updated_after_ns": 2004, "updated_before_ns": 4000},
    ),
    (["--order-by", "created_desc", "--limit", "5"], {"order_by": "created_desc", "limit": 5}),
    (["--order-by", "updated_desc"], {"order_by": "updated_desc"}),
]

MEMORY_QUERIES: list[tuple[list[str], dict[str, Any]]] = [
    ([], {}),
    (["--source", "src2"], {"source": "src2"}),
    (["--content-contains", "sea"], {"content_contains": "sea"}),
    (["--tag", "b"], {"tag": "b"}),
    (["--any-tag", "A", "--any-tag", "z"], {"any_tag": ["A", "z"]}),
    (["--all-tags", "b", "--all-tags", "c"], {"all_tags": ["b", "c"]}),
    (["--pinned"], {"pinned": True}),
    (["--unpinned"], {"pinned": False}),
    (
        ["--created-after", "104", "--updated-before", "111"],
        {"created_after_ns": 104, "updated_before_ns": 111},
    ),
    (["--order-by", "updated_desc", "--limit", "4"], {"order_by": "updated_desc", "limit": 4}),
]


def check_against_reference(
    capsys: pytest.CaptureFixture[str], base: Path, tasks: Any, memories: Any
) -> None:
    for options, query in TASK_QUERIES:
        expected = [ref_task(t) for t in tasks.list_tasks(**{"order_by": "id_asc", **query})]
        got = cli_json(capsys, "cortex", "tasks", "list", "--dir", base, *options)
        assert got == expected, options
    for options, query in MEMORY_QUERIES:
        found = memories.list_memories(**{"order_by": "id_asc", **query})
        got = cli_json(capsys, "cortex", "memories", "list", "--dir", base, *options)
        assert got == [ref_memory(m) for m in found], options


@pytest.mark.oracle
def test_reference_written_directory_matches_the_references_queries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ref: Any
) -> None:
    with reference_writer(ref, tmp_path) as (tasks, memories):
        # The reference's adapters are still open: the CLI reads a live directory.
        before = tree_digest(tmp_path)
        check_against_reference(capsys, tmp_path, tasks, memories)
        assert tree_digest(tmp_path) == before
        assert cli_json(capsys, "cortex", "tasks", "list", "--dir", tmp_path) == EXPECTED_TASKS
        # More appends by the live writer show up in the next listing.
        tasks.wait_for_seq(tasks.create(50, "late", 9_000))
        assert ids(cli_json(capsys, "cortex", "tasks", "list", "--dir", tmp_path))[-1] == 50


@pytest.mark.oracle
def test_our_directory_matches_the_references_queries(
    capsys: pytest.CaptureFixture[str], ours_dir: Path, ref: Any
) -> None:
    redex = ref.Redex(persistent_dir=str(ours_dir))
    tasks = ref.TasksAdapter.open(redex, ORIGIN + 1, persistent=True)
    memories = ref.MemoriesAdapter.open(redex, ORIGIN + 1, persistent=True)
    try:
        assert tasks.count() == len(EXPECTED_TASKS)
        check_against_reference(capsys, ours_dir, tasks, memories)
    finally:
        tasks.close()
        memories.close()
        for channel in (TASKS_CHANNEL, MEMORIES_CHANNEL):
            redex.open_file(channel, persistent=True).close()


@pytest.mark.oracle
def test_console_script_on_a_reference_directory(tmp_path: Path, ref: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_CORE_")}

    def net(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NET), "cortex", *args, "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    with reference_writer(ref, tmp_path):
        done = net("tasks", "list", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == EXPECTED_TASKS
        done = net("memories", "list", "--pinned")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        lines = done.stdout.splitlines()
        assert lines[0].split()[:2] == ["ID", "PINNED"]
        assert [line.split()[:3] for line in lines[1:-1]] == [
            ["2", "yes", "src2"],
            ["5", "yes", "src9"],
        ]
        assert lines[-1] == "2 of 11 memories"
