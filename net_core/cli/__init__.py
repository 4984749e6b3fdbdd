"""The ``net`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; this package
wires them into one :mod:`argparse` parser. Every command that prints data has a
``--json`` mode whose output is a single JSON document on stdout. Errors of the library
(:class:`~net_core.errors.NetError`) end the command with exit status 1 and a one-line
message on stderr (or ``{"error": {...}}`` on stdout with ``--json``); usage errors exit
with status 2.
"""

from __future__ import annotations

from net_core.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
