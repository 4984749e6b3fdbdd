"""API semantics of RedEX files and the manager, on heap-only and persistent files."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from net_core.errors import ClosedError, ConfigError, RedexError
from net_core.redex import (
    ChannelNameError,
    PoisonedError,
    Redex,
    RedexClosedError,
    RedexConfigConflictError,
    RedexEvent,
    RedexFile,
    RedexIOError,
    SeqOutOfRangeError,
    entry_checksum,
)
from net_core.redex._format import generation_dir_name
from net_core.redex._ops import FileOps

OpenFn = Callable[..., RedexFile]

NS_PER_MS = 1_000_000


@pytest.fixture
def redex(tmp_path: Path) -> Iterator[Redex]:
    manager = Redex(tmp_path)
    yield manager
    manager.close()


@pytest.fixture(params=["heap", "persistent"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_file(redex: Redex, kind: str) -> OpenFn:
    """Open a file of the parametrized kind on the shared manager."""

    def _open(name: str = "test/file", **options: Any) -> RedexFile:
        return redex.open_file(name, persistent=kind == "persistent", **options)

    return _open


def seqs_of(events: list[RedexEvent]) -> list[int]:
    return [e.seq for e in events]


def pairs(events: list[RedexEvent]) -> list[tuple[int, bytes]]:
    return [(e.seq, e.payload) for e in events]


def reopen(redex: Redex, name: str, **options: Any) -> RedexFile:
    """Close the open handle of ``name`` and open it again from disk."""
    redex.close_file(name)
    return redex.open_file(name, persistent=True, **options)


# -- appends ---------------------------------------------------------------------------


def test_append_returns_consecutive_seqs(open_file: OpenFn) -> None:
    f = open_file()
    assert [f.append(b"p%d" % i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert f.append_inline(b"12345678") == 5
    assert f.append(b"") == 6
    assert f.next_seq == 7
    assert pairs(f.read_range(0, 7)) == [
        (0, b"p0"),
        (1, b"p1"),
        (2, b"p2"),
        (3, b"p3"),
        (4, b"p4"),
        (5, b"12345678"),
        (6, b""),
    ]


def test_append_batch_is_contiguous_with_one_timestamp(open_file: OpenFn) -> None:
    f = open_file()
    f.append(b"before")
    first = f.append_batch([b"a", b"", b"ccc", b"d" * 100])
    assert first == 1
    assert f.append_batch([b"x"]) == 5
    assert f.next_seq == 6
    batch = f.read_range(1, 5)
    assert pairs(batch) == [(1, b"a"), (2, b""), (3, b"ccc"), (4, b"d" * 100)]
    assert len({e.ts for e in batch}) == 1
    assert all(not e.is_inline for e in batch)


def test_append_batch_accepts_any_iterable(open_file: OpenFn) -> None:
    f = open_file()
    assert f.append_batch(b"%d" % i for i in range(3)) == 0
    assert f.append_batch((b"t",)) == 3
    assert pairs(f.read_range(0, 10)) == [(0, b"0"), (1, b"1"), (2, b"2"), (3, b"t")]


def test_empty_batch_returns_none_and_writes_nothing(
    open_file: OpenFn, redex: Redex, kind: str
) -> None:
    f = open_file()
    assert f.append_batch([]) is None
    assert f.append_batch(iter(())) is None
    assert f.next_seq == 0
    assert len(f) == 0
    f.append(b"one")
    assert f.append_batch([]) is None
    assert f.len_and_next_seq() == (1, 1)
    if kind == "persistent":
        gen = redex.channel_dir("test/file") / generation_dir_name(f.generation or 0)
        assert (gen / "idx").stat().st_size == 20
        assert (gen / "ts").stat().st_size == 8
        assert (gen / "dat").stat().st_size == 3


def test_accepts_bytes_like_payloads_and_copies_them(open_file: OpenFn) -> None:
    f = open_file()
    buf = bytearray(b"mutable")
    assert f.append(buf) == 0
    buf[:] = b"CHANGED"
    big = bytearray(b"0123456789")
    assert f.append(memoryview(big)[2:5]) == 1
    big[2:5] = b"***"
    assert f.append_batch([bytearray(b"ba"), memoryview(b"mv"), b"by"]) == 2
    inline_src = bytearray(b"inline!!")
    assert f.append_inline(memoryview(inline_src)) == 5
    inline_src[0:1] = b"X"
    events = f.read_range(0, 10)
    assert pairs(events) == [
        (0, b"mutable"),
        (1, b"234"),
        (2, b"ba"),
        (3, b"mv"),
        (4, b"by"),
        (5, b"inline!!"),
    ]
    assert all(type(e.payload) is bytes for e in events)


@pytest.mark.parametrize(
    "call",
    [
        lambda f: f.append("text"),
        lambda f: f.append(42),
        lambda f: f.append(None),
        lambda f: f.append_batch(["text"]),
        lambda f: f.append_batch([b"ok", "bad", b"ok"]),
        lambda f: f.append_inline("12345678"),
    ],
    ids=["append-str", "append-int", "append-none", "batch-str", "batch-mixed", "inline-str"],
)
def test_rejects_non_bytes_with_type_error(open_file: OpenFn, call: Callable[[Any], Any]) -> None:
    f = open_file()
    with pytest.raises(TypeError):
        call(f)
    assert f.next_seq == 0
    assert len(f) == 0
    assert f.append(b"after") == 0


def test_append_inline_needs_exactly_8_bytes(open_file: OpenFn) -> None:
    f = open_file()
    for bad in (b"", b"1234567", b"123456789"):
        with pytest.raises(ValueError, match="exactly 8 bytes"):
            f.append_inline(bad)
    assert f.next_seq == 0
    assert f.append_inline(b"\x00" * 8) == 0
    assert f.read_one(0).is_inline


# -- reads -----------------------------------------------------------------------------


def test_read_range_is_half_open(open_file: OpenFn) -> None:
    f = open_file()
    f.append_batch([b"%d" % i for i in range(10)])
    assert seqs_of(f.read_range(0, 10)) == list(range(10))
    assert seqs_of(f.read_range(3, 7)) == [3, 4, 5, 6]
    assert seqs_of(f.read_range(9, 10)) == [9]
    assert seqs_of(f.read_range(8, 100)) == [8, 9]
    assert seqs_of(f.read_range(0, 2**64 - 1)) == list(range(10))
    assert f.read_range(10, 20) == []
    assert f.read_range(5, 5) == []
    assert f.read_range(7, 3) == []
    assert f.read_range(0, 0) == []
    assert [e.payload for e in f.read_range(4, 6)] == [b"4", b"5"]


def test_read_one_and_out_of_range(open_file: OpenFn) -> None:
    f = open_file()
    with pytest.raises(SeqOutOfRangeError) as empty:
        f.read_one(0)
    assert str(empty.value) == "sequence 0 is outside the retained range [0, 0)"
    f.append(b"zero")
    f.append_inline(b"abcdefgh")
    f.append(b"two")
    one = f.read_one(1)
    assert (one.seq, one.payload, one.is_inline) == (1, b"abcdefgh", True)
    assert one.checksum == entry_checksum(b"abcdefgh")
    assert f.read_one(2).payload == b"two"
    with pytest.raises(SeqOutOfRangeError) as exc:
        f.read_one(3)
    assert (exc.value.seq, exc.value.lo, exc.value.hi) == (3, 0, 3)
    assert str(exc.value) == "sequence 3 is outside the retained range [0, 3)"
    assert isinstance(exc.value, LookupError)
    assert isinstance(exc.value, RedexError)


def test_counters(open_file: OpenFn) -> None:
    f = open_file()
    assert (len(f), f.next_seq, f.lowest_retained_seq, f.retained_bytes) == (0, 0, None, 0)
    assert f.len_and_next_seq() == (0, 0)
    f.append(b"abc")
    f.append_batch([b"", b"12345"])
    f.append_inline(b"8bytes!!")
    assert len(f) == 4
    assert f.next_seq == 4
    assert f.lowest_retained_seq == 0
    assert f.retained_bytes == 3 + 0 + 5 + 8
    assert f.len_and_next_seq() == (4, 4)


def test_events_carry_checksum_and_timestamp(open_file: OpenFn) -> None:
    f = open_file()
    before = time.time_ns()
    f.append(b"hello")
    after = time.time_ns()
    (event,) = f.read_range(0, 1)
    assert event.checksum == 0x0C62DCFD  # the reference's value for b"hello"
    assert before <= event.ts <= after
    assert repr(event) == (
        "RedexEvent(seq=0, payload=<5 bytes>, checksum=0x0c62dcfd, is_inline=false)"
    )


def test_iterating_a_file_snapshots_it(open_file: OpenFn) -> None:
    f = open_file()
    f.append_batch([b"a", b"b"])
    it = iter(f)
    f.append(b"c")
    assert [e.payload for e in it] == [b"a", b"b"]


# -- close -----------------------------------------------------------------------------


def test_close_is_idempotent_and_reads_still_work(open_file: OpenFn) -> None:
    f = open_file()
    f.append_batch([b"a", b"b"])
    f.append_inline(b"inline!!")
    f.close()
    f.close()
    assert f.closed
    with pytest.raises(RedexClosedError) as exc:
        f.append(b"x")
    assert str(exc.value) == "append: file closed"
    assert isinstance(exc.value, ClosedError)
    with pytest.raises(RedexClosedError, match="file closed"):
        f.append_batch([b"x"])
    with pytest.raises(RedexClosedError, match="file closed"):
        f.append_inline(b"12345678")
    with pytest.raises(RedexClosedError), f.ordered() as app:
        app.append(b"x")
    assert pairs(f.read_range(0, 10)) == [(0, b"a"), (1, b"b"), (2, b"inline!!")]
    assert f.read_one(1).payload == b"b"
    assert len(f) == 3
    assert f.next_seq == 3
    assert f.len_and_next_seq() == (3, 3)
    assert f.lowest_retained_seq == 0
    f.sync()  # a no-op after close, never an error
    assert "closed" in repr(f)


def test_file_is_a_context_manager(open_file: OpenFn) -> None:
    with open_file() as f:
        f.append(b"x")
    assert f.closed


def test_repr_does_not_block_while_the_lock_is_held(open_file: OpenFn) -> None:
    """The reference's "Debug deadlock footgun": a repr must never take the state lock."""
    f = open_file()
    f.append(b"x")
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with f._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(5)
        result: list[str] = []
        worker = threading.Thread(target=lambda: result.append(repr(f)), daemon=True)
        worker.start()
        worker.join(2)
        assert not worker.is_alive(), "repr blocked on the file lock"
        assert result == [
            f"RedexFile('test/file', {'persistent' if f.persistent else 'heap'}, open, "
            "next_seq=1, len=1)"
        ]
    finally:
        release.set()
        holder.join(5)


