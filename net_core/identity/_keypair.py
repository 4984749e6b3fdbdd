"""Entity identity: ed25519 keypairs, entity ids and the hashes derived from them.

Theory of operation. An entity is an ed25519 keypair; its :class:`EntityId` is the
32-byte public key. Two 64-bit values are derived from the id with keyed BLAKE2s-256
(the label is the key, the public key the message; the first 8 bytes little-endian):

* ``node_id`` (label ``net-node-id-v1``): the routing/addressing id of a node;
* ``origin_hash`` (label ``net-origin-v1``): the id of an event origin (a daemon's causal
  chain, a publisher). The 64-byte packet header only has room for 32 bits, so the
  header carries :func:`routing_origin` (the low 32 bits).

These derivations are byte-identical to the reference (``ai2070-net`` 0.18).

Signing uses ``cryptography``'s Ed25519. Verification is *strict*, like the reference's
``verify_strict``: it goes through libsodium (PyNaCl), which rejects small-order public
keys and ``R`` points, non-canonical ``S`` and non-canonical key encodings. OpenSSL's
plain verification accepts, for example, the all-identity "signature" under the
identity-point key for every message; strict verification does not.

This module never logs, never touches files and reads no clock.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, final

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError

from net_core.identity._errors import (
    EntityDecodeError,
    InvalidSeedError,
    ReadOnlyKeypairError,
    SignatureError,
)

__all__ = [
    "ENTITY_ID_SIZE",
    "NODE_ID_LABEL",
    "ORIGIN_LABEL",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "EntityId",
    "EntityKeypair",
    "OriginStamp",
    "node_id_of",
    "origin_hash_of",
    "routing_origin",
    "verify_strict",
]

ENTITY_ID_SIZE: Final = 32
SEED_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
NODE_ID_LABEL: Final = b"net-node-id-v1"
ORIGIN_LABEL: Final = b"net-origin-v1"
_U32_MASK: Final = 0xFFFF_FFFF


def _keyed_u64(label: bytes, public_key: bytes) -> int:
    digest = hashlib.blake2s(public_key, digest_size=32, key=label).digest()
    return int.from_bytes(digest[:8], "little")


def node_id_of(public_key: bytes) -> int:
    """The u64 node id of a 32-byte ed25519 public key."""
    return _keyed_u64(NODE_ID_LABEL, bytes(public_key))


def origin_hash_of(public_key: bytes) -> int:
    """The u64 origin hash of a 32-byte ed25519 public key."""
    return _keyed_u64(ORIGIN_LABEL, bytes(public_key))


def routing_origin(origin_hash: int) -> int:
    """The 32-bit projection of an origin hash that the packet header carries."""
    return origin_hash & _U32_MASK


def verify_strict(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a strictly valid ed25519 signature of ``message``."""
    if len(public_key) != ENTITY_ID_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True


