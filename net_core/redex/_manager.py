"""The RedEX manager: opens files by channel name, heap-only or under a base directory."""

from __future__ import annotations

import logging
import struct
import threading
import time
from array import array
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, final

import anyio
import anyio.abc
import attrs

from net_core.config import structure
from net_core.errors import RedexError
from net_core.plugins import LifecycleEvent, LifecycleKind, PluginManager, get_plugin_manager
from net_core.redex._config import RedexFileConfig
from net_core.redex._errors import PoisonedError, RedexClosedError, RedexConfigConflictError
from net_core.redex._file import RedexFile
from net_core.redex._format import FLAG_INLINE, channel_path_segments, validate_channel_name
from net_core.redex._ops import OS_OPS, FileOps
from net_core.redex._store import ChannelStore, OpenReport

__all__ = ["Redex"]

log = logging.getLogger("net_core.redex")

_INLINE = struct.Struct("<II")


@final
class Redex:
    """Opens and tracks RedEX files: one handle per channel name.

    ``Redex()`` keeps every file in memory; ``Redex(base_dir)`` can also open persistent
    files (``persistent=True``) stored under ``base_dir/<channel path>/``. Opening a name
    that is open returns the same handle, and raises :class:`RedexConfigConflictError` if
    the config differs (the reference silently ignores the second config). A closed
    file is forgotten, so opening its name again re-opens it from disk.

    ``read_only=True`` opens existing persistent channels without changing anything on
    disk (no repair, no sweep, no lock): for inspection tools on a live directory.
    """

    __slots__ = ("_base", "_closed", "_files", "_lock", "_ops", "_plugins", "_read_only", "reports")

    def __init__(
        self,
        base_dir: str | PathLike[str] | None = None,
        *,
        plugins: PluginManager | None = None,
        read_only: bool = False,
        ops: FileOps = OS_OPS,
    ) -> None:
        self._base = Path(base_dir) if base_dir is not None else None
        self._plugins = plugins
        self._read_only = read_only
        self._ops = ops
        self._files: dict[str, RedexFile] = {}
        self._lock = threading.RLock()
        self._closed = False
        #: What opening each persistent channel found (recovery, migration, sweep).
        self.reports: dict[str, OpenReport] = {}

    @property
    def base_dir(self) -> Path | None:
        """The directory persistent files live under (``None``: heap-only manager)."""
        return self._base

    def _pm(self) -> PluginManager:
        return self._plugins if self._plugins is not None else get_plugin_manager()

    def channel_dir(self, name: str) -> Path:
        """Where channel ``name`` lives on disk."""
        if self._base is None:
            raise RedexError("this Redex has no base directory")
        validate_channel_name(name)
        return self._base.joinpath(*channel_path_segments(name))

    def open_file(
        self,
        name: str,
        config: RedexFileConfig | Mapping[str, Any] | None = None,
        /,
        **options: Any,
    ) -> RedexFile:
        """Open (or return the open) file for channel ``name``.

        ``config`` is a :class:`RedexFileConfig` or a mapping of its fields; keyword
        options are merged into a mapping (``open_file("a/b", persistent=True)``).
        """
        validate_channel_name(name)
        if isinstance(config, RedexFileConfig):
            if options:
                config = attrs.evolve(config, **options)
            cfg = config
        else:
            cfg = structure({**(config or {}), **options}, RedexFileConfig)
        with self._lock:
            if self._closed:
                raise RedexClosedError("open_file")
            existing = self._files.get(name)
            if existing is not None and not existing.closed:
                if existing.config != cfg:
                    raise RedexConfigConflictError(_describe_conflict(name, existing.config, cfg))
                return existing
            file = self._open_new(name, cfg)
            self._files[name] = file
        self._pm().notify(
            LifecycleEvent(
                LifecycleKind.FILE_OPENED,
                f"redex:{name}",
                {"channel": name, "persistent": cfg.persistent, "next_seq": file.next_seq},
            )
        )
        return file

    def _open_new(self, name: str, cfg: RedexFileConfig) -> RedexFile:
        retention = self._pm().retention_from_config(cfg.retention)
        if not cfg.persistent:
            if self._read_only:
                raise RedexError(
                    f"open_file: {name!r}: a read-only Redex opens persistent files only"
                )
            file = RedexFile(name, cfg, retention)
        else:
            if self._base is None:
                raise RedexError(
                    "open_file: channel error: config.persistent=true requires a base "
                    "directory (Redex(base_dir=...))"
                )
            store, report, dat = ChannelStore.open(
                name,
                self.channel_dir(name),
                now_ns=time.time_ns(),
                ops=self._ops,
                read_only=self._read_only,
            )
            plan = report.plan
            payloads: list[bytes] = []
            inline: set[int] = set()
            view = memoryview(dat)
            for seq, off, length, word in zip(
                plan.seqs, plan.offsets, plan.lengths, plan.words, strict=True
            ):
                if word & FLAG_INLINE:
                    payloads.append(_INLINE.pack(off, length))
                    inline.add(seq)
                else:
                    payloads.append(bytes(view[off : off + length]))
            view.release()
            file = RedexFile(name, cfg, retention, store)
            file._load(
                array("Q", plan.seqs), array("Q", plan.timestamps), payloads, inline, plan.next_seq
            )
            self.reports[name] = report
        file.on_close = self._forget
        return file

    def _forget(self, file: RedexFile) -> None:
        with self._lock:
            if self._files.get(file.name) is file:
                del self._files[file.name]
        self._pm().notify(
            LifecycleEvent(LifecycleKind.FILE_CLOSED, f"redex:{file.name}", {"channel": file.name})
        )

    def get_file(self, name: str) -> RedexFile | None:
        """The open file for ``name``, if any."""
        with self._lock:
            return self._files.get(name)

    def close_file(self, name: str) -> None:
        """Close the file for ``name`` (no-op when it is not open)."""
        file = self.get_file(name)
        if file is not None:
            file.close()

    def open_files(self) -> list[str]:
        """Names of the open files, sorted."""
        with self._lock:
            return sorted(self._files)

    def sweep_retention(self) -> dict[str, int]:
        """Run every open file's retention now; returns evicted counts by channel.

        Every channel is swept even if some fail; then the first failure is raised, with
        a note for each other failing channel.
        """
        with self._lock:
            files = list(self._files.values())
        evicted: dict[str, int] = {}
        failures: dict[str, RedexError] = {}
        for f in files:
            try:
                evicted[f.name] = f.sweep_retention()
            except RedexError as exc:
                failures[f.name] = exc
        if failures:
            first_name, first = next(iter(failures.items()))
            for name, other in failures.items():
                if name != first_name:
                    first.add_note(f"retention sweep of {name!r} failed too: {other}")
            raise first
        return evicted

    async def run_retention(
        self,
        interval: float = 1.0,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Background retention: run it in your task group (``tg.start(redex.run_retention)``).

        While it runs, appends only flag a file whose retention check is due, and this
        task sweeps it in a worker thread (compaction I/O never blocks the event loop);
        every file is also swept each ``interval`` seconds. Cancel the task to stop.
        """
        tick = min(interval, 0.05)
        last_full = time.monotonic()
        failed: set[str] = set()
        task_status.started()
        try:
            while True:
                with self._lock:
                    files = list(self._files.values())
                for f in files:
                    f.background_retention = True
                full = time.monotonic() - last_full >= interval
                if full:
                    last_full = time.monotonic()
                for f in files:
                    if f.closed or not (full or f._retention_pending):
                        continue
                    if f.poisoned:
                        continue
                    try:
                        await anyio.to_thread.run_sync(f.sweep_retention)
                    except RedexError as exc:
                        # One broken channel (poisoned, disk full) must not stop the
                        # sweeper for the others; a poisoned file is skipped from now on.
                        if f.name not in failed:
                            log.warning("background retention of %r failed: %s", f.name, exc)
                        failed.add(f.name)
                        if isinstance(exc, PoisonedError):
                            f._retention_pending = False
                        continue
                    failed.discard(f.name)
                await anyio.sleep(tick)
        finally:
            with self._lock:
                for f in self._files.values():
                    f.background_retention = False

    def close(self) -> None:
        """Close every file and refuse further opens. Idempotent."""
        with self._lock:
            self._closed = True
            files = list(self._files.values())
        for f in files:
            f.close()

    def __enter__(self) -> Redex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Redex(base_dir={str(self._base)!r})" if self._base else "Redex(heap)"


def _describe_conflict(name: str, old: RedexFileConfig, new: RedexFileConfig) -> str:
    diffs = [
        f"{field.name}: open with {getattr(old, field.name)!r}, "
        f"asked for {getattr(new, field.name)!r}"
        for field in attrs.fields(RedexFileConfig)
        if getattr(old, field.name) != getattr(new, field.name)
    ]
    return (
        f"open_file: channel {name!r} is already open with a different config ("
        + "; ".join(diffs)
        + "); close it first or open it with the same config"
    )
