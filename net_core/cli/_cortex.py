"""``net cortex``: list the tasks and memories folded from a persistent RedEX directory.

Theory of operation. ``net cortex tasks list`` and ``net cortex memories list`` open the
channel (``cortex/tasks`` or ``cortex/memories``) under ``--dir`` with a *read-only*
:class:`~net_core.redex.Redex`, exactly as ``net redex dump`` does (no repair, no sweep,
no lock, nothing written), fold it from its first event with the model
(:class:`~net_core.cortex.TasksAdapter` / :class:`~net_core.cortex.MemoriesAdapter`,
whose open waits until the fold has caught up), run the query the options describe and
print the result. The fold sees the channel as it was when it was opened, so the command
is safe on a directory that a live process keeps appending to. Logs written by the
reference implementation (``net.TasksAdapter`` over ``net.Redex(persistent_dir=DIR)``)
read the same way: the formats are byte-compatible.

The fold runs under the ``log_and_continue`` policy: an event that cannot be folded is
skipped and counted, and the command lists everything else. The count (and the last
error) goes to stderr in both output modes, because ``--json`` prints exactly the list
of records and nothing else.

Output follows the CLI conventions (``--json``: one JSON document on stdout; library
errors exit 1, with a typed JSON error under ``--json``; usage errors exit 2). This
module never writes to a channel.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, final

import anyio
import attrs

from net_core.cli._common import add_json_flag, command, emit_json
from net_core.cli._redex import _iso, _open_read_only, _table
from net_core.cortex import (
    MEMORIES_CHANNEL,
    TASKS_CHANNEL,
    CortexAdapterConfig,
    FoldErrorPolicy,
    MemoriesAdapter,
    Memory,
    Task,
    TasksAdapter,
    TaskStatus,
)
from net_core.cortex._query import ORDER_BY

__all__ = ["register"]

_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
#: The listing never writes, so the producer id it folds as does not matter.
_READER_ORIGIN: Final = 0
_FOLD_CONFIG: Final = CortexAdapterConfig(error_policy=FoldErrorPolicy.LOG_AND_CONTINUE)
_DEFAULT_ORDER: Final = "id_asc"


@final
@attrs.frozen(slots=True)
class _Listing:
    """What one ``list`` command found: the matching records and the fold's health."""

    channel: str
    records: list[dict[str, Any]]
    total: int
    fold_errors: int
    last_error: str | None


# -- option types -------------------------------------------------------------------------


