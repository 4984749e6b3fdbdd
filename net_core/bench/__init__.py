"""Benchmarks: net-core measured against the reference implementation (``ai2070-net``).

The harness (:mod:`net_core.bench._harness`) times both implementations the same way
in the same process and reports ours, theirs and the ratio; each suite is one module
(``_redex``, ``_bus`` ...) with a ``run_*_suite(quick=..., progress=...)`` function
registered in :data:`SUITES`, which ``net bench SUITE`` and the scripts in
``benchmarks/`` run.

Benchmarks are not tests: they print numbers and assert nothing about speed. Library
code must never import this package.
"""

from collections.abc import Mapping
from typing import Final, Protocol, TextIO

from net_core.bench._bus import run_bus_suite
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
    "format_table",
    "load_reference",
    "run_bus_suite",
    "run_redex_suite",
]


class SuiteRunner(Protocol):
    """Runs one suite (tiny sizes when ``quick``), writing progress lines to ``progress``."""

    def __call__(self, *, quick: bool = False, progress: TextIO | None = None) -> SuiteReport: ...


#: The suites ``net bench`` knows, by name.
SUITES: Final[Mapping[str, SuiteRunner]] = {
    "bus": run_bus_suite,
    "redex": run_redex_suite,
}
