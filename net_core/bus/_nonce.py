"""The producer nonce: which producer a dedup id belongs to.

Every dedup id starts with the producer nonce (``{nonce:x}:{shard}:{start}:{i}``), so two
producers must never share one and a restarted producer that wants its retried batches
recognised must keep its own. Two sources:

* :func:`process_nonce`: a random non-zero u64 drawn once per process (re-drawn in the
  child after ``os.fork``, so a forked worker never reuses its parent's ids).
* :func:`load_or_create_producer_nonce`: a nonce kept in a small file across restarts
  (the reference's "persistent producer nonce", ``dedup_state``).

File format v1 (byte-compatible with the reference): exactly 9 bytes, the version byte
``0x01`` then the nonce as u64 little-endian. Anything else (a legacy 8-byte file, an
unknown version, a zero nonce) is refused with :class:`NonceFileError`; the codec is pure
(:func:`encode_producer_nonce` / :func:`decode_producer_nonce`).

Creating the file fixes two defects of the reference (release notes v0.9): an fsync
failure is raised, never swallowed, and a stale temp file left by a crash is removed
before the create-new open instead of poisoning every later save. Unlike the reference,
the directory is fsynced after the rename too, so the new name itself is durable.

Concurrent first creators (threads or processes) agree on one value: each writes and
fsyncs its own temp file, then *links* it to the target name, which fails if another
creator got there first; the losers read the winner's file. On a file system without hard
links the temp file is renamed over the target instead and the value is re-read from the
file afterwards, so every caller returns what the file held when it looked, but two
racing creators can then return different values (the last rename wins the file).

This module never creates directories: a missing parent directory is an error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import struct
import threading
from os import PathLike
from pathlib import Path

from net_core.errors import BusError, DecodeError

__all__ = [
    "NONCE_FILE_SIZE",
    "NONCE_FILE_VERSION",
    "NonceFileError",
    "decode_producer_nonce",
    "encode_producer_nonce",
    "load_or_create_producer_nonce",
    "process_nonce",
]

#: Version byte of the nonce file format this module reads and writes.
NONCE_FILE_VERSION = 1
#: Exact size of a v1 nonce file: version byte + u64 nonce.
NONCE_FILE_SIZE = 9

_U64 = struct.Struct("<Q")
_MAX_U64 = (1 << 64) - 1
_LINK_UNSUPPORTED = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
)


class NonceFileError(BusError, DecodeError):
    """A producer nonce file holds something other than a v1 nonce.

    Raised for a wrong length (including the legacy 8-byte files of old reference
    versions), an unknown version byte, or a zero nonce. The file is left untouched:
    delete it to let a new nonce be created (retries of batches written under the old
    nonce then count as new events).
    """


def encode_producer_nonce(nonce: int) -> bytes:
    """The 9 bytes of a v1 nonce file holding ``nonce`` (a non-zero u64)."""
    if not 0 < nonce <= _MAX_U64:
        raise ValueError(f"a producer nonce is a non-zero u64, got {nonce}")
    return bytes((NONCE_FILE_VERSION,)) + _U64.pack(nonce)


def decode_producer_nonce(data: bytes, *, source: str = "producer nonce file") -> int:
    """The nonce stored in ``data`` (the content of a nonce file), or :class:`NonceFileError`."""
    if len(data) != NONCE_FILE_SIZE:
        legacy = ""
        if len(data) == 8:
            legacy = " (a legacy 8-byte nonce file; delete it to create a v1 file)"
        raise NonceFileError(
            f"{source}: expected exactly {NONCE_FILE_SIZE} bytes (version {NONCE_FILE_VERSION} "
            f"+ u64 nonce), got {len(data)}{legacy}"
        )
    if data[0] != NONCE_FILE_VERSION:
        raise NonceFileError(
            f"{source}: unknown format version {data[0]} (this version reads {NONCE_FILE_VERSION})"
        )
    (nonce,) = _U64.unpack_from(data, 1)
    if nonce == 0:
        raise NonceFileError(f"{source}: the stored nonce is 0, which is never written")
    return int(nonce)


def _random_nonce() -> int:
    return secrets.randbits(64) or 1


def _read_nonce(path: Path) -> int:
    with open(path, "rb") as f:
        # One byte more than a valid file: enough to tell "too long" without reading a
        # huge file into memory.
        data = f.read(NONCE_FILE_SIZE + 1)
    return decode_producer_nonce(data, source=f"producer nonce file {str(path)!r}")


def load_or_create_producer_nonce(path: str | PathLike[str]) -> int:
    """The producer nonce kept in ``path``, creating the file with a fresh nonce if missing.

    Raises :class:`NonceFileError` if the file exists but is not a valid v1 nonce file,
    ``FileNotFoundError`` if the parent directory does not exist (it is never created),
    and any other ``OSError`` from reading, writing or fsyncing (never swallowed).
    Thread- and process-safe: concurrent first callers all return the value the file
    holds (see the module docstring for file systems without hard links).
    """
    target = Path(path)
    try:
        return _read_nonce(target)
    except FileNotFoundError:
        pass
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            "the directory of the producer nonce file does not exist (it is not created "
            "automatically)",
            str(parent),
        )
    return _create(target, _random_nonce())


def _create(target: Path, nonce: int) -> int:
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # A temp file of this exact name can only be a leftover of a crashed run (the name is
    # random); an O_EXCL open would fail on it forever, so remove it first.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            data = encode_producer_nonce(nonce)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        linked = _link_if_absent(tmp, target)
        if linked is None:
            # No hard links here: rename over the target (the last rename wins the file).
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    # The winner's value (ours if we linked or renamed last).
    return _read_nonce(target)


def _link_if_absent(tmp: Path, target: Path) -> bool | None:
    """Link ``tmp`` to ``target`` unless it exists: True if linked, False if another
    creator won, None if the file system has no hard links."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in _LINK_UNSUPPORTED:
            return None
        raise
    return True


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - no directory fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_process_lock = threading.Lock()
_process_nonce: int | None = None


def process_nonce() -> int:
    """This process's producer nonce: a random non-zero u64, the same on every call.

    A child created by ``os.fork`` draws its own on first use (a shared nonce would make
    the dedup ids of two producers collide).
    """
    global _process_nonce  # noqa: PLW0603 - one value per process, by definition
    nonce = _process_nonce
    if nonce is not None:
        return nonce
    with _process_lock:
        if _process_nonce is None:
            _process_nonce = _random_nonce()
        return _process_nonce


def _forget_process_nonce() -> None:
    global _process_nonce, _process_lock  # noqa: PLW0603
    _process_nonce = None
    # Another thread of the parent may have held the lock at the fork.
    _process_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_process_nonce)
