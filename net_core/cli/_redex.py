"""``net redex``: list, dump, verify, compact and follow persistent RedEX channels.

Theory of operation. Every sub-command but ``compact`` is read-only: it opens channels
with ``Redex(base, read_only=True)`` (no repair, no sweep, no lock) or reads the files
itself, and never writes, so it is safe on a directory that a live process is appending
to. ``compact`` opens the channel read-write, exactly like a writer would (recovery
repairs on open, orphans are swept), so the channel must not be open elsewhere.

``tail --follow`` cannot use a read-only manager for the live part: such a manager loads a
snapshot and never sees another process's appends. It polls the live generation's files
instead (:class:`_FollowReader`), reading only what was appended since the last poll.

Output follows the CLI conventions (``--json``: one JSON document on stdout, library
errors exit 1, usage errors exit 2) with one exception: ``dump`` and ``tail`` stream
JSON lines, one event per line. A closed stdout pipe (``net redex dump ... | head``) ends
a command quietly with status 0.

This module never reaches into a :class:`~net_core.redex.RedexFile`'s private state and
never writes to a channel outside ``compact``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import struct
import sys
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, final

import attrs
import orjson

from net_core.cli._common import add_json_flag, command, emit_json
from net_core.errors import NetError, RedexError
from net_core.redex import (
    ChannelNameError,
    Manifest,
    ManifestError,
    Redex,
    RedexEvent,
    RedexFile,
    validate_channel_name,
)
from net_core.redex._format import (
    DAT_FILE,
    FLAG_INLINE,
    FLAG_TOMBSTONE,
    IDX_FILE,
    IDX_RECORD_SIZE,
    MANIFEST_FILE,
    MANIFEST_SIZE,
    MANIFEST_TMP_FILE,
    MAX_SEQ,
    TS_FILE,
    TS_RECORD_SIZE,
    IdxRecord,
    decode_records,
    entry_checksum,
    generation_dir_name,
    parse_generation_dir_name,
)
from net_core.redex._recovery import RecoveryPlan, plan_recovery

__all__ = ["register"]

_GEN_FILES: Final = (IDX_FILE, DAT_FILE, TS_FILE)
#: Events read, formatted and written per step: output streams, memory stays flat.
_CHUNK: Final = 1024
_SEQ_ONLY: Final = struct.Struct("<Q12x")
_U64: Final = struct.Struct("<Q")
_TOMBSTONE_BYTE: Final = FLAG_TOMBSTONE >> 24
#: How long ``tail --follow`` waits for the ``ts`` entry of a complete ``idx`` record
#: before printing it with the current time (a writer that died between the two writes).
_TS_GRACE_S: Final = 1.0
#: Read-only opens tried while compactions keep sweeping the generation being read.
_SNAPSHOT_ATTEMPTS: Final = 5
#: Problems that a compaction in progress also shows for a moment; ``verify`` looks again
#: after this long before it reports them.
_TRANSIENT: Final = frozenset({"orphan_generation", "stale_manifest_tmp"})
_SETTLE_S: Final = 0.1
_PREVIEW_CHARS: Final = 60
_PREVIEW_BYTES: Final = 32


class ChannelNotFoundError(RedexError, LookupError):
    """The base directory or the channel does not exist (or is not a RedEX channel)."""


# -- channel directory layout -------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class _Layout:
    """What a channel directory holds, read without opening anything for writing.

    ``live`` is the generation a reader uses, resolved like the library does: the
    manifest's when that directory is complete, else the highest complete one (``None``
    when there is none: a legacy flat layout, or nothing readable).
    """

    directory: Path
    manifest: bytes | None
    manifest_generation: int | None
    manifest_error: str | None
    #: Generation -> the files its directory lacks (empty: complete).
    generations: dict[int, tuple[str, ...]]
    manifest_tmp: bool
    #: Flat ``idx``/``dat``/``ts`` files directly in the channel directory.
    legacy: tuple[str, ...]
    live: int | None

    @property
    def looks_like_channel(self) -> bool:
        return bool(
            self.manifest is not None or self.generations or self.legacy or self.manifest_tmp
        )


def _inspect(directory: Path) -> _Layout:
    manifest: bytes | None = None
    generation: int | None = None
    error: str | None = None
    try:
        manifest = (directory / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        manifest, error = b"", f"cannot read the manifest: {exc.strerror or exc}"
    if manifest is not None and error is None:
        try:
            generation = Manifest.decode(manifest).generation
        except ManifestError as exc:
            error = str(exc)
    generations: dict[int, tuple[str, ...]] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                gen = parse_generation_dir_name(entry.name)
                if gen is not None and entry.is_dir(follow_symlinks=False):
                    path = directory / entry.name
                    generations[gen] = tuple(n for n in _GEN_FILES if not (path / n).is_file())
    except OSError:
        pass
    legacy = tuple(n for n in _GEN_FILES if (directory / n).is_file())
    live: int | None = None
    complete = [gen for gen, missing in generations.items() if not missing]
    if generation is not None and generations.get(generation) == ():
        live = generation
    elif complete:
        live = max(complete)
    return _Layout(
        directory=directory,
        manifest=manifest,
        manifest_generation=generation,
        manifest_error=error,
        generations=generations,
        manifest_tmp=(directory / MANIFEST_TMP_FILE).exists(),
        legacy=legacy,
        live=live,
    )


def _require_channel(base: Path, name: str) -> _Layout:
    """The layout of channel ``name`` under ``base``; a clear error when there is none."""
    validate_channel_name(name)
    if not base.is_dir():
        raise ChannelNotFoundError(f"no such directory: {base}")
    directory = base.joinpath(*name.split("/"))
    if not directory.is_dir():
        raise ChannelNotFoundError(f"no channel {name!r} under {base}")
    layout = _inspect(directory)
    if not layout.looks_like_channel:
        raise ChannelNotFoundError(
            f"{directory} is not a RedEX channel (no manifest, generation directory or "
            "idx/dat/ts files)"
        )
    return layout


def _require_base(base: Path) -> None:
    if not base.is_dir():
        raise ChannelNotFoundError(f"no such directory: {base}")


def _discover(base: Path) -> list[str]:
    """Names of the channels under ``base``, sorted (nested channels included)."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        generations = [d for d in dirnames if parse_generation_dir_name(d) is not None]
        # Generation directories hold files, never channels; names that break the naming
        # rule cannot be channels and neither can anything under them.
        dirnames[:] = sorted(
            d for d in dirnames if d not in generations and _valid_name(here / d, base)
        )
        if here == base:
            continue
        files = set(filenames)
        if (
            MANIFEST_FILE in files
            or {IDX_FILE, DAT_FILE} <= files
            or any(all((here / g / n).is_file() for n in _GEN_FILES) for g in generations)
        ):
            names.append(here.relative_to(base).as_posix())
    return sorted(names)


