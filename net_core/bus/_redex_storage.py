"""The ``redex`` storage backend: bus shards persisted as RedEX files on local disk.

Theory of operation. Shard ``n`` is the persistent RedEX channel ``{prefix}/shard-{n}``
under ``data_dir``, opened on first use. Every RedEX entry is one bus event: a 28-byte
little-endian header, then the event's raw bytes::

    insertion_ts u64 | nonce u64 | sequence u64 | index u32 | raw bytes ...

``sequence`` is the event's producer sequence (``batch.sequence_start + index``) and
``index`` its position in the batch it was written with, so the dedup id
``{nonce:x}:{shard}:{sequence - index}:{index}`` is rebuilt exactly as the batch named it.
A shard position (:attr:`StoredEvent.id`) is the RedEX seq in decimal.

A batch is one ``append_batch`` (all or nothing). Writes are idempotent across retries
and restarts: per shard the backend knows, for every producer nonce, the next sequence
not stored yet, and skips the events of a batch below it (the rest is appended). The
bus writes each shard's batches in sequence order from one task, which is what makes a
high-water mark per nonce enough. The marks are rebuilt when a shard is first written
after a start, by reading the header of every retained entry of its channel once: about
0.13 s per million entries, in a worker thread, on top of the RedEX open (about 0.8 s
per million); a shard that is only read is never scanned. Entries evicted by retention
no longer count, so a retry of a batch older than the retained history is stored again.

Blocking work never runs on the event loop: opening a channel (recovery walk), the
header scan, ``flush``/``close`` (fsync) and, when an fsync policy or retention is
configured (a due retention sweep compacts the files inside the append), the appends
themselves run in ``anyio.to_thread``. Plain appends reach the OS page cache and return
quickly, so they stay inline.

Errors: disk failures (``OSError``, :class:`~net_core.redex.RedexIOError`) are
:class:`~net_core.errors.TransientAdapterError` (RedEX rolled the failed append back, so
a retry is safe); a poisoned channel (:class:`~net_core.redex.PoisonedError`), a stored
entry shorter than its header, a shard id outside ``0..65535`` and any other RedEX error
are :class:`~net_core.errors.FatalAdapterError`. A poisoned channel is closed when it is
reported, so the next call re-opens it and the open-time recovery repairs it.

This module must never hold the event loop for disk I/O of unbounded length, and never
return a malformed entry as an empty or partial event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, final

import anyio
import attrs

from net_core.bus._storage import Batch, ShardPollResult, StorageBackend, StoredEvent
from net_core.config import ConfigError, in_range, positive
from net_core.errors import FatalAdapterError, NetError, RedexError, TransientAdapterError
from net_core.plugins import PluginManager, get_plugin_manager
from net_core.redex import (
    ChannelNameError,
    PoisonedError,
    Redex,
    RedexFile,
    RedexFileConfig,
    validate_channel_name,
)
from net_core.redex._ops import OS_OPS, FileOps

__all__ = ["HEADER", "HEADER_SIZE", "MAX_SHARD_ID", "RedexStorage", "RedexStorageConfig"]

log = logging.getLogger("net_core.bus")

#: Header of every stored event: insertion_ts, nonce, sequence (u64 each), index (u32).
HEADER = struct.Struct("<QQQI")
HEADER_SIZE = HEADER.size
#: Highest shard id the backend stores (shard ids are u16).
MAX_SHARD_ID = 65_535

_MAX_U64 = (1 << 64) - 1
#: Seconds a read trusts that an unwritten shard's channel is still absent on disk.
_ABSENT_TTL = 1.0
_MAX_U32 = (1 << 32) - 1


def _str_path(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _non_empty_str(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty string, got {value!r}", path=attribute.name)


def _channel_prefix(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _non_empty_str(_inst, attribute, value)
    try:
        validate_channel_name(f"{value}/shard-{MAX_SHARD_ID}")
    except ChannelNameError as exc:
        raise ConfigError(
            f"must be a valid RedEX channel name prefix ({exc}), got {value!r}",
            path=attribute.name,
        ) from None


@final
@attrs.frozen(slots=True)
class RedexStorageConfig:
    """Options of the ``redex`` backend.

    * ``data_dir``: directory of the RedEX channels (created by ``open()``).
    * ``prefix``: channel name prefix; shard ``n`` is the channel ``{prefix}/shard-{n}``.
    * ``fsync_every_n`` / ``fsync_interval_ms``: the RedEX fsync policy of every shard
      channel (neither: only ``flush()`` and ``close()`` fsync). They exclude each other.
    * ``retention``: RedEX retention policies of every shard channel, e.g.
      ``{"count": {"max_events": 1_000_000}}``, evaluated every
      ``retention_check_every`` appended events.
    """

    data_dir: str = attrs.field(converter=_str_path, validator=_non_empty_str)
    prefix: str = attrs.field(default="bus", validator=_channel_prefix)
    fsync_every_n: int | None = attrs.field(default=None, validator=positive)
    fsync_interval_ms: int | None = attrs.field(default=None, validator=positive)
    retention: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    retention_check_every: int = attrs.field(default=1024, validator=in_range(1, 2**32))

    def __attrs_post_init__(self) -> None:
        # Builds (and so validates) the per-channel config once.
        self.file_config()

    def file_config(self) -> RedexFileConfig:
        """The RedEX config every shard channel is opened with."""
        return RedexFileConfig(
            persistent=True,
            fsync_every_n=self.fsync_every_n,
            fsync_interval_ms=self.fsync_interval_ms,
            retention=self.retention,
            retention_check_every=self.retention_check_every,
        )

    def channel_name(self, shard_id: int) -> str:
        """The RedEX channel of ``shard_id``."""
        return f"{self.prefix}/shard-{shard_id}"


class _Shard:
    """One open shard channel and the idempotency marks of its producers."""

    __slots__ = ("file", "lock", "marks")

    def __init__(self, file: RedexFile) -> None:
        self.file = file
        # nonce -> next producer sequence not stored yet; built by the first write (a
        # shard that is only read never pays for the scan)
        self.marks: dict[int, int] | None = None
        # Writes of one shard do not overlap (bus contract); the lock makes sure of it
        # also when an append runs in a worker thread.
        self.lock = threading.Lock()


@final
class RedexStorage(StorageBackend):
    """Stores each shard in a persistent RedEX file; see the module docstring.

    ``plugins`` is the plugin manager that resolves retention policy names (default: the
    global one); ``ops`` is the file-operations seam of RedEX, for fault-injection tests.
    """

    name: ClassVar[str] = "redex"
    dedups: ClassVar[bool] = True

    def __init__(
        self,
        config: RedexStorageConfig,
        *,
        plugins: PluginManager | None = None,
        ops: FileOps = OS_OPS,
    ) -> None:
        self.config = config
        self._plugins = plugins
        self._ops = ops
        self._file_config = config.file_config()
        self._offload = bool(
            config.fsync_every_n is not None
            or config.fsync_interval_ms is not None
            or config.retention
        )
        self._redex: Redex | None = None
        self._shards: dict[int, _Shard] = {}
        self._open_locks: dict[int, anyio.Lock] = {}
        # shard id -> when its channel was last found absent (event-loop clock)
        self._absent: dict[int, float] = {}
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Create ``data_dir`` and check the retention config. Idempotent."""
        if self._closed:
            raise FatalAdapterError("redex backend: open() after close()")
        if self._redex is not None:
            return
        pm = self._plugins if self._plugins is not None else get_plugin_manager()
        try:
            pm.retention_from_config(self.config.retention)
        except ConfigError as exc:
            raise FatalAdapterError(f"redex backend: invalid retention config: {exc}") from exc
        data_dir = Path(self.config.data_dir)
        try:
            await anyio.to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
        except OSError as exc:
            raise TransientAdapterError(
                f"redex backend: cannot create data_dir {str(data_dir)!r}: {exc}"
            ) from exc
        self._redex = Redex(data_dir, plugins=self._plugins, ops=self._ops)

    async def close(self) -> None:
        """Close every shard channel (each fsyncs). Idempotent.

        Every channel is closed even if some fail; then the first failure is raised as
        :class:`FatalAdapterError` (the data written since the last successful
        ``flush()`` may not be durable).
        """
        if self._closed:
            return
        self._closed = True
        redex, self._redex = self._redex, None
        shards = list(self._shards.values())
        self._shards.clear()
        if redex is None:
            return
        failures = await anyio.to_thread.run_sync(_close_all, redex, shards)
        if failures:
            first = failures[0]
            err = FatalAdapterError(f"redex backend: closing failed: {first}")
            for other in failures[1:]:
                err.add_note(f"also: {other}")
            raise err from first

    async def health(self) -> bool:
        """Open, not closed, no poisoned channel, and ``data_dir`` is a writable directory."""
        if self._closed or self._redex is None:
            return False
        if any(shard.file.poisoned for shard in self._shards.values()):
            return False
        return await anyio.to_thread.run_sync(_writable_dir, self.config.data_dir)

    async def flush(self) -> None:
        """fsync every open shard channel (in a worker thread)."""
        self._require_open()
        for shard_id, shard in list(self._shards.items()):
            try:
                await anyio.to_thread.run_sync(shard.file.sync)
            except (RedexError, OSError) as exc:
                raise self._adapter_error(shard_id, shard, "flush", exc) from exc

    # -- writes ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> None:
        """Append the events of ``batch`` not stored yet, as one RedEX batch."""
        self._require_open()
        shard_id = batch.shard_id
        _check_shard_id(shard_id)
        n = len(batch.events)
        if len(batch.timestamps) != n:
            raise FatalAdapterError(
                f"redex backend: shard {shard_id}: batch has {n} events but "
                f"{len(batch.timestamps)} timestamps"
            )
        if n == 0:
            return
        if not (0 <= batch.nonce <= _MAX_U64 and 0 <= batch.sequence_start <= _MAX_U64 - n + 1):
            raise FatalAdapterError(
                f"redex backend: shard {shard_id}: nonce {batch.nonce} / sequence range "
                f"{batch.sequence_start}+{n} outside u64"
            )
        if n > _MAX_U32 + 1:
            raise FatalAdapterError(f"redex backend: shard {shard_id}: batch of {n} events")
        shard = await self._shard(shard_id, create=True)
        assert shard is not None
        if shard.marks is None:
            await anyio.to_thread.run_sync(_ensure_marks, shard)
        if self._offload:
            await anyio.to_thread.run_sync(self._append, shard_id, shard, batch)
        else:
            self._append(shard_id, shard, batch)

    def _append(self, shard_id: int, shard: _Shard, batch: Batch) -> None:
        nonce = batch.nonce
        start = batch.sequence_start
        events = batch.events
        n = len(events)
        with shard.lock:
            marks = shard.marks
            assert marks is not None
            done = marks.get(nonce, 0)
            skip = min(n, max(0, done - start))
            if skip == n:
                return
            pack = HEADER.pack
            stamps = batch.timestamps
            try:
                items = [pack(stamps[i], nonce, start + i, i) + events[i] for i in range(skip, n)]
            except (struct.error, TypeError) as exc:
                raise FatalAdapterError(
                    f"redex backend: shard {shard_id}: cannot encode the batch at sequence "
                    f"{start}: {exc}"
                ) from exc
            try:
                shard.file.append_batch(items)
            except (RedexError, OSError) as exc:
                raise self._adapter_error(shard_id, shard, "write", exc) from exc
            marks[nonce] = max(done, start + n)

    async def resume_sequence(self, shard_id: int, nonce: int) -> int:
        """One past the last stored sequence of ``nonce`` on ``shard_id`` (0 if none)."""
        self._require_open()
        _check_shard_id(shard_id)
        shard = await self._shard(shard_id, create=False)
        if shard is None:
            return 0
        if shard.marks is None:
            await anyio.to_thread.run_sync(_ensure_marks, shard)
        assert shard.marks is not None
        return shard.marks.get(nonce, 0)

    async def known_shards(self) -> list[int]:
        """Shard channels present under ``data_dir/prefix``."""
        self._require_open()
        root = Path(self.config.data_dir).joinpath(*self.config.prefix.split("/"))
        found = []
        if root.is_dir():
            for entry in root.iterdir():
                name = entry.name
                if entry.is_dir() and name.startswith("shard-") and name[6:].isdigit():
                    shard_id = int(name[6:])
                    if shard_id <= MAX_SHARD_ID and (entry / "manifest").is_file():
                        found.append(shard_id)
        return sorted(found)

    # -- reads -------------------------------------------------------------------------

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        """Up to ``limit`` events with a RedEX seq above ``after`` (``None``: from the start)."""
        self._require_open()
        _check_shard_id(shard_id)
        start = 0 if after is None else _position(after) + 1
        if limit <= 0:
            return ShardPollResult([], None, False)
        shard = await self._shard(shard_id, create=False)
        if shard is None:
            return ShardPollResult([], None, False)
        seqs, payloads = _read_retained(shard.file, start, limit + 1)
        has_more = len(payloads) > limit
        if has_more:
            del seqs[limit:]
            del payloads[limit:]
        events = _decode(shard_id, seqs, payloads)
        return ShardPollResult(events, events[-1].id if events else None, has_more)

    # -- shards ------------------------------------------------------------------------

    async def _shard(self, shard_id: int, *, create: bool) -> _Shard | None:
        shard = self._shards.get(shard_id)
        if shard is not None:
            return shard
        if not create:
            # Consumers poll shards that were never written; remember briefly that the
            # channel is absent instead of asking the disk (in a thread) on every poll.
            seen_absent = self._absent.get(shard_id)
            if seen_absent is not None and anyio.current_time() - seen_absent < _ABSENT_TTL:
                return None
        lock = self._open_locks.get(shard_id)
        if lock is None:
            lock = self._open_locks[shard_id] = anyio.Lock()
        async with lock:
            shard = self._shards.get(shard_id)
            if shard is not None:
                return shard
            redex = self._require_open()
            name = self.config.channel_name(shard_id)
            if not create and not await anyio.to_thread.run_sync(_exists, redex, name):
                # Reading a shard that was never written must not create it on disk.
                self._absent[shard_id] = anyio.current_time()
                return None
            try:
                shard = await anyio.to_thread.run_sync(_open_shard, redex, name, self._file_config)
            except (RedexError, OSError) as exc:
                raise _map_error(f"shard {shard_id}: open", exc) from exc
            if self._closed:
                # close() ran while the channel was opening: do not leak it.
                await anyio.to_thread.run_sync(_close_quietly, shard.file)
                raise FatalAdapterError("redex backend is closed")
            self._shards[shard_id] = shard
            self._absent.pop(shard_id, None)
            return shard

    def _adapter_error(
        self, shard_id: int, shard: _Shard, op: str, exc: BaseException
    ) -> Exception:
        if isinstance(exc, PoisonedError) or shard.file.poisoned:
            # Forget the channel: the next call re-opens it, and the open-time recovery
            # repairs the files (and the marks are rebuilt from what is really stored).
            if self._shards.get(shard_id) is shard:
                del self._shards[shard_id]
            _close_quietly(shard.file)
        return _map_error(f"shard {shard_id}: {op}", exc)

    def _require_open(self) -> Redex:
        if self._closed:
            raise FatalAdapterError("redex backend is closed")
        if self._redex is None:
            raise FatalAdapterError("redex backend is not open (call open() first)")
        return self._redex

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._redex is not None else "new"
        return f"RedexStorage({self.config.data_dir!r}, prefix={self.config.prefix!r}, {state})"


