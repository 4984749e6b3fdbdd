"""The persistent files of one RedEX channel: open, recover, append, sync, compact.

Theory of operation. A channel directory holds a 16-byte ``manifest`` naming the live
generation and one ``vNNNNNNNNNN/`` directory per generation with ``idx``, ``dat`` and
``ts`` (see :mod:`net_core.redex._format`). :meth:`ChannelStore.open`:

1. resolves the live generation: a valid manifest whose generation directory is complete
   wins; otherwise the highest complete generation (the manifest is rewritten); otherwise
   a legacy flat layout (``<channel>/{idx,dat,ts}``) is migrated into generation 1;
   otherwise a brand-new generation 1 is created;
2. runs the recovery planner over the live generation and applies its edits (torn tails
   cut, corrupt records tombstoned in place, ``ts`` repaired), fsyncing what it touched;
3. sweeps orphans: every other generation directory and a stale ``manifest.tmp``;
4. opens the three files for appending.

Appends write ``dat`` then ``idx`` then ``ts`` (one write each) and only then report
success. A failed write truncates the files back to their lengths before the append; if
that truncation fails too, the store is *poisoned*: every later append, sync and
compaction raises :class:`PoisonedError` until the channel is re-opened.

Compaction writes generation N+1 completely (under temporary names, fsynced, renamed,
directory fsynced), appends the records that arrived meanwhile, then flips the manifest
with an atomic rename: that rename is the single linearization point. Before it a crash
leaves generation N live (N+1 is swept as an orphan on the next open); after it N+1 is
live (N is swept). The named :meth:`FileOps.checkpoint` calls mark each step so tests
can crash there.

This module never decides *what* to keep (the file layer does); it never holds a lock of
its own except the one that keeps background fsyncs off descriptors being swapped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import threading
from array import array
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import Final, final

import attrs
import xxhash

from net_core.redex._errors import PoisonedError, RedexIOError
from net_core.redex._format import (
    CHECKSUM_MASK,
    DAT_FILE,
    FLAG_INLINE,
    FLAG_TOMBSTONE,
    IDX_FILE,
    MANIFEST_FILE,
    MANIFEST_SIZE,
    MANIFEST_TMP_FILE,
    MAX_GENERATION,
    TS_FILE,
    Manifest,
    ManifestError,
    entry_checksum,
    generation_dir_name,
    parse_generation_dir_name,
)
from net_core.redex._ops import OS_OPS, FileOps
from net_core.redex._recovery import RecoveryPlan, plan_recovery

__all__ = [
    "ChannelStore",
    "OpenReport",
    "PreparedGeneration",
    "encode_entries",
    "encode_idx_columns",
    "tombstone_record",
]

log = logging.getLogger("net_core.redex")

_IDX = struct.Struct("<QIII")
_TS = struct.Struct("<Q")
_INLINE = struct.Struct("<II")
_xxh3 = xxhash.xxh3_64_intdigest
_xxh3_digest = xxhash.xxh3_64_digest
_FILES: Final = (IDX_FILE, DAT_FILE, TS_FILE)
# A tombstone written by compaction carries no payload; its checksum is deliberately
# wrong so that a reader that ignores the TOMBSTONE flag (the reference) drops it too.
_EMPTY_CHECKSUM: Final = entry_checksum(b"")
_TOMBSTONE_WORD: Final = FLAG_TOMBSTONE | ((_EMPTY_CHECKSUM ^ 1) & CHECKSUM_MASK)


@final
@attrs.frozen(slots=True)
class OpenReport:
    """What opening a persistent channel found and did."""

    generation: int
    #: How the live generation was chosen: ``manifest``, ``fallback``, ``migrated``, ``new``.
    resolved_by: str
    plan: RecoveryPlan
    swept: tuple[str, ...]


@final
@attrs.define(slots=True)
class PreparedGeneration:
    """A fully written (not yet live) next generation, from :meth:`ChannelStore.prepare`."""

    generation: int
    path: Path
    fds: tuple[int, int, int]
    dat_len: int
    idx_len: int
    ts_len: int


# Clears the flag nibble of a checksum word's top byte (bytes.translate table).
_LOW_NIBBLE: Final = bytes(b & 0x0F for b in range(256))
_IDX_WIDTH: Final = 20
if array("I").itemsize != 4 or array("Q").itemsize != 8:  # pragma: no cover - exotic ABI
    raise ImportError("net_core.redex needs 4-byte array('I') and 8-byte array('Q') items")


def encode_idx_columns(
    seqs: array[int], base: int, lengths: array[int], payloads: Sequence[bytes]
) -> bytes:
    """Encode heap records for ``seqs`` (``array('Q')``), offsets from ``base``.

    A record is five little-endian u32 words (seq low, seq high, offset, length,
    flags|checksum), so the records are built column by column in one ``array('I')``
    with strided slice assignments; the only per-event Python work is the XXH3 call.
    """
    if sys.byteorder != "little":  # pragma: no cover - the column trick assumes LE words
        return _encode_idx_slow(seqs, base, lengths, payloads)
    n = len(lengths)
    out = array("I", bytes(_IDX_WIDTH * n))
    words = array("I")
    words.frombytes(seqs.tobytes())
    out[0::5] = words[0::2]
    if seqs[-1] >> 32:
        out[1::5] = words[1::2]
    out[2::5] = array("I", list(accumulate(lengths[:-1], initial=base)))
    out[3::5] = lengths
    # Digests are big-endian u64s: bytes 4..8 are the low 32 bits, byte 4 their top byte.
    digests = bytearray(b"".join(map(_xxh3_digest, payloads)))
    digests[4::8] = digests[4::8].translate(_LOW_NIBBLE)  # keep 28 bits: flags nibble 0
    hashes = array("Q")
    hashes.frombytes(digests)
    hashes.byteswap()
    words = array("I")
    words.frombytes(hashes.tobytes())
    out[4::5] = words[0::2]
    return out.tobytes()


def _encode_idx_slow(
    seqs: array[int], base: int, lengths: array[int], payloads: Sequence[bytes]
) -> bytes:
    pack = _IDX.pack
    parts = []
    offset = base
    for seq, n, payload in zip(seqs, lengths, payloads, strict=True):
        parts.append(pack(seq, offset, n, _xxh3(payload) & CHECKSUM_MASK))
        offset += n
    return b"".join(parts)


def encode_entries(
    seqs: Sequence[int],
    payloads: Sequence[bytes],
    timestamps: Sequence[int],
    inline: frozenset[int] | set[int],
    dat_base: int,
) -> tuple[bytes, bytes, bytes, int]:
    """Encode entries as (idx, dat, ts, dat bytes used), heap offsets from ``dat_base``."""
    idx_parts: list[bytes] = []
    dat_parts: list[bytes] = []
    pack = _IDX.pack
    off = dat_base
    for seq, payload in zip(seqs, payloads, strict=True):
        if inline and seq in inline:
            lo, hi = _INLINE.unpack(payload)
            idx_parts.append(pack(seq, lo, hi, FLAG_INLINE | entry_checksum(payload)))
            continue
        n = len(payload)
        idx_parts.append(pack(seq, off, n, entry_checksum(payload)))
        dat_parts.append(payload)
        off += n
    ts = struct.pack(f"<{len(timestamps)}Q", *timestamps)
    return b"".join(idx_parts), b"".join(dat_parts), ts, off - dat_base


def tombstone_record(seq: int) -> bytes:
    """A payload-less TOMBSTONE idx record that keeps ``seq`` on disk as a high-water mark."""
    return _IDX.pack(seq, 0, 0, _TOMBSTONE_WORD)


@final
class ChannelStore:
    """The open files of one persistent channel (see the module docstring)."""

    __slots__ = (
        "_bytes_since_sync",
        "_dat_fd",
        "_idx_fd",
        "_lock_fd",
        "_sync_lock",
        "_ts_fd",
        "_write",
        "channel",
        "dat_len",
        "dir",
        "generation",
        "idx_len",
        "ops",
        "poisoned",
        "read_only",
        "ts_len",
    )

    def __init__(
        self,
        channel: str,
        directory: Path,
        generation: int,
        ops: FileOps,
        *,
        read_only: bool,
    ) -> None:
        self.channel = channel
        self.dir = directory
        self.generation = generation
        self.ops = ops
        self.read_only = read_only
        self.poisoned: str | None = None
        self._dat_fd = self._idx_fd = self._ts_fd = -1
        self._lock_fd = -1
        self.dat_len = self.idx_len = self.ts_len = 0
        self._bytes_since_sync = 0
        self._sync_lock = threading.Lock()
        self._write = ops.write_all

    # -- open ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        channel: str,
        directory: Path,
        *,
        now_ns: int,
        ops: FileOps = OS_OPS,
        read_only: bool = False,
    ) -> tuple[ChannelStore, OpenReport, bytes]:
        """Open (creating or migrating) the channel at ``directory`` and recover it.

        Returns the store, a report, and the live generation's ``dat`` content (the file
        layer keeps payloads in memory). ``read_only`` changes nothing on disk: no
        creation, migration, repair, sweep or lock; appends are refused.
        """
        store = cls(channel, directory, 0, ops, read_only=read_only)
        try:
            # Lock first: a manager that is about to be refused must not write anything.
            if read_only:
                generation, how, idx, dat, ts = _snapshot_read_only(directory, ops)
            else:
                ops.mkdir(directory)
                store._take_lock()
                generation, how = _resolve(directory, ops)
                gen_dir = directory / generation_dir_name(generation)
                idx = ops.read_file(gen_dir / IDX_FILE) or b""
                dat = ops.read_file(gen_dir / DAT_FILE) or b""
                ts = ops.read_file(gen_dir / TS_FILE)
            store.generation = generation
        except OSError as exc:
            store.close()
            raise RedexIOError(f"open {channel!r}: {exc}") from exc
        try:
            gen_dir = directory / generation_dir_name(generation)
            plan = plan_recovery(idx, dat, ts, now_ns=now_ns)
            swept: tuple[str, ...] = ()
            if not read_only:
                store._apply(gen_dir, plan)
                swept = _sweep_orphans(directory, generation, ops)
                store._open_fds(gen_dir)
            store.dat_len = plan.dat_len
            store.idx_len = plan.idx_truncate_to if plan.idx_truncate_to is not None else len(idx)
            store.ts_len = store.idx_len // 20 * 8
        except OSError as exc:
            store.close()
            raise RedexIOError(f"open {channel!r}: {exc}") from exc
        except BaseException:
            store.close()
            raise
        if plan.dat_truncate_to is not None:
            dat = dat[: plan.dat_truncate_to]
        return store, OpenReport(generation, how, plan, swept), dat

    def _take_lock(self) -> None:
        # An advisory lock on the channel directory itself: no extra file (a lock file
        # could collide with a valid child channel name such as "<channel>/.lock").
        try:
            import fcntl  # noqa: PLC0415 - POSIX only
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        fd = os.open(self.dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OSError(
                f"channel directory {self.dir} is open in another process or manager"
            ) from None
        self._lock_fd = fd

    def _apply(self, gen_dir: Path, plan: RecoveryPlan) -> None:
        ops = self.ops
        if plan.idx_truncate_to is not None:
            ops.truncate(gen_dir / IDX_FILE, plan.idx_truncate_to)
        if plan.tombstone_writes:
            fd = ops.open_rw(gen_dir / IDX_FILE)
            try:
                for offset, word in plan.tombstone_writes:
                    ops.pwrite(fd, struct.pack("<I", word), offset)
                ops.fsync(fd)
            finally:
                ops.close(fd)
        if plan.dat_truncate_to is not None:
            ops.truncate(gen_dir / DAT_FILE, plan.dat_truncate_to)
        ts_path = gen_dir / TS_FILE
        if plan.ts_truncate_to is not None:
            ops.truncate(ts_path, plan.ts_truncate_to)
        if plan.ts_append:
            fd = ops.open_append(ts_path)
            try:
                ops.write_all(fd, plan.ts_append)
                ops.fsync(fd)
            finally:
                ops.close(fd)

    def _open_fds(self, gen_dir: Path) -> None:
        ops = self.ops
        self._dat_fd = ops.open_append(gen_dir / DAT_FILE)
        self._idx_fd = ops.open_append(gen_dir / IDX_FILE)
        self._ts_fd = ops.open_append(gen_dir / TS_FILE)

    # -- append ----------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise if appends are not allowed (poisoned or read-only)."""
        if self.poisoned is not None:
            raise PoisonedError(self.channel, self.poisoned)
        if self.read_only:
            raise RedexIOError(f"channel {self.channel!r} was opened read-only")

    def append(self, dat: bytes, idx: bytes, ts: bytes) -> None:
        """Write one append's bytes to the three files, all or nothing.

        On failure the files are truncated back and :class:`RedexIOError` is raised; if
        that rollback fails the store is poisoned and :class:`PoisonedError` is raised.
        """
        write = self._write
        stage = "dat"
        try:
            if dat:
                write(self._dat_fd, dat)
            stage = "idx"
            write(self._idx_fd, idx)
            stage = "ts"
            write(self._ts_fd, ts)
        except OSError as exc:
            self._rollback(stage, exc)
        n = len(dat)
        self.dat_len += n
        self.idx_len += len(idx)
        self.ts_len += len(ts)
        self._bytes_since_sync += n + len(idx) + len(ts)

    def _rollback(self, stage: str, exc: OSError) -> None:
        ops = self.ops
        try:
            ops.ftruncate(self._dat_fd, self.dat_len)
            if stage in ("idx", "ts"):
                ops.ftruncate(self._idx_fd, self.idx_len)
            if stage == "ts":
                ops.ftruncate(self._ts_fd, self.ts_len)
        except OSError as rollback_exc:
            self.poisoned = f"{stage} write failed: {exc}; rollback failed: {rollback_exc}"
            log.error("redex channel %r poisoned: %s", self.channel, self.poisoned)
            raise PoisonedError(self.channel, self.poisoned) from exc
        raise RedexIOError(f"append to {self.channel!r} failed writing {stage}: {exc}") from exc

    @property
    def bytes_since_sync(self) -> int:
        """Bytes written since the last fsync (drives the bytes fsync policy)."""
        return self._bytes_since_sync

    # -- sync ------------------------------------------------------------------------

    def sync(self) -> None:
        """fsync ``dat``, ``idx`` then ``ts``. Safe from a background thread."""
        if self.poisoned is not None:
            raise PoisonedError(self.channel, self.poisoned)
        with self._sync_lock:
            if self._dat_fd < 0:
                return
            pending = self._bytes_since_sync
            try:
                self.ops.fsync(self._dat_fd)
                self.ops.fsync(self._idx_fd)
                self.ops.fsync(self._ts_fd)
            except OSError as exc:
                raise RedexIOError(f"fsync of {self.channel!r} failed: {exc}") from exc
            self._bytes_since_sync = max(0, self._bytes_since_sync - pending)

    # -- compaction ------------------------------------------------------------------

    def prepare(self, idx: bytes, dat: bytes, ts: bytes) -> PreparedGeneration:
        """Write generation N+1 with the given content, durably, without making it live."""
        self.check_writable()
        if self.generation >= MAX_GENERATION:
            raise RedexIOError(
                f"channel {self.channel!r} reached the last generation; re-create the channel"
            )
        ops = self.ops
        gen = self.generation + 1
        # A directory with its own manifest is a child channel that happens to be named
        # like a generation: never touch it, skip the number.
        while _is_child_channel(self.dir / generation_dir_name(gen)) and gen < MAX_GENERATION:
            gen += 1
        path = self.dir / generation_dir_name(gen)
        fds: list[int] = []
        try:
            if path.is_dir():
                ops.rmtree(path)  # an orphan from an earlier failed attempt
            elif path.exists() or path.is_symlink():
                ops.unlink(path)  # a stray file with a generation's name
            ops.mkdir(path)
            ops.checkpoint("compact.mkdir")
            for name, content in ((IDX_FILE, idx), (DAT_FILE, dat), (TS_FILE, ts)):
                ops.write_file(path / f"{name}.tmp", content)
                ops.checkpoint(f"compact.write_{name}")
            # The directory becomes "complete" (all three names present) only now.
            for name in _FILES:
                ops.rename(path / f"{name}.tmp", path / name)
            ops.fsync_dir(path)
            ops.checkpoint("compact.files_synced")
            for name in (DAT_FILE, IDX_FILE, TS_FILE):
                fds.append(ops.open_append(path / name))
        except OSError as exc:
            for fd in fds:
                with contextlib.suppress(OSError):
                    ops.close(fd)
            self._discard(path)
            raise RedexIOError(f"compaction of {self.channel!r} failed: {exc}") from exc
        return PreparedGeneration(gen, path, (fds[0], fds[1], fds[2]), len(dat), len(idx), len(ts))

    def commit(self, prep: PreparedGeneration, dat: bytes, idx: bytes, ts: bytes) -> None:
        """Append the late records to ``prep`` and make it the live generation.

        The manifest rename is the linearization point. A failure before it discards
        ``prep`` and leaves the live generation untouched (:class:`RedexIOError`).
        """
        ops = self.ops
        try:
            self.check_writable()
            if idx:
                dat_fd, idx_fd, ts_fd = prep.fds
                if dat:
                    ops.write_all(dat_fd, dat)
                ops.write_all(idx_fd, idx)
                ops.write_all(ts_fd, ts)
                for fd in prep.fds:
                    ops.fsync(fd)
                prep.dat_len += len(dat)
                prep.idx_len += len(idx)
                prep.ts_len += len(ts)
            ops.checkpoint("compact.delta")
            ops.write_file(self.dir / MANIFEST_TMP_FILE, Manifest(prep.generation).encode())
            ops.checkpoint("compact.manifest_tmp")
        except (OSError, PoisonedError) as exc:
            self.abort(prep)
            if isinstance(exc, PoisonedError):
                raise
            raise RedexIOError(f"compaction of {self.channel!r} failed: {exc}") from exc
        try:
            ops.rename(self.dir / MANIFEST_TMP_FILE, self.dir / MANIFEST_FILE)
        except OSError as exc:
            self.abort(prep)
            raise RedexIOError(f"compaction of {self.channel!r} failed: {exc}") from exc
        ops.checkpoint("compact.renamed")
        try:
            ops.fsync_dir(self.dir)
        except OSError as exc:
            # The rename happened: failing now would lie about which generation is live.
            # A power loss before the next directory flush can revert it; the next open
            # then converges on a single generation either way.
            log.warning("fsync of %s after the manifest flip failed: %s", self.dir, exc)
        ops.checkpoint("compact.dir_synced")
        old_path = self.dir / generation_dir_name(self.generation)
        with self._sync_lock:
            old = (self._dat_fd, self._idx_fd, self._ts_fd)
            self._dat_fd, self._idx_fd, self._ts_fd = prep.fds
            self.generation = prep.generation
            self.dat_len, self.idx_len, self.ts_len = prep.dat_len, prep.idx_len, prep.ts_len
            self._bytes_since_sync = 0
        for fd in old:
            with contextlib.suppress(OSError):
                ops.close(fd)
        ops.checkpoint("compact.swapped")
        self._discard(old_path)

    def abort(self, prep: PreparedGeneration) -> None:
        """Throw away a prepared generation (best effort)."""
        for fd in prep.fds:
            with contextlib.suppress(OSError):
                self.ops.close(fd)
        self._discard(prep.path)
        with contextlib.suppress(OSError):
            self.ops.unlink(self.dir / MANIFEST_TMP_FILE)

    def _discard(self, path: Path) -> None:
        try:
            if path.is_dir() and not _is_child_channel(path):
                self.ops.checkpoint("compact.deleting")
                self.ops.rmtree(path)
        except OSError as exc:
            log.warning("could not delete %s (swept on the next open): %s", path, exc)

    # -- close -----------------------------------------------------------------------

    def close(self) -> None:
        """fsync (unless poisoned) and close every descriptor. Idempotent.

        Every descriptor is closed even when the final fsync fails; that failure is then
        raised as :class:`RedexIOError`.
        """
        failure: OSError | None = None
        with self._sync_lock:
            fds = (self._dat_fd, self._idx_fd, self._ts_fd)
            if fds[0] >= 0 and self.poisoned is None:
                for fd in fds:
                    try:
                        self.ops.fsync(fd)
                    except OSError as exc:
                        log.error("fsync on close of %r failed: %s", self.channel, exc)
                        failure = failure or exc
            for fd in fds:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        self.ops.close(fd)
            self._dat_fd = self._idx_fd = self._ts_fd = -1
            if self._lock_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = -1
        if failure is not None:
            raise RedexIOError(
                f"close: final fsync of {self.channel!r} failed: {failure}"
            ) from failure

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or for a read-only store)."""
        return self._dat_fd < 0


# -- generation resolution -----------------------------------------------------------------


def _is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in _FILES)


def _is_child_channel(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def _generations(directory: Path) -> list[int]:
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        gen = parse_generation_dir_name(entry.name)
        if (
            gen is not None
            and entry.is_dir(follow_symlinks=False)
            and not _is_child_channel(Path(entry.path))
        ):
            found.append(gen)
    return sorted(found, reverse=True)


def _read_manifest(directory: Path, ops: FileOps) -> int | None:
    raw = ops.read_file(directory / MANIFEST_FILE)
    if raw is None:
        return None
    try:
        return Manifest.decode(raw[:MANIFEST_SIZE]).generation
    except ManifestError as exc:
        log.warning("manifest of %s is unusable (%s); falling back", directory, exc)
        return None


def write_manifest(directory: Path, generation: int, ops: FileOps) -> None:
    """Durably point ``directory``'s manifest at ``generation`` (tmp, fsync, rename)."""
    ops.write_file(directory / MANIFEST_TMP_FILE, Manifest(generation).encode())
    ops.rename(directory / MANIFEST_TMP_FILE, directory / MANIFEST_FILE)
    try:
        ops.fsync_dir(directory)
    except OSError as exc:
        log.warning("fsync of %s after writing the manifest failed: %s", directory, exc)


