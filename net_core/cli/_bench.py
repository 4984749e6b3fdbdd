"""``net bench SUITE``: run a benchmark suite against the reference and print the ratios."""

from __future__ import annotations

import argparse
import sys

import attrs

from net_core.bench import available_suites, format_table
from net_core.cli._common import add_json_flag, emit_json, report_error
from net_core.errors import NetError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` sub-command."""
    names = ", ".join(sorted(available_suites()))
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput and memory against the reference implementation",
        description=(
            "Run a benchmark suite. Each scenario runs on net-core and, in the same "
            "process, on the reference implementation (ai2070-net) when it is installed; "
            "the ratio is >= 1.0 when net-core is at least as good. Progress goes to "
            f"stderr. Suites: {names}."
        ),
    )
    parser.add_argument("suite", nargs="?", metavar="SUITE", help=f"the suite to run ({names})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: a smoke run of a few seconds whose figures mean nothing",
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen suite and print its table (or JSON document)."""
    suites = available_suites()
    names = sorted(suites)
    if args.suite not in suites:
        problem = (
            "a suite name is required"
            if args.suite is None
            else f"unknown benchmark suite {args.suite!r}"
        )
        if args.json:
            emit_json({"error": {"type": "UsageError", "message": problem}, "suites": names})
        else:
            sys.stderr.write(f"net bench: error: {problem}; available suites: {', '.join(names)}\n")
        return 2
    try:
        report = suites[args.suite](quick=args.quick, progress=sys.stderr)
    except NetError as exc:
        return report_error(exc, as_json=args.json)
    if args.json:
        emit_json(attrs.asdict(report))
    else:
        sys.stdout.write(format_table(report))
    return 0
