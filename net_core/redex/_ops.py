"""The disk operations of the RedEX store, gathered in one object.

Everything :mod:`net_core.redex._store` does to the file system goes through a
:class:`FileOps`. Production uses the plain POSIX calls; tests substitute a subclass that
fails a chosen write, truncate or rename, or "crashes" at a named :meth:`FileOps.checkpoint`
to prove that every step of compaction and recovery is safe to die in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["OS_OPS", "FileOps"]

_APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


class FileOps:
    """Plain file-system operations (subclass to inject faults)."""

    def checkpoint(self, point: str) -> None:
        """A named point of a multi-step protocol (compaction, migration). No-op here."""

    def open_append(self, path: Path) -> int:
        """Open (creating if needed) ``path`` for appending; returns the descriptor."""
        return os.open(path, _APPEND_FLAGS, 0o644)

    def open_rw(self, path: Path) -> int:
        """Open an existing ``path`` for in-place writes (recovery edits)."""
        return os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))

    def write_all(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """Write every byte of ``data`` (retrying short writes)."""
        written = os.write(fd, data)
        if written == len(data):
            return
        view = memoryview(data)
        while written < len(view):
            n = os.write(fd, view[written:])
            if n <= 0:
                raise OSError(f"write made no progress after {written} bytes")
            written += n

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write ``data`` at ``offset`` (used for in-place tombstone flags)."""
        if os.pwrite(fd, data, offset) != len(data):
            raise OSError(f"short pwrite at offset {offset}")

    def ftruncate(self, fd: int, length: int) -> None:
        """Cut the file behind ``fd`` to ``length`` bytes."""
        os.ftruncate(fd, length)

    def truncate(self, path: Path, length: int) -> None:
        """Cut ``path`` to ``length`` bytes and fsync it."""
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync(self, fd: int) -> None:
        """Flush the file behind ``fd`` to stable storage."""
        os.fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        """Flush a directory's entries (renames, creations) to stable storage."""
        if os.name != "posix":
            return
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, fd: int) -> None:
        """Close a descriptor."""
        os.close(fd)

    def read_file(self, path: Path) -> bytes | None:
        """The whole content of ``path``, or ``None`` when it does not exist."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def write_file(self, path: Path, data: bytes) -> None:
        """Create or replace the content of ``path`` and fsync it (not the directory)."""
        fd = os.open(path, _WRITE_FLAGS, 0o644)
        try:
            self.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically rename ``src`` over ``dst``."""
        os.replace(src, dst)

    def mkdir(self, path: Path) -> None:
        """Create a directory (and missing parents); an existing one is fine."""
        path.mkdir(parents=True, exist_ok=True)

    def rmtree(self, path: Path) -> None:
        """Delete a directory tree."""
        shutil.rmtree(path)

    def unlink(self, path: Path) -> None:
        """Delete a file (missing is fine)."""
        path.unlink(missing_ok=True)


#: The production operations.
OS_OPS = FileOps()
