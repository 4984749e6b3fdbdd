"""``net plugins``: what is loaded, from which distribution, providing what."""

from __future__ import annotations

import argparse
import sys

from net_core.cli._common import add_json_flag, emit_json, report_error
from net_core.errors import NetError
from net_core.plugins import KINDS, get_plugin_manager


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``plugins`` sub-command."""
    parser = subparsers.add_parser(
        "plugins",
        help="list loaded plugins and the components they provide",
        description=(
            "List the built-in components and every installed plugin (entry-point group "
            "'net_core.plugins'), with the distribution each comes from. Plugins that failed "
            "to load are listed with the reason. NET_CORE_PLUGINS restricts which plugins "
            "load; NET_CORE_TRACE_HOOKS=1 traces hook calls on stderr."
        ),
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plugin listing."""
    try:
        pm = get_plugin_manager()
    except NetError as exc:
        return report_error(exc, as_json=args.json)
    plugins = pm.plugins()
    failures = pm.failures
    if args.json:
        emit_json(
            {
                "plugins": [p.to_json() for p in plugins],
                "failed": [f.to_json() for f in failures],
                "skipped": [{"name": n, "distribution": d} for n, d in pm.skipped],
            }
        )
        return 0
    out = sys.stdout
    for info in plugins:
        version = f" {info.version}" if info.version else ""
        origin = "built-in" if info.builtin else "plugin"
        out.write(f"{info.name}  ({origin}, {info.distribution}{version})\n")
        for kind in KINDS:
            names = info.provides.get(kind, ())
            if names:
                out.write(f"    {kind.value:<10} {', '.join(names)}\n")
    for failure in failures:
        out.write(
            f"{failure.name}  (FAILED, {failure.distribution} {failure.version}): "
            f"{failure.stage}: {failure.error}\n"
        )
    for name, dist in pm.skipped:
        out.write(f"{name}  (skipped by NET_CORE_PLUGINS, {dist})\n")
    return 0
