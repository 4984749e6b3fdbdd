"""Benchmarks: net-core measured against the reference implementation (``ai2070-net``).

The harness (:mod:`net_core.bench._harness`) times both implementations the same way
in the same process and reports ours, theirs and the ratio; each suite is one module
(``_redex``, ``_bus`` ...) with a ``run_*_suite(quick=..., progress=...)`` function
registered in :data:`SUITES`, which ``net bench SUITE`` and the scripts in
``benchmarks/`` run. Separately installed distributions (the storage adapters) add
suites through the ``net_core.bench`` entry-point group: each entry point names a
:class:`SuiteRunner`; :func:`available_suites` merges them with the built-in ones.

Benchmarks are not tests: they print numbers and assert nothing about speed. Library
code must never import this package.
"""

import importlib.metadata
from collections.abc import Mapping
from typing import Final, Protocol, TextIO

from net_core.bench._bus import run_bus_suite
from net_core.bench._cortex import run_cortex_suite
from net_core.bench._harness import (
    REFERENCE_MISSING,
    Reference,
    Result,
    Side,
    Stopwatch,
    Suite,
    SuiteReport,
    format_table,
    load_reference,
)
from net_core.bench._mesh import run_mesh_suite
from net_core.bench._redex import run_redex_suite

__all__ = [
    "REFERENCE_MISSING",
    "SUITES",
    "Reference",
    "Result",
    "Side",
    "Stopwatch",
    "Suite",
    "SuiteReport",
    "SuiteRunner",
    "available_suites",
    "format_table",
    "load_reference",
    "run_bus_suite",
    "run_cortex_suite",
    "run_mesh_suite",
    "run_redex_suite",
]


class SuiteRunner(Protocol):
    """Runs one suite (tiny sizes when ``quick``), writing progress lines to ``progress``."""

    def __call__(self, *, quick: bool = False, progress: TextIO | None = None) -> SuiteReport: ...


#: The suites ``net bench`` knows, by name.
SUITES: Final[Mapping[str, SuiteRunner]] = {
    "bus": run_bus_suite,
    "cortex": run_cortex_suite,
    "mesh": run_mesh_suite,
    "redex": run_redex_suite,
}

#: Entry-point group through which other distributions contribute suites.
BENCH_ENTRY_POINT_GROUP: Final = "net_core.bench"


def available_suites() -> dict[str, SuiteRunner]:
    """The built-in suites plus those installed distributions register.

    An entry point in the ``net_core.bench`` group maps a suite name to a
    :class:`SuiteRunner`; it is imported only when listed here (so a broken adapter
    cannot break ``net bench redex``: its suite is left out and the import error is
    attached to the name in the returned mapping as a runner that re-raises it).
    Built-in names cannot be overridden.
    """
    suites: dict[str, SuiteRunner] = dict(SUITES)
    for ep in sorted(
        importlib.metadata.entry_points(group=BENCH_ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        if ep.name in suites:
            continue
        try:
            runner = ep.load()
        except Exception as exc:  # a broken plugin must not break the other suites
            suites[ep.name] = _broken_suite(ep.name, exc)
        else:
            suites[ep.name] = runner
    return suites


def _broken_suite(name: str, exc: BaseException) -> SuiteRunner:
    from net_core.errors import PluginError  # noqa: PLC0415 - only on the failure path

    def run(*, quick: bool = False, progress: TextIO | None = None) -> SuiteReport:
        del quick, progress
        raise PluginError(f"benchmark suite {name!r} failed to load: {exc!r}") from exc

    return run