# -- helpers (worker threads and pure functions) ------------------------------------------


def _check_shard_id(shard_id: int) -> None:
    if not 0 <= shard_id <= MAX_SHARD_ID:
        raise FatalAdapterError(f"redex backend: shard id {shard_id} outside 0..{MAX_SHARD_ID}")


def _position(after: str) -> int:
    if not (after.isascii() and after.isdigit()):
        raise FatalAdapterError(
            f"redex backend: invalid position {after!r} (expected a decimal seq)"
        )
    return int(after)


def _map_error(what: str, exc: BaseException) -> Exception:
    if isinstance(exc, PoisonedError):
        return FatalAdapterError(f"redex backend: {what}: {exc}")
    if isinstance(exc, OSError):  # RedexIOError and FsyncError included
        return TransientAdapterError(f"redex backend: {what}: {exc}")
    return FatalAdapterError(f"redex backend: {what}: {exc}")


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _exists(redex: Redex, name: str) -> bool:
    return redex.get_file(name) is not None or redex.channel_dir(name).is_dir()


def _open_shard(redex: Redex, name: str, config: RedexFileConfig) -> _Shard:
    return _Shard(redex.open_file(name, config))


def _ensure_marks(shard: _Shard) -> None:
    with shard.lock:
        if shard.marks is None:
            shard.marks = _scan_marks(shard.file)


