"""Shared test configuration.

* Every async test (``@pytest.mark.anyio``) runs once on asyncio and once on trio.
* hypothesis uses the ``ci`` profile when ``CI`` is set (more examples, no deadline,
  derandomized so a CI failure reproduces), ``dev`` otherwise.
* The real-service fixtures (``redis_server``, ``nats_server``, ...) come from
  :mod:`net_core.testing.pytest_plugin`, which plugin authors can load the same way.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["net_core.testing.pytest_plugin"]

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on both asyncio and trio."""
    return str(request.param)
