"""RedEX throughput and memory, net-core against the reference (``ai2070-net``).

Runs the same suite as ``net bench redex``::

    .venv/bin/python benchmarks/bench_redex.py            # default sizes, < 60 s
    .venv/bin/python benchmarks/bench_redex.py --quick    # smoke sizes, a few seconds
    .venv/bin/python benchmarks/bench_redex.py --json     # one JSON document on stdout

Progress goes to stderr, the table (or JSON) to stdout. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys

import attrs
import orjson

from net_core.bench import format_table, run_redex_suite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (figures mean nothing)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    report = run_redex_suite(quick=args.quick, progress=sys.stderr)
    if args.json:
        print(orjson.dumps(attrs.asdict(report), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_table(report), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
