"""The errors of the identity layer, one class per failure a caller can act on.

Every class derives from :class:`~net_core.errors.IdentityError`; every decoder failure
also derives from :class:`~net_core.errors.DecodeError`, so "any bytes give a value or a
``DecodeError``" holds for every codec of this package.

Token errors carry the reference's ``kind`` (``invalid_signature``, ``expired``, ...) and
print as ``token: <kind>``, the text the reference's Python binding raises, so logs read
the same on Python and Rust nodes. Envelope errors print the reference's
``identity envelope: ...`` texts.
"""

from __future__ import annotations

from typing import ClassVar

from net_core.errors import DecodeError, IdentityError

__all__ = [
    "ChainError",
    "ChannelNameDecodeError",
    "ChannelNameError",
    "ContinuityProofError",
    "DelegationExhaustedError",
    "DelegationNotAllowedError",
    "EntityDecodeError",
    "EnvelopeAttestationError",
    "EnvelopeError",
    "EnvelopeFormatError",
    "EnvelopeSealOpenError",
    "EnvelopeSignerKeyError",
    "EnvelopeSourceReadOnlyError",
    "ForkRecordError",
    "InvalidPublicKeyError",
    "InvalidSeedError",
    "InvalidSignatureError",
    "NotAuthorizedError",
    "OriginMismatchError",
    "ParentHashMismatchError",
    "ReadOnlyKeypairError",
    "RecordDecodeError",
    "SequenceGapError",
    "SignatureError",
    "TokenError",
    "TokenExpiredError",
    "TokenFormatError",
    "TokenNotYetValidError",
    "TokenReadOnlyError",
    "UnknownEnvelopeVersionError",
    "ZeroTtlError",
]


# -- keypairs ----------------------------------------------------------------------------


class InvalidSeedError(IdentityError, ValueError):
    """A seed is not exactly 32 bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"identity: seed must be 32 bytes, got {size}")


class InvalidPublicKeyError(IdentityError, ValueError):
    """Bytes are not a usable ed25519 public key (wrong length or not a curve point)."""


class EntityDecodeError(InvalidPublicKeyError, DecodeError):
    """An entity id could not be decoded from bytes (it must be exactly 32 bytes)."""


class SignatureError(IdentityError):
    """An ed25519 signature did not pass strict verification."""

    kind: ClassVar[str] = "invalid_signature"


class ReadOnlyKeypairError(IdentityError):
    """The keypair is public-only (its signing half is gone), so it cannot sign.

    A keypair becomes public-only when it is built from an entity id alone, for example
    on a migration source after the identity moved away.
    """

    kind: ClassVar[str] = "read_only"

    def __init__(self, message: str = "identity: keypair is public-only; cannot sign") -> None:
        super().__init__(message)


# -- tokens ------------------------------------------------------------------------------


class TokenError(IdentityError):
    """Base class of permission-token failures; ``kind`` names the failure.

    The message is ``token: <kind>``, as the reference prints it.
    """

    kind: ClassVar[str] = "token"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        text = f"token: {self.kind}"
        super().__init__(f"{text} ({detail})" if detail else text)


class InvalidSignatureError(TokenError, SignatureError):
    """The token's signature does not verify against its issuer."""

    kind: ClassVar[str] = "invalid_signature"


class TokenNotYetValidError(TokenError):
    """The current time is before the token's ``not_before``."""

    kind: ClassVar[str] = "not_yet_valid"


class TokenExpiredError(TokenError):
    """The current time is at or past the token's ``not_after``."""

    kind: ClassVar[str] = "expired"


class DelegationExhaustedError(TokenError):
    """The token's ``delegation_depth`` is 0, so it cannot be delegated further."""

    kind: ClassVar[str] = "delegation_exhausted"


class DelegationNotAllowedError(TokenError):
    """The token lacks the DELEGATE scope."""

    kind: ClassVar[str] = "delegation_not_allowed"


class NotAuthorizedError(TokenError):
    """No valid token authorizes the action, or the signer is not the token's subject."""

    kind: ClassVar[str] = "not_authorized"


class TokenFormatError(TokenError, DecodeError):
    """Bytes are not a token: the length is not exactly 161 bytes."""

    kind: ClassVar[str] = "invalid_format"


class TokenReadOnlyError(TokenError, ReadOnlyKeypairError):
    """A public-only keypair was asked to issue or delegate a token."""

    kind: ClassVar[str] = "read_only"


class ZeroTtlError(TokenError, ValueError):
    """``try_issue`` was given a TTL of 0 seconds, which would mint a born-expired token."""

    kind: ClassVar[str] = "zero_ttl"


# -- envelopes ---------------------------------------------------------------------------


class EnvelopeError(IdentityError):
    """Base class of identity-envelope failures."""


class EnvelopeFormatError(EnvelopeError, DecodeError):
    """Bytes are not an envelope: the length is not exactly 209 bytes."""


class UnknownEnvelopeVersionError(EnvelopeFormatError):
    """The leading version byte is not 1; no cryptographic work was attempted."""

    def __init__(self, got: int, expected: int) -> None:
        self.got = got
        self.expected = expected
        super().__init__(
            f"identity envelope: unknown wire version {got:#04x} (expected {expected:#04x})"
        )


class EnvelopeAttestationError(EnvelopeError, SignatureError):
    """The attestation signature over ``target_static_pub || chain_link`` is invalid, or
    the sealed seed does not belong to the attesting signer."""

    def __init__(self, message: str = "identity envelope: attestation signature invalid") -> None:
        super().__init__(message)


class EnvelopeSealOpenError(EnvelopeError):
    """The seal could not be opened: wrong target key or tampered ciphertext / link."""

    def __init__(
        self,
        message: str = (
            "identity envelope: seal_open failed (wrong target key or tampered ciphertext)"
        ),
    ) -> None:
        super().__init__(message)


class EnvelopeSignerKeyError(EnvelopeError):
    """``signer_pub`` is not a valid ed25519 key, or is not the signer the caller expected."""


class EnvelopeSourceReadOnlyError(EnvelopeError, ReadOnlyKeypairError):
    """A public-only source keypair cannot seal (the attestation needs its signing half)."""

    def __init__(
        self, message: str = "identity envelope: source keypair is public-only; cannot attest"
    ) -> None:
        super().__init__(message)


# -- causal records ----------------------------------------------------------------------


class RecordDecodeError(IdentityError, DecodeError):
    """A causal link, continuity proof, fork record or causal frame is malformed."""


class ChainError(IdentityError):
    """A causal link does not follow its predecessor."""


class OriginMismatchError(ChainError):
    """The link belongs to a different origin than its predecessor."""


class SequenceGapError(ChainError):
    """The link's sequence is not its predecessor's plus one."""


class ParentHashMismatchError(ChainError):
    """The link's ``parent_hash`` is not the hash of its predecessor and its payload."""


class ForkRecordError(IdentityError):
    """A fork record does not verify (sentinel, origin or sequence of its genesis)."""


class ContinuityProofError(IdentityError):
    """A continuity proof does not hold against the events it was checked with."""


# -- channel names -----------------------------------------------------------------------


class ChannelNameError(IdentityError, ValueError):
    """A channel name breaks the naming rule; the message is the reference's text."""


class ChannelNameDecodeError(ChannelNameError, DecodeError):
    """Bytes are not a channel name (not UTF-8, or the decoded name is invalid)."""