def _fill_missing(path: Path, ops: FileOps) -> list[str]:
    missing = [name for name in _FILES if not (path / name).is_file()]
    for name in missing:
        ops.write_file(path / name, b"")
    if missing:
        ops.fsync_dir(path)
    return missing


def _resolve(directory: Path, ops: FileOps) -> tuple[int, str]:
    gen = _read_manifest(directory, ops)
    if gen is not None:
        path = directory / generation_dir_name(gen)
        if _is_complete(path):
            return gen, "manifest"
        if path.is_dir() and not _is_child_channel(path):
            # The generation the manifest names lost a file (damage, not a crash: a
            # generation only becomes live complete). Keep what is there; recovery
            # makes the rest consistent. Falling back would discard its records.
            missing = _fill_missing(path, ops)
            log.warning("generation %s was missing %s; recreated empty", path, missing)
            return gen, "manifest-repaired"
    generations = _generations(directory)
    for candidate in generations:
        if _is_complete(directory / generation_dir_name(candidate)):
            try:
                write_manifest(directory, candidate, ops)
            except OSError as exc:
                log.warning("could not rewrite the manifest of %s: %s", directory, exc)
            return candidate, "fallback"
    first = directory / generation_dir_name(1)
    legacy = [name for name in _FILES if (directory / name).is_file()]
    if legacy:
        ops.mkdir(first)
        for name in legacy:
            ops.rename(directory / name, first / name)
            ops.checkpoint(f"migrate.{name}")
        _fill_missing(first, ops)
        ops.fsync_dir(first)
        ops.fsync_dir(directory)
        write_manifest(directory, 1, ops)
        return 1, "migrated"
    # No complete generation and no legacy files (a crash mid-migration leaves some):
    # the highest generation that still has an index is the best we have.
    for candidate in generations:
        path = directory / generation_dir_name(candidate)
        if (path / IDX_FILE).is_file():
            missing = _fill_missing(path, ops)
            log.warning(
                "no complete generation in %s; repaired %s (recreated %s)", directory, path, missing
            )
            write_manifest(directory, candidate, ops)
            return candidate, "fallback-repaired"
    ops.mkdir(first)
    _fill_missing(first, ops)
    ops.fsync_dir(first)
    ops.fsync_dir(directory)
    write_manifest(directory, 1, ops)
    return 1, "new"