def _valid_name(directory: Path, base: Path) -> bool:
    try:
        validate_channel_name(directory.relative_to(base).as_posix())
    except ChannelNameError:
        return False
    return True


def _disk_bytes(directory: Path) -> int:
    """Bytes of the channel's own files: not those of channels nested inside it."""
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
            elif parse_generation_dir_name(entry.name) is not None and entry.is_dir(
                follow_symlinks=False
            ):
                for root, _dirs, files in os.walk(entry.path):
                    for file in files:
                        total += os.lstat(os.path.join(root, file)).st_size
    return total


# -- formatting ---------------------------------------------------------------------------


def _iso(ns: int | None) -> str:
    """Unix nanoseconds as ISO-8601 UTC with nanoseconds (the raw value if out of range)."""
    if ns is None:
        return "-"
    seconds, fraction = divmod(ns, 1_000_000_000)
    try:
        stamp = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return str(ns)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def _preview(payload: bytes) -> str:
    """Printable UTF-8 payloads as text, anything else as ``hex:...`` (both truncated)."""
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."
    more = "..." if len(payload) > _PREVIEW_BYTES else ""
    return f"hex:{payload[:_PREVIEW_BYTES].hex()}{more}"


def _format_events(events: Sequence[RedexEvent], *, as_json: bool) -> str:
    if as_json:
        dumps = orjson.dumps
        b64 = base64.b64encode
        return "".join(
            dumps(
                {
                    "seq": e.seq,
                    "ts": e.ts,
                    "payload": b64(e.payload).decode("ascii"),
                    "inline": e.is_inline,
                }
            ).decode()
            + "\n"
            for e in events
        )
    return "".join(f"{e.seq} {_iso(e.ts)} {len(e.payload)} {_preview(e.payload)}\n" for e in events)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


# -- command plumbing ---------------------------------------------------------------------


