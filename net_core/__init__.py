"""net-core: Net, an event transport for AI and runtime workloads, in Python.

The kernel of a plugin framework: a sharded in-process bus batching events into pluggable
storage, the RedEX append-only log, the CortEX fold layer, and an encrypted UDP mesh, all
usable from asyncio and trio hosts alike.
"""

from net_core._version import __version__

__all__ = ["__version__"]
