"""Retry delays for failed batch writes: jittered exponential backoff per shard.

The delay before retry ``attempt`` (0 for the first retry) of a shard is
``100 ms * 2**min(attempt, 5)`` scaled by a factor in ``[0.75, 1.25)``. The factor comes
from XXH3-64 of ``(shard_id, attempt)``: deterministic across runs and processes (unlike
Python's salted ``hash`` or the reference's toolchain-dependent SipHash), and different
for different shards, so shards that fail together do not retry in lockstep (the
reference's "synchronised retry storms" defect).

Pure: computes a number; sleeping is the caller's business.
"""

from __future__ import annotations

import struct
from typing import Final

import xxhash

__all__ = ["BACKOFF_BASE_MS", "BACKOFF_MAX_EXPONENT", "retry_backoff_ms"]

#: Delay before the first retry, before jitter.
BACKOFF_BASE_MS: Final = 100.0
#: The delay doubles per attempt up to ``2**5`` times the base (3.2 s before jitter).
BACKOFF_MAX_EXPONENT: Final = 5

_U64 = (1 << 64) - 1
_pack = struct.Struct("<QQ").pack
_xxh3 = xxhash.xxh3_64_intdigest


def retry_backoff_ms(shard_id: int, attempt: int) -> float:
    """Milliseconds to wait before retry ``attempt`` (``>= 0``) of ``shard_id``'s batch.

    In ``[0.75, 1.25)`` times ``100 * 2**min(attempt, 5)``: 75-125 ms, 150-250 ms, ...,
    2400-4000 ms from attempt 5 on; never below 1 ms.
    """
    if not 0 <= shard_id <= _U64 or not 0 <= attempt <= _U64:
        raise ValueError(f"shard_id and attempt must be in [0, 2**64), got {shard_id}, {attempt}")
    base = BACKOFF_BASE_MS * (1 << min(attempt, BACKOFF_MAX_EXPONENT))
    # The top 53 bits of the hash give a uniform fraction in [0, 1) with exact floats.
    fraction = (_xxh3(_pack(shard_id, attempt)) >> 11) / float(1 << 53)
    return max(1.0, base * (0.75 + 0.5 * fraction))