def _integer(text: str) -> int:
    """A decimal (or ``0x``/``0o``/``0b``-prefixed) integer, for argparse."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _non_negative(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_SEQ + 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64], got {value}")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _retention_option(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not name:
        raise argparse.ArgumentTypeError(
            f'expected NAME=JSON (e.g. calendar=\'{{"period":"day","keep":7}}\'), got {text!r}'
        )
    if not sep or not raw.strip():
        return name, {}
    try:
        options = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{name}: options are not valid JSON: {exc}") from None
    if options is None:
        return name, {}
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(
            f"{name}: options must be a JSON object, got {type(options).__name__}"
        )
    return name, options


def _open_read_only(base: Path, name: str) -> tuple[Redex, RedexFile, Sequence[int]]:
    """Open ``name`` read-only; also returns the seqs of its events, in order."""
    layout = _require_channel(base, name)
    if layout.live is None and layout.legacy:
        raise RedexError(
            f"channel {name!r} uses the legacy flat layout; a read-write open (for example "
            f"`net redex compact {base} {name}`) migrates it into generation 1"
        )
    redex = Redex(base, read_only=True)
    try:
        file = _open_snapshot(redex, layout.directory, name)
    except BaseException:
        redex.close()
        raise
    return redex, file, redex.reports.pop(name).plan.seqs


def _open_snapshot(redex: Redex, directory: Path, name: str) -> RedexFile:
    """Open ``name`` on a read-only manager, again if a compaction raced the open.

    A writer's compaction can sweep the generation the read-only open resolved before it
    read the files; the library then loads that generation as empty. Generations never
    come back once swept, so the snapshot is sound when its directory still exists after
    the open.
    """
    for _ in range(_SNAPSHOT_ATTEMPTS - 1):
        file = redex.open_file(name, persistent=True)
        generation = file.generation
        if generation is not None and (directory / generation_dir_name(generation)).is_dir():
            return file
        file.close()
    return redex.open_file(name, persistent=True)


def _chunks(
    file: RedexFile, seqs: Sequence[int], start: int, end: int
) -> Iterator[Sequence[RedexEvent]]:
    """The file's events with ``start <= seq < end``, :data:`_CHUNK` at a time.

    Windows are cut on the file's own seqs, so gaps in the seq space (evicted or
    tombstoned events) cost nothing.
    """
    i = bisect_left(seqs, start)
    j = bisect_left(seqs, end)
    for k in range(i, j, _CHUNK):
        window = seqs[k : min(k + _CHUNK, j)]
        yield file.read_range(window[0], window[-1] + 1)


# -- ls -----------------------------------------------------------------------------------


def _summary(redex: Redex, base: Path, name: str) -> dict[str, Any]:
    directory = base.joinpath(*name.split("/"))
    layout = _inspect(directory)
    entry: dict[str, Any] = {
        "name": name,
        "layout": "legacy" if layout.live is None and layout.legacy else "generations",
        "generation": None,
        "events": None,
        "next_seq": None,
        "lowest_seq": None,
        "payload_bytes": None,
        "disk_bytes": _disk_bytes(directory),
        "first_ts": None,
        "last_ts": None,
    }
    if layout.live is None and layout.legacy:
        plan = _plan_files(directory, now_ns=time.time_ns())
        payload_bytes = sum(
            8 if word & FLAG_INLINE else length
            for word, length in zip(plan.words, plan.lengths, strict=True)
        )
    else:
        try:
            file = _open_snapshot(redex, directory, name)
        except NetError as exc:
            entry["error"] = str(exc)
            return entry
        try:
            plan = redex.reports.pop(name).plan
            entry["generation"] = file.generation
            payload_bytes = file.retained_bytes
        finally:
            file.close()
    entry.update(
        events=len(plan.seqs),
        next_seq=plan.next_seq,
        lowest_seq=plan.seqs[0] if plan.seqs else None,
        payload_bytes=payload_bytes,
        first_ts=plan.timestamps[0] if plan.timestamps else None,
        last_ts=plan.timestamps[-1] if plan.timestamps else None,
    )
    return entry


def _plan_files(directory: Path, *, now_ns: int) -> RecoveryPlan:
    idx, dat, ts = (_read_optional(directory / n) for n in _GEN_FILES)
    return plan_recovery(idx or b"", dat or b"", ts, now_ns=now_ns)


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@command
def _run_ls(args: argparse.Namespace) -> int:
    """List the channels under a directory."""
    base = Path(args.dir)
    _require_base(base)
    redex = Redex(base, read_only=True)
    try:
        channels = [_summary(redex, base, name) for name in _discover(base)]
    finally:
        redex.close()
    if args.json:
        emit_json({"channels": channels})
        return 0
    if not channels:
        sys.stderr.write(f"net: no channels under {base}\n")
        return 0
    rows = [["NAME", "GEN", "EVENTS", "LOWEST", "NEXT_SEQ", "PAYLOAD", "DISK", "FIRST", "LAST"]]
    errors = []
    for c in channels:
        if "error" in c:
            errors.append(f"{c['name']}: error: {c['error']}\n")
            continue
        rows.append(
            [
                c["name"],
                "legacy" if c["layout"] == "legacy" else _dash(c["generation"]),
                str(c["events"]),
                _dash(c["lowest_seq"]),
                str(c["next_seq"]),
                str(c["payload_bytes"]),
                str(c["disk_bytes"]),
                _iso(c["first_ts"]),
                _iso(c["last_ts"]),
            ]
        )
    sys.stdout.write((_table(rows) if len(rows) > 1 else "") + "".join(errors))
    return 0


# -- dump ---------------------------------------------------------------------------------


@command
def _run_dump(args: argparse.Namespace) -> int:
    """Print the events of a channel."""
    end = MAX_SEQ + 1 if args.to_seq is None else args.to_seq
    _print_events(Path(args.dir), args.channel, args.from_seq, end, as_json=args.json)
    return 0


def _print_events(base: Path, name: str, start: int, end: int, *, as_json: bool) -> int:
    """Print the events with ``start <= seq < end``; returns the last seq printed
    (``start - 1`` when none was)."""
    last = start - 1
    redex, file, seqs = _open_read_only(base, name)
    try:
        out = sys.stdout
        for events in _chunks(file, seqs, start, end):
            out.write(_format_events(events, as_json=as_json))
            last = events[-1].seq
    finally:
        redex.close()
    return last


# -- tail ---------------------------------------------------------------------------------


@final
class _FollowReader:
    """Picks up the events another process appends to a channel, by polling its files.

    Each :meth:`poll` resolves the live generation (manifest first, like a reader), reads
    the whole ``idx`` records past the last one it consumed, then their payloads and
    timestamps. A writer appends ``dat``, then ``idx``, then ``ts``; so a trailing heap
    record whose payload is not (yet) in ``dat``, or whose ``ts`` entry is missing, is
    left for a later poll, while records the recovery walk would drop (tombstoned,
    checksum mismatch, a mid-file record past the end of ``dat``) are skipped. After a
    compaction the new generation holds the same seqs, so it is read from the first
    record past the last seq returned (found by bisection); seqs at or below it are never
    returned twice.
    """

    __slots__ = ("_directory", "_fds", "_generation", "_last", "_pos", "_stall")

    def __init__(self, directory: Path, last_seq: int) -> None:
        self._directory = directory
        #: The highest seq returned so far (-1: none).
        self._last = last_seq
        self._generation: int | None = None
        self._fds: tuple[int, int, int] | None = None
        #: Byte offset in ``idx`` of the first record not consumed yet.
        self._pos = 0
        #: ``(idx offset, monotonic time)`` since which a record waits for its ``ts``.
        self._stall: tuple[int, float] | None = None

    def close(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds = None
        self._generation = None

    def _switch(self, generation: int) -> bool:
        self.close()
        path = self._directory / generation_dir_name(generation)
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        fds: list[int] = []
        try:
            for name in _GEN_FILES:
                fds.append(os.open(path / name, flags))
        except FileNotFoundError:
            # Swept by a compaction between the resolution and the open: look again.
            for fd in fds:
                os.close(fd)
            return False
        self._fds = (fds[0], fds[1], fds[2])
        self._generation = generation
        self._pos = self._seek(os.fstat(fds[0]).st_size)
        self._stall = None
        return True

    def _seek(self, idx_size: int) -> int:
        """Byte offset of the first record with a seq above the last one returned."""
        assert self._fds is not None
        lo, hi = 0, idx_size // IDX_RECORD_SIZE
        if self._last < 0:
            return 0
        fd = self._fds[0]
        while lo < hi:
            mid = (lo + hi) // 2
            raw = os.pread(fd, _U64.size, mid * IDX_RECORD_SIZE)
            if len(raw) < _U64.size:
                hi = mid
            elif _U64.unpack(raw)[0] <= self._last:
                lo = mid + 1
            else:
                hi = mid
        return lo * IDX_RECORD_SIZE

    def poll(self) -> list[RedexEvent]:
        """The events appended since the last poll (at most :data:`_CHUNK` of them)."""
        live = _inspect(self._directory).live
        if live is None:
            return []
        if (live != self._generation or self._fds is None) and not self._switch(live):
            return []
        assert self._fds is not None
        idx_fd, dat_fd, ts_fd = self._fds
        idx_size = os.fstat(idx_fd).st_size
        if idx_size < self._pos:
            # A writer's recovery cut the tail: find our place again.
            self._pos = self._seek(idx_size)
        count = min((idx_size - self._pos) // IDX_RECORD_SIZE, _CHUNK)
        if count <= 0:
            return []
        raw = os.pread(idx_fd, count * IDX_RECORD_SIZE, self._pos)
        count = len(raw) // IDX_RECORD_SIZE
        records = decode_records(raw[: count * IDX_RECORD_SIZE])
        # dat is sized after idx was read: every payload of those records is in it.
        dat_size = os.fstat(dat_fd).st_size
        first = self._pos // IDX_RECORD_SIZE
        stamps = os.pread(ts_fd, count * TS_RECORD_SIZE, first * TS_RECORD_SIZE)
        last_fit = max(
            (
                i
                for i, r in enumerate(records)
                if not r.is_inline and r.offset + r.length <= dat_size
            ),
            default=-1,
        )
        events: list[RedexEvent] = []
        for i, rec in enumerate(records):
            past_end = not rec.is_inline and rec.offset + rec.length > dat_size
            if past_end and i > last_fit:
                break  # a torn or in-flight tail (the torn-dat rule): look again later
            skip = bool(rec.flags & FLAG_TOMBSTONE) or rec.seq <= self._last or past_end
            ts = 0
            if not skip:
                if (i + 1) * TS_RECORD_SIZE <= len(stamps):
                    (ts,) = _U64.unpack_from(stamps, i * TS_RECORD_SIZE)
                else:
                    missing = self._missing_ts()
                    if missing is None:
                        break
                    ts = missing
            self._pos += IDX_RECORD_SIZE
            self._stall = None
            if skip:
                continue
            if rec.is_inline:
                payload = rec.inline_payload
            else:
                payload = os.pread(dat_fd, rec.length, rec.offset) if rec.length else b""
                if len(payload) != rec.length:
                    continue
            if entry_checksum(payload) != rec.checksum:
                continue  # corrupt: the recovery walk tombstones it
            events.append(RedexEvent(rec.seq, payload, ts, rec.is_inline))
            self._last = rec.seq
        return events

    def _missing_ts(self) -> int | None:
        now = time.monotonic()
        if self._stall is None or self._stall[0] != self._pos:
            self._stall = (self._pos, now)
            return None
        if now - self._stall[1] < _TS_GRACE_S:
            return None
        # The writer died between its idx and ts writes; recovery would use "now" too.
        return time.time_ns()


@command
def _run_tail(args: argparse.Namespace) -> int:
    """Print events from a seq on; with --follow, keep printing new ones."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
        _tail(args)
    return 0


