"""``net bus``: ingest JSON lines into a bus and poll stored events back.

Theory of operation. ``ingest`` starts a :class:`~net_core.bus.Bus` on the chosen
storage backend (``redex`` under ``--data-dir`` by default, or any backend plugin with
``--storage NAME --storage-option KEY=VALUE ...``), reads standard input in a worker
thread, ingests every line that parses as JSON (its bytes as given), yields to the event
loop between chunks so the shard workers dispatch while input is still arriving, flushes
and reports the counts. A full ring is waited out (``fail_producer`` mode, retried), so
no line is dropped. Lines that are not JSON are counted with their line numbers and not
ingested.

``poll`` does not start a bus: it opens the storage backend and reads it through a
:class:`~net_core.consumer.PollMerger` over the shards the backend holds, so it never
writes (beyond what opening the backend does) and needs no producer nonce.

Both keep the CLI conventions (``--json``: one JSON document on stdout; library errors
exit 1; usage errors, including a malformed ``--filter`` or ``--cursor``, exit 2). This
module also holds the helpers ``net demo`` shares (storage selection, error reporting).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Final, final

import anyio
import anyio.lowlevel
import attrs
import orjson

from net_core.bus import Backpressure, Bus, BusConfig, BusStats, StorageConfig, StoredEvent
from net_core.cli._common import add_json_flag, command, emit_json
from net_core.consumer import (
    CompositeCursor,
    Filter,
    InvalidCursor,
    InvalidFilter,
    PollMerger,
    PollRequest,
)
from net_core.errors import BusError
from net_core.plugins import get_plugin_manager

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_SHARDS",
    "NONCE_FILE",
    "BusDirectoryError",
    "describe_stats",
    "ingest_after_backpressure",
    "positive_int",
    "register",
]

#: Where ``net demo`` and ``net bus`` keep their data unless told otherwise.
DEFAULT_DATA_DIR: Final = "net-demo-data"
#: The producer nonce file under the data directory (keeps dedup ids going on reruns).
NONCE_FILE: Final = "producer.nonce"
DEFAULT_SHARDS: Final = 4
#: Lines read from stdin per step (about this many bytes), then ingested in one go.
_READ_BYTES: Final = 1 << 20
#: Ingest calls between two yields to the event loop.
_YIELD_EVERY: Final = 1000
#: A full ring is retried after this long.
_BACKPRESSURE_WAIT_S: Final = 0.001
#: Invalid line numbers listed in the report (the count is always complete).
_MAX_LISTED: Final = 1000


class BusDirectoryError(BusError, FileNotFoundError):
    """The data directory to read does not exist."""


# -- shared plumbing ----------------------------------------------------------------------


def positive_int(text: str) -> int:
    """A positive decimal integer (``_`` separators allowed), for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _storage_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw  # not JSON: the text itself (paths, names)
    return key, value


def _filter(text: str) -> Filter:
    try:
        return Filter.parse(text)
    except InvalidFilter as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cursor(text: str) -> str:
    try:
        CompositeCursor.decode(text)
    except InvalidCursor as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _storage_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"the redex backend's directory (default: ./{DEFAULT_DATA_DIR})",
    )
    where.add_argument(
        "--storage",
        metavar="NAME",
        help="a storage backend plugin instead of redex under --data-dir (see `net plugins`)",
    )
    parser.add_argument(
        "--storage-option",
        type=_storage_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option (VALUE is JSON, or else taken as text); repeatable",
    )


@final
@attrs.frozen(slots=True)
class _Storage:
    """The storage the command uses: backend name, its options, the redex directory."""

    backend: str
    options: dict[str, Any]
    data_dir: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Storage:
        options = dict(args.storage_option)
        backend = args.storage or "redex"
        data_dir: Path | None = None
        if backend == "redex":
            if args.storage is None or "data_dir" not in options:
                options.setdefault("data_dir", args.data_dir or DEFAULT_DATA_DIR)
            data_dir = Path(str(options["data_dir"]))
        return cls(backend, options, data_dir)

    def config(self) -> StorageConfig:
        return StorageConfig(self.backend, self.options)


def describe_stats(stats: BusStats) -> str:
    """The bus counters on one line."""
    dropped = ", ".join(f"{k} {v:,}" for k, v in stats.dropped.items() if v)
    return (
        f"ingested {stats.events_ingested:,}, dispatched {stats.events_dispatched:,} in "
        f"{stats.batches_dispatched:,} batches, dropped {stats.events_dropped:,}"
        f"{f' ({dropped})' if dropped else ''}, refused {stats.events_refused:,}, "
        f"{stats.active_shards} active shards"
        f"{', shutdown was LOSSY' if stats.shutdown_was_lossy else ''}"
    )


