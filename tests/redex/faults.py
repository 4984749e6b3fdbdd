"""Fault injection for the RedEX store: failing disk operations and simulated crashes.

:class:`FaultyOps` is a :class:`~net_core.redex._ops.FileOps` that

* fails the Nth call of an operation with ``OSError(ENOSPC)`` (optionally only for
  targets matching a predicate, optionally after writing part of the data),
* raises :class:`SimulatedCrash` when the store reaches a named ``checkpoint`` (or at an
  operation), and runs hooks there,
* counts every call by operation and target path, and records the checkpoints reached.

The *target* of an operation is a path string: the path argument for path-based
operations, and ``/proc/self/fd/<fd>`` resolved for descriptor-based ones (so a
predicate like ``lambda t: t.endswith("/idx")`` selects writes to the live ``idx``).
Note that :meth:`FileOps.write_file` writes through :meth:`write_all`, so those writes
are counted (and can fail) under both names; their targets end in ``.tmp`` or
``manifest.tmp``.

After a :class:`SimulatedCrash` the process is considered dead: the test must drop its
``Redex``/``RedexFile`` objects without closing them (closing would fsync and write) and
release what a dying process's kernel would release, i.e. close the descriptors the
store leaked (including the ``.lock`` flock descriptor) without writing through them:
:func:`snapshot_fds` before, :func:`close_leaked_fds` after.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from net_core.redex._ops import FileOps

__all__ = [
    "FAULTABLE_OPS",
    "Fault",
    "FaultyOps",
    "SimulatedCrash",
    "close_leaked_fds",
    "fd_target",
    "snapshot_fds",
    "wait_until",
]

#: Operations a :class:`Fault` can name.
FAULTABLE_OPS = frozenset(
    {
        "open_append",
        "open_rw",
        "write_all",
        "pwrite",
        "ftruncate",
        "truncate",
        "fsync",
        "fsync_dir",
        "write_file",
        "rename",
        "mkdir",
        "rmtree",
        "unlink",
    }
)
_WRITES = frozenset({"write_all", "pwrite", "write_file"})


class SimulatedCrash(BaseException):
    """The process "died" here. A BaseException so that no ``except OSError`` (or
    ``except Exception``) cleanup in the library runs, just as after a real kill."""


def fd_target(fd: int) -> str:
    """The path behind a descriptor of this process (``?`` if it is unknown)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@attrs.define
class Fault:
    """One injected failure: the ``nth`` matching call of ``op`` (and the ``times - 1``
    matching calls after it; ``times=None``: every one from then on) fails.

    ``partial``: a write operation first writes the first half of its data (a torn
    write that ran out of space). ``crash``: raise :class:`SimulatedCrash` instead of
    ``OSError``. ``after``: perform the operation, then fail (e.g. a rename that
    happened but reported an error).
    """

    op: str
    nth: int = 1
    match: Callable[[str], bool] | None = None
    times: int | None = 1
    errno: int = errno.ENOSPC
    partial: bool = False
    crash: bool = False
    after: bool = False
    seen: int = 0
    fired: int = 0

    def __attrs_post_init__(self) -> None:
        if self.op not in FAULTABLE_OPS:
            raise ValueError(f"unknown operation {self.op!r}; pick one of {sorted(FAULTABLE_OPS)}")
        if self.nth < 1:
            raise ValueError("nth counts from 1")

    def hit(self, target: str) -> bool:
        """Count a call on ``target``; True when this call must fail."""
        if self.match is not None and not self.match(target):
            return False
        self.seen += 1
        if self.seen < self.nth:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    def error(self, target: str) -> BaseException:
        if self.crash:
            return SimulatedCrash(f"crash at {self.op} on {target}")
        return OSError(self.errno, f"{os.strerror(self.errno)} (injected {self.op})", target)