def _tail(args: argparse.Namespace) -> None:
    base = Path(args.dir)
    out = sys.stdout
    # The snapshot (every retained payload in memory) is gone once this returns.
    last = _print_events(base, args.channel, args.from_seq, MAX_SEQ + 1, as_json=args.json)
    if not args.follow:
        return
    out.flush()
    reader = _FollowReader(base.joinpath(*args.channel.split("/")), last)
    interval = args.poll_ms / 1000
    try:
        while True:
            events = reader.poll()
            if events:
                out.write(_format_events(events, as_json=args.json))
                out.flush()
                if len(events) >= _CHUNK:
                    continue
            time.sleep(interval)
    finally:
        reader.close()


# -- verify -------------------------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class _Finding:
    """One problem or note found by ``verify``."""

    kind: str
    detail: str
    seq: int | None = None


def _finding_json(finding: _Finding) -> dict[str, Any]:
    return attrs.asdict(finding, filter=lambda _attr, value: value is not None)


@final
@attrs.frozen(slots=True)
class _Verdict:
    generation: int | None
    problems: list[_Finding]
    notes: list[_Finding]
    events: int | None = None
    next_seq: int | None = None


def _verify(layout: _Layout) -> _Verdict:
    problems: list[_Finding] = []
    notes: list[_Finding] = []
    add = problems.append
    live = layout.live
    use = f"; readers use {generation_dir_name(live)}" if live is not None else ""

    if layout.manifest is None:
        if layout.generations:
            add(_Finding("manifest_missing", f"there is no {MANIFEST_FILE}{use}"))
    elif layout.manifest_error is not None:
        add(_Finding("manifest_invalid", f"{layout.manifest_error}{use}"))
    else:
        gen = layout.manifest_generation
        assert gen is not None
        dirname = generation_dir_name(gen)
        if gen not in layout.generations:
            add(
                _Finding(
                    "manifest_generation_missing",
                    f"the manifest names {dirname}, which does not exist{use}",
                )
            )
        elif layout.generations[gen]:
            lacks = ", ".join(layout.generations[gen])
            add(
                _Finding(
                    "manifest_generation_incomplete",
                    f"the manifest names {dirname}, which lacks {lacks}{use}",
                )
            )
        if len(layout.manifest) > MANIFEST_SIZE:
            notes.append(
                _Finding(
                    "manifest_trailing_bytes",
                    f"the manifest has {len(layout.manifest) - MANIFEST_SIZE} bytes past "
                    f"its {MANIFEST_SIZE}; they are ignored",
                )
            )
    for gen, missing in sorted(layout.generations.items()):
        if gen == live:
            continue
        state = f"incomplete, lacks {', '.join(missing)}" if missing else "complete"
        add(
            _Finding(
                "orphan_generation",
                f"{generation_dir_name(gen)} ({state}) is not the live generation (left by "
                "an interrupted compaction); the next read-write open deletes it",
            )
        )
    if layout.manifest_tmp:
        add(
            _Finding(
                "stale_manifest_tmp",
                f"{MANIFEST_TMP_FILE} is left from an interrupted manifest write; the next "
                "read-write open deletes it",
            )
        )
    if layout.legacy:
        files = "/".join(layout.legacy)
        if live is None:
            detail = (
                f"flat {files} files in the channel directory (legacy layout); the next "
                f"read-write open migrates them into {generation_dir_name(1)}"
            )
        else:
            detail = f"flat {files} files beside the generation directories are ignored"
        add(_Finding("legacy_layout", detail))
    if live is None and not layout.legacy:
        add(_Finding("no_live_generation", "no complete generation directory: nothing to read"))
        return _Verdict(None, problems, notes)

    files_dir = layout.directory if live is None else layout.directory / generation_dir_name(live)
    idx, dat, ts = _read_stable(files_dir)
    for name, content in zip(_GEN_FILES[:2], (idx, dat), strict=True):
        if content is None:
            add(_Finding("file_missing", f"{name} is missing (read as empty)"))
    idx = idx or b""
    dat = dat or b""
    count, partial = divmod(len(idx), IDX_RECORD_SIZE)
    if partial:
        add(
            _Finding(
                "idx_torn",
                f"idx is {len(idx)} bytes, not a multiple of {IDX_RECORD_SIZE}: a torn "
                f"record of {partial} bytes at the end",
            )
        )
    plan = plan_recovery(idx, dat, ts, now_ns=0)
    whole = idx[: count * IDX_RECORD_SIZE]
    seqs = [seq for (seq,) in _SEQ_ONLY.iter_unpack(whole)]
    cut = plan.dropped_torn - (1 if partial else 0)
    keep = count - cut
    if cut:
        add(
            _Finding(
                "dat_torn",
                f"{cut} record(s) at the end of idx (seq {seqs[keep]}..{seqs[count - 1]}) "
                f"point past the end of dat ({len(dat)} bytes): a torn append, cut on the "
                "next read-write open",
                seqs[keep],
            )
        )
    if plan.dat_truncate_to is not None:
        add(
            _Finding(
                "dat_trailing_bytes",
                f"dat has {len(dat) - plan.dat_truncate_to} bytes past the end of the last "
                f"record (offset {plan.dat_truncate_to})",
            )
        )
    for at, _word in plan.tombstone_writes:
        i = at // IDX_RECORD_SIZE
        rec = IdxRecord.decode(whole[i * IDX_RECORD_SIZE : (i + 1) * IDX_RECORD_SIZE])
        add(_Finding("corrupt_record", _corruption(i, rec, dat), rec.seq))
    for i in range(keep):
        if whole[i * IDX_RECORD_SIZE + IDX_RECORD_SIZE - 1] & _TOMBSTONE_BYTE:
            rec = IdxRecord.decode(whole[i * IDX_RECORD_SIZE : (i + 1) * IDX_RECORD_SIZE])
            if i == keep - 1 and not rec.is_inline and rec.length == 0:
                detail = f"record #{i}: the high-water mark compaction keeps (not an event)"
            else:
                detail = f"record #{i} is tombstoned (skipped by readers)"
            notes.append(_Finding("tombstone", detail, rec.seq))
    if ts is None:
        add(_Finding("ts_length_mismatch", f"ts is missing for {count} idx records"))
    elif len(ts) != count * TS_RECORD_SIZE:
        entries, rest = divmod(len(ts), TS_RECORD_SIZE)
        torn = f" and {rest} torn bytes" if rest else ""
        add(
            _Finding(
                "ts_length_mismatch",
                f"ts holds {entries} entries{torn} for {count} idx records",
            )
        )
    for i in range(1, count):
        if seqs[i] <= seqs[i - 1]:
            add(
                _Finding(
                    "seq_not_increasing",
                    f"record #{i} has seq {seqs[i]} after seq {seqs[i - 1]}",
                    seqs[i],
                )
            )
    return _Verdict(live, problems, notes, len(plan.seqs), plan.next_seq)


