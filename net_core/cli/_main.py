"""Parser construction and dispatch for the ``net`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from net_core._version import __version__
from net_core.cli import _bench, _bus, _cortex, _demo, _identity, _mesh, _plugins, _redex


def build_parser() -> argparse.ArgumentParser:
    """The full ``net`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="net",
        description="Net: an event transport for AI and runtime workloads.",
    )
    parser.add_argument("--version", action="version", version=f"net-core {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _demo.register(subparsers)
    _plugins.register(subparsers)
    _bus.register(subparsers)
    _redex.register(subparsers)
    _cortex.register(subparsers)
    _identity.register(subparsers)
    _mesh.register(subparsers)
    _bench.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``net`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    status: int = func(args)
    return status
