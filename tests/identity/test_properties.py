"""Hypothesis properties of every identity codec and every signature.

* every codec round-trips;
* arbitrary bytes give a value (which re-encodes to the same bytes) or a DecodeError,
  never anything else;
* flipping any bit of any signed byte makes verification fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from net_core.errors import DecodeError
from net_core.identity import (
    CausalEvent,
    CausalLink,
    ChannelName,
    ContinuityProof,
    EntityId,
    EntityKeypair,
    EnvelopeError,
    ForkRecord,
    IdentityEnvelope,
    PermissionToken,
    TokenScope,
    decode_causal_events,
    encode_causal_events,
)

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
seeds = st.binary(min_size=32, max_size=32)
links = st.builds(CausalLink, u64, u64, u64, u64)


@st.composite
def tokens(draw: st.DrawFn) -> PermissionToken:
    return PermissionToken(
        issuer=EntityId(draw(seeds)),
        subject=EntityId(draw(seeds)),
        scope=TokenScope(draw(u32)),
        channel_hash=draw(u32),
        not_before=draw(u64),
        not_after=draw(u64),
        delegation_depth=draw(st.integers(0, 255)),
        nonce=draw(u64),
        signature=draw(st.binary(min_size=64, max_size=64)),
    )


@st.composite
def fork_records(draw: st.DrawFn) -> ForkRecord:
    return ForkRecord(
        original_origin=draw(u64),
        forked_origin=draw(u64),
        fork_seq=draw(u64),
        genesis=draw(links),
        snapshot_seq=draw(st.none() | u64),
    )


envelopes = st.builds(
    IdentityEnvelope,
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=80, max_size=80),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
)
events = st.builds(CausalEvent, links, st.binary(max_size=64))


# -- round trips ---------------------------------------------------------------------------


@given(tokens())
def test_token_round_trips(token: PermissionToken) -> None:
    wire = token.to_bytes()
    assert len(wire) == 161
    assert PermissionToken.from_bytes(wire) == token


@given(links)
def test_link_round_trips(link: CausalLink) -> None:
    assert CausalLink.from_bytes(link.to_bytes()) == link


@given(st.builds(ContinuityProof, u64, u64, u64, u64, u64))
def test_proof_round_trips(proof: ContinuityProof) -> None:
    assert ContinuityProof.from_bytes(proof.to_bytes()) == proof


@given(fork_records())
def test_fork_record_round_trips_unchecked(record: ForkRecord) -> None:
    assert ForkRecord.from_bytes_unchecked(record.to_bytes()) == record


@given(u64, u64, u64, st.none() | u64, u64)
def test_verified_fork_record_round_trips(
    original: int, forked: int, seq: int, snapshot: int | None, horizon: int
) -> None:
    assume(original != forked)
    record = ForkRecord.create(
        original, forked, seq, snapshot_seq=snapshot, horizon_encoded=horizon
    )
    assert ForkRecord.from_bytes(record.to_bytes()) == record


@given(envelopes)
def test_envelope_round_trips(envelope: IdentityEnvelope) -> None:
    assert IdentityEnvelope.from_bytes(envelope.to_bytes()) == envelope


@given(st.lists(events, max_size=8))
def test_causal_frames_round_trip(batch: list[CausalEvent]) -> None:
    assert decode_causal_events(encode_causal_events(batch)) == batch


@given(st.text(alphabet="abcXYZ019-_./", min_size=1, max_size=255))
def test_channel_name_round_trips(text: str) -> None:
    try:
        name = ChannelName(text)
    except ValueError:
        return
    assert ChannelName.decode(name.encode()) == name


# -- arbitrary bytes: a value or a DecodeError ---------------------------------------------

Decoder = Callable[[bytes], Any]
DECODERS: list[tuple[str, Decoder, Callable[[Any], bytes], int]] = [
    ("token", PermissionToken.from_bytes, lambda v: v.to_bytes(), 161),
    ("link", CausalLink.from_bytes, lambda v: v.to_bytes(), 32),
    ("proof", ContinuityProof.from_bytes, lambda v: v.to_bytes(), 40),
    ("fork", ForkRecord.from_bytes, lambda v: v.to_bytes(), 65),
    ("fork-unchecked", ForkRecord.from_bytes_unchecked, lambda v: v.to_bytes(), 65),
    ("envelope", IdentityEnvelope.from_bytes, lambda v: v.to_bytes(), 209),
    ("entity", EntityId.from_bytes, lambda v: v.as_bytes(), 32),
    ("channel", ChannelName.decode, lambda v: v.encode(), 16),
    ("frames", decode_causal_events, encode_causal_events, 80),
]


@pytest.mark.parametrize(
    ("decode", "encode", "size"), [d[1:] for d in DECODERS], ids=[d[0] for d in DECODERS]
)
@given(data=st.data())
def test_arbitrary_bytes_give_a_value_or_a_decode_error(
    decode: Decoder, encode: Callable[[Any], bytes], size: int, data: st.DataObject
) -> None:
    # Half the examples have the decoder's natural size, so the value branch is reached.
    raw = data.draw(st.binary(min_size=size, max_size=size) | st.binary(max_size=2 * size + 3))
    if size == 209 and raw and data.draw(st.booleans()):
        raw = b"\x01" + raw[1:]
    try:
        value = decode(raw)
    except DecodeError:
        return
    assert encode(value) == raw


# -- a flipped bit in any signed byte fails verification ---------------------------------


@given(seeds, seeds, u32, u32, st.integers(1, 2**40), st.integers(0, 255), st.data())
def test_flipped_token_bit_fails_verification(
    issuer_seed: bytes,
    subject_seed: bytes,
    scope: int,
    chash: int,
    ttl: int,
    depth: int,
    data: st.DataObject,
) -> None:
    issuer = EntityKeypair.from_seed(issuer_seed)
    subject = EntityKeypair.from_seed(subject_seed).entity_id
    token = PermissionToken.try_issue(issuer, subject, scope, chash, ttl, depth, now=1_000)
    token.check_valid(now=1_000)
    wire = bytearray(token.to_bytes())
    index = data.draw(st.integers(0, len(wire) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    wire[index] ^= 1 << bit
    tampered = PermissionToken.from_bytes(bytes(wire))
    assert not tampered.is_signature_valid()
    assert not tampered.is_valid(now=1_000)


@given(seeds, u64, u64, st.data())
def test_flipped_envelope_bit_fails_to_open(
    seed: bytes, sequence: int, parent: int, data: st.DataObject
) -> None:
    source = EntityKeypair.from_seed(seed)
    target = X25519PrivateKey.from_private_bytes(data.draw(seeds, label="target"))
    link = CausalLink(source.origin_hash, 0, sequence, parent)
    envelope = IdentityEnvelope.seal(source, target.public_key().public_bytes_raw(), link)
    assert envelope.open(target, link) == source
    wire = bytearray(envelope.to_bytes())
    index = data.draw(st.integers(1, len(wire) - 1), label="byte")
    wire[index] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(EnvelopeError):
        IdentityEnvelope.from_bytes(bytes(wire)).open(target, link)
    # ... and so does any other chain link.
    other = CausalLink(source.origin_hash, 0, sequence ^ 1, parent)
    with pytest.raises(EnvelopeError):
        envelope.open(target, other)
