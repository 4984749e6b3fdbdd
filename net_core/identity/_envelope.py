"""Identity envelopes: an entity's ed25519 seed sealed to one target, attested by the source.

Theory of operation. When a daemon migrates, its signing seed has to reach the target
node without any relay (or log of decrypted traffic) seeing it. The source seals the
32-byte seed to the target's X25519 static public key and signs the transcript
``target_static_pub || chain_link``, binding the envelope to one recipient and one
position of the daemon's causal chain (a replay at another position fails)::

    eph_sk, eph_pk  fresh X25519 keypair
    key    = BLAKE2s-256(key="net-identity-envelope", msg=X25519(eph_sk, target_pub))
    nonce  = BLAKE2s-256(key="net-identity-nonce", msg=eph_pk || target_pub)[:24]
    sealed = eph_pk || XChaCha20-Poly1305(key, nonce, seed, aad=chain_link bytes)

Wire layout, 209 bytes, byte-identical to the reference (``ai2070-net`` 0.18)::

    version u8 = 1 | target_static_pub 32 | sealed_seed 80 | signer_pub 32 | signature 64

Decoding dispatches on the version byte first: any other leading byte raises
:class:`UnknownEnvelopeVersionError` before the length is even considered, and long
before any signature or AEAD work. There is no fallback to the older, unversioned form.

Opening checks, in order: the expected signer (when the caller names one), the
attestation signature (strict ed25519), that the caller's X25519 private key matches
``target_static_pub``, the AEAD, and that the recovered seed's public key is the
signer's.

The primitives come from ``cryptography`` (X25519, Ed25519 signing) and PyNaCl
(XChaCha20-Poly1305, which ``cryptography`` does not offer). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final, final

import attrs
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from net_core.identity._causal import CausalLink
from net_core.identity._errors import (
    EnvelopeAttestationError,
    EnvelopeFormatError,
    EnvelopeSealOpenError,
    EnvelopeSignerKeyError,
    EnvelopeSourceReadOnlyError,
    UnknownEnvelopeVersionError,
)
from net_core.identity._keypair import EntityId, EntityKeypair, verify_strict

__all__ = [
    "IDENTITY_ENVELOPE_SIZE",
    "IDENTITY_ENVELOPE_VERSION",
    "IdentityEnvelope",
]

IDENTITY_ENVELOPE_VERSION: Final = 1
IDENTITY_ENVELOPE_SIZE: Final = 1 + 32 + 80 + 32 + 64
_KEY_LABEL: Final = b"net-identity-envelope"
_NONCE_LABEL: Final = b"net-identity-nonce"
_SEED_LEN: Final = 32
_EPH_LEN: Final = 32
_SEALED_LEN: Final = 80
_SIG_LEN: Final = 64


def _derive_key(shared: bytes) -> bytes:
    return hashlib.blake2s(shared, digest_size=32, key=_KEY_LABEL).digest()


def _derive_nonce(eph_pub: bytes, target_pub: bytes) -> bytes:
    return hashlib.blake2s(eph_pub + target_pub, digest_size=32, key=_NONCE_LABEL).digest()[:24]


def _transcript(target_pub: bytes, chain_link: CausalLink) -> bytes:
    return target_pub + chain_link.to_bytes()


def _fixed(name: str, size: int) -> Callable[[object, attrs.Attribute[bytes], bytes], None]:
    def check(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"{name} must be {size} bytes")

    return check


@final
@attrs.frozen
class IdentityEnvelope:
    """A sealed, attested ed25519 seed (209 bytes on the wire, version 1)."""

    target_static_pub: bytes = attrs.field(validator=_fixed("target_static_pub", 32))
    sealed_seed: bytes = attrs.field(validator=_fixed("sealed_seed", _SEALED_LEN), repr=False)
    signer_pub: bytes = attrs.field(validator=_fixed("signer_pub", 32))
    signature: bytes = attrs.field(validator=_fixed("signature", _SIG_LEN), repr=False)

    @classmethod
    def seal(
        cls,
        source: EntityKeypair,
        target_static_pub: bytes,
        chain_link: CausalLink,
        *,
        ephemeral: X25519PrivateKey | None = None,
    ) -> IdentityEnvelope:
        """Seal ``source``'s seed to ``target_static_pub`` and attest it.

        ``ephemeral`` exists for tests that need a fixed envelope; leave it None (a
        fresh key per envelope is what makes the derived nonce safe).

        Raises :class:`EnvelopeSourceReadOnlyError` for a public-only source and
        :class:`EnvelopeSealOpenError` for a target key of small order (its shared
        secret would be all zeros).
        """
        if source.is_read_only:
            raise EnvelopeSourceReadOnlyError()
        target = bytes(target_static_pub)
        if len(target) != 32:
            raise ValueError(f"target_static_pub must be 32 bytes, got {len(target)}")
        eph = X25519PrivateKey.generate() if ephemeral is None else ephemeral
        eph_pub = eph.public_key().public_bytes_raw()
        try:
            shared = eph.exchange(X25519PublicKey.from_public_bytes(target))
        except ValueError as exc:
            raise EnvelopeSealOpenError(
                "identity envelope: the target key has small order; refusing to seal"
            ) from exc
        ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(
            source.seed(),
            chain_link.to_bytes(),
            _derive_nonce(eph_pub, target),
            _derive_key(shared),
        )
        signature = source.sign(_transcript(target, chain_link))
        return cls(
            target_static_pub=target,
            sealed_seed=eph_pub + ciphertext,
            signer_pub=source.entity_id.as_bytes(),
            signature=signature,
        )

    def open(
        self,
        target_static_priv: X25519PrivateKey,
        chain_link: CausalLink,
        expected_signer: EntityId | None = None,
    ) -> EntityKeypair:
        """Verify the attestation and unseal; returns the source's full keypair.

        Raises, in check order: :class:`EnvelopeSignerKeyError` (the signer is not
        ``expected_signer``), :class:`EnvelopeAttestationError` (bad signature, or a
        tampered link), :class:`EnvelopeSealOpenError` (the private key is not the
        target's, or the ciphertext / link was tampered with),
        :class:`EnvelopeAttestationError` (the sealed seed is not the signer's).
        """
        if expected_signer is not None and expected_signer.as_bytes() != self.signer_pub:
            raise EnvelopeSignerKeyError(
                "identity envelope: signer is not the expected source identity"
            )
        transcript = _transcript(self.target_static_pub, chain_link)
        if not verify_strict(self.signer_pub, transcript, self.signature):
            raise EnvelopeAttestationError()
        derived = target_static_priv.public_key().public_bytes_raw()
        if derived != self.target_static_pub:
            raise EnvelopeSealOpenError()
        eph_pub = self.sealed_seed[:_EPH_LEN]
        try:
            shared = target_static_priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
            seed = crypto_aead_xchacha20poly1305_ietf_decrypt(
                self.sealed_seed[_EPH_LEN:],
                chain_link.to_bytes(),
                _derive_nonce(eph_pub, self.target_static_pub),
                _derive_key(shared),
            )
        except (ValueError, CryptoError) as exc:
            raise EnvelopeSealOpenError() from exc
        if len(seed) != _SEED_LEN:
            raise EnvelopeSealOpenError()
        keypair = EntityKeypair.from_seed(seed)
        if keypair.entity_id.as_bytes() != self.signer_pub:
            raise EnvelopeAttestationError(
                "identity envelope: the sealed seed does not belong to the signer"
            )
        return keypair

    def to_bytes(self) -> bytes:
        """The 209-byte wire form, version byte first."""
        return (
            bytes((IDENTITY_ENVELOPE_VERSION,))
            + self.target_static_pub
            + self.sealed_seed
            + self.signer_pub
            + self.signature
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityEnvelope:
        """Decode an envelope.

        Raises :class:`EnvelopeFormatError` for empty input,
        :class:`UnknownEnvelopeVersionError` when the first byte is not 1, and
        :class:`EnvelopeFormatError` unless the length is exactly 209.
        """
        raw = bytes(data)
        if not raw:
            raise EnvelopeFormatError("identity envelope: empty input")
        if raw[0] != IDENTITY_ENVELOPE_VERSION:
            raise UnknownEnvelopeVersionError(raw[0], IDENTITY_ENVELOPE_VERSION)
        if len(raw) != IDENTITY_ENVELOPE_SIZE:
            raise EnvelopeFormatError(
                f"identity envelope: expected {IDENTITY_ENVELOPE_SIZE} bytes, got {len(raw)}"
            )
        return cls(
            target_static_pub=raw[1:33],
            sealed_seed=raw[33:113],
            signer_pub=raw[113:145],
            signature=raw[145:209],
        )