def _read_stable(directory: Path) -> tuple[bytes | None, bytes | None, bytes | None]:
    """``idx``, ``dat`` and ``ts`` read while no append changed them (a few tries).

    An append landing between the reads would show as a torn tail that is not there.
    """
    contents: tuple[bytes | None, ...] = ()
    for _ in range(_SNAPSHOT_ATTEMPTS):
        before = _sizes(directory)
        contents = tuple(_read_optional(directory / n) for n in _GEN_FILES)
        read = tuple(None if c is None else len(c) for c in contents)
        if before == read == _sizes(directory):
            break
        time.sleep(0.01)
    return contents[0], contents[1], contents[2]


def _sizes(directory: Path) -> tuple[int | None, ...]:
    sizes: list[int | None] = []
    for name in _GEN_FILES:
        try:
            sizes.append((directory / name).stat().st_size)
        except FileNotFoundError:
            sizes.append(None)
    return tuple(sizes)


def _corruption(index: int, rec: IdxRecord, dat: bytes) -> str:
    if rec.is_inline:
        payload = rec.inline_payload
    else:
        if rec.offset + rec.length > len(dat):
            return (
                f"record #{index} points past the end of dat "
                f"({rec.offset}+{rec.length} > {len(dat)} bytes)"
            )
        payload = dat[rec.offset : rec.offset + rec.length]
    return (
        f"record #{index}: checksum mismatch (stored {rec.checksum:#09x}, "
        f"computed {entry_checksum(payload):#09x})"
    )