def _scan_marks(file: RedexFile) -> dict[int, int]:
    """nonce -> next sequence, from the header of every retained entry."""
    marks: dict[int, int] = {}
    _seqs, payloads = file.read_payloads(0, file.next_seq)
    unpack = HEADER.unpack_from
    get = marks.get
    bad = 0
    for payload in payloads:
        if len(payload) < HEADER_SIZE:
            bad += 1
            continue
        _ts, nonce, sequence, _index = unpack(payload)
        if sequence >= get(nonce, 0):
            marks[nonce] = sequence + 1
    if bad:
        # Not fatal for writes; every read of those entries raises FatalAdapterError.
        log.warning(
            "redex backend: %d entries of %r are shorter than the %d-byte event header",
            bad,
            file.name,
            HEADER_SIZE,
        )
    return marks


def _read_retained(file: RedexFile, start: int, want: int) -> tuple[list[int], list[bytes]]:
    """Up to ``want`` retained entries with seq >= ``start``, reading in chunks (seqs
    below the lowest retained one were evicted; the chunk bound keeps a small read from
    copying the whole file)."""
    seqs: list[int] = []
    payloads: list[bytes] = []
    lowest = file.lowest_retained_seq
    if lowest is None:
        return seqs, payloads
    pos = max(start, lowest)
    end_of_file = file.next_seq
    while pos < end_of_file and len(payloads) < want:
        end = min(pos + (want - len(payloads)), end_of_file)
        chunk_seqs, chunk = file.read_payloads(pos, end)
        seqs.extend(chunk_seqs)
        payloads.extend(chunk)
        pos = end
    return seqs, payloads


