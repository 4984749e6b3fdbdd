"""Session replacement rules (``mesh.md`` §2.6), as data and one pure decision function.

There is no time- or volume-based rekey in the mesh: a session lives until a new
handshake replaces it or the peer is evicted. What needs a rule is *which* new handshake
may replace a live session:

* a **direct** handshake (``connect`` / ``accept``) is requested by the application for
  that peer, so it always installs its session (:attr:`RotationDecision.ACCEPT_NEW` or
  :attr:`~RotationDecision.ACCEPT_ROTATION`);
* a **routed** handshake arrives unsolicited through a relay, so (0.18 behaviour, fixing
  the 0.9 overwrite of live sessions):

  ==============================  ===============================  =====================
  existing session                new msg1                         decision
  ==============================  ===============================  =====================
  none                            any                              ACCEPT_NEW
  same remote static              same initiator ephemeral         DROP_REPLAY
  same remote static              new ephemeral                    ACCEPT_ROTATION
  different remote static         idle >= session_timeout          ACCEPT_ROTATION
  different remote static         idle < session_timeout           REFUSE_FRESH
  ==============================  ===============================  =====================

The node must take the decision and install the session under one per-peer critical
section (the reference raced ``get`` against ``insert``). Times are integers passed in.
"""

from __future__ import annotations

import enum
from typing import final

import attrs

__all__ = ["ExistingSession", "RotationDecision", "decide_rotation"]


class RotationDecision(enum.Enum):
    """What to do with a handshake for a peer that may already have a session."""

    ACCEPT_NEW = "accept_new"
    ACCEPT_ROTATION = "accept_rotation"
    DROP_REPLAY = "drop_replay"
    REFUSE_FRESH = "refuse_fresh"

    @property
    def installs(self) -> bool:
        """True when the new session replaces (or becomes) the peer's session."""
        return self in (RotationDecision.ACCEPT_NEW, RotationDecision.ACCEPT_ROTATION)


@final
@attrs.frozen(slots=True)
class ExistingSession:
    """The facts about a peer's live session the decision needs."""

    remote_static: bytes
    initiator_ephemeral: bytes
    last_activity_ns: int


def decide_rotation(
    existing: ExistingSession | None,
    *,
    remote_static: bytes,
    initiator_ephemeral: bytes,
    routed: bool,
    now_ns: int,
    session_timeout_ns: int,
) -> RotationDecision:
    """Apply the table in the module docstring."""
    if existing is None:
        return RotationDecision.ACCEPT_NEW
    if not routed:
        return RotationDecision.ACCEPT_ROTATION
    if existing.remote_static == remote_static:
        if existing.initiator_ephemeral == initiator_ephemeral:
            return RotationDecision.DROP_REPLAY
        return RotationDecision.ACCEPT_ROTATION
    if now_ns - existing.last_activity_ns >= session_timeout_ns:
        return RotationDecision.ACCEPT_ROTATION
    return RotationDecision.REFUSE_FRESH