@command
def _run_verify(args: argparse.Namespace) -> int:
    """Check a channel's files and report every problem."""
    layout = _require_channel(Path(args.dir), args.channel)
    for _ in range(_SNAPSHOT_ATTEMPTS):
        verdict = _verify(layout)
        if any(p.kind in _TRANSIENT for p in verdict.problems):
            time.sleep(_SETTLE_S)
        # A writer's compaction changes the layout while it runs: verify what it left.
        again = _inspect(layout.directory)
        if again == layout:
            break
        layout = again
    ok = not verdict.problems
    if args.json:
        emit_json(
            {
                "channel": args.channel,
                "generation": verdict.generation,
                "ok": ok,
                "events": verdict.events,
                "next_seq": verdict.next_seq,
                "problems": [_finding_json(p) for p in verdict.problems],
                "notes": [_finding_json(n) for n in verdict.notes],
            }
        )
        return 0 if ok else 1
    gen = "legacy layout" if verdict.generation is None else f"generation {verdict.generation}"
    if ok:
        state = "OK" if not verdict.notes else f"OK with {len(verdict.notes)} note(s)"
    else:
        state = f"{len(verdict.problems)} problem(s)"
    counts = (
        f", {verdict.events} events, next_seq {verdict.next_seq}"
        if verdict.events is not None
        else ""
    )
    lines = [f"{args.channel} ({gen}): {state}{counts}\n"]
    for label, findings in (("problem", verdict.problems), ("note", verdict.notes)):
        for f in findings:
            where = f" (seq {f.seq})" if f.seq is not None else ""
            lines.append(f"  {label}: {f.kind}{where}: {f.detail}\n")
    sys.stdout.write("".join(lines))
    return 0 if ok else 1


