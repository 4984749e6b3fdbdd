"""The 72-byte EnhancedPingwave: unencrypted liveness + capability beacon (``mesh.md`` §1.9).

Layout (little-endian): origin graph id (32 bytes: the origin's u64 node id followed by
24 zero bytes), seq u64, ttl u8, hop_count u8, origin_timestamp_us u64,
capability_hash u64, capability_version u32, load_level u8, health u8 (0 healthy,
1 degraded, 2 unhealthy, 3 unknown; anything else is rejected), then 8 bytes of primary
capabilities: gpu u8, model_slots u8, memory_tier u8, tools_bitmap u8, flags u32.

Pingwaves are neither encrypted nor authenticated; a receiver must only use them from
registered direct peers. Note the dispatch quirk this layout inherits: a node id whose
low two bytes are ``45 4E`` produces a pingwave that starts with ``NE`` and is taken for
a Net packet by every receiver (reference included), so such a node's pingwaves are lost.

Sans-I/O. The decoder raises only :class:`PingwaveDecodeError`.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, final

import attrs

from net_core.mesh._errors import MeshEncodeError, PingwaveDecodeError

__all__ = [
    "DEFAULT_PINGWAVE_TTL",
    "PINGWAVE_SIZE",
    "EnhancedPingwave",
    "PeerHealth",
    "memory_tier",
]

PINGWAVE_SIZE: Final = 72
DEFAULT_PINGWAVE_TTL: Final = 3
"""ProximityConfig.radius of the reference."""

# node id, 24 pad bytes, seq, ttl, hop, ts_us, cap_hash, cap_version, load, health,
# gpu, model_slots, memory_tier, tools_bitmap, caps flags
_PW: Final = struct.Struct("<Q24sQBBQQIBBBBBBI")
_PAD: Final = bytes(24)
_U8: Final = 0xFF
_U32: Final = 0xFFFF_FFFF
_U64: Final = 2**64 - 1

_MEMORY_TIERS: Final = (1024, 4096, 8192, 16384, 32768, 65536, 131072)


class PeerHealth(enum.IntEnum):
    """The health byte of a pingwave."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2
    UNKNOWN = 3


def memory_tier(memory_mb: int) -> int:
    """Bucket a memory size into the pingwave's 0..7 tier (<=1 GiB -> 0, ... > 128 GiB -> 7)."""
    for tier, bound in enumerate(_MEMORY_TIERS):
        if memory_mb <= bound:
            return tier
    return len(_MEMORY_TIERS)


@final
@attrs.frozen(slots=True)
class EnhancedPingwave:
    """One pingwave as it travels; :meth:`forwarded` gives the next hop's copy."""

    origin_node_id: int
    seq: int
    ttl: int = DEFAULT_PINGWAVE_TTL
    hop_count: int = 0
    origin_timestamp_us: int = 0
    capability_hash: int = 0
    capability_version: int = 0
    load_level: int = 0
    health: PeerHealth = PeerHealth.HEALTHY
    gpu: int = 0
    model_slots: int = 0
    memory_tier: int = 0
    tools_bitmap: int = 0
    capability_flags: int = 0

    def forwarded(self) -> EnhancedPingwave | None:
        """The copy to re-broadcast (ttl - 1, hop + 1 saturating), or None at ttl 0."""
        if self.ttl == 0:
            return None
        return attrs.evolve(self, ttl=self.ttl - 1, hop_count=min(self.hop_count + 1, _U8))

    def encode(self) -> bytes:
        """Return the 72 wire bytes."""
        for name, limit in (
            ("origin_node_id", _U64),
            ("seq", _U64),
            ("ttl", _U8),
            ("hop_count", _U8),
            ("origin_timestamp_us", _U64),
            ("capability_hash", _U64),
            ("capability_version", _U32),
            ("load_level", _U8),
            ("gpu", _U8),
            ("model_slots", _U8),
            ("memory_tier", _U8),
            ("tools_bitmap", _U8),
            ("capability_flags", _U32),
        ):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise MeshEncodeError(f"pingwave field {name}={value} does not fit 0..{limit}")
        return _PW.pack(
            self.origin_node_id,
            _PAD,
            self.seq,
            self.ttl,
            self.hop_count,
            self.origin_timestamp_us,
            self.capability_hash,
            self.capability_version,
            self.load_level,
            PeerHealth(self.health),
            self.gpu,
            self.model_slots,
            self.memory_tier,
            self.tools_bitmap,
            self.capability_flags,
        )

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> EnhancedPingwave:
        """Decode exactly 72 bytes; the graph-id padding must be zero and the health
        byte one of 0..3."""
        if len(buf) != PINGWAVE_SIZE:
            raise PingwaveDecodeError(f"pingwave must be {PINGWAVE_SIZE} bytes, got {len(buf)}")
        (
            origin,
            pad,
            seq,
            ttl,
            hops,
            ts_us,
            cap_hash,
            cap_version,
            load,
            health,
            gpu,
            slots,
            tier,
            tools,
            flags,
        ) = _PW.unpack(buf)
        if pad != _PAD:
            raise PingwaveDecodeError("pingwave origin graph id has non-zero padding")
        try:
            health_value = PeerHealth(health)
        except ValueError as exc:
            raise PingwaveDecodeError(f"unknown pingwave health byte {health}") from exc
        return cls(
            origin,
            seq,
            ttl,
            hops,
            ts_us,
            cap_hash,
            cap_version,
            load,
            health_value,
            gpu,
            slots,
            tier,
            tools,
            flags,
        )
