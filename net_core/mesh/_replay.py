"""The 1024-bit anti-replay window of a session's receive direction (``mesh.md`` §2.5).

Theory of operation. ``rx_counter`` is one more than the highest committed nonce counter
(0 = nothing committed yet); bit *i* of the bitmap says counter ``rx_counter - 1 - i``
was already accepted. A counter is acceptable when

* it is at or ahead of ``rx_counter`` by at most :data:`MAX_FORWARD` (1024), or
* it is behind by less than :data:`REPLAY_WINDOW_BITS` (1024) and its bit is clear;

and never when it is ``2**64 - 1`` or when ``rx_counter`` has saturated. The receiver
checks (:meth:`ReplayWindow.is_valid`), authenticates the packet, and only then commits
(:meth:`ReplayWindow.commit`), which re-checks, so a packet that fails AEAD never moves
the window and a replay is refused even if two copies raced through the check.

Pure state, no clocks, no I/O.
"""

from __future__ import annotations

from typing import Final, final

__all__ = ["MAX_FORWARD", "REPLAY_WINDOW_BITS", "ReplayWindow"]

REPLAY_WINDOW_BITS: Final = 1024
MAX_FORWARD: Final = 1024
_U64_MAX: Final = 2**64 - 1
_MASK: Final = (1 << REPLAY_WINDOW_BITS) - 1


@final
class ReplayWindow:
    """Sliding bitmap of accepted nonce counters (one per session receive key)."""

    __slots__ = ("_bitmap", "_rx_counter")

    def __init__(self) -> None:
        self._rx_counter = 0
        self._bitmap = 0

    @property
    def rx_counter(self) -> int:
        """One more than the highest committed counter (0 when nothing was committed)."""
        return self._rx_counter

    def is_valid(self, counter: int) -> bool:
        """True when ``counter`` may be accepted (nothing changes)."""
        if not 0 <= counter < _U64_MAX or self._rx_counter == _U64_MAX:
            return False
        rx = self._rx_counter
        if counter >= rx:
            return counter - rx <= MAX_FORWARD
        age = rx - 1 - counter
        return age < REPLAY_WINDOW_BITS and not (self._bitmap >> age) & 1

    def commit(self, counter: int) -> bool:
        """Record ``counter`` as accepted; False (and no change) when it is not valid."""
        if not self.is_valid(counter):
            return False
        rx = self._rx_counter
        if counter >= rx:
            shift = counter + 1 - rx
            if shift >= REPLAY_WINDOW_BITS:
                self._bitmap = 1
            else:
                self._bitmap = ((self._bitmap << shift) | 1) & _MASK
            self._rx_counter = counter + 1
        else:
            self._bitmap |= 1 << (rx - 1 - counter)
        return True

    def seen(self, counter: int) -> bool:
        """True when ``counter`` is inside the window and was committed."""
        rx = self._rx_counter
        if counter >= rx:
            return False
        age = rx - 1 - counter
        return age < REPLAY_WINDOW_BITS and bool((self._bitmap >> age) & 1)