async def ingest_after_backpressure(bus: Bus, event: bytes | dict[str, Any]) -> int:
    """Ingest an event the bus just refused with ``Backpressure``: wait for the workers
    to drain the ring and retry until it is taken; returns the waits (= refusals)."""
    waits = 1
    while True:
        await anyio.sleep(_BACKPRESSURE_WAIT_S)
        try:
            if isinstance(event, bytes):
                bus.ingest_raw(event)
            else:
                bus.ingest(event)
        except Backpressure:
            waits += 1
        else:
            return waits


# -- ingest -------------------------------------------------------------------------------


@final
@attrs.frozen(slots=True)
class _IngestReport:
    lines: int
    ingested: int
    blank: int
    invalid: int
    invalid_lines: list[int]
    invalid_lines_truncated: bool
    backpressure_waits: int
    storage: str
    data_dir: str | None
    stats: BusStats


async def _ingest(storage: _Storage, shards: int, stream: BinaryIO) -> _IngestReport:
    nonce_path: str | None = None
    data_dir = storage.data_dir
    if data_dir is not None:
        # The nonce file needs its directory; the backend would create it only later.
        await anyio.to_thread.run_sync(partial(data_dir.mkdir, parents=True, exist_ok=True))
        nonce_path = str(data_dir / NONCE_FILE)
    config = BusConfig(
        shards=shards,
        backpressure="fail_producer",
        storage=storage.config(),
        producer_nonce_path=nonce_path,
    )
    lines = ingested = blank = waits = 0
    invalid: list[int] = []
    loads = orjson.loads
    async with Bus.open(config) as bus:
        ingest_raw = bus.ingest_raw
        while True:
            chunk: list[bytes] = await anyio.to_thread.run_sync(stream.readlines, _READ_BYTES)
            if not chunk:
                break
            for line in chunk:
                lines += 1
                data = line.strip()
                if not data:
                    blank += 1
                    continue
                try:
                    loads(data)
                except orjson.JSONDecodeError:
                    invalid.append(lines)
                    continue
                try:
                    ingest_raw(data)
                except Backpressure:
                    waits += await ingest_after_backpressure(bus, data)
                ingested += 1
                if ingested % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
        await bus.flush()
    return _IngestReport(
        lines=lines,
        ingested=ingested,
        blank=blank,
        invalid=len(invalid),
        invalid_lines=invalid[:_MAX_LISTED],
        invalid_lines_truncated=len(invalid) > _MAX_LISTED,
        backpressure_waits=waits,
        storage=storage.backend,
        data_dir=str(storage.data_dir) if storage.data_dir is not None else None,
        stats=bus.stats(),
    )


@command
def _run_ingest(args: argparse.Namespace) -> int:
    """Ingest JSON lines from stdin."""
    storage = _Storage.from_args(args)
    report = anyio.run(_ingest, storage, args.shards, sys.stdin.buffer)
    if args.json:
        emit_json(attrs.asdict(report))
        return 1 if report.invalid else 0
    where = f" into {report.data_dir}" if report.data_dir else f" into {report.storage}"
    out = [
        f"ingested {report.ingested:,} of {report.lines:,} lines{where}"
        f" ({report.invalid:,} invalid, {report.blank:,} blank)\n",
        f"bus: {describe_stats(report.stats)}\n",
    ]
    if report.backpressure_waits:
        out.append(f"waited out a full ring {report.backpressure_waits:,} times\n")
    sys.stdout.write("".join(out))
    if report.invalid:
        listed = ", ".join(map(str, report.invalid_lines))
        more = " ..." if report.invalid_lines_truncated else ""
        sys.stderr.write(
            f"net: {report.invalid:,} line(s) are not JSON and were not ingested: "
            f"line {listed}{more}\n"
        )
        return 1
    return 0


# -- poll ---------------------------------------------------------------------------------


def _event_json(event: StoredEvent) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": event.id,
        "shard_id": event.shard_id,
        "insertion_ts": event.insertion_ts,
        "dedup_id": event.dedup_id,
    }
    try:
        document["event"] = orjson.loads(event.raw)
    except orjson.JSONDecodeError:
        # Ingested raw and not JSON: shown as base64, never guessed at.
        document["event"] = None
        document["raw_base64"] = base64.b64encode(event.raw).decode("ascii")
    return document


