"""Commit-before-send: a grant processed before the send call returns must count.

On trio the receive task could process the reference's grant for a packet before the
sending task resumed from its socket call; with the commit after the send, the grant was
clamped to the bytes committed so far (none) and the credit never came back.
"""

from __future__ import annotations

from net_core.mesh import StreamSendWindow


def test_grant_arriving_before_the_send_returns_restores_the_credit() -> None:
    window = StreamSendWindow(window_bytes=300)
    assert window.try_acquire(184)
    window.commit(184)  # before the datagram leaves
    # ... the receiver's grant is processed while the send is still in progress:
    assert window.apply_grant(184) == 184
    assert window.remaining == 300


def test_uncommit_when_the_send_failed() -> None:
    window = StreamSendWindow(window_bytes=300)
    assert window.try_acquire(184)
    window.commit(184)
    window.uncommit(184)
    assert window.remaining == 300
    assert window.tx_bytes_sent == 0
    # a grant can no longer count the bytes that never left
    assert window.apply_grant(184) == 0


def test_uncommit_never_goes_below_what_grants_already_counted() -> None:
    window = StreamSendWindow(window_bytes=1000)
    for _ in range(2):
        assert window.try_acquire(100)
        window.commit(100)
    assert window.apply_grant(200) == 200
    assert window.try_acquire(100)
    window.commit(100)
    window.uncommit(100)
    assert window.tx_bytes_sent == 200
    assert window.max_consumed_seen == 200
    assert window.remaining == 1000
