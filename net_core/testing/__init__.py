"""Test helpers shipped with net-core so that plugin authors can use them too.

* :mod:`net_core.testing.services`: start real ``redis-server`` and ``nats-server -js``
  processes on free loopback ports, stop, kill and restart them.
* :mod:`net_core.testing.pytest_plugin`: pytest fixtures over those services; load it with
  ``pytest_plugins = ["net_core.testing.pytest_plugin"]`` in your ``conftest.py``.
"""