def _timestamp(text: str) -> int:
    """Unix nanoseconds, as an integer or an ISO-8601 date-time (naive means UTC)."""
    try:
        value = int(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a timestamp: {text!r} (unix nanoseconds, or ISO-8601 such as "
                "2026-05-01T12:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        value = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if not 0 <= value <= _U64_MAX:
        raise argparse.ArgumentTypeError(f"timestamp out of range [0, 2**64 - 1]: {text!r}")
    return value


def _u64(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= _U64_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64 - 1], got {value}")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# -- folding ------------------------------------------------------------------------------


def _fold_and_query(
    base: Path,
    channel: str,
    run: Callable[[Any], tuple[list[dict[str, Any]], int]],
) -> _Listing:
    """Open ``channel`` read-only, fold it with its model and run ``run(model)``."""
    redex, _file, _seqs = _open_read_only(base, channel)
    try:
        return anyio.run(_fold, redex, channel, run)
    finally:
        redex.close()


async def _fold(
    redex: Any, channel: str, run: Callable[[Any], tuple[list[dict[str, Any]], int]]
) -> _Listing:
    # The file is already open on the read-only manager; the model's open returns that
    # handle (same config) and folds it from its first event.
    opener = TasksAdapter.open if channel == TASKS_CHANNEL else MemoriesAdapter.open
    async with opener(redex, _READER_ORIGIN, persistent=True, config=_FOLD_CONFIG) as model:
        adapter = model.adapter
        records, total = run(model)
        last = adapter.last_error
        return _Listing(
            channel=channel,
            records=records,
            total=total,
            fold_errors=adapter.fold_errors,
            last_error=None if last is None else f"{type(last).__name__}: {last}",
        )


def _task_json(task: Task) -> dict[str, Any]:
    doc = task._asdict()
    doc["status"] = "completed" if task.status == TaskStatus.COMPLETED else "pending"
    return doc


def _memory_json(memory: Memory) -> dict[str, Any]:
    doc = memory._asdict()
    doc["tags"] = list(memory.tags)
    return {
        key: doc[key]
        for key in ("id", "content", "tags", "source", "pinned", "created_ns", "updated_ns")
    }


def _time_bounds(args: argparse.Namespace) -> dict[str, int | None]:
    return {
        "created_after_ns": args.created_after,
        "created_before_ns": args.created_before,
        "updated_after_ns": args.updated_after,
        "updated_before_ns": args.updated_before,
    }


def _query_tasks(args: argparse.Namespace) -> Callable[[Any], tuple[list[dict[str, Any]], int]]:
    def run(tasks: TasksAdapter) -> tuple[list[dict[str, Any]], int]:
        found = tasks.list_tasks(
            status=args.status,
            title_contains=args.title_contains,
            where_id_in=args.ids,
            order_by=args.order_by,
            limit=args.limit,
            **_time_bounds(args),
        )
        return [_task_json(t) for t in found], tasks.count()

    return run


def _query_memories(
    args: argparse.Namespace,
) -> Callable[[Any], tuple[list[dict[str, Any]], int]]:
    def run(memories: MemoriesAdapter) -> tuple[list[dict[str, Any]], int]:
        found = memories.list_memories(
            source=args.source,
            content_contains=args.content_contains,
            tag=args.tag,
            any_tag=args.any_tag,
            all_tags=args.all_tags,
            pinned=args.pinned,
            order_by=args.order_by,
            limit=args.limit,
            **_time_bounds(args),
        )
        return [_memory_json(m) for m in found], memories.count()

    return run


# -- output -------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """``text`` on one line: characters that are not printable are shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _report_fold_problems(listing: _Listing) -> None:
    # stderr in both modes: the --json document must stay the plain list of records.
    if listing.fold_errors:
        sys.stderr.write(
            f"net: warning: {listing.channel}: {listing.fold_errors} event(s) could not be "
            f"folded and were skipped (last: {listing.last_error})\n"
        )


def _print(listing: _Listing, as_json: bool, noun: str, columns: Sequence[str]) -> int:
    if as_json:
        emit_json(listing.records)
    else:
        rows = [[c.removesuffix("_ns").upper() for c in columns]]
        for record in listing.records:
            rows.append([_format(column, record[column]) for column in columns])
        out = _table(rows) if listing.records else ""
        sys.stdout.write(f"{out}{len(listing.records)} of {listing.total} {noun}\n")
    _report_fold_problems(listing)
    return 0


def _format(column: str, value: Any) -> str:
    if column.endswith("_ns"):
        return _iso(value)
    if column == "tags":
        return ",".join(_cell(t) for t in value) if value else "-"
    if column == "pinned":
        return "yes" if value else "no"
    if column == "source" and not value:
        return "-"
    return _cell(str(value))


@command
def _run_tasks_list(args: argparse.Namespace) -> int:
    """List the tasks folded from ``DIR/cortex/tasks``."""
    listing = _fold_and_query(Path(args.dir), TASKS_CHANNEL, _query_tasks(args))
    return _print(
        listing, args.json, "tasks", ("id", "status", "created_ns", "updated_ns", "title")
    )


@command
def _run_memories_list(args: argparse.Namespace) -> int:
    """List the memories folded from ``DIR/cortex/memories``."""
    listing = _fold_and_query(Path(args.dir), MEMORIES_CHANNEL, _query_memories(args))
    return _print(
        listing,
        args.json,
        "memories",
        ("id", "pinned", "source", "tags", "created_ns", "updated_ns", "content"),
    )


# -- registration -------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cortex`` command group."""
    cortex = subparsers.add_parser(
        "cortex",
        help="list the tasks and memories of a persistent RedEX directory",
        description=(
            "Fold the CortEX channels (cortex/tasks, cortex/memories) of a persistent "
            "RedEX directory and list what they hold. Read-only: safe on a directory "
            "that a live process is writing (the listing is the channel as it was when "
            "the command opened it)."
        ),
    )
    models = cortex.add_subparsers(title="models", metavar="MODEL", required=True)

    tasks = models.add_parser("tasks", help="the Tasks model (cortex/tasks)")
    tasks_commands = tasks.add_subparsers(title="commands", metavar="COMMAND", required=True)
    tasks_list = tasks_commands.add_parser(
        "list",
        help="list tasks, filtered and ordered",
        description=(
            "List the tasks folded from DIR/cortex/tasks that match every filter given, "
            f"ordered by --order-by (default {_DEFAULT_ORDER}). Text: an aligned table and "
            "a count; --json: a list of {id, title, status, created_ns, updated_ns}. "
            "Events the fold could not apply are skipped and reported on stderr."
        ),
    )
    _dir_argument(tasks_list)
    tasks_list.add_argument(
        "--status",
        type=str.lower,
        choices=("pending", "completed"),
        help="only tasks with this status",
    )
    tasks_list.add_argument(
        "--title-contains", metavar="TEXT", help="title contains TEXT (case-insensitive)"
    )
    tasks_list.add_argument(
        "--id",
        dest="ids",
        type=_u64,
        action="append",
        metavar="ID",
        help="only the task with this id; repeatable",
    )
    _common_query_arguments(tasks_list)
    add_json_flag(tasks_list)
    tasks_list.set_defaults(func=_run_tasks_list)

    memories = models.add_parser("memories", help="the Memories model (cortex/memories)")
    memories_commands = memories.add_subparsers(title="commands", metavar="COMMAND", required=True)
    memories_list = memories_commands.add_parser(
        "list",
        help="list memories, filtered and ordered",
        description=(
            "List the memories folded from DIR/cortex/memories that match every filter "
            f"given, ordered by --order-by (default {_DEFAULT_ORDER}). Text: an aligned "
            "table and a count; --json: a list of {id, content, tags, source, pinned, "
            "created_ns, updated_ns}. Events the fold could not apply are skipped and "
            "reported on stderr."
        ),
    )
    _dir_argument(memories_list)
    memories_list.add_argument("--source", metavar="SOURCE", help="source is exactly SOURCE")
    memories_list.add_argument(
        "--content-contains", metavar="TEXT", help="content contains TEXT (case-insensitive)"
    )
    memories_list.add_argument(
        "--tag", metavar="TAG", help="has the tag TAG (exact, case-sensitive)"
    )
    memories_list.add_argument(
        "--any-tag",
        action="append",
        metavar="TAG",
        help="has at least one of the tags given; repeatable",
    )
    memories_list.add_argument(
        "--all-tags",
        action="append",
        metavar="TAG",
        help="has every one of the tags given; repeatable",
    )
    pinned = memories_list.add_mutually_exclusive_group()
    pinned.add_argument(
        "--pinned", dest="pinned", action="store_const", const=True, help="only pinned"
    )
    pinned.add_argument(
        "--unpinned", dest="pinned", action="store_const", const=False, help="only unpinned"
    )
    _common_query_arguments(memories_list)
    add_json_flag(memories_list)
    memories_list.set_defaults(func=_run_memories_list)


def _dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        required=True,
        metavar="DIR",
        help="the persistent RedEX base directory (the Redex's base_dir / persistent_dir)",
    )


def _common_query_arguments(parser: argparse.ArgumentParser) -> None:
    for which in ("created", "updated"):
        for side, op in (("after", ">="), ("before", "<=")):
            parser.add_argument(
                f"--{which}-{side}",
                type=_timestamp,
                metavar="T",
                help=f"{which}_ns {op} T (unix ns, or ISO-8601; inclusive)",
            )
    parser.add_argument(
        "--order-by",
        type=str.lower,
        choices=tuple(ORDER_BY),
        default=_DEFAULT_ORDER,
        help=f"sort key and direction (default {_DEFAULT_ORDER})",
    )
    parser.add_argument(
        "--limit", type=_limit, metavar="N", help="at most N records (after ordering)"
    )