def _resolve_read_only(directory: Path, ops: FileOps) -> tuple[int, str]:
    if not directory.is_dir():
        raise FileNotFoundError(f"no such channel directory: {directory}")
    gen = _read_manifest(directory, ops)
    if gen is not None and _is_complete(directory / generation_dir_name(gen)):
        return gen, "manifest"
    if gen is not None and (directory / generation_dir_name(gen) / IDX_FILE).is_file():
        return gen, "manifest-repaired"
    for candidate in _generations(directory):
        if _is_complete(directory / generation_dir_name(candidate)):
            return candidate, "fallback"
    for candidate in _generations(directory):
        if (directory / generation_dir_name(candidate) / IDX_FILE).is_file():
            return candidate, "fallback-repaired"
    raise FileNotFoundError(f"no complete generation in {directory}")


def _snapshot_read_only(
    directory: Path, ops: FileOps, attempts: int = 20
) -> tuple[int, str, bytes, bytes, bytes | None]:
    """Read the live generation without a lock, retrying if a writer's compaction
    replaced it while we read (the generation must still be live after the read)."""
    for _ in range(attempts):
        generation, how = _resolve_read_only(directory, ops)
        gen_dir = directory / generation_dir_name(generation)
        idx = ops.read_file(gen_dir / IDX_FILE)
        dat = ops.read_file(gen_dir / DAT_FILE)
        ts = ops.read_file(gen_dir / TS_FILE)
        still_live = _read_manifest(directory, ops) in (generation, None) and gen_dir.is_dir()
        if still_live and (idx is not None or how.endswith("repaired")):
            return generation, how, idx or b"", dat or b"", ts
    raise OSError(f"{directory} kept changing while being read (a compaction loop?)")


def _sweep_orphans(directory: Path, live: int, ops: FileOps) -> tuple[str, ...]:
    swept = []
    for gen in _generations(directory):
        if gen == live:
            continue
        name = generation_dir_name(gen)
        try:
            ops.rmtree(directory / name)
            swept.append(name)
        except OSError as exc:
            log.warning("could not sweep orphan generation %s: %s", directory / name, exc)
    tmp = directory / MANIFEST_TMP_FILE
    if tmp.exists():
        try:
            ops.unlink(tmp)
            swept.append(MANIFEST_TMP_FILE)
        except OSError as exc:
            log.warning("could not remove %s: %s", tmp, exc)
    return tuple(swept)