class FaultyOps(FileOps):
    """A :class:`FileOps` that fails, crashes and counts on demand (thread-safe)."""

    def __init__(self) -> None:
        self._mu = threading.RLock()
        self.faults: list[Fault] = []
        #: Calls by operation name, and by (operation, target).
        self.calls: Counter[str] = Counter()
        self.calls_on: Counter[tuple[str, str]] = Counter()
        #: Checkpoints reached, in order (a crash point is recorded before crashing).
        self.points: list[str] = []
        self._crash_at: dict[str, int] = {}
        self._hooks: dict[str, list[Callable[[str], None]]] = {}
        #: Descriptors opened through ``open_append``/``open_rw`` and not closed yet.
        self.open_fds: set[int] = set()

    # -- configuration ------------------------------------------------------------------

    def fail(
        self,
        op: str,
        *,
        nth: int = 1,
        match: Callable[[str], bool] | str | None = None,
        times: int | None = 1,
        err: int = errno.ENOSPC,
        partial: bool = False,
        crash: bool = False,
        after: bool = False,
    ) -> Fault:
        """Inject a failure (see :class:`Fault`). A string ``match`` selects targets whose
        path ends with it (``"/idx"``, ``"manifest.tmp"``)."""
        if isinstance(match, str):
            suffix = match
            match = lambda target: target.endswith(suffix)  # noqa: E731
        fault = Fault(
            op,
            nth=nth,
            match=match,
            times=times,
            errno=err,
            partial=partial,
            crash=crash,
            after=after,
        )
        with self._mu:
            self.faults.append(fault)
        return fault

    def crash_at(self, point: str, nth: int = 1) -> None:
        """Raise :class:`SimulatedCrash` the ``nth`` time ``checkpoint(point)`` runs."""
        with self._mu:
            self._crash_at[point] = nth

    def on_checkpoint(self, point: str, hook: Callable[[str], None]) -> None:
        """Call ``hook(point)`` every time the checkpoint is reached (before any crash)."""
        with self._mu:
            self._hooks.setdefault(point, []).append(hook)

    def clear(self) -> None:
        """Remove every fault, crash point and hook (counters are kept)."""
        with self._mu:
            self.faults.clear()
            self._crash_at.clear()
            self._hooks.clear()

    def count(self, op: str, match: Callable[[str], bool] | str | None = None) -> int:
        """How many calls of ``op`` were made (on targets matching ``match``)."""
        with self._mu:
            if match is None:
                return self.calls[op]
            if isinstance(match, str):
                suffix = match
                return sum(
                    n for (o, t), n in self.calls_on.items() if o == op and t.endswith(suffix)
                )
            return sum(n for (o, t), n in self.calls_on.items() if o == op and match(t))

    # -- machinery ----------------------------------------------------------------------

    def _enter(self, op: str, target: str) -> Fault | None:
        with self._mu:
            self.calls[op] += 1
            self.calls_on[op, target] += 1
            for fault in self.faults:
                if fault.op == op and fault.hit(target):
                    return fault
        return None

    def checkpoint(self, point: str) -> None:
        with self._mu:
            self.points.append(point)
            hooks = list(self._hooks.get(point, ()))
        for hook in hooks:
            hook(point)
        with self._mu:
            left = self._crash_at.get(point)
            if left is None:
                return
            if left > 1:
                self._crash_at[point] = left - 1
                return
            del self._crash_at[point]
        raise SimulatedCrash(f"crash at checkpoint {point}")

    def _run(
        self, op: str, target: str, action: Callable[[], object], partial: Callable[[], object]
    ) -> object:
        fault = self._enter(op, target)
        if fault is None:
            return action()
        if fault.after:
            action()
        elif fault.partial and op in _WRITES:
            partial()
        raise fault.error(target)

    # -- operations ---------------------------------------------------------------------

    def open_append(self, path: Path) -> int:
        fd = self._run(
            "open_append", str(path), lambda: super(FaultyOps, self).open_append(path), _noop
        )
        assert isinstance(fd, int)
        with self._mu:
            self.open_fds.add(fd)
        return fd

    def open_rw(self, path: Path) -> int:
        fd = self._run("open_rw", str(path), lambda: super(FaultyOps, self).open_rw(path), _noop)
        assert isinstance(fd, int)
        with self._mu:
            self.open_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        with self._mu:
            self.open_fds.discard(fd)
        super().close(fd)

    def write_all(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        self._run(
            "write_all",
            fd_target(fd),
            lambda: super(FaultyOps, self).write_all(fd, data),
            lambda: os.write(fd, bytes(data[: len(data) // 2])) if len(data) > 1 else None,
        )

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        self._run(
            "pwrite",
            fd_target(fd),
            lambda: super(FaultyOps, self).pwrite(fd, data, offset),
            lambda: os.pwrite(fd, data[: len(data) // 2], offset),
        )

    def ftruncate(self, fd: int, length: int) -> None:
        self._run(
            "ftruncate", fd_target(fd), lambda: super(FaultyOps, self).ftruncate(fd, length), _noop
        )

    def truncate(self, path: Path, length: int) -> None:
        self._run(
            "truncate", str(path), lambda: super(FaultyOps, self).truncate(path, length), _noop
        )

    def fsync(self, fd: int) -> None:
        self._run("fsync", fd_target(fd), lambda: super(FaultyOps, self).fsync(fd), _noop)

    def fsync_dir(self, path: Path) -> None:
        self._run("fsync_dir", str(path), lambda: super(FaultyOps, self).fsync_dir(path), _noop)

    def write_file(self, path: Path, data: bytes) -> None:
        self._run(
            "write_file",
            str(path),
            lambda: super(FaultyOps, self).write_file(path, data),
            lambda: path.write_bytes(data[: len(data) // 2]),
        )

    def rename(self, src: Path, dst: Path) -> None:
        # The target of a rename is its destination (``.../manifest``, ``.../v2/idx``).
        self._run("rename", str(dst), lambda: super(FaultyOps, self).rename(src, dst), _noop)

    def mkdir(self, path: Path) -> None:
        self._run("mkdir", str(path), lambda: super(FaultyOps, self).mkdir(path), _noop)

    def rmtree(self, path: Path) -> None:
        self._run("rmtree", str(path), lambda: super(FaultyOps, self).rmtree(path), _noop)

    def unlink(self, path: Path) -> None:
        self._run("unlink", str(path), lambda: super(FaultyOps, self).unlink(path), _noop)


def _noop() -> None:
    return None


# -- simulated process death -------------------------------------------------------------


def snapshot_fds() -> frozenset[tuple[int, str]]:
    """The descriptors this process has open right now, with their targets.

    Targets are part of the snapshot because descriptor numbers are reused (the one
    ``os.listdir`` uses to read ``/proc/self/fd`` is closed again at once).
    """
    out = set()
    for name in os.listdir("/proc/self/fd"):
        target = fd_target(int(name))
        if target != "?":
            out.add((int(name), target))
    return frozenset(out)


def close_leaked_fds(before: Iterable[tuple[int, str]], under: Path) -> list[str]:
    """Close, without writing through them, the descriptors opened since ``before`` that
    point inside ``under`` (data files, the flock on the channel directory): what the
    kernel does when a process dies. Returns the targets closed."""
    known = set(before)
    root = str(Path(under).resolve())
    closed = []
    for fd, target in sorted(snapshot_fds() - known):
        if target == root or target.startswith(root + os.sep):
            try:
                os.close(fd)
            except OSError:
                continue
            closed.append(target)
    return closed


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, poll: float = 0.002) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(poll)
