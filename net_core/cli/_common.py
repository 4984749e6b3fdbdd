"""Helpers shared by the sub-commands: JSON output and error reporting."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from net_core.errors import NetError

__all__ = ["add_json_flag", "emit_json", "report_error"]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the standard ``--json`` switch."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of text"
    )


def emit_json(document: Any) -> None:
    """Write ``document`` as indented JSON to stdout."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def report_error(exc: NetError, *, as_json: bool) -> int:
    """Report a library error the way the CLI promises; returns the exit status."""
    if as_json:
        emit_json({"error": {"type": type(exc).__name__, "message": str(exc)}})
    else:
        sys.stderr.write(f"net: error: {exc}\n")
    return 1
