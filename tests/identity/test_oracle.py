"""Compatibility with the reference (``ai2070-net`` 0.18), both ways.

* identities: entity ids, node ids and origin hashes for many seeds, and signatures;
* tokens: issued and delegated by the reference verify in ours with the same fields;
  ours (plain, delegated, wildcard) verify, parse and delegate in the reference;
  strict verification rejects the same small-order forgery the reference rejects;
* channel hashes and the channel-name rule for many names;
* causal chains: the chain link in a reference daemon snapshot equals the one our
  builder computes for the same outputs, and a reference fork's genesis carries our fork
  sentinel.

Identity envelopes are NOT compared with the reference: the installed binding exposes
no envelope seal/open, and the only envelopes it makes are sealed to a NetMesh's Noise
static key (whose private half never leaves the binding) and travel inside encrypted
migration traffic. The envelope construction is instead checked against an independent
re-derivation from the facts (tests/identity/test_envelope.py).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from net_core.identity import (
    CausalChainBuilder,
    CausalLink,
    ChannelNameError,
    EntityId,
    EntityKeypair,
    ForkRecord,
    PermissionToken,
    TokenCache,
    TokenScope,
    channel_hash,
    fork_sentinel,
    wire_channel_hash,
)

net = pytest.importorskip("net", reason="ai2070-net not installed")

pytestmark = pytest.mark.oracle

SEEDS = [bytes(32), bytes(range(32)), b"\xff" * 32] + [
    random.Random(i).randbytes(32) for i in range(200)
]
SCOPE_NAMES = {
    "publish": TokenScope.PUBLISH,
    "subscribe": TokenScope.SUBSCRIBE,
    "admin": TokenScope.ADMIN,
    "delegate": TokenScope.DELEGATE,
}


def _scope_of(names: list[str]) -> TokenScope:
    scope = TokenScope.NONE
    for name in names:
        scope |= SCOPE_NAMES[name]
    return scope


def _same_fields(ours: PermissionToken, parsed: dict[str, Any]) -> None:
    assert ours.issuer.as_bytes() == parsed["issuer"]
    assert ours.subject.as_bytes() == parsed["subject"]
    assert ours.scope == _scope_of(parsed["scope"])
    assert ours.channel_hash == parsed["channel_hash"]
    assert ours.not_before == parsed["not_before"]
    assert ours.not_after == parsed["not_after"]
    assert ours.delegation_depth == parsed["delegation_depth"]
    assert ours.nonce == parsed["nonce"]
    assert ours.signature == parsed["signature"]


# -- identities ----------------------------------------------------------------------------


def test_entity_node_and_origin_equal_for_many_seeds() -> None:
    for seed in SEEDS:
        ours = EntityKeypair.from_seed(seed)
        ref = net.Identity.from_seed(seed)
        assert ours.entity_id.as_bytes() == ref.entity_id
        assert ours.node_id == ref.node_id
        assert ours.origin_hash == ref.origin_hash
        assert ref.to_bytes() == ours.seed()


def test_signatures_equal_and_cross_verify() -> None:
    for i, seed in enumerate(SEEDS[:40]):
        ours = EntityKeypair.from_seed(seed)
        ref = net.Identity.from_seed(seed)
        message = random.Random(i).randbytes(i * 7)
        ref_sig = ref.sign(message)
        # ed25519 is deterministic, so the two implementations sign identically.
        assert ours.sign(message) == ref_sig
        ours.entity_id.verify(message, ref_sig)
        assert not ours.entity_id.is_valid_signature(message + b"!", ref_sig)


# -- tokens --------------------------------------------------------------------------------


def _reference_tokens() -> Iterator[tuple[bytes, str, list[str], int, int]]:
    rng = random.Random(7)
    names = ["sensors/lidar", "lab/x", "a", "deep/nested/channel-1", "x" * 255]
    scope_sets = [[], ["publish"], ["subscribe"], ["publish", "subscribe", "admin", "delegate"]]
    for i in range(60):
        yield (
            SEEDS[i],
            names[i % len(names)],
            scope_sets[i % len(scope_sets)],
            rng.randrange(1, 10**6),
            rng.randrange(0, 256),
        )


def test_reference_tokens_verify_in_ours_with_same_fields() -> None:
    for i, (seed, name, scopes, ttl, depth) in enumerate(_reference_tokens()):
        issuer = net.Identity.from_seed(seed)
        subject = SEEDS[(i + 1) % len(SEEDS)]
        subject_id = net.Identity.from_seed(subject).entity_id
        wire = issuer.issue_token(subject_id, scopes, name, ttl, depth)
        token = PermissionToken.from_bytes(wire)
        _same_fields(token, net.parse_token(wire))
        assert token.to_bytes() == wire
        token.check_valid()
        assert token.channel_hash == channel_hash(name)
        assert token.not_after - token.not_before == ttl
        for action in (TokenScope.PUBLISH, TokenScope.SUBSCRIBE, TokenScope.ADMIN):
            granted = (action.name or "").lower() in scopes
            assert token.authorizes(action, channel_hash(name)) == granted


def test_our_tokens_verify_and_parse_in_the_reference() -> None:
    rng = random.Random(11)
    for i in range(60):
        issuer = EntityKeypair.from_seed(SEEDS[i])
        subject = EntityKeypair.from_seed(SEEDS[i + 100]).entity_id
        scope = TokenScope(rng.randrange(0, 32))
        chash = rng.randrange(0, 2**32)
        token = PermissionToken.try_issue(
            issuer, subject, scope, chash, rng.randrange(1, 10**7), rng.randrange(0, 256)
        )
        wire = token.to_bytes()
        assert len(wire) == 161
        assert net.verify_token(wire) is True
        assert net.token_is_expired(wire) is False
        parsed = net.parse_token(wire)
        assert parsed["issuer"] == issuer.entity_id.as_bytes()
        assert parsed["subject"] == subject.as_bytes()
        assert parsed["channel_hash"] == chash
        assert parsed["not_before"] == token.not_before
        assert parsed["not_after"] == token.not_after
        assert parsed["delegation_depth"] == token.delegation_depth
        assert parsed["nonce"] == token.nonce
        # The binding names the four action bits; WILDCARD is carried but not named.
        assert _scope_of(parsed["scope"]) == scope & TokenScope.ALL
        # A flipped signed byte fails in the reference too.
        tampered = bytearray(wire)
        tampered[rng.randrange(0, 97)] ^= 1 << rng.randrange(8)
        assert net.verify_token(bytes(tampered)) is False


def test_reference_caches_our_token() -> None:
    owner = EntityKeypair.from_seed(SEEDS[3])
    ref_holder = net.Identity.from_seed(SEEDS[4])
    subject = EntityId(ref_holder.entity_id)
    token = PermissionToken.try_issue(owner, subject, TokenScope.SUBSCRIBE, "lab/x", 60)
    ref_holder.install_token(token.to_bytes())
    assert ref_holder.lookup_token(subject.as_bytes(), "lab/x") == token.to_bytes()
    forged = bytearray(token.to_bytes())
    forged[70] ^= 0x80
    with pytest.raises(net.TokenError, match="invalid_signature"):
        ref_holder.install_token(bytes(forged))


def test_reference_delegation_verifies_in_ours() -> None:
    root = net.Identity.from_seed(SEEDS[5])
    middle = net.Identity.from_seed(SEEDS[6])
    leaf = net.Identity.from_seed(SEEDS[7])
    parent = root.issue_token(middle.entity_id, ["publish", "delegate"], "sensors/lidar", 600, 3)
    child = net.delegate_token(middle, parent, leaf.entity_id, ["publish", "subscribe"])
    ours_parent = PermissionToken.from_bytes(parent)
    ours_child = PermissionToken.from_bytes(child)
    _same_fields(ours_child, net.parse_token(child))
    ours_child.check_valid()
    assert ours_child.issuer.as_bytes() == middle.entity_id
    assert ours_child.scope == TokenScope.PUBLISH
    assert ours_child.channel_hash == ours_parent.channel_hash
    assert ours_child.not_after == ours_parent.not_after
    assert ours_child.delegation_depth == 2


def test_our_delegation_verifies_and_re_delegates_in_the_reference() -> None:
    root = EntityKeypair.from_seed(SEEDS[8])
    middle = EntityKeypair.from_seed(SEEDS[9])
    ref_middle2 = net.Identity.from_seed(SEEDS[10])
    end = net.Identity.from_seed(SEEDS[11])
    parent = PermissionToken.try_issue(
        root,
        middle.entity_id,
        TokenScope.PUBLISH | TokenScope.SUBSCRIBE | TokenScope.DELEGATE,
        "lab/x",
        600,
        3,
    )
    child = parent.delegate(middle, EntityId(ref_middle2.entity_id), TokenScope.ALL)
    assert net.verify_token(child.to_bytes())
    grandchild = net.delegate_token(ref_middle2, child.to_bytes(), end.entity_id, ["subscribe"])
    ours = PermissionToken.from_bytes(grandchild)
    ours.check_valid()
    assert ours.scope == TokenScope.SUBSCRIBE
    assert ours.not_after == parent.not_after
    assert ours.delegation_depth == 1


def test_delegation_rule_order_matches_the_reference() -> None:
    """Exhausted before not-allowed before not-authorized, in both implementations."""
    owner = EntityKeypair.from_seed(SEEDS[12])
    holder = EntityKeypair.from_seed(SEEDS[13])
    stranger = EntityKeypair.from_seed(SEEDS[14])
    ref_holder = net.Identity.from_seed(SEEDS[13])
    ref_stranger = net.Identity.from_seed(SEEDS[14])
    cases = [
        # depth 0 and no DELEGATE and a wrong signer: exhausted wins
        (TokenScope.PUBLISH, 0, stranger, ref_stranger, "delegation_exhausted"),
        # no DELEGATE and a wrong signer: not allowed wins
        (TokenScope.PUBLISH, 2, stranger, ref_stranger, "delegation_not_allowed"),
        # a wrong signer only
        (TokenScope.PUBLISH | TokenScope.DELEGATE, 2, stranger, ref_stranger, "not_authorized"),
        # all fine
        (TokenScope.PUBLISH | TokenScope.DELEGATE, 2, holder, ref_holder, None),
    ]
    for scope, depth, signer, ref_signer, kind in cases:
        token = PermissionToken.try_issue(owner, holder.entity_id, scope, "a", 60, depth)
        new_subject = EntityKeypair.from_seed(SEEDS[15]).entity_id
        if kind is None:
            token.delegate(signer, new_subject, TokenScope.PUBLISH)
            net.delegate_token(ref_signer, token.to_bytes(), new_subject.as_bytes(), ["publish"])
            continue
        with pytest.raises(Exception) as ours:
            token.delegate(signer, new_subject, TokenScope.PUBLISH)
        assert getattr(ours.value, "kind", None) == kind
        with pytest.raises(net.TokenError, match=kind):
            net.delegate_token(ref_signer, token.to_bytes(), new_subject.as_bytes(), ["publish"])


def test_exact_length_parsing_agrees() -> None:
    wire = PermissionToken.try_issue(
        EntityKeypair.from_seed(SEEDS[0]), EntityKeypair.from_seed(SEEDS[1]).entity_id, 1, 5, 9
    ).to_bytes()
    for bad in (b"", wire[:-1], wire + b"\x00", wire * 2):
        with pytest.raises(net.TokenError, match="invalid_format"):
            net.parse_token(bad)
        with pytest.raises(Exception, match="invalid_format") as ours:
            PermissionToken.from_bytes(bad)
        assert ours.type.__name__ == "TokenFormatError"


def test_strict_verification_agrees_on_a_small_order_forgery() -> None:
    """The identity point as issuer with R = identity, S = 0 'verifies' every message
    under a cofactorless non-strict check (OpenSSL's); both strict checks reject it."""
    identity_point = b"\x01" + bytes(31)
    body = identity_point + bytes(range(32)) + struct.pack("<IIQQBQ", 31, 5, 0, 2**63, 9, 1)
    forged = body + identity_point + bytes(32)
    assert net.verify_token(forged) is False
    token = PermissionToken.from_bytes(forged)
    assert not token.is_signature_valid()
    assert not token.is_valid(now=100)


def test_expiry_view_agrees() -> None:
    owner = EntityKeypair.from_seed(SEEDS[20])
    subject = EntityKeypair.from_seed(SEEDS[21]).entity_id
    past = PermissionToken.try_issue(owner, subject, TokenScope.PUBLISH, 1, 10, now=1_000)
    assert past.is_expired()
    assert net.token_is_expired(past.to_bytes()) is True
    assert net.verify_token(past.to_bytes()) is True


def test_zero_ttl_matches_the_reference_fallible_surface() -> None:
    ref = net.Identity.from_seed(SEEDS[0])
    with pytest.raises(net.TokenError, match="zero_ttl"):
        ref.issue_token(ref.entity_id, ["publish"], "a", 0)
    with pytest.raises(Exception, match="zero_ttl"):
        PermissionToken.try_issue(
            EntityKeypair.from_seed(SEEDS[0]), EntityId(ref.entity_id), 1, "a", 0
        )


# -- channels ------------------------------------------------------------------------------

CHANNEL_ALPHABET = "abcXYZ019-_./"


def _random_names(count: int) -> list[str]:
    rng = random.Random(3)
    names = ["sensors/lidar", "lab/x", "a", "x" * 255, "a/b/c/d/e", "..a", "a.b/c_d-e"]
    for _ in range(count):
        names.append("".join(rng.choice(CHANNEL_ALPHABET) for _ in range(rng.randrange(1, 40))))
    return names


def test_channel_hashes_equal_for_many_names() -> None:
    compared = 0
    for name in _random_names(1500):
        try:
            ref = net.channel_hash(name)
        except net.IdentityError as exc:
            ref_text = str(exc)
        else:
            assert channel_hash(name) == ref
            assert wire_channel_hash(name) == ref & 0xFFFF
            compared += 1
            continue
        with pytest.raises(ChannelNameError) as ours:
            channel_hash(name)
        # Same rule, same first violation, same text.
        assert ref_text.endswith(str(ours.value))
    assert compared > 500


def test_channel_name_rejections_match_the_reference_texts() -> None:
    for name in ["", "/a", "a/", "a//b", "x" * 256, "a b", "é", "a/./b", "a/../b", "..", "."]:
        with pytest.raises(net.IdentityError) as ref:
            net.channel_hash(name)
        with pytest.raises(ChannelNameError) as ours:
            channel_hash(name)
        assert str(ref.value) == f"identity: invalid channel name: {ours.value}"


# -- causal chains -------------------------------------------------------------------------


class _Counter:
    """A reference daemon that emits two outputs per event and snapshots a counter."""

    def __init__(self) -> None:
        self.count = 0

    def process(self, event: Any) -> list[bytes]:
        self.count += 1
        return [struct.pack("<Q", self.count), b"x" * self.count + bytes(event.payload)]

    def snapshot(self) -> bytes:
        return struct.pack("<Q", self.count)

    def restore(self, state: bytes) -> None:
        (self.count,) = struct.unpack("<Q", state)


@pytest.fixture
def runtime() -> Iterator[Any]:
    mesh = net.NetMesh("127.0.0.1:0", "11" * 32, num_shards=1)
    rt = net.DaemonRuntime(mesh)
    rt.register_factory("counter", _Counter)
    rt.start()
    try:
        yield rt
    finally:
        rt.shutdown()
        mesh.shutdown()


# Snapshot v2: magic "CDS1" | version | entity_id 32 | through_seq u64 | chain link 32 | ...
_LINK_AT = slice(4 + 1 + 32 + 8, 4 + 1 + 32 + 8 + 32)


def test_reference_daemon_chain_link_equals_ours(runtime: Any) -> None:
    for seed in SEEDS[:5]:
        identity = net.Identity.from_seed(seed)
        handle = runtime.spawn("counter", identity)
        ours = EntityKeypair.from_seed(seed)
        assert handle.origin_hash == ours.origin_hash
        outputs: list[bytes] = []
        for i in range(4):
            event = net.CausalEvent(0xABCD, i + 1, b"in%d" % i)
            outputs.extend(runtime.deliver(handle.origin_hash, event))
        snapshot = runtime.snapshot(handle.origin_hash)
        assert snapshot[5:37] == ours.entity_id.as_bytes()
        head = CausalLink.from_bytes(snapshot[_LINK_AT])
        assert head.origin_hash == ours.origin_hash
        assert head.sequence == len(outputs) == 8
        # Every event of one delivery shares the daemon's horizon, which has seen one
        # origin since the first delivery: take its encoding from the head link.
        builder = CausalChainBuilder(ours.origin_hash)
        for payload in outputs:
            event_out = builder.append(payload, head.horizon_encoded)
        assert event_out.link == head
        runtime.stop(handle.origin_hash)


def test_reference_fork_genesis_carries_our_sentinel(runtime: Any) -> None:
    # A single-node mesh places one fork per group (the spread constraint), so fork the
    # same parent at several sequences instead.
    identity = net.Identity.from_seed(SEEDS[30])
    handle = runtime.spawn("counter", identity)
    for i in range(6):
        runtime.deliver(handle.origin_hash, net.CausalEvent(1, i + 1, b"e"))
    checked = 0
    for fork_seq in (0, 3, 12):
        group = net.ForkGroup.fork(
            runtime, "counter", handle.origin_hash, fork_seq, 1, "round-robin"
        )
        assert group.verify_lineage()
        for record in group.fork_records:
            assert record["original_origin"] == handle.origin_hash
            assert record["fork_seq"] == fork_seq
            forked = record["forked_origin"]
            genesis = CausalLink.from_bytes(runtime.snapshot(forked)[_LINK_AT])
            assert genesis.parent_hash == fork_sentinel(handle.origin_hash, fork_seq)
            ours = ForkRecord.create(handle.origin_hash, forked, fork_seq)
            assert ours.genesis == genesis
            assert ForkRecord.from_bytes(ours.to_bytes()) == ours
            checked += 1
    assert checked == 3


def test_token_cache_slotting_matches_the_reference() -> None:
    """Same scope replaces, distinct scopes coexist, channels and the wildcard get their
    own slots, an expired token is still admitted (insert checks only the signature):
    the reference's cache length follows ours after every insert."""
    owner = EntityKeypair.from_seed(SEEDS[40])
    holder_seed = SEEDS[41]
    ref_cache = net.Identity.from_seed(holder_seed)
    subject = EntityId(ref_cache.entity_id)
    cache = TokenCache()
    lab = channel_hash("lab/x")
    plan = [
        (TokenScope.PUBLISH, lab, 60, None),
        (TokenScope.PUBLISH, lab, 90, None),  # same scope: replaces
        (TokenScope.SUBSCRIBE, lab, 60, None),  # new scope: coexists
        (TokenScope.PUBLISH, channel_hash("a"), 60, None),  # new channel slot
        (TokenScope.PUBLISH | TokenScope.WILDCARD, lab, 60, None),  # wildcard slot
        (TokenScope.ADMIN, lab, 10, 1_000),  # long expired, still admitted
    ]
    for scope, chash, ttl, now in plan:
        token = PermissionToken.try_issue(owner, subject, scope, chash, ttl, now=now)
        assert cache.insert(token)
        ref_cache.install_token(token.to_bytes())
        assert ref_cache.token_cache_len == len(cache)
    assert len(cache) == 5
    exact = ref_cache.lookup_token(subject.as_bytes(), "lab/x")
    assert exact is not None
    assert PermissionToken.from_bytes(exact) in list(cache)
