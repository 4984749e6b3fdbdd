"""Helpers shared by the sub-commands: JSON output and error reporting."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from net_core.errors import NetError

__all__ = ["add_json_flag", "command", "emit_json", "report_error"]


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


_Handler = Callable[[argparse.Namespace], int]


def command(body: _Handler) -> _Handler:
    """Wrap a command: library errors and OS errors exit 1, a closed pipe exits 0."""

    def run(args: argparse.Namespace) -> int:
        try:
            status = body(args)
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
            return 0
        except NetError as exc:
            return report_error(exc, as_json=args.json)
        except OSError as exc:
            return _report_os_error(exc, as_json=args.json)
        except KeyboardInterrupt:
            return 130
        return status

    run.__doc__ = body.__doc__
    return run


def _report_os_error(exc: OSError, *, as_json: bool) -> int:
    message = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    if as_json:
        emit_json({"error": {"type": type(exc).__name__, "message": message}})
    else:
        sys.stderr.write(f"net: error: {message}\n")
    return 1


def _drop_stdout() -> None:
    # The interpreter flushes stdout again at exit; pointing it at /dev/null keeps that
    # flush from failing a second time.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
