"""Keypairs, entity ids, derived hashes and strict verification (no reference needed)."""

from __future__ import annotations

import hashlib

import pytest

from net_core.errors import DecodeError, IdentityError
from net_core.identity import (
    EntityDecodeError,
    EntityId,
    EntityKeypair,
    InvalidSeedError,
    OriginStamp,
    ReadOnlyKeypairError,
    SignatureError,
    node_id_of,
    origin_hash_of,
    routing_origin,
    verify_strict,
)

# Vectors from the fact sheet (mesh.md §5.1), measured on the reference.
VECTORS = [
    (
        bytes(32),
        "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
        0x2A22743FEE3E433D,
        0x87482E2F287F5D52,
    ),
    (
        bytes(range(32)),
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
        0xBD826A5D0A6394F5,
        0x782A3238801976BF,
    ),
]


@pytest.mark.parametrize(("seed", "entity", "node_id", "origin"), VECTORS)
def test_vectors(seed: bytes, entity: str, node_id: int, origin: int) -> None:
    keypair = EntityKeypair.from_seed(seed)
    assert keypair.entity_id.hex() == entity
    assert keypair.node_id == node_id
    assert keypair.origin_hash == origin
    assert keypair.entity_id.routing_origin == origin & 0xFFFFFFFF
    assert routing_origin(origin) == origin & 0xFFFFFFFF


def test_derivations_are_keyed_blake2s_first_eight_bytes_le() -> None:
    key = bytes.fromhex(VECTORS[0][1])
    digest = hashlib.blake2s(key, key=b"net-origin-v1").digest()
    assert origin_hash_of(key) == int.from_bytes(digest[:8], "little")
    digest = hashlib.blake2s(key, key=b"net-node-id-v1").digest()
    assert node_id_of(key) == int.from_bytes(digest[:8], "little")
    assert node_id_of(key) != origin_hash_of(key)


def test_seed_must_be_32_bytes() -> None:
    for size in (0, 31, 33, 64):
        with pytest.raises(InvalidSeedError, match=f"seed must be 32 bytes, got {size}"):
            EntityKeypair.from_seed(bytes(size))


def test_entity_id_codec() -> None:
    eid = EntityKeypair.from_seed(bytes(32)).entity_id
    assert EntityId.from_bytes(bytes(eid)) == eid
    assert EntityId.from_hex("0x" + eid.hex()) == eid
    assert hash(EntityId(eid.as_bytes())) == hash(eid)
    assert eid != EntityKeypair.from_seed(bytes(range(32))).entity_id
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(EntityDecodeError):
            EntityId.from_bytes(bad)
    with pytest.raises(DecodeError):
        EntityId.from_hex("zz" * 32)


def test_generate_is_random_and_round_trips_through_the_seed() -> None:
    first, second = EntityKeypair.generate(), EntityKeypair.generate()
    assert first.entity_id != second.entity_id
    assert EntityKeypair.from_seed(first.seed()) == first


def test_sign_and_strict_verify() -> None:
    keypair = EntityKeypair.from_seed(bytes(range(32)))
    signature = keypair.sign(b"hello")
    assert len(signature) == 64
    keypair.verify(b"hello", signature)
    assert keypair.entity_id.is_valid_signature(b"hello", signature)
    with pytest.raises(SignatureError):
        keypair.verify(b"hellO", signature)
    flipped = bytearray(signature)
    flipped[40] ^= 0x01
    assert not verify_strict(keypair.entity_id.as_bytes(), b"hello", bytes(flipped))
    assert not verify_strict(keypair.entity_id.as_bytes(), b"hello", signature[:63])
    assert not verify_strict(b"\x00" * 31, b"hello", signature)


def test_strict_verification_rejects_small_order_keys_and_points() -> None:
    identity_point = b"\x01" + bytes(31)
    universal = identity_point + bytes(32)  # R = identity, S = 0
    for message in (b"", b"anything", bytes(1000)):
        assert not verify_strict(identity_point, message, universal)
    # A non-canonical S (S + L) of a genuine signature is refused.
    keypair = EntityKeypair.from_seed(bytes(32))
    signature = keypair.sign(b"m")
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(signature[32:], "little") + order
    assert s < 2**256
    assert not verify_strict(
        keypair.entity_id.as_bytes(), b"m", signature[:32] + s.to_bytes(32, "little")
    )


def test_public_only_keypair_cannot_sign() -> None:
    full = EntityKeypair.from_seed(bytes(32))
    public = EntityKeypair.public_only(full.entity_id)
    assert public.is_read_only
    assert full.to_public() == public
    assert public.origin_hash == full.origin_hash
    with pytest.raises(ReadOnlyKeypairError, match="public-only") as err:
        public.sign(b"x")
    assert isinstance(err.value, IdentityError)
    with pytest.raises(ReadOnlyKeypairError):
        public.seed()
    public.verify(b"x", full.sign(b"x"))


def test_repr_hides_the_seed() -> None:
    keypair = EntityKeypair.from_seed(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(keypair)
    assert "0xbd826a5d0a6394f5" in repr(keypair)


def test_origin_stamp_caches_the_three_values() -> None:
    keypair = EntityKeypair.from_seed(bytes(range(32)))
    stamp = OriginStamp.of(keypair)
    assert stamp == OriginStamp.of(keypair.entity_id)
    assert stamp.entity_id == keypair.entity_id
    assert stamp.origin_hash == 0x782A3238801976BF
    assert stamp.node_id == 0xBD826A5D0A6394F5
    assert stamp.routing_origin == 0x801976BF
