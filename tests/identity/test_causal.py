"""Causal links, chain building and validation, framing, continuity proofs, fork records."""

from __future__ import annotations

import itertools
import struct

import pytest
import xxhash

from net_core.identity import (
    CausalChainBuilder,
    CausalEvent,
    CausalLink,
    ContinuityProof,
    ContinuityProofError,
    ForkRecord,
    ForkRecordError,
    OriginMismatchError,
    ParentHashMismatchError,
    RecordDecodeError,
    SequenceGapError,
    compute_parent_hash,
    decode_causal_events,
    encode_causal_events,
    fork_sentinel,
    validate_chain_link,
)

ORIGIN = 0x782A3238801976BF
U64_MAX = 2**64 - 1


def chain(count: int, origin: int = ORIGIN) -> list[CausalEvent]:
    builder = CausalChainBuilder(origin)
    return [builder.append(b"payload-%d" % i, horizon_encoded=i) for i in range(count)]


def test_link_layout() -> None:
    link = CausalLink(1, 2, 3, 4)
    assert link.to_bytes() == struct.pack("<QQQQ", 1, 2, 3, 4)
    assert CausalLink.from_bytes(link.to_bytes()) == link
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(RecordDecodeError):
            CausalLink.from_bytes(bad)
    with pytest.raises(ValueError, match="sequence must be a u64"):
        CausalLink(1, 2, -1, 4)


def test_genesis_and_parent_hash_rule() -> None:
    genesis = CausalLink.genesis(ORIGIN)
    assert genesis.is_genesis
    first = genesis.next(b"")
    assert first is not None
    assert first.sequence == 1
    assert first.parent_hash == xxhash.xxh3_64_intdigest(genesis.to_bytes())
    assert compute_parent_hash(first, b"abc") == xxhash.xxh3_64_intdigest(first.to_bytes() + b"abc")
    assert CausalLink(ORIGIN, 0, U64_MAX, 0).next(b"") is None


def test_builder_produces_a_valid_chain() -> None:
    events = chain(20)
    genesis = CausalLink.genesis(ORIGIN)
    validate_chain_link(genesis, b"", events[0].link)
    for prev, new in itertools.pairwise(events):
        validate_chain_link(prev.link, prev.payload, new.link)
    assert [e.link.sequence for e in events] == list(range(1, 21))
    resumed = CausalChainBuilder.from_head(events[9].link, events[9].payload)
    assert resumed.append(events[10].payload, 10) == events[10]
    assert resumed.head == events[10].link
    assert resumed.head_payload == events[10].payload


def test_validation_errors_in_order() -> None:
    a, b = chain(2)
    other = CausalLink(ORIGIN + 1, b.link.horizon_encoded, 99, 0)
    with pytest.raises(OriginMismatchError):
        validate_chain_link(a.link, a.payload, other)
    with pytest.raises(SequenceGapError):
        validate_chain_link(a.link, a.payload, CausalLink(ORIGIN, 0, 3, b.link.parent_hash))
    with pytest.raises(ParentHashMismatchError):
        validate_chain_link(a.link, a.payload + b"!", b.link)
    with pytest.raises(SequenceGapError):
        validate_chain_link(CausalLink(ORIGIN, 0, U64_MAX, 0), b"", CausalLink(ORIGIN, 0, 0, 0))


def test_builder_refuses_sequence_overflow() -> None:
    builder = CausalChainBuilder.from_head(CausalLink(ORIGIN, 0, U64_MAX, 0), b"")
    with pytest.raises(SequenceGapError, match="exhausted"):
        builder.append(b"x")


def test_framing_round_trip_and_strictness() -> None:
    events = [*chain(5), CausalEvent(CausalLink(1, 2, 3, 4), b"")]
    data = encode_causal_events(events)
    assert decode_causal_events(data) == events
    assert struct.unpack_from("<I", data)[0] == 32 + len(events[0].payload)
    assert decode_causal_events(b"") == []
    with pytest.raises(RecordDecodeError, match="truncated length"):
        decode_causal_events(data + b"\x01")
    with pytest.raises(RecordDecodeError, match="announced"):
        decode_causal_events(data[:-1])
    with pytest.raises(RecordDecodeError, match="shorter than a link"):
        decode_causal_events(struct.pack("<I", 31) + bytes(31))


# -- continuity proofs ---------------------------------------------------------------------


def test_proof_layout_and_round_trip() -> None:
    proof = ContinuityProof(1, 2, 3, 4, 5)
    assert proof.to_bytes() == struct.pack("<QQQQQ", 1, 2, 3, 4, 5)
    assert ContinuityProof.from_bytes(proof.to_bytes()) == proof
    for bad in (bytes(39), bytes(41), b""):
        with pytest.raises(RecordDecodeError):
            ContinuityProof.from_bytes(bad)


