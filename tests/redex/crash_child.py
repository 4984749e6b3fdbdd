"""The child process of the SIGKILL crash harness (``test_crash_harness.py``).

Run as ``python crash_child.py BASE_DIR SEED KEEP``. It opens the persistent channel
:data:`CHANNEL` under ``BASE_DIR`` (fsync policy *never*: the OS page cache survives a
SIGKILL, so every append that returned must survive it too) with count retention
``KEEP``, then appends until it is killed: single appends, inline appends and batches
whose payloads are a pure function of their seq (:func:`payload_for`), and now and then a
``sweep_retention()`` so that compactions run and get killed part-way.

It reports on stdout, one line per event, written with a single ``os.write`` *after* the
call returned (so a line the parent received is an acknowledgement):

* ``O <next_seq> <lowest retained seq or ->``: the channel is open;
* ``A <seq>`` / ``I <seq>``: a single / inline append returned;
* ``B <first> <count>``: a batch returned;
* ``S <bound>``: a sweep starts; once it returns, ``<bound>`` is the lowest retained seq;
* ``E <lowest>``: the sweep returned.

The operation mix comes from ``random.Random(SEED)``, so a round can be replayed.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import time
from pathlib import Path

CHANNEL = "crash/chan"
#: A child that is never killed stops by itself after this long.
MAX_SECONDS = 20.0
_MIX = struct.Struct("<Q")
_MASK64 = 2**64 - 1


def payload_for(seq: int, inline: bool) -> bytes:
    """The payload of ``seq``: 8 bytes for an inline append, else 0..~8 KiB derived from
    the seq (mostly small, every 37th one spans pages so that a kill can tear it)."""
    word = _MIX.pack((seq * 0x9E37_79B9_7F4A_7C15 + 0x632B_E59B_D9B4_E019) & _MASK64)
    if inline:
        return word
    # Every 37th payload spans pages; the others are small, some empty.
    size = 5000 + (seq * 131) % 3500 if seq % 37 == 0 else (seq * 29) % 97
    return (word * (size // 8 + 1))[:size]


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> int:
    base, seed, keep = Path(argv[0]), int(argv[1]), int(argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from net_core.redex import Redex  # noqa: PLC0415 - after the path is set

    rng = random.Random(seed)
    redex = Redex(base)
    f = redex.open_file(
        CHANNEL,
        persistent=True,
        retention={"count": {"max_events": keep}},
        retention_check_every=0,
    )
    lowest = f.lowest_retained_seq
    _say(f"O {f.next_seq} {'-' if lowest is None else lowest}")
    sweep_chance = rng.choice((0.005, 0.02, 0.05))
    deadline = time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        roll = rng.random()
        seq = f.next_seq
        if roll < sweep_chance:
            if len(f) <= keep:
                continue
            seqs, _ = f.read_payloads(0, 2**64 - 1)
            _say(f"S {seqs[-keep]}")
            f.sweep_retention()
            _say(f"E {f.lowest_retained_seq}")
        elif roll < 0.55:
            got = f.append(payload_for(seq, False))
            assert got == seq, (got, seq)
            _say(f"A {seq}")
        elif roll < 0.70:
            got = f.append_inline(payload_for(seq, True))
            assert got == seq, (got, seq)
            _say(f"I {seq}")
        else:
            count = rng.randint(1, 24)
            first = f.append_batch([payload_for(seq + i, False) for i in range(count)])
            assert first == seq, (first, seq)
            _say(f"B {seq} {count}")
    redex.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