@final
class EntityId:
    """The 32-byte ed25519 public key that names an entity.

    Construction does not check that the bytes are a curve point (tokens name issuers
    and subjects as raw bytes, like the reference); :meth:`verify` fails for bytes that
    are not a usable key. ``node_id`` and ``origin_hash`` are derived on first use and
    cached.
    """

    __slots__ = ("_bytes", "_node_id", "_origin_hash")

    def __init__(self, public_key: bytes) -> None:
        key = bytes(public_key)
        if len(key) != ENTITY_ID_SIZE:
            raise EntityDecodeError(f"identity: entity id must be 32 bytes, got {len(key)}")
        self._bytes = key
        self._node_id: int | None = None
        self._origin_hash: int | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityId:
        """Decode an entity id; raises :class:`EntityDecodeError` unless exactly 32 bytes."""
        return cls(data)

    @classmethod
    def from_hex(cls, text: str) -> EntityId:
        """Parse 64 hex digits (an optional ``0x`` prefix is accepted)."""
        digits = text.strip().removeprefix("0x")
        try:
            raw = bytes.fromhex(digits)
        except ValueError as exc:
            raise EntityDecodeError(f"identity: entity id is not hex: {text!r}") from exc
        return cls(raw)

    def as_bytes(self) -> bytes:
        """The 32 public-key bytes."""
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def hex(self) -> str:
        """The public key as 64 lowercase hex digits."""
        return self._bytes.hex()

    @property
    def node_id(self) -> int:
        """The u64 node id (keyed BLAKE2s, label ``net-node-id-v1``)."""
        if self._node_id is None:
            self._node_id = node_id_of(self._bytes)
        return self._node_id

    @property
    def origin_hash(self) -> int:
        """The u64 origin hash (keyed BLAKE2s, label ``net-origin-v1``)."""
        if self._origin_hash is None:
            self._origin_hash = origin_hash_of(self._bytes)
        return self._origin_hash

    @property
    def routing_origin(self) -> int:
        """The low 32 bits of :attr:`origin_hash`, as the packet header carries it."""
        return routing_origin(self.origin_hash)

    def is_valid_signature(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` strictly verifies ``message`` under this key."""
        return verify_strict(self._bytes, message, signature)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` strictly verifies."""
        if not verify_strict(self._bytes, message, signature):
            raise SignatureError("identity: invalid signature")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EntityId):
            return self._bytes == other._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return f"EntityId(0x{self._bytes.hex()})"


@final
class EntityKeypair:
    """An ed25519 keypair, or a public-only keypair that can verify but not sign.

    Build one with :meth:`generate`, :meth:`from_seed` (the 32-byte seed is the
    persisted form, and the secret) or :meth:`public_only`. ``repr`` never shows the
    seed.
    """

    __slots__ = ("_entity_id", "_private", "_seed")

    def __init__(
        self,
        entity_id: EntityId,
        seed: bytes | None,
        private: Ed25519PrivateKey | None = None,
    ) -> None:
        self._entity_id = entity_id
        self._seed = seed
        if private is None and seed is not None:
            private = Ed25519PrivateKey.from_private_bytes(seed)
        self._private = private

    @classmethod
    def generate(cls) -> EntityKeypair:
        """A fresh keypair from 32 bytes of the operating system's CSPRNG."""
        return cls.from_seed(secrets.token_bytes(SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> EntityKeypair:
        """The keypair of a 32-byte ed25519 seed; :class:`InvalidSeedError` otherwise."""
        raw = bytes(seed)
        if len(raw) != SEED_SIZE:
            raise InvalidSeedError(len(raw))
        private = Ed25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes_raw()
        return cls(EntityId(public), raw, private)

    @classmethod
    def public_only(cls, entity_id: EntityId | bytes) -> EntityKeypair:
        """A keypair that knows only the public half; :meth:`sign` raises."""
        eid = entity_id if isinstance(entity_id, EntityId) else EntityId(entity_id)
        return cls(eid, None)

    @property
    def entity_id(self) -> EntityId:
        """The public key."""
        return self._entity_id

    @property
    def node_id(self) -> int:
        """The u64 node id of the public key."""
        return self._entity_id.node_id

    @property
    def origin_hash(self) -> int:
        """The u64 origin hash of the public key."""
        return self._entity_id.origin_hash

    @property
    def is_read_only(self) -> bool:
        """True for a public-only keypair."""
        return self._private is None

    def seed(self) -> bytes:
        """The 32-byte secret seed; :class:`ReadOnlyKeypairError` if public-only."""
        if self._seed is None:
            raise ReadOnlyKeypairError()
        return self._seed

    def to_public(self) -> EntityKeypair:
        """A public-only copy of this keypair."""
        return EntityKeypair(self._entity_id, None)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``message``.

        Raises :class:`ReadOnlyKeypairError` on a public-only keypair.
        """
        if self._private is None:
            raise ReadOnlyKeypairError()
        return self._private.sign(bytes(message))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Strictly verify ``signature`` under this keypair's public key."""
        self._entity_id.verify(message, signature)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EntityKeypair):
            return self._entity_id == other._entity_id and self._seed == other._seed
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._entity_id)

    def __repr__(self) -> str:
        kind = "public-only" if self._private is None else "full"
        return (
            f"EntityKeypair(entity_id=0x{self._entity_id.hex()}, "
            f"node_id=0x{self.node_id:016x}, {kind})"
        )


@final
@attrs.frozen
class OriginStamp:
    """The three identity values an event carries, computed once.

    Stamping a packet or an event is then a field copy. The stamp is not bound to any
    packet: it says which entity an event claims to come from, and proves nothing by
    itself (see ``docs/security.md``).
    """

    entity_id: EntityId
    origin_hash: int
    node_id: int

    @classmethod
    def of(cls, identity: EntityKeypair | EntityId) -> OriginStamp:
        """The stamp of a keypair or an entity id."""
        eid = identity.entity_id if isinstance(identity, EntityKeypair) else identity
        return cls(entity_id=eid, origin_hash=eid.origin_hash, node_id=eid.node_id)

    @property
    def routing_origin(self) -> int:
        """The low 32 bits of ``origin_hash``, for the packet header."""
        return routing_origin(self.origin_hash)
