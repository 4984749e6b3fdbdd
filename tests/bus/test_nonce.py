"""The producer nonce: the v1 nonce file and the per-process nonce."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from net_core.bus._nonce import (
    NONCE_FILE_SIZE,
    NonceFileError,
    decode_producer_nonce,
    encode_producer_nonce,
    load_or_create_producer_nonce,
    process_nonce,
)
from net_core.errors import BusError, DecodeError


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_create_then_reload_returns_the_same_nonce(tmp_path: Path) -> None:
    path = tmp_path / "producer.nonce"
    nonce = load_or_create_producer_nonce(path)
    assert 0 < nonce < 2**64
    data = path.read_bytes()
    assert len(data) == NONCE_FILE_SIZE == 9
    assert data == b"\x01" + nonce.to_bytes(8, "little")
    assert load_or_create_producer_nonce(path) == nonce
    assert load_or_create_producer_nonce(str(path)) == nonce
    assert _leftovers(tmp_path) == []


def test_created_nonces_are_distinct(tmp_path: Path) -> None:
    nonces = {load_or_create_producer_nonce(tmp_path / f"n{i}") for i in range(20)}
    assert len(nonces) == 20


def test_zero_draw_becomes_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbits", lambda _bits: 0)
    assert load_or_create_producer_nonce(tmp_path / "n") == 1
    assert (tmp_path / "n").read_bytes() == b"\x01" + (1).to_bytes(8, "little")


def test_reads_a_file_written_by_the_reference_layout(tmp_path: Path) -> None:
    path = tmp_path / "n"
    path.write_bytes(bytes([1]) + (0x266D858209283187).to_bytes(8, "little"))
    assert load_or_create_producer_nonce(path) == 0x266D858209283187


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "got 0"),
        (b"\x01" + b"\x07" * 7, "got 8"),
        (b"\x07" * 8, "legacy 8-byte"),
        (b"\x01" + b"\x07" * 9, "got 10"),
        (b"\x01" * 4096, "got 10"),
        (b"\x02" + b"\x07" * 8, "unknown format version 2"),
        (b"\x00" + b"\x07" * 8, "unknown format version 0"),
        (b"\x01" + b"\x00" * 8, "nonce is 0"),
    ],
)
def test_invalid_files_raise_nonce_file_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "n"
    path.write_bytes(content)
    with pytest.raises(NonceFileError, match=message) as info:
        load_or_create_producer_nonce(path)
    assert isinstance(info.value, BusError)
    assert isinstance(info.value, DecodeError)
    assert str(path) in str(info.value)
    # A refused file is never replaced.
    assert path.read_bytes() == content


def test_missing_parent_directory_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "n"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_or_create_producer_nonce(path)
    assert not (tmp_path / "missing").exists()


def test_a_directory_in_place_of_the_file_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "n").mkdir()
    # IsADirectoryError (PermissionError on Windows)
    with pytest.raises(OSError):
        load_or_create_producer_nonce(tmp_path / "n")


def test_stale_temp_file_is_removed_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda _n: "deadbeef")
    stale = tmp_path / f"n.{os.getpid()}.deadbeef.tmp"
    stale.write_bytes(b"left by a crash")
    other = tmp_path / "n.1.cafe.tmp"
    other.write_bytes(b"not ours")
    nonce = load_or_create_producer_nonce(tmp_path / "n")
    assert (tmp_path / "n").read_bytes() == encode_producer_nonce(nonce)
    assert not stale.exists()
    assert other.exists()


@pytest.mark.parametrize("which", [1, 2], ids=["file", "directory"])
def test_fsync_failure_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    calls = []
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == which:
            raise OSError(errno.EIO, "injected fsync failure")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="injected fsync failure"):
        load_or_create_producer_nonce(tmp_path / "n")
    assert _leftovers(tmp_path) == []
    if which == 1:
        # The file is never published when its own fsync failed.
        assert not (tmp_path / "n").exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    nonce = load_or_create_producer_nonce(tmp_path / "n")
    assert load_or_create_producer_nonce(tmp_path / "n") == nonce


def test_write_failure_propagates_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_fd: int, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, "disk full")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="disk full"):
        load_or_create_producer_nonce(tmp_path / "n")
    assert list(tmp_path.iterdir()) == []


def test_without_hard_links_the_file_is_renamed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(_src: object, _dst: object) -> None:
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    nonce = load_or_create_producer_nonce(tmp_path / "n")
    assert load_or_create_producer_nonce(tmp_path / "n") == nonce
    assert _leftovers(tmp_path) == []


def test_other_link_errors_propagate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_src: object, _dst: object) -> None:
        raise OSError(errno.EIO, "io error")

    monkeypatch.setattr(os, "link", broken)
    with pytest.raises(OSError, match="io error"):
        load_or_create_producer_nonce(tmp_path / "n")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_first_loads_from_threads_agree(tmp_path: Path) -> None:
    path = tmp_path / "n"
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            barrier.wait()
            results.append(load_or_create_producer_nonce(path))
        except BaseException as exc:
            errors.append(exc)

    for _ in range(20):
        path.unlink(missing_ok=True)
        results.clear()
        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(results) == 8
        stored = decode_producer_nonce(path.read_bytes())
        assert set(results) == {stored}
        assert _leftovers(tmp_path) == []


_CHILD = """
import sys, time
from net_core.bus._nonce import load_or_create_producer_nonce
deadline = float(sys.argv[2])
while time.time() < deadline:
    pass
print(load_or_create_producer_nonce(sys.argv[1]))
"""


def test_concurrent_first_loads_from_processes_agree(tmp_path: Path) -> None:
    import time  # noqa: PLC0415

    path = tmp_path / "n"
    start = str(time.time() + 0.8)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), start],
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    stored = decode_producer_nonce(path.read_bytes())
    assert {int(out) for out in outputs} == {stored}
    assert _leftovers(tmp_path) == []


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=20) | st.binary(min_size=9, max_size=9))
def test_any_file_content_gives_a_nonce_or_nonce_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz"
    path.write_bytes(content)
    try:
        nonce = load_or_create_producer_nonce(path)
    except NonceFileError:
        assert not (len(content) == 9 and content[0] == 1 and any(content[1:]))
    else:
        assert len(content) == 9
        assert content[0] == 1
        assert nonce == int.from_bytes(content[1:], "little")
        assert nonce != 0


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_codec_round_trip(nonce: int) -> None:
    assert decode_producer_nonce(encode_producer_nonce(nonce)) == nonce


@pytest.mark.parametrize("nonce", [0, -1, 2**64])
def test_encode_refuses_invalid_nonces(nonce: int) -> None:
    with pytest.raises(ValueError, match="non-zero u64"):
        encode_producer_nonce(nonce)


def test_process_nonce_is_cached_and_non_zero() -> None:
    first = process_nonce()
    assert 0 < first < 2**64
    assert process_nonce() == first

    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(process_nonce())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [first] * 8


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_draws_its_own_process_nonce() -> None:
    parent = process_nonce()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write_fd, process_nonce().to_bytes(8, "little"))
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        child = int.from_bytes(os.read(read_fd, 8), "little")
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    assert child != parent
    assert child != 0
    assert process_nonce() == parent
