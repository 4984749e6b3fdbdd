"""Errors of the mesh node (the I/O layer); the sans-I/O core's errors are in ``_errors``."""

from __future__ import annotations

from net_core.errors import ClosedError, MeshError
from net_core.mesh._errors import MeshBackpressureError

__all__ = [
    "HandshakeTimeoutError",
    "NodeClosedError",
    "NotConnectedError",
    "StreamBackpressureError",
    "StreamConfigError",
]


class NotConnectedError(MeshError):
    """No live session for the peer, or the stream handle is closed or stale (its
    session was replaced, or the stream was closed and reopened: a new epoch)."""


class StreamBackpressureError(MeshBackpressureError):
    """A send ran out of stream credit. ``events_sent`` events of the call (a prefix,
    in ``packets_sent`` packets) went before the refusal; the rest consumed nothing.

    Subclass of :class:`~net_core.mesh.MeshBackpressureError`, hence of
    :class:`net_core.errors.BackpressureError` and :class:`net_core.errors.MeshError`.
    """

    def __init__(self, needed: int, remaining: int, events_sent: int, packets_sent: int) -> None:
        super().__init__(needed, remaining)
        self.events_sent = events_sent
        self.packets_sent = packets_sent


class HandshakeTimeoutError(MeshError, TimeoutError):
    """``connect`` got no valid answer within ``handshake_retries`` attempts of
    ``handshake_timeout`` each (or ``accept`` waited past its timeout)."""


class NodeClosedError(MeshError, ClosedError):
    """The node was closed (its context exited); nothing more can be sent or received."""


class StreamConfigError(MeshError, ValueError):
    """An invalid stream configuration (unknown reliability, negative window, a reliable
    stream without a credit window, fairness weight < 1)."""
