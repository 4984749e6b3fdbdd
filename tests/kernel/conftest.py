from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.fakedist import FakeDists


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDists]:
    """Fake installed distributions publishing net-core plugins."""
    root = tmp_path / "site"
    root.mkdir()
    dists = FakeDists(root, monkeypatch)
    yield dists
    dists.cleanup()
