"""Errors of the event bus: ingest refusals, one class per cause a producer can act on.

Texts follow the reference's (``backpressure: ring buffer full``...). All derive from
:class:`IngestError` (a :class:`~net_core.errors.BusError`).
"""

from __future__ import annotations

from net_core.errors import BackpressureError, BusError, ClosedError

__all__ = ["Backpressure", "IngestError", "Sampled", "ShuttingDown", "Unrouted"]


class IngestError(BusError):
    """An event was not accepted by :meth:`Bus.ingest` (nothing was queued)."""


class Backpressure(IngestError, BackpressureError):
    """The shard's ring is full (``drop_newest`` / ``fail_producer``): retry later."""

    def __init__(self) -> None:
        super().__init__("backpressure: ring buffer full")


class Sampled(IngestError):
    """The event was dropped on purpose by the ``sample`` policy; retrying is pointless."""

    def __init__(self) -> None:
        super().__init__("event dropped due to sampling")


class Unrouted(IngestError):
    """No shard can take the event right now (topology in transition): retry shortly."""

    def __init__(self) -> None:
        super().__init__("event has no routable shard")


class ShuttingDown(IngestError, ClosedError):
    """The bus is shutting down (or shut down) and accepts no more events."""

    def __init__(self) -> None:
        super().__init__("event bus is shutting down")
