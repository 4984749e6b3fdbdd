"""Consumer-side deduplication of Redis stream events: :class:`RedisStreamDedup`.

The ``redis`` backend delivers at least once: a retried batch can be stored twice, both
copies carrying the same dedup id (``{nonce:x}:{shard}:{sequence_start}:{index}``). A
consumer drops the copies by remembering the ids it has seen.

:class:`RedisStreamDedup` is a bounded **FIFO** window, not an LRU: it remembers the
``capacity`` most recently *first-seen* ids; seeing an id again does not refresh it, and
once ``capacity`` newer ids have arrived the oldest is forgotten (a copy arriving later
than that is accepted again). Capacity is clamped to ``1 .. 2**24``. Size the window to
the number of events that can arrive between an original and its retried copy: a
retried batch lands within a few batches of the original, so a few times the largest
batch size is plenty (the default, 65,536, covers six batches of 10,000).

With ``state_path`` the window survives restarts: :meth:`RedisStreamDedup.save` writes it
to a temporary sibling file, fsyncs it, renames it over ``state_path`` and fsyncs the
directory (so the file is always either the old or the new state, never a torn one);
temporary files left by a crashed writer are removed by the next save or load; fsync and
write errors propagate (never swallowed). Loading a file that is not a valid state file
raises :class:`DedupStateError` (a :class:`~net_core.errors.DecodeError`).

State file format (little-endian)::

    magic b"NRSD" | version u8 = 1 | capacity u32 | count u32
    count x (kind u8: 0 str / 1 bytes | length u32 | id bytes)   oldest first
    crc32 u32 of everything before it

Registered as the ``redis`` dedup backend through ``net_dedup_backends``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, final

import anyio
import attrs

from net_core.bus import StoredEvent
from net_core.config import ConfigError, in_range
from net_core.errors import DecodeError

__all__ = [
    "DEFAULT_CAPACITY",
    "MAX_CAPACITY",
    "DedupStateError",
    "RedisDedupConfig",
    "RedisStreamDedup",
    "decode_state",
    "encode_state",
]

#: Upper bound of the window (16,777,216 ids).
MAX_CAPACITY: Final = 1 << 24
#: Default window.
DEFAULT_CAPACITY: Final = 1 << 16

_MAGIC: Final = b"NRSD"
_VERSION: Final = 1
_HEADER: Final = struct.Struct("<4sBII")
_ITEM: Final = struct.Struct("<BI")
_CRC: Final = struct.Struct("<I")
_KIND_STR: Final = 0
_KIND_BYTES: Final = 1

DedupId = str | bytes


class DedupStateError(DecodeError):
    """A dedup state file is not valid (wrong magic or version, truncated, bad checksum)."""


def clamp_capacity(capacity: int) -> int:
    """``capacity`` clamped to ``1 .. MAX_CAPACITY`` (0 becomes 1, like the reference).

    Raises :class:`~net_core.errors.ConfigError` for a negative or non-integer value.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ConfigError(f"must be an integer, got {capacity!r}", path="capacity")
    if capacity < 0:
        raise ConfigError(
            f"must be >= 0 (it is clamped to 1..2**24), got {capacity}", path="capacity"
        )
    return min(max(capacity, 1), MAX_CAPACITY)


def encode_state(capacity: int, ids: Iterable[DedupId]) -> bytes:
    """The state file bytes of a window (ids oldest first)."""
    body = bytearray()
    count = 0
    for item in ids:
        if isinstance(item, str):
            data, kind = item.encode("utf-8", "surrogatepass"), _KIND_STR
        else:
            data, kind = bytes(item), _KIND_BYTES
        body += _ITEM.pack(kind, len(data))
        body += data
        count += 1
    out = bytearray(_HEADER.pack(_MAGIC, _VERSION, capacity, count))
    out += body
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


def decode_state(data: bytes) -> tuple[int, list[DedupId]]:
    """``(capacity, ids oldest first)`` from state file bytes; :class:`DedupStateError`
    on anything malformed."""
    view = memoryview(data)
    if len(view) < _HEADER.size + _CRC.size:
        raise DedupStateError(f"dedup state is {len(view)} bytes, shorter than a header")
    magic, version, capacity, count = _HEADER.unpack_from(view)
    if magic != _MAGIC:
        raise DedupStateError(f"not a dedup state file (magic {bytes(magic)!r})")
    if version != _VERSION:
        raise DedupStateError(f"unsupported dedup state version {version}")
    (crc,) = _CRC.unpack_from(view, len(view) - _CRC.size)
    if zlib.crc32(view[: len(view) - _CRC.size]) != crc:
        raise DedupStateError("dedup state checksum mismatch (torn or corrupted file)")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise DedupStateError(f"dedup state capacity {capacity} outside 1..{MAX_CAPACITY}")
    if count > capacity:
        raise DedupStateError(f"dedup state holds {count} ids, more than its capacity {capacity}")
    end = len(view) - _CRC.size
    pos = _HEADER.size
    ids: list[DedupId] = []
    for _ in range(count):
        if pos + _ITEM.size > end:
            raise DedupStateError("dedup state truncated inside an id header")
        kind, length = _ITEM.unpack_from(view, pos)
        pos += _ITEM.size
        if pos + length > end:
            raise DedupStateError("dedup state truncated inside an id")
        raw = bytes(view[pos : pos + length])
        pos += length
        if kind == _KIND_STR:
            try:
                ids.append(raw.decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError as exc:
                raise DedupStateError("dedup state holds an id that is not UTF-8") from exc
        elif kind == _KIND_BYTES:
            ids.append(raw)
        else:
            raise DedupStateError(f"dedup state id kind {kind} unknown")
    if pos != end:
        raise DedupStateError(f"dedup state has {end - pos} trailing bytes")
    return capacity, ids


@final
@attrs.frozen(slots=True)
class RedisDedupConfig:
    """Options of the ``redis`` dedup backend.

    * ``capacity``: ids remembered (clamped to 1..2^24; about 100-150 bytes each).
    * ``state_path``: file that keeps the window across restarts (loaded when the backend
      is built, written by ``save()``); its directory must exist.
    """

    capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=in_range(0, None))
    state_path: str | None = None