# -- compact ------------------------------------------------------------------------------


@final
class _Progress:
    """Stage messages with elapsed time on stderr (for long compactions)."""

    __slots__ = ("_enabled", "_start")

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._start = time.monotonic()

    def __call__(self, message: str) -> None:
        if self._enabled:
            elapsed = time.monotonic() - self._start
            sys.stderr.write(f"net: [{elapsed:7.2f}s] {message}\n")
            sys.stderr.flush()


def _state(file: RedexFile) -> dict[str, Any]:
    events, next_seq = file.len_and_next_seq()
    return {
        "generation": file.generation,
        "events": events,
        "next_seq": next_seq,
        "lowest_seq": file.lowest_retained_seq,
        "payload_bytes": file.retained_bytes,
    }


def _retention_config(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    retention: dict[str, dict[str, Any]] = {}
    given: list[tuple[str, dict[str, Any]]] = []
    if args.max_events is not None:
        given.append(("count", {"max_events": args.max_events}))
    if args.max_bytes is not None:
        given.append(("bytes", {"max_bytes": args.max_bytes}))
    if args.max_age_ms is not None:
        given.append(("age", {"max_age_ms": args.max_age_ms}))
    given.extend(args.retention or ())
    for name, options in given:
        if name in retention:
            args.usage_error(f"retention policy {name!r} is given more than once")
        retention[name] = options
    return retention


def _describe_state(state: dict[str, Any]) -> str:
    events = state["events"]
    seqs = (
        f" (seqs {state['lowest_seq']}..{state['next_seq'] - 1})"
        if state["lowest_seq"] is not None
        else ""
    )
    return (
        f"{events} events{seqs}, next_seq {state['next_seq']}, "
        f"{state['payload_bytes']} payload bytes, generation {state['generation']}"
    )


@command
def _run_compact(args: argparse.Namespace) -> int:
    """Apply retention once (or just rewrite the live generation)."""
    base = Path(args.dir)
    name = args.channel
    retention = _retention_config(args)
    _require_channel(base, name)
    progress = _Progress(sys.stderr.isatty() if args.progress is None else args.progress)
    progress(f"opening {name} read-write (recovers and sweeps orphans)")
    redex = Redex(base)
    try:
        file = redex.open_file(name, persistent=True, retention=retention, retention_check_every=0)
        report = redex.reports[name]
        before = _state(file)
        progress(f"opened: {_describe_state(before)}")
        if retention:
            progress(f"sweeping retention {sorted(retention)}")
            evicted = file.sweep_retention()
        else:
            progress("compacting into a new generation")
            file.compact()
            evicted = 0
        after = _state(file)
        progress(f"done: {_describe_state(after)}")
    finally:
        redex.close()
    plan = report.plan
    opened = {
        "resolved_by": report.resolved_by,
        "swept": list(report.swept),
        "dropped_corrupt": plan.dropped_corrupt,
        "dropped_torn": plan.dropped_torn,
        "timestamps_filled": plan.timestamps_filled,
    }
    if args.json:
        emit_json(
            {
                "channel": name,
                "retention": retention,
                "open": opened,
                "before": before,
                "after": after,
                "evicted": evicted,
                "old_generation": before["generation"],
                "new_generation": after["generation"],
            }
        )
        return 0
    lines = [
        f"{name}: generation {before['generation']} -> {after['generation']}, evicted {evicted}\n",
        f"  before: {_describe_state(before)}\n",
        f"  after:  {_describe_state(after)}\n",
    ]
    repairs = []
    if report.resolved_by in ("fallback", "migrated"):
        repairs.append(f"live generation resolved by {report.resolved_by}")
    if plan.dropped_corrupt:
        repairs.append(f"{plan.dropped_corrupt} corrupt record(s) tombstoned")
    if plan.dropped_torn:
        repairs.append(f"{plan.dropped_torn} torn record(s) cut")
    if plan.timestamps_filled:
        repairs.append(f"{plan.timestamps_filled} missing timestamp(s) filled")
    if report.swept:
        repairs.append(f"swept {', '.join(report.swept)}")
    if repairs:
        lines.append(f"  on open: {'; '.join(repairs)}\n")
    sys.stdout.write("".join(lines))
    return 0


# -- registration -------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``redex`` command group."""
    redex = subparsers.add_parser(
        "redex",
        help="inspect, verify, compact and follow persistent RedEX channels",
        description=(
            "Work with the persistent RedEX channels under a directory (the base_dir of "
            "a Redex). Every command but 'compact' is read-only and safe on a directory "
            "that a live process is writing."
        ),
    )
    commands = redex.add_subparsers(title="commands", metavar="COMMAND", required=True)

    ls = commands.add_parser(
        "ls",
        help="list the channels under DIR",
        description=(
            "List every channel under DIR with its live generation, event count, seq "
            "range, payload and on-disk bytes and first/last timestamps. Read-only."
        ),
    )
    ls.add_argument("dir", metavar="DIR", help="the base directory of the channels")
    add_json_flag(ls)
    ls.set_defaults(func=_run_ls)

    dump = commands.add_parser(
        "dump",
        help="print a channel's events",
        description=(
            "Print the events with FROM <= seq < TO, one per line: 'seq timestamp length "
            "preview' (printable payloads as text, others as hex), or with --json one "
            "JSON object per line (payload in base64). Read-only."
        ),
    )
    _channel_arguments(dump)
    dump.add_argument(
        "--from", dest="from_seq", type=_non_negative, default=0, metavar="N", help="first seq"
    )
    dump.add_argument(
        "--to", dest="to_seq", type=_non_negative, default=None, metavar="M", help="end seq"
    )
    _json_lines_flag(dump)
    dump.set_defaults(func=_run_dump)

    verify = commands.add_parser(
        "verify",
        help="check a channel's files and report every problem",
        description=(
            "Check the channel directory and its live generation without changing "
            "anything: manifest, orphan generations, stale manifest.tmp, torn idx/dat, "
            "trailing dat bytes, corrupt records, ts length, seq order, legacy layout. "
            "Exit status 0 when clean (tombstones are notes), 1 when a problem is found."
        ),
    )
    _channel_arguments(verify)
    add_json_flag(verify)
    verify.set_defaults(func=_run_verify)

    compact = commands.add_parser(
        "compact",
        help="apply retention once and compact a channel",
        description=(
            "Open the channel read-write (recovering it, like any writer), apply the "
            "given retention policies once and compact it into a new generation; with no "
            "policy, just rewrite the live generation (dropping tombstones). The channel "
            "must not be open in another process."
        ),
    )
    _channel_arguments(compact)
    compact.add_argument("--max-events", type=_positive, metavar="N", help="count retention")
    compact.add_argument("--max-bytes", type=_positive, metavar="B", help="bytes retention")
    compact.add_argument("--max-age-ms", type=_positive, metavar="MS", help="age retention")
    compact.add_argument(
        "--retention",
        type=_retention_option,
        action="append",
        metavar="NAME=JSON",
        help=(
            "any retention policy (built-in or plugin) with its options as a JSON object, "
            'e.g. calendar=\'{"period":"day","keep":7}\'; repeatable'
        ),
    )
    compact.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print stage messages on stderr (default: when stderr is a terminal)",
    )
    add_json_flag(compact)
    compact.set_defaults(func=_run_compact, usage_error=compact.error)

    tail = commands.add_parser(
        "tail",
        help="print events from a seq on, optionally following new ones",
        description=(
            "Print the events with seq >= FROM, like dump. With --follow, keep printing "
            "the events that another process appends until interrupted: the files are "
            "polled every --poll-ms milliseconds (a read-only open takes no lock and sees "
            "no live appends), and each poll reads only what was appended since."
        ),
    )
    _channel_arguments(tail)
    tail.add_argument(
        "--from", dest="from_seq", type=_non_negative, default=0, metavar="N", help="first seq"
    )
    tail.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep printing new events until Ctrl-C (default: off)",
    )
    tail.add_argument(
        "--poll-ms", type=_positive, default=200, metavar="MS", help="poll interval (200)"
    )
    _json_lines_flag(tail)
    tail.set_defaults(func=_run_tail)


def _channel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="the base directory of the channels")
    parser.add_argument("channel", metavar="CHANNEL", help="channel name, e.g. events/clicks")


def _json_lines_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"seq", "ts", "payload" (base64), "inline"}',
    )