async def _poll(storage: _Storage, request: PollRequest) -> Any:
    if storage.data_dir is not None and not storage.data_dir.is_dir():
        raise BusDirectoryError(f"no such directory: {storage.data_dir}")
    backend = get_plugin_manager().storage_backend(storage.backend, storage.options)
    await backend.open()
    try:
        shards: Sequence[int] = await backend.known_shards()
        return await PollMerger(backend, lambda: shards).poll(request)
    finally:
        await backend.close()


@command
def _run_poll(args: argparse.Namespace) -> int:
    """Print stored events after a cursor."""
    storage = _Storage.from_args(args)
    request = PollRequest(
        limit=args.limit, cursor=args.cursor, filter=args.filter, ordering=args.ordering
    )
    page = anyio.run(_poll, storage, request)
    # A shard that could not be read (with redex: held open by a running bus) is skipped;
    # its events stay ahead of the cursor, but the output is incomplete: exit status 1.
    status = 1 if page.failed_shards else 0
    if page.failed_shards:
        sys.stderr.write(
            f"net: error: shard(s) {page.failed_shards} could not be read and were "
            "skipped; their events are still ahead of the cursor\n"
        )
    if args.json:
        emit_json(
            {
                "events": [_event_json(e) for e in page.events],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
                "failed_shards": page.failed_shards,
            }
        )
        return status
    sys.stdout.write(
        "".join(
            f"{e.shard_id} {e.id} {e.dedup_id or '-'} {e.raw.decode('utf-8', 'replace')}\n"
            for e in page.events
        )
    )
    more = "more events follow" if page.has_more else "no more events now"
    sys.stderr.write(f"next cursor: {page.next_cursor or '-'} ({more})\n")
    return status


# -- registration -------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bus`` command group."""
    bus = subparsers.add_parser(
        "bus",
        help="ingest JSON lines into the event bus, poll stored events back",
        description=(
            "Put events into the event bus and read them back. Storage is the redex "
            f"backend under --data-dir (default ./{DEFAULT_DATA_DIR}, the directory of "
            "`net demo`) unless --storage names another backend plugin."
        ),
    )
    commands = bus.add_subparsers(title="commands", metavar="COMMAND", required=True)

    ingest = commands.add_parser(
        "ingest",
        help="ingest JSON lines from stdin",
        description=(
            "Read JSON lines from stdin and ingest each one (its bytes as given) into a bus "
            "on the chosen storage, then flush and print the counts. Lines that are not "
            "JSON are reported with their line numbers and not ingested (exit status 1); "
            "blank lines are skipped. A full ring is waited out, never dropped. With the "
            "redex backend the producer nonce is kept in DIR/producer.nonce."
        ),
    )
    _storage_arguments(ingest)
    ingest.add_argument(
        "--shards",
        type=positive_int,
        default=DEFAULT_SHARDS,
        metavar="S",
        help=f"shards of the bus ({DEFAULT_SHARDS})",
    )
    add_json_flag(ingest)
    ingest.set_defaults(func=_run_ingest)

    poll = commands.add_parser(
        "poll",
        help="print stored events after a cursor",
        description=(
            "One poll over every shard the storage holds: up to --limit events after "
            "--cursor (from the start without one), optionally filtered. Text: one line "
            "per event, 'shard id dedup_id event', and the next cursor on stderr. "
            'JSON: {"events": [{"id", "shard_id", "insertion_ts", "dedup_id", "event"}], '
            '"next_cursor", "has_more", "failed_shards"}. Exit status 1 when a shard could '
            "not be read (a redex shard held open by a running bus)."
        ),
    )
    _storage_arguments(poll)
    poll.add_argument("--cursor", type=_cursor, metavar="C", help="resume after this cursor")
    poll.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="most events (100)"
    )
    poll.add_argument(
        "--filter",
        type=_filter,
        metavar="JSON",
        help='a filter, e.g. \'{"path": "type", "value": "token"}\' (see docs/bus.md)',
    )
    poll.add_argument(
        "--ordering",
        choices=("none", "insertion_ts"),
        default="none",
        help="shard by shard (none, the default) or merged by insertion time",
    )
    add_json_flag(poll)
    poll.set_defaults(func=_run_poll)