class _GatedFailure(FileOps):
    """Blocks the next write until released, then fails it (ENOSPC)."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_all(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(10)
            raise OSError(28, "No space left on device")
        super().write_all(fd, data)


def test_next_seq_never_shows_a_rolled_back_allocation(tmp_path: Path) -> None:
    ops = _GatedFailure()
    manager = Redex(tmp_path, ops=ops)
    f = manager.open_file("gated", persistent=True)
    f.append(b"zero")
    errors: list[RedexIOError] = []

    def failing_append() -> None:
        try:
            f.append(b"doomed")
        except RedexIOError as exc:
            errors.append(exc)

    ops.armed = True
    appender = threading.Thread(target=failing_append)
    appender.start()
    try:
        assert ops.entered.wait(5)
        observed: list[Any] = []
        observer = threading.Thread(
            target=lambda: observed.extend([f.next_seq, f.len_and_next_seq(), repr(f)])
        )
        observer.start()
        # While the doomed write is in flight, the lock-free repr shows the old state.
        assert "next_seq=1" in repr(f)
        time.sleep(0.05)
    finally:
        ops.release.set()
        appender.join(5)
    observer.join(5)
    assert len(errors) == 1
    assert observed == [1, (1, 1), "RedexFile('gated', persistent, open, next_seq=1, len=1)"]
    assert f.next_seq == 1
    assert f.append(b"one") == 1  # the failed allocation was not burnt
    manager.close()
    again = Redex(tmp_path).open_file("gated", persistent=True)
    assert pairs(again.read_range(0, 10)) == [(0, b"zero"), (1, b"one")]
    again.close()


# -- ordered appender & concurrency ----------------------------------------------------


def test_ordered_appender_blocks_are_contiguous(open_file: OpenFn) -> None:
    f = open_file()
    blocks: list[tuple[int, int, list[int]]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker(tid: int) -> None:
        start.wait()
        for block in range(40):
            with f.ordered() as app:
                got = [app.append(b"t%d-b%d-0" % (tid, block))]
                first = app.append_batch([b"t%d-b%d-%d" % (tid, block, i) for i in (1, 2, 3)])
                assert first is not None
                got.extend([first, first + 1, first + 2])
                assert app.append_batch([]) is None
                got.append(app.append_inline(b"%02d-%05d" % (tid, block)))
            with lock:
                blocks.append((tid, block, got))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(blocks) == 160
    for tid, block, got in blocks:
        assert got == list(range(got[0], got[0] + 5)), (tid, block, got)
        events = f.read_range(got[0], got[0] + 5)
        assert [e.payload for e in events[:4]] == [
            b"t%d-b%d-%d" % (tid, block, i) for i in range(4)
        ]
        assert events[4].is_inline
        assert events[4].payload == b"%02d-%05d" % (tid, block)
    assert f.next_seq == 800
    assert sorted(s for _, _, got in blocks for s in got) == list(range(800))


def test_ordered_appender_needs_a_with_block(open_file: OpenFn) -> None:
    f = open_file()
    app = f.ordered()
    with pytest.raises(RuntimeError, match="with"):
        app.append(b"x")
    with app:
        assert app.append(b"x") == 0
    with pytest.raises(RuntimeError):
        app.append_batch([b"y"])
    assert f.next_seq == 1


def test_concurrent_appends_get_every_seq_exactly_once(open_file: OpenFn) -> None:
    f = open_file()
    per_thread = 10_000
    results: dict[int, list[int]] = {}
    start = threading.Barrier(8)

    def worker(tid: int) -> None:
        prefix = b"%d:" % tid
        start.wait()
        results[tid] = [f.append(prefix + b"%d" % i) for i in range(per_thread)]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    all_seqs = sorted(s for seqs in results.values() for s in seqs)
    assert all_seqs == list(range(8 * per_thread))
    assert f.len_and_next_seq() == (8 * per_thread, 8 * per_thread)
    events = f.read_range(0, 8 * per_thread)
    by_seq = {e.seq: e.payload for e in events}
    for tid, seqs in results.items():
        assert seqs == sorted(seqs)  # one thread's appends are ordered
        assert [by_seq[s] for s in seqs] == [b"%d:%d" % (tid, i) for i in range(per_thread)]


# -- manager ---------------------------------------------------------------------------


def test_same_name_returns_the_same_handle(redex: Redex) -> None:
    a = redex.open_file("chan/a")
    assert redex.open_file("chan/a") is a
    assert redex.open_file("chan/a", {}) is a
    assert redex.get_file("chan/a") is a
    p = redex.open_file("chan/p", persistent=True, retention={"count": {"max_events": 5}})
    assert (
        redex.open_file("chan/p", {"persistent": True, "retention": {"count": {"max_events": 5}}})
        is p
    )
    assert redex.open_files() == ["chan/a", "chan/p"]


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"persistent": True}, "persistent"),
        ({"tail_buffer_size": 8}, "tail_buffer_size"),
        ({"retention": {"count": {"max_events": 3}}}, "retention"),
        ({"retention_check_every": 7}, "retention_check_every"),
    ],
)
def test_different_config_conflicts_naming_the_field(
    redex: Redex, second: dict[str, Any], field: str
) -> None:
    f = redex.open_file("conflict")
    with pytest.raises(RedexConfigConflictError) as exc:
        redex.open_file("conflict", **second)
    text = str(exc.value)
    assert f"{field}: open with" in text
    assert "'conflict'" in text
    assert isinstance(exc.value, RedexError)
    assert isinstance(exc.value, ConfigError)
    assert redex.get_file("conflict") is f
    assert not f.closed


def test_concurrent_first_opens_build_one_file(redex: Redex) -> None:
    handles: list[RedexFile] = []
    start = threading.Barrier(8)

    def opener() -> None:
        start.wait()
        handles.append(redex.open_file("race/open", persistent=True))

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(handles) == 8
    assert all(h is handles[0] for h in handles)


@pytest.mark.parametrize(
    "options",
    [
        {"fsync_every_n": 0},
        {"fsync_every_n": 2, "fsync_interval_ms": 10},
        {"retention_check_every": -1},
        {"tail_buffer_size": 0},
        {"no_such_option": 1},
    ],
)
def test_invalid_options_are_config_errors(redex: Redex, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        redex.open_file("bad/options", **options)
    assert redex.open_files() == []


def test_persistent_without_base_dir_is_an_error() -> None:
    manager = Redex()
    with pytest.raises(RedexError, match="persistent=true requires") as exc:
        manager.open_file("x", persistent=True)
    assert str(exc.value).startswith("open_file: channel error:")
    assert manager.open_files() == []
    assert manager.open_file("x").persistent is False


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("", "channel name is empty"),
        ("a" * 256, "channel name too long (256 > 255)"),
        ("é" * 128, "channel name too long (256 > 255)"),
        ("/a", "invalid channel name format: must not start or end with '/'"),
        ("a/", "invalid channel name format: must not start or end with '/'"),
        ("a//b", "invalid channel name format: must not contain '//'"),
        ("a b", "invalid character ' ' in channel name"),
        ("a\\b", "invalid character '\\' in channel name"),
        ("é", "invalid character 'é' in channel name"),
        ("a/./b", 'invalid channel name format: segment "." is reserved'),
        ("a/../b", 'invalid channel name format: segment ".." is reserved'),
        ("..", 'invalid channel name format: segment ".." is reserved'),
    ],
)
def test_invalid_channel_names(redex: Redex, name: str, text: str) -> None:
    with pytest.raises(ChannelNameError) as exc:
        redex.open_file(name)
    assert str(exc.value) == text
    assert isinstance(exc.value, RedexError)
    assert redex.open_files() == []


def test_valid_channel_names(redex: Redex) -> None:
    for name in ("a", "a" * 255, "A-z_0.9/x", "a/b/c/d", "...", "a/.hidden"):
        assert redex.open_file(name).name == name


def test_closed_file_is_forgotten_and_reopens_from_disk(redex: Redex) -> None:
    f = redex.open_file("forget/me", persistent=True)
    f.append_batch([b"a", b"b"])
    f.append_inline(b"inline!!")
    f.close()
    assert redex.get_file("forget/me") is None
    assert "forget/me" not in redex.open_files()
    g = redex.open_file("forget/me", persistent=True)
    assert g is not f
    assert pairs(g.read_range(0, 10)) == [(0, b"a"), (1, b"b"), (2, b"inline!!")]
    assert g.read_one(2).is_inline
    assert g.append(b"c") == 3
    # A heap file re-opened after close starts empty.
    h = redex.open_file("heap/one")
    h.append(b"x")
    h.close()
    assert len(redex.open_file("heap/one")) == 0


def test_redex_close_closes_every_file(tmp_path: Path) -> None:
    manager = Redex(tmp_path)
    files = [manager.open_file("h"), manager.open_file("p/1", persistent=True)]
    tail = files[0].tail(0)
    manager.close()
    manager.close()
    assert all(f.closed for f in files)
    assert manager.open_files() == []
    assert tail._sub.state == 3  # CLOSED
    with pytest.raises(RedexClosedError):
        manager.open_file("h")
    with Redex(tmp_path) as second:
        assert second.open_file("p/1", persistent=True).next_seq == 0


def test_two_managers_on_one_directory(tmp_path: Path) -> None:
    first = Redex(tmp_path)
    f = first.open_file("shared/chan", persistent=True)
    f.append(b"one")
    second = Redex(tmp_path)
    with pytest.raises(RedexIOError, match="open in another process or manager"):
        second.open_file("shared/chan", persistent=True)
    assert second.open_files() == []
    # Other channels under the same base are independent.
    other = second.open_file("shared/other", persistent=True)
    other.append(b"x")
    f.close()
    g = second.open_file("shared/chan", persistent=True)
    assert pairs(g.read_range(0, 5)) == [(0, b"one")]
    first.close()
    second.close()


def test_dot_lock_child_channel_does_not_break_its_parent(tmp_path: Path) -> None:
    """Regression: the advisory lock once lived in a ``<channel>/.lock`` file, which
    collided with the valid child channel ``<channel>/.lock``."""
    with Redex(tmp_path) as manager:
        child = manager.open_file("b/.lock", persistent=True)
        child.append(b"x")
        child.close()
        parent = manager.open_file("b", persistent=True)
        assert parent.append(b"y") == 0
        assert manager.open_file("b/.lock", persistent=True).read_one(0).payload == b"x"


def test_channel_directory_holds_only_the_reference_layout(tmp_path: Path) -> None:
    with Redex(tmp_path) as manager:
        f = manager.open_file("layout", persistent=True)
        f.append(b"x")
        assert sorted(p.name for p in (tmp_path / "layout").iterdir()) == [
            "manifest",
            "v0000000001",
        ]


def test_channels_are_directories(tmp_path: Path) -> None:
    with Redex(tmp_path) as manager:
        f = manager.open_file("x/y/z", persistent=True)
        assert manager.channel_dir("x/y/z") == tmp_path / "x" / "y" / "z"
        assert f.generation == 1
        gen = tmp_path / "x" / "y" / "z" / "v0000000001"
        assert sorted(p.name for p in gen.iterdir()) == ["dat", "idx", "ts"]
        assert (tmp_path / "x" / "y" / "z" / "manifest").stat().st_size == 16


# -- retention -------------------------------------------------------------------------


def test_count_retention(open_file: OpenFn, redex: Redex, kind: str) -> None:
    f = open_file(retention={"count": {"max_events": 3}}, retention_check_every=0)
    f.append_batch([b"e%d" % i for i in range(10)])
    assert len(f) == 10  # check_every=0: only explicit sweeps
    assert f.sweep_retention() == 7
    assert f.sweep_retention() == 0
    assert seqs_of(f.read_range(0, 100)) == [7, 8, 9]
    assert seqs_of(f.read_range(0, 8)) == [7]
    assert f.lowest_retained_seq == 7
    assert f.next_seq == 10
    assert f.retained_bytes == 6
    with pytest.raises(SeqOutOfRangeError) as exc:
        f.read_one(3)
    assert (exc.value.lo, exc.value.hi) == (7, 10)
    assert f.append(b"e10") == 10
    assert f.evicted == 7
    if kind == "persistent":
        assert f.generation == 2
        g = reopen(
            redex, "test/file", retention={"count": {"max_events": 3}}, retention_check_every=0
        )
        assert pairs(g.read_range(0, 100)) == [(7, b"e7"), (8, b"e8"), (9, b"e9"), (10, b"e10")]
        assert g.lowest_retained_seq == 7
        assert g.next_seq == 11


def test_bytes_retention(open_file: OpenFn) -> None:
    # Each heap entry accounts 20 + payload bytes, an inline entry 20.
    f = open_file(retention={"bytes": {"max_bytes": 3 * 30 + 20}}, retention_check_every=0)
    f.append_batch([b"0123456789"] * 5)
    f.append_inline(b"inline!!")
    assert f.sweep_retention() == 2
    assert seqs_of(f.read_range(0, 100)) == [2, 3, 4, 5]
    assert f.retained_bytes == 3 * 10 + 8
    f.append(b"x" * 200)  # alone larger than the limit: evicted with everything older
    assert f.sweep_retention() == 5
    assert len(f) == 0
    assert f.lowest_retained_seq is None
    assert f.next_seq == 7
    assert f.append(b"y") == 7
    assert f.lowest_retained_seq == 7


def test_age_retention_keeps_the_entry_exactly_at_the_cutoff(open_file: OpenFn) -> None:
    max_age_ms = 1_000
    f = open_file(retention={"age": {"max_age_ms": max_age_ms}}, retention_check_every=0)
    f.append(b"old")
    f.append_batch([b"b1", b"b2"])
    f.append(b"new")
    ts = [e.ts for e in f.read_range(0, 4)]
    age = max_age_ms * NS_PER_MS
    assert f.sweep_retention(now_ns=ts[0] + age) == 0  # ts == cutoff: kept
    assert len(f) == 4
    assert f.sweep_retention(now_ns=ts[0] + age + 1) == 1
    assert seqs_of(f.read_range(0, 10)) == [1, 2, 3]
    # The batch shares one timestamp: both entries go together.
    assert f.sweep_retention(now_ns=ts[1] + age + 1) == 2
    assert seqs_of(f.read_range(0, 10)) == [3]
    assert f.sweep_retention() == 0  # real clock: "new" is far younger than 1 s


def test_age_retention_survives_reopen(redex: Redex) -> None:
    opts: dict[str, Any] = {
        "persistent": True,
        "retention": {"age": {"max_age_ms": 50}},
        "retention_check_every": 0,
    }
    f = redex.open_file("aged", **opts)
    f.append(b"a")
    stamp = f.read_one(0).ts
    f.close()
    g = redex.open_file("aged", **opts)
    assert g.read_one(0).ts == stamp
    assert g.sweep_retention(now_ns=stamp + 50 * NS_PER_MS) == 0
    assert g.sweep_retention(now_ns=stamp + 50 * NS_PER_MS + 1) == 1


def test_retention_policies_combine_largest_eviction_wins(open_file: OpenFn) -> None:
    f = open_file(
        retention={"count": {"max_events": 8}, "bytes": {"max_bytes": 5 * 21}},
        retention_check_every=0,
    )
    f.append_batch([b"z"] * 10)
    assert f.sweep_retention() == 5
    assert len(f) == 5


def test_plugin_retention_policy(open_file: OpenFn) -> None:
    pytest.importorskip("net_retention_extras")
    f = open_file(retention={"count_watermark": {"high": 10, "low": 4}}, retention_check_every=0)
    f.append_batch([b"w"] * 10)
    assert f.sweep_retention() == 0
    f.append(b"w")
    assert f.sweep_retention() == 7
    assert seqs_of(f.read_range(0, 100)) == [7, 8, 9, 10]


def test_unknown_retention_policy_is_a_config_error(redex: Redex) -> None:
    with pytest.raises(ConfigError, match="no_such_policy"):
        redex.open_file("x", retention={"no_such_policy": {}})


def test_retention_check_every_sweeps_automatically(open_file: OpenFn, kind: str) -> None:
    f = open_file(retention={"count": {"max_events": 3}}, retention_check_every=5)
    for i in range(4):
        f.append(b"%d" % i)
    assert len(f) == 4  # not due yet
    f.append(b"4")  # the 5th append since open: sweep
    assert seqs_of(f.read_range(0, 10)) == [2, 3, 4]
    f.append_batch([b"5", b"6", b"7", b"8"])
    assert len(f) == 7  # 4 since the last check
    f.append_batch([b"9", b"10"])
    assert seqs_of(f.read_range(0, 100)) == [8, 9, 10]
    assert f.lowest_retained_seq == 8
    if kind == "persistent":
        assert (f.generation or 0) >= 3


def test_sweep_retention_without_policies_or_after_close(open_file: OpenFn) -> None:
    f = open_file()
    f.append_batch([b"x"] * 5)
    assert f.sweep_retention() == 0
    g = open_file("other", retention={"count": {"max_events": 1}}, retention_check_every=0)
    g.append_batch([b"x"] * 5)
    g.close()
    assert g.sweep_retention() == 0
    assert len(g) == 5


def test_manager_sweep_retention(redex: Redex) -> None:
    a = redex.open_file("a", retention={"count": {"max_events": 1}}, retention_check_every=0)
    b = redex.open_file(
        "b", persistent=True, retention={"count": {"max_events": 2}}, retention_check_every=0
    )
    c = redex.open_file("c")
    for f in (a, b, c):
        f.append_batch([b"x"] * 4)
    assert redex.sweep_retention() == {"a": 3, "b": 2, "c": 0}


def test_compact_without_eviction(redex: Redex) -> None:
    f = redex.open_file("comp", persistent=True)
    f.append_batch([b"a", b"bb"])
    f.append_inline(b"12345678")
    assert f.compact() == 2
    assert f.compact() == 3
    chan = redex.channel_dir("comp")
    assert sorted(p.name for p in chan.iterdir() if p.is_dir()) == ["v0000000003"]
    assert f.append(b"after") == 3
    g = reopen(redex, "comp")
    assert [(e.seq, e.payload, e.is_inline) for e in g.read_range(0, 10)] == [
        (0, b"a", False),
        (1, b"bb", False),
        (2, b"12345678", True),
        (3, b"after", False),
    ]
    assert g.generation == 3
    h = redex.open_file("heap-only")
    with pytest.raises(RedexIOError, match="heap-only"):
        h.compact()
    g.close()
    with pytest.raises(RedexClosedError):
        g.compact()


def test_retention_evicting_everything_keeps_next_seq_across_reopen(redex: Redex) -> None:
    opts: dict[str, Any] = {
        "persistent": True,
        "retention": {"age": {"max_age_ms": 1}},
        "retention_check_every": 0,
    }
    f = redex.open_file("drained", **opts)
    f.append_batch([b"a", b"b", b"c"])
    assert f.sweep_retention(now_ns=time.time_ns() + 10**9) == 3
    assert f.len_and_next_seq() == (0, 3)
    assert f.lowest_retained_seq is None
    f.close()
    g = redex.open_file("drained", **opts)
    assert g.len_and_next_seq() == (0, 3)
    assert g.read_range(0, 10) == []
    assert g.append(b"d") == 3
    assert pairs(g.read_range(0, 10)) == [(3, b"d")]


def test_appends_and_sweeps_from_several_threads(redex: Redex) -> None:
    """Compaction runs outside the lock: appends that land meanwhile must survive it."""
    f = redex.open_file(
        "busy", persistent=True, retention={"count": {"max_events": 50}}, retention_check_every=0
    )
    stop = threading.Event()
    sweeps: list[int] = []

    def sweeper() -> None:
        while not stop.is_set():
            sweeps.append(f.sweep_retention())

    results: dict[int, list[int]] = {}

    def appender(tid: int) -> None:
        results[tid] = [f.append(b"%d-%d" % (tid, i)) for i in range(1_000)]

    s = threading.Thread(target=sweeper)
    s.start()
    workers = [threading.Thread(target=appender, args=(t,)) for t in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    s.join(60)
    assert sorted(x for seqs in results.values() for x in seqs) == list(range(3_000))
    f.sweep_retention()
    assert seqs_of(f.read_range(0, 10_000)) == list(range(2_950, 3_000))
    assert f.evicted == 2_950
    expected = pairs(f.read_range(0, 10_000))
    g = reopen(redex, "busy", retention={"count": {"max_events": 50}}, retention_check_every=0)
    assert pairs(g.read_range(0, 10_000)) == expected
    assert g.next_seq == 3_000


@pytest.mark.anyio
async def test_background_retention_sweeper(tmp_path: Path) -> None:
    manager = Redex(tmp_path)
    f = manager.open_file(
        "bg", persistent=True, retention={"count": {"max_events": 5}}, retention_check_every=10
    )
    h = manager.open_file(
        "bg/heap", retention={"count": {"max_events": 2}}, retention_check_every=3
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run_retention, 60.0)
            assert f.background_retention
            assert h.background_retention
            f.append_batch([b"x"] * 12)
            h.append_batch([b"y"] * 4)
            # Appends only flag the sweep as due; the sweeper runs it.
            assert len(f) == 12
            assert len(h) == 4
            for _ in range(500):
                if len(f) <= 5 and len(h) <= 2:
                    break
                await anyio.sleep(0.01)
            assert seqs_of(f.read_range(0, 100)) == list(range(7, 12))
            assert seqs_of(h.read_range(0, 100)) == [2, 3]
            assert f.generation == 2
            tg.cancel_scope.cancel()
        assert not f.background_retention
        assert not h.background_retention
        f.append_batch([b"z"] * 10)  # due again: the append sweeps by itself now
        assert len(f) == 5
    finally:
        manager.close()


# -- library bugs (expected failures) --------------------------------------------------


class _Poisoner(FileOps):
    """Fails the next idx write and every truncate, so the rollback fails: poisoned."""

    def __init__(self) -> None:
        self.armed = False

    def write_all(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        if self.armed and len(data) == 20:
            raise OSError(5, "Input/output error")
        super().write_all(fd, data)

    def ftruncate(self, fd: int, length: int) -> None:
        if self.armed:
            raise OSError(5, "Input/output error")
        super().ftruncate(fd, length)


@pytest.mark.anyio
async def test_background_sweeper_survives_a_poisoned_file(tmp_path: Path) -> None:
    ops = _Poisoner()
    manager = Redex(tmp_path, ops=ops)
    sick = manager.open_file(
        "sick", persistent=True, retention={"count": {"max_events": 1}}, retention_check_every=0
    )
    sick.append_batch([b"a", b"b", b"c"])
    ops.armed = True
    with pytest.raises(PoisonedError):
        sick.append(b"d")
    ops.armed = False
    healthy = manager.open_file(
        "healthy", retention={"count": {"max_events": 1}}, retention_check_every=1
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run_retention, 0.02)
            await anyio.sleep(0.1)  # several full sweeps, each meeting the poisoned file
            healthy.append_batch([b"1", b"2", b"3"])
            for _ in range(200):
                if len(healthy) == 1:
                    break
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert len(healthy) == 1
    finally:
        manager.close()


class _CloseDuringCompaction(FileOps):
    """Closes ``target`` from inside the compaction that an append triggered."""

    def __init__(self) -> None:
        self.target: RedexFile | None = None

    def checkpoint(self, point: str) -> None:
        if point == "compact.files_synced" and self.target is not None:
            f, self.target = self.target, None
            f.close()


def test_append_is_not_failed_by_a_close_racing_its_retention_sweep(tmp_path: Path) -> None:
    ops = _CloseDuringCompaction()
    manager = Redex(tmp_path, ops=ops)
    f = manager.open_file(
        "race", persistent=True, retention={"count": {"max_events": 2}}, retention_check_every=3
    )
    f.append(b"0")
    f.append(b"1")
    ops.target = f
    try:
        seq = f.append(b"2")  # written, then its retention sweep meets the close
    finally:
        manager.close()
    assert seq == 2


def test_generation_named_child_channel_survives_its_parent(tmp_path: Path) -> None:
    with Redex(tmp_path) as manager:
        child = manager.open_file("a/v0000000002", persistent=True)
        child.append(b"precious")
        child.close()
        parent = manager.open_file(
            "a", persistent=True, retention={"count": {"max_events": 1}}, retention_check_every=0
        )
        parent.append_batch([b"1", b"2"])
        parent.sweep_retention()
        parent.close()
        again = manager.open_file("a/v0000000002", persistent=True)
        assert pairs(again.read_range(0, 10)) == [(0, b"precious")]