@final
class RedisStreamDedup:
    """Bounded FIFO window of seen dedup ids (see the module docstring).

    ``duplicates`` counts ids recognised as repeats, ``evictions`` ids forgotten to make
    room, ``unidentified`` events without a dedup id passed through by :meth:`filter`.
    Not thread-safe: one consumer task owns it.
    """

    __slots__ = (
        "_capacity",
        "_fsync",
        "_order",
        "_seen",
        "duplicates",
        "evictions",
        "state_path",
        "unidentified",
    )

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        state_path: str | os.PathLike[str] | None = None,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self._capacity = clamp_capacity(capacity)
        self._seen: set[DedupId] = set()
        self._order: deque[DedupId] = deque()
        self._fsync = fsync
        self.duplicates = 0
        self.evictions = 0
        self.unidentified = 0
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None:
            self._load(self.state_path)

    @classmethod
    def from_config(cls, config: RedisDedupConfig) -> RedisStreamDedup:
        """Build from a :class:`RedisDedupConfig` (loading its state file if present)."""
        return cls(config.capacity, state_path=config.state_path)

    # -- the window ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many ids the window holds at most."""
        return self._capacity

    def is_duplicate(self, dedup_id: DedupId) -> bool:
        """``True`` if ``dedup_id`` is in the window; otherwise record it (evicting the
        oldest first-seen id when full) and return ``False``."""
        seen = self._seen
        if dedup_id in seen:
            self.duplicates += 1
            return True
        if len(seen) >= self._capacity:
            seen.discard(self._order.popleft())
            self.evictions += 1
        seen.add(dedup_id)
        self._order.append(dedup_id)
        return False

    def filter(self, events: Iterable[StoredEvent]) -> list[StoredEvent]:
        """The events whose dedup id was not seen before, in order (recording them).
        Events without a dedup id are kept and counted in ``unidentified``."""
        out: list[StoredEvent] = []
        is_duplicate = self.is_duplicate
        for event in events:
            did = event.dedup_id
            if did is None:
                self.unidentified += 1
                out.append(event)
            elif not is_duplicate(did):
                out.append(event)
        return out

    def __contains__(self, dedup_id: object) -> bool:
        return dedup_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def is_empty(self) -> bool:
        """Whether no id is remembered."""
        return not self._seen

    def clear(self) -> None:
        """Forget every id and reset the counters (the state file is untouched)."""
        self._seen.clear()
        self._order.clear()
        self.duplicates = 0
        self.evictions = 0
        self.unidentified = 0

    def ids(self) -> list[DedupId]:
        """The remembered ids, oldest first."""
        return list(self._order)

    # -- persistence ---------------------------------------------------------------------

    def save(self) -> None:
        """Write the window to ``state_path`` atomically (temp + fsync + rename + fsync
        of the directory). Errors (``OSError``, fsync failures included) propagate; the
        previous state file is then left as it was."""
        if self.state_path is None:
            raise ConfigError("this window has no state_path to save to", path="state_path")
        target = self.state_path
        _sweep_stale_temps(target)
        data = encode_state(self._capacity, self._order)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                self._fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent, self._fsync)

    async def asave(self) -> None:
        """:meth:`save` in a worker thread (it fsyncs)."""
        await anyio.to_thread.run_sync(self.save)

    def _load(self, path: Path) -> None:
        _sweep_stale_temps(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        _capacity, ids = decode_state(data)
        # A smaller window than the saved one keeps the newest ids.
        for item in ids[-self._capacity :]:
            self.is_duplicate(item)

    def __repr__(self) -> str:
        return f"RedisStreamDedup(len={len(self._seen)}, capacity={self._capacity})"


def _sweep_stale_temps(target: Path) -> None:
    """Remove temp files of ``target`` left by writers that no longer run."""
    prefix = f".{target.name}."
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue  # another live process is writing it right now
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _fsync_dir(directory: Path, fsync: Callable[[int], None]) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fsync(fd)
    finally:
        os.close(fd)
