"""Build throw-away installed distributions on disk for plugin-discovery tests.

A directory with ``<name>-<version>.dist-info/{METADATA,entry_points.txt}`` plus modules,
prepended to ``sys.path``, is found by :mod:`importlib.metadata` exactly like a
pip-installed distribution: the tests exercise real entry-point discovery.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from net_core.plugins import ENTRY_POINT_GROUP, PluginManager


class FakeDists:
    """Creates fake distributions under one root on ``sys.path``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.names: list[str] = []
        self._modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))
        self._monkeypatch = monkeypatch

    def module_name(self, stem: str) -> str:
        """A module name unique to this test run (imports are cached per process)."""
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        self._modules.append(name)
        return name

    def add(
        self,
        dist: str,
        *,
        version: str = "1.0.0",
        plugins: dict[str, str],
    ) -> dict[str, str]:
        """Add distribution ``dist`` whose entry points map ``ep name -> module source``.

        Returns ``ep name -> module name``.
        """
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        lines = [f"[{ENTRY_POINT_GROUP}]"]
        mapping = {}
        for ep_name, source in plugins.items():
            module = self.module_name(ep_name)
            (self.root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            lines.append(f"{ep_name} = {module}")
            mapping[ep_name] = module
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.names.append(dist)
        return mapping

    def entry_points(self) -> list[md.EntryPoint]:
        """The entry points of the fake distributions only (not the real installed ones)."""
        return [
            ep
            for ep in md.entry_points(group=ENTRY_POINT_GROUP)
            if ep.dist is not None and ep.dist.name in self.names
        ]

    def manager(self, **kwargs: object) -> PluginManager:
        """A manager with the built-ins and the fake distributions' plugins."""
        kwargs.setdefault("allow", None)
        return PluginManager(entry_points=self.entry_points(), **kwargs)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        """Drop the fake modules from the import cache."""
        for name in self._modules:
            sys.modules.pop(name, None)


GOOD_RETENTION = """
    from typing import Any
    import attrs
    from net_core.plugins import ComponentSpec, hookimpl

    @attrs.frozen
    class KeepOne:
        def eviction_count(self, view, now_ns):
            return max(0, len(view) - 1)

    @hookimpl
    def net_retention_policies():
        return [ComponentSpec(name="{name}", factory=lambda: KeepOne())]
"""