def test_proof_verifies_against_its_events() -> None:
    events = chain(50)
    proof = ContinuityProof.from_events(events[10:30])
    assert (proof.from_seq, proof.to_seq) == (11, 30)
    assert proof.from_hash == events[10].forward_hash
    proof.verify_against(events)
    proof.verify_against(events[10:30])
    with pytest.raises(ContinuityProofError):
        ContinuityProof.from_events([])


def test_proof_detects_gaps_tampering_and_bad_ranges() -> None:
    events = chain(10)
    proof = ContinuityProof.from_events(events)
    with pytest.raises(ContinuityProofError, match="missing event 5"):
        proof.verify_against(events[:4] + events[5:])
    with pytest.raises(ContinuityProofError, match="missing event 1"):
        proof.verify_against(events[1:])
    with pytest.raises(ContinuityProofError, match="missing event 10"):
        proof.verify_against(events[:-1])
    tampered = list(events)
    tampered[4] = CausalEvent(events[4].link, b"evil")
    with pytest.raises(ContinuityProofError, match="parent hash mismatch at event 6"):
        proof.verify_against(tampered)
    tampered = list(events)
    tampered[-1] = CausalEvent(events[-1].link, b"evil")
    with pytest.raises(ContinuityProofError, match="last event"):
        proof.verify_against(tampered)
    with pytest.raises(ContinuityProofError, match="origin"):
        proof.verify_against(chain(10, ORIGIN + 1))
    with pytest.raises(ContinuityProofError, match="reversed"):
        ContinuityProof(ORIGIN, 5, 4, 0, 0).verify_against(events)
    with pytest.raises(ContinuityProofError, match="exceeds the cap"):
        ContinuityProof(ORIGIN, 0, 100_000, 0, 0).verify_against(events)
    with pytest.raises(ContinuityProofError, match="first event"):
        ContinuityProof(ORIGIN, 1, 10, 0, proof.to_hash).verify_against(events)


# -- fork records --------------------------------------------------------------------------


def test_fork_record_layout_and_sentinel() -> None:
    record = ForkRecord.create(ORIGIN, 0xABC, 42, snapshot_seq=40)
    assert record.genesis.parent_hash == fork_sentinel(ORIGIN, 42)
    assert fork_sentinel(ORIGIN, 42) == xxhash.xxh3_64_intdigest(
        struct.pack("<QQ", ORIGIN, 42) + b"fork"
    )
    wire = record.to_bytes()
    assert len(wire) == 65
    assert wire[:24] == struct.pack("<QQQ", ORIGIN, 0xABC, 42)
    assert wire[24:56] == record.genesis.to_bytes()
    assert wire[56:] == struct.pack("<BQ", 1, 40)
    assert ForkRecord.from_bytes(wire) == record
    plain = ForkRecord.create(ORIGIN, 0xABC, 42)
    assert plain.to_bytes()[56:] == bytes(9)
    assert ForkRecord.from_bytes(plain.to_bytes()).snapshot_seq is None


def test_fork_record_verification() -> None:
    with pytest.raises(ForkRecordError, match="equals the original"):
        ForkRecord.create(ORIGIN, ORIGIN, 1)
    good = ForkRecord.create(ORIGIN, 0xABC, 42)
    bad_links = [
        CausalLink(0xABD, 0, 0, good.genesis.parent_hash),
        CausalLink(0xABC, 0, 1, good.genesis.parent_hash),
        CausalLink(0xABC, 0, 0, good.genesis.parent_hash ^ 1),
    ]
    for link in bad_links:
        record = ForkRecord(ORIGIN, 0xABC, 42, link)
        with pytest.raises(ForkRecordError):
            record.verify()
        with pytest.raises(RecordDecodeError) as err:
            ForkRecord.from_bytes(record.to_bytes())
        assert isinstance(err.value.__cause__, ForkRecordError)
        assert ForkRecord.from_bytes_unchecked(record.to_bytes()) == record


def test_fork_record_decoder_strictness() -> None:
    wire = bytearray(ForkRecord.create(ORIGIN, 0xABC, 42).to_bytes())
    for bad in (bytes(wire[:64]), bytes(wire) + b"\x00"):
        with pytest.raises(RecordDecodeError, match="65 bytes"):
            ForkRecord.from_bytes(bad)
    wire[56] = 2
    with pytest.raises(RecordDecodeError, match="snapshot flag"):
        ForkRecord.from_bytes(bytes(wire))
    wire[56] = 0
    wire[60] = 1
    with pytest.raises(RecordDecodeError, match="without the flag"):
        ForkRecord.from_bytes(bytes(wire))
