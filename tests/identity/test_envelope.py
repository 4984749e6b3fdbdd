"""Identity envelopes: layout, the seal construction, open order, version dispatch.

The installed reference does not expose envelopes (see test_oracle.py), so the seal is
checked against an independent re-derivation of the construction from the fact sheet
(mesh.md §5.3): hashlib for the keyed BLAKE2s, libsodium for XChaCha20-Poly1305.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from net_core.errors import DecodeError
from net_core.identity import (
    IDENTITY_ENVELOPE_SIZE,
    CausalLink,
    EntityKeypair,
    EnvelopeAttestationError,
    EnvelopeFormatError,
    EnvelopeSealOpenError,
    EnvelopeSignerKeyError,
    EnvelopeSourceReadOnlyError,
    IdentityEnvelope,
    UnknownEnvelopeVersionError,
    _envelope,
)

SOURCE = EntityKeypair.from_seed(bytes(range(32)))
TARGET = X25519PrivateKey.from_private_bytes(b"\x42" * 32)
TARGET_PUB = TARGET.public_key().public_bytes_raw()
LINK = CausalLink(SOURCE.origin_hash, 5, 7, 0x1122334455667788)


def seal() -> IdentityEnvelope:
    return IdentityEnvelope.seal(SOURCE, TARGET_PUB, LINK)


def test_layout_is_209_bytes_version_first() -> None:
    envelope = seal()
    wire = envelope.to_bytes()
    assert len(wire) == IDENTITY_ENVELOPE_SIZE == 209
    assert wire[0] == 1
    assert wire[1:33] == TARGET_PUB
    assert wire[113:145] == SOURCE.entity_id.as_bytes()
    assert IdentityEnvelope.from_bytes(wire) == envelope


def test_seal_matches_an_independent_derivation() -> None:
    wire = seal().to_bytes()
    sealed = wire[33:113]
    eph_pub, ciphertext = sealed[:32], sealed[32:]
    shared = TARGET.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    key = hashlib.blake2s(shared, key=b"net-identity-envelope").digest()
    nonce = hashlib.blake2s(eph_pub + TARGET_PUB, key=b"net-identity-nonce").digest()[:24]
    assert crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, LINK.to_bytes(), nonce, key) == (
        SOURCE.seed()
    )
    # The attestation is the source's signature over target pub || chain link (64 bytes).
    SOURCE.verify(TARGET_PUB + LINK.to_bytes(), wire[145:209])


def test_seal_is_fresh_per_envelope_but_reproducible_with_a_fixed_ephemeral() -> None:
    assert seal().sealed_seed != seal().sealed_seed
    eph = X25519PrivateKey.from_private_bytes(b"\x01" * 32)
    first = IdentityEnvelope.seal(SOURCE, TARGET_PUB, LINK, ephemeral=eph)
    assert first == IdentityEnvelope.seal(SOURCE, TARGET_PUB, LINK, ephemeral=eph)


def test_open_round_trip() -> None:
    opened = IdentityEnvelope.from_bytes(seal().to_bytes()).open(TARGET, LINK)
    assert opened == SOURCE
    assert not opened.is_read_only
    SOURCE.verify(b"after", opened.sign(b"after"))
    assert seal().open(TARGET, LINK, SOURCE.entity_id) == SOURCE


def test_unknown_version_is_rejected_before_any_crypto(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("cryptographic work attempted on an unknown version")

    monkeypatch.setattr(_envelope, "verify_strict", forbidden)
    monkeypatch.setattr(_envelope, "crypto_aead_xchacha20poly1305_ietf_decrypt", forbidden)
    wire = bytearray(seal().to_bytes())
    for version in (0, 2, 0x7F, 0xFF):
        wire[0] = version
        for data in (bytes(wire), bytes(wire[:208]), bytes(wire) + b"\x00"):
            with pytest.raises(UnknownEnvelopeVersionError, match="unknown wire version") as err:
                IdentityEnvelope.from_bytes(data)
            assert err.value.got == version
            assert err.value.expected == 1
            assert isinstance(err.value, DecodeError)


def test_wrong_lengths_are_rejected() -> None:
    wire = seal().to_bytes()
    for bad in (b"", wire[:1], wire[:208], wire + b"\x00"):
        with pytest.raises(EnvelopeFormatError):
            IdentityEnvelope.from_bytes(bad)


def test_open_checks_the_expected_signer_first(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("signature work attempted for an unexpected signer")

    envelope = seal()
    other = EntityKeypair.from_seed(bytes(32)).entity_id
    monkeypatch.setattr(_envelope, "verify_strict", forbidden)
    with pytest.raises(EnvelopeSignerKeyError):
        envelope.open(TARGET, LINK, other)


def test_tampering_fails_at_the_attestation() -> None:
    envelope = seal()
    for offset in (1, 40, 113, 150, 208):
        wire = bytearray(envelope.to_bytes())
        wire[offset] ^= 0x01
        with pytest.raises((EnvelopeAttestationError, EnvelopeSealOpenError)):
            IdentityEnvelope.from_bytes(bytes(wire)).open(TARGET, LINK)
    # signed fields (target, signer, signature) and the chain link fail the signature
    for offset in (1, 113, 150):
        wire = bytearray(envelope.to_bytes())
        wire[offset] ^= 0x01
        with pytest.raises(EnvelopeAttestationError):
            IdentityEnvelope.from_bytes(bytes(wire)).open(TARGET, LINK)
    later = CausalLink(LINK.origin_hash, LINK.horizon_encoded, LINK.sequence + 1, LINK.parent_hash)
    with pytest.raises(EnvelopeAttestationError):
        envelope.open(TARGET, later)


def test_tampered_ciphertext_fails_the_aead() -> None:
    wire = bytearray(seal().to_bytes())
    wire[33 + 40] ^= 0x80
    with pytest.raises(EnvelopeSealOpenError, match="seal_open failed"):
        IdentityEnvelope.from_bytes(bytes(wire)).open(TARGET, LINK)


def test_wrong_target_key_fails_before_the_aead(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("AEAD attempted with the wrong target key")

    envelope = seal()
    monkeypatch.setattr(_envelope, "crypto_aead_xchacha20poly1305_ietf_decrypt", forbidden)
    with pytest.raises(EnvelopeSealOpenError):
        envelope.open(X25519PrivateKey.generate(), LINK)


def test_a_seed_that_is_not_the_signers_is_refused() -> None:
    """A signer who seals someone else's seed is caught after decryption."""
    mallory = EntityKeypair.from_seed(b"\x09" * 32)
    honest = IdentityEnvelope.seal(mallory, TARGET_PUB, LINK)
    victim_sealed = IdentityEnvelope.seal(SOURCE, TARGET_PUB, LINK)
    spliced = IdentityEnvelope(
        target_static_pub=TARGET_PUB,
        sealed_seed=victim_sealed.sealed_seed,
        signer_pub=honest.signer_pub,
        signature=honest.signature,
    )
    with pytest.raises(EnvelopeAttestationError, match="does not belong to the signer"):
        spliced.open(TARGET, LINK)


def test_public_only_source_cannot_seal() -> None:
    with pytest.raises(EnvelopeSourceReadOnlyError, match="public-only"):
        IdentityEnvelope.seal(SOURCE.to_public(), TARGET_PUB, LINK)


def test_small_order_target_is_refused() -> None:
    with pytest.raises(EnvelopeSealOpenError, match="small order"):
        IdentityEnvelope.seal(SOURCE, bytes(32), LINK)


def test_field_sizes_are_validated() -> None:
    envelope = seal()
    with pytest.raises(ValueError, match="signature must be 64 bytes"):
        IdentityEnvelope(envelope.target_static_pub, envelope.sealed_seed, envelope.signer_pub, b"")
    with pytest.raises(ValueError, match="target_static_pub"):
        IdentityEnvelope.seal(SOURCE, b"\x01" * 31, LINK)