def _decode(shard_id: int, seqs: list[int], payloads: list[bytes]) -> list[StoredEvent]:
    unpack = HEADER.unpack_from
    events: list[StoredEvent] = []
    append = events.append
    # "{nonce:x}:{shard}:" per producer: formatting it once halves the cost of the ids.
    prefixes: dict[int, str] = {}
    for seq, payload in zip(seqs, payloads, strict=True):
        if len(payload) < HEADER_SIZE:
            raise FatalAdapterError(
                f"redex backend: shard {shard_id}: entry at seq {seq} is malformed "
                f"({len(payload)} bytes, shorter than the {HEADER_SIZE}-byte event header)"
            )
        ts, nonce, sequence, index = unpack(payload)
        prefix = prefixes.get(nonce)
        if prefix is None:
            prefix = prefixes[nonce] = f"{nonce:x}:{shard_id}:"
        if index > sequence:
            raise FatalAdapterError(
                f"redex backend: shard {shard_id}: entry at seq {seq} is malformed "
                f"(batch index {index} above its sequence {sequence})"
            )
        append(
            StoredEvent(
                str(seq),
                payload[HEADER_SIZE:],
                ts,
                shard_id,
                f"{prefix}{sequence - index}:{index}",
            )
        )
    return events


def _close_quietly(file: RedexFile) -> None:
    with contextlib.suppress(NetError, OSError):
        file.close()


def _close_all(redex: Redex, shards: list[_Shard]) -> list[BaseException]:
    failures: list[BaseException] = []
    for shard in shards:
        try:
            shard.file.close()
        except (NetError, OSError) as exc:
            failures.append(exc)
    try:
        redex.close()
    except (NetError, OSError) as exc:
        failures.append(exc)
    return failures
