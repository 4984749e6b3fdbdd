"""Identity: keypairs, origin hashes, permission tokens, envelopes and causal records.

The security primitives the mesh, channels and daemons stand on, byte-compatible with
the reference implementation (``ai2070-net`` 0.18) so Python and Rust nodes verify each
other's signatures, tokens and chains:

* :class:`EntityKeypair` / :class:`EntityId` (``_keypair``): ed25519 identity, strict
  verification, the derived ``node_id`` and ``origin_hash``, and :class:`OriginStamp`;
* :class:`PermissionToken` / :class:`TokenScope` / :class:`TokenCache` (``_token``):
  signed, delegatable, expiring grants and their cache;
* :class:`IdentityEnvelope` (``_envelope``): a seed sealed to a migration target;
* :class:`CausalLink` and friends (``_causal``), :class:`ContinuityProof` and
  :class:`ForkRecord` (``_continuity``): causal chains and statements about them;
* :class:`ChannelName`, :func:`channel_hash`, :func:`wire_channel_hash` (``_channel``).

Every codec is pure (bytes in, values out) and raises only the
:class:`~net_core.errors.DecodeError` family on malformed input. ``docs/security.md``
states what each primitive guarantees and what it does not.

Quick start::

    from net_core.identity import EntityKeypair, PermissionToken, TokenScope

    owner = EntityKeypair.generate()
    reader = EntityKeypair.generate()
    token = PermissionToken.try_issue(owner, reader.entity_id, TokenScope.SUBSCRIBE,
                                      "sensors/lidar", ttl_seconds=3600)
    wire = token.to_bytes()                       # 161 bytes
    PermissionToken.from_bytes(wire).check_valid()
"""

from net_core.identity._causal import (
    CAUSAL_LINK_SIZE,
    CausalChainBuilder,
    CausalEvent,
    CausalLink,
    compute_parent_hash,
    decode_causal_events,
    encode_causal_events,
    validate_chain_link,
)
from net_core.identity._channel import (
    MAX_CHANNEL_NAME_BYTES,
    ChannelName,
    channel_hash,
    validate_channel_name,
    wire_channel_hash,
)
from net_core.identity._continuity import (
    CONTINUITY_PROOF_SIZE,
    FORK_RECORD_SIZE,
    MAX_PROOF_VERIFY_SPAN,
    ContinuityProof,
    ForkRecord,
    fork_sentinel,
)
from net_core.identity._envelope import (
    IDENTITY_ENVELOPE_SIZE,
    IDENTITY_ENVELOPE_VERSION,
    IdentityEnvelope,
)
from net_core.identity._errors import (
    ChainError,
    ChannelNameDecodeError,
    ChannelNameError,
    ContinuityProofError,
    DelegationExhaustedError,
    DelegationNotAllowedError,
    EntityDecodeError,
    EnvelopeAttestationError,
    EnvelopeError,
    EnvelopeFormatError,
    EnvelopeSealOpenError,
    EnvelopeSignerKeyError,
    EnvelopeSourceReadOnlyError,
    ForkRecordError,
    InvalidPublicKeyError,
    InvalidSeedError,
    InvalidSignatureError,
    NotAuthorizedError,
    OriginMismatchError,
    ParentHashMismatchError,
    ReadOnlyKeypairError,
    RecordDecodeError,
    SequenceGapError,
    SignatureError,
    TokenError,
    TokenExpiredError,
    TokenFormatError,
    TokenNotYetValidError,
    TokenReadOnlyError,
    UnknownEnvelopeVersionError,
    ZeroTtlError,
)
from net_core.identity._keypair import (
    ENTITY_ID_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    EntityId,
    EntityKeypair,
    OriginStamp,
    node_id_of,
    origin_hash_of,
    routing_origin,
    verify_strict,
)
from net_core.identity._token import (
    MAX_TOKEN_SLOTS,
    MAX_TOKENS_PER_SLOT,
    TOKEN_SIGNED_SIZE,
    TOKEN_WIRE_SIZE,
    PermissionToken,
    TokenCache,
    TokenCacheStats,
    TokenScope,
    ZeroTtlWarning,
)

__all__ = [
    "CAUSAL_LINK_SIZE",
    "CONTINUITY_PROOF_SIZE",
    "ENTITY_ID_SIZE",
    "FORK_RECORD_SIZE",
    "IDENTITY_ENVELOPE_SIZE",
    "IDENTITY_ENVELOPE_VERSION",
    "MAX_CHANNEL_NAME_BYTES",
    "MAX_PROOF_VERIFY_SPAN",
    "MAX_TOKENS_PER_SLOT",
    "MAX_TOKEN_SLOTS",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "TOKEN_SIGNED_SIZE",
    "TOKEN_WIRE_SIZE",
    "CausalChainBuilder",
    "CausalEvent",
    "CausalLink",
    "ChainError",
    "ChannelName",
    "ChannelNameDecodeError",
    "ChannelNameError",
    "ContinuityProof",
    "ContinuityProofError",
    "DelegationExhaustedError",
    "DelegationNotAllowedError",
    "EntityDecodeError",
    "EntityId",
    "EntityKeypair",
    "EnvelopeAttestationError",
    "EnvelopeError",
    "EnvelopeFormatError",
    "EnvelopeSealOpenError",
    "EnvelopeSignerKeyError",
    "EnvelopeSourceReadOnlyError",
    "ForkRecord",
    "ForkRecordError",
    "IdentityEnvelope",
    "InvalidPublicKeyError",
    "InvalidSeedError",
    "InvalidSignatureError",
    "NotAuthorizedError",
    "OriginMismatchError",
    "OriginStamp",
    "ParentHashMismatchError",
    "PermissionToken",
    "ReadOnlyKeypairError",
    "RecordDecodeError",
    "SequenceGapError",
    "SignatureError",
    "TokenCache",
    "TokenCacheStats",
    "TokenError",
    "TokenExpiredError",
    "TokenFormatError",
    "TokenNotYetValidError",
    "TokenReadOnlyError",
    "TokenScope",
    "UnknownEnvelopeVersionError",
    "ZeroTtlError",
    "ZeroTtlWarning",
    "channel_hash",
    "compute_parent_hash",
    "decode_causal_events",
    "encode_causal_events",
    "fork_sentinel",
    "node_id_of",
    "origin_hash_of",
    "routing_origin",
    "validate_chain_link",
    "validate_channel_name",
    "verify_strict",
    "wire_channel_hash",
]
