"""Permission tokens and the token cache: layout, seed behaviours, validity, delegation."""

from __future__ import annotations

import struct
import warnings

import attrs
import pytest

from net_core.errors import DecodeError
from net_core.identity import (
    DelegationExhaustedError,
    DelegationNotAllowedError,
    EntityKeypair,
    InvalidSignatureError,
    NotAuthorizedError,
    PermissionToken,
    TokenCache,
    TokenError,
    TokenExpiredError,
    TokenFormatError,
    TokenNotYetValidError,
    TokenReadOnlyError,
    TokenScope,
    ZeroTtlError,
    ZeroTtlWarning,
    channel_hash,
)

OWNER = EntityKeypair.from_seed(bytes(32))
ALICE = EntityKeypair.from_seed(bytes(range(32)))
BOB = EntityKeypair.from_seed(b"\x07" * 32)
NOW = 1_700_000_000
U64_MAX = 2**64 - 1


def issue(
    scope: TokenScope = TokenScope.PUBLISH,
    channel: int | str = "lab/x",
    ttl: int = 100,
    depth: int = 0,
    *,
    issuer: EntityKeypair = OWNER,
    subject: EntityKeypair = ALICE,
    now: int = NOW,
) -> PermissionToken:
    return PermissionToken.try_issue(issuer, subject.entity_id, scope, channel, ttl, depth, now=now)


# -- layout --------------------------------------------------------------------------------


def test_wire_layout_is_161_bytes_signed_over_97() -> None:
    token = issue(TokenScope.PUBLISH | TokenScope.WILDCARD, 0xDEADBEEF, 60, 3)
    wire = token.to_bytes()
    assert len(wire) == 161
    assert wire[:32] == OWNER.entity_id.as_bytes()
    assert wire[32:64] == ALICE.entity_id.as_bytes()
    scope, chash, nbf, naf, depth, nonce = struct.unpack("<IIQQBQ", wire[64:97])
    assert (scope, chash, nbf, naf, depth, nonce) == (17, 0xDEADBEEF, NOW, NOW + 60, 3, token.nonce)
    assert token.signed_bytes() == wire[:97]
    OWNER.verify(wire[:97], wire[97:])
    assert PermissionToken.from_bytes(wire) == token


def test_exact_length_parsing() -> None:
    wire = issue().to_bytes()
    for bad in (b"", wire[:160], wire + b"\x00", wire + wire):
        with pytest.raises(TokenFormatError, match="token: invalid_format") as err:
            PermissionToken.from_bytes(bad)
        assert isinstance(err.value, DecodeError)
        assert err.value.kind == "invalid_format"


def test_nonces_differ_and_can_be_pinned() -> None:
    assert issue().nonce != issue().nonce
    pinned = PermissionToken.try_issue(OWNER, ALICE.entity_id, 1, 5, 10, now=NOW, nonce=42)
    assert pinned.nonce == 42
    assert pinned == PermissionToken.try_issue(OWNER, ALICE.entity_id, 1, 5, 10, now=NOW, nonce=42)


def test_channel_may_be_given_by_name() -> None:
    assert issue(channel="sensors/lidar").channel_hash == channel_hash("sensors/lidar")
    assert issue(channel="sensors/lidar").channel_hash == 0x7FA5E5D8


def test_issue_argument_checks() -> None:
    with pytest.raises(ValueError, match="delegation_depth"):
        issue(depth=256)
    with pytest.raises(ValueError, match="scope"):
        issue(scope=TokenScope(2**32))
    with pytest.raises(ValueError, match="channel hash"):
        issue(channel=2**32)
    with pytest.raises(ValueError, match="ttl_seconds"):
        issue(ttl=-1)


def test_direct_construction_is_validated() -> None:
    token = issue()
    for field, value in [
        ("channel_hash", 2**32),
        ("not_after", -1),
        ("delegation_depth", 256),
        ("nonce", 2**64),
        ("scope", 2**32),
        ("signature", b"short"),
    ]:
        with pytest.raises(ValueError, match=field):
            attrs.evolve(token, **{field: value})
    with pytest.raises(TypeError):
        attrs.evolve(token, issuer=b"\x00" * 32)


# -- zero TTL in both forms ----------------------------------------------------------------


def test_try_issue_rejects_zero_ttl() -> None:
    with pytest.raises(ZeroTtlError, match="token: zero_ttl") as err:
        issue(ttl=0)
    assert err.value.kind == "zero_ttl"


def test_issue_clamps_zero_ttl_to_one_second_with_a_warning() -> None:
    with pytest.warns(ZeroTtlWarning, match="clamped to 1 second"):
        token = PermissionToken.issue(OWNER, ALICE.entity_id, 1, 5, 0, now=NOW)
    assert token.not_after == token.not_before + 1
    token.check_valid(now=NOW)


def test_issue_without_zero_ttl_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = PermissionToken.issue(OWNER, ALICE.entity_id, 1, 5, 30, now=NOW)
    assert token.not_after == NOW + 30


def test_issue_still_reports_the_other_failures_precisely() -> None:
    public = OWNER.to_public()
    with pytest.raises(TokenReadOnlyError, match="token: read_only"):
        PermissionToken.issue(public, ALICE.entity_id, 1, 5, 30)
    with pytest.warns(ZeroTtlWarning), pytest.raises(TokenReadOnlyError):
        PermissionToken.issue(public, ALICE.entity_id, 1, 5, 0)


def test_huge_ttl_saturates() -> None:
    token = issue(ttl=U64_MAX)
    assert token.not_after == U64_MAX
    token.check_valid(now=NOW)
    assert PermissionToken.from_bytes(token.to_bytes()).not_after == U64_MAX


# -- validity ------------------------------------------------------------------------------


def test_validity_window_is_half_open() -> None:
    token = issue(ttl=10)
    with pytest.raises(TokenNotYetValidError, match="not_yet_valid"):
        token.check_valid(now=NOW - 1)
    token.check_valid(now=NOW)
    token.check_valid(now=NOW + 9)
    with pytest.raises(TokenExpiredError, match="token: expired"):
        token.check_valid(now=NOW + 10)
    assert token.is_valid(now=NOW + 9)
    assert not token.is_valid(now=NOW + 10)
    assert token.is_expired(now=NOW + 10)
    assert not token.is_expired(now=NOW + 9)


def test_signature_is_checked_before_time() -> None:
    wire = bytearray(issue(ttl=10).to_bytes())
    wire[100] ^= 1
    tampered = PermissionToken.from_bytes(bytes(wire))
    with pytest.raises(InvalidSignatureError, match="invalid_signature"):
        tampered.check_valid(now=NOW + 100)
    # is_expired is a pure time check and ignores the signature.
    assert tampered.is_expired(now=NOW + 100)


def test_authorizes() -> None:
    chash = channel_hash("lab/x")
    token = issue(TokenScope.PUBLISH | TokenScope.SUBSCRIBE, chash)
    assert token.authorizes(TokenScope.PUBLISH, chash)
    assert token.authorizes(TokenScope.PUBLISH | TokenScope.SUBSCRIBE, chash)
    assert not token.authorizes(TokenScope.ADMIN, chash)
    assert not token.authorizes(TokenScope.PUBLISH, chash + 1)
    assert not token.authorizes(TokenScope.NONE, chash)
    wildcard = issue(TokenScope.SUBSCRIBE | TokenScope.WILDCARD, 1234)
    assert wildcard.authorizes(TokenScope.SUBSCRIBE, chash)
    assert not wildcard.authorizes(TokenScope.PUBLISH, chash)


def test_channel_hash_zero_is_not_a_wildcard() -> None:
    token = issue(TokenScope.PUBLISH, 0)
    assert token.authorizes(TokenScope.PUBLISH, 0)
    assert not token.authorizes(TokenScope.PUBLISH, channel_hash("lab/x"))


def test_scope_names() -> None:
    scope = TokenScope.from_names(["publish", "Subscribe", "wildcard"])
    assert scope == TokenScope.PUBLISH | TokenScope.SUBSCRIBE | TokenScope.WILDCARD
    assert scope.names() == ["publish", "subscribe", "wildcard"]
    assert TokenScope.ALL.names() == ["publish", "subscribe", "admin", "delegate"]
    with pytest.raises(ValueError, match="unknown scope"):
        TokenScope.from_names(["root"])
    with pytest.raises(ValueError, match="unknown scope"):
        TokenScope.from_names(["all"])
    assert TokenScope(1 << 20).grants(TokenScope(1 << 20))


# -- delegation ----------------------------------------------------------------------------


def test_delegation_narrows_scope_and_never_extends_expiry() -> None:
    parent = issue(TokenScope.PUBLISH | TokenScope.DELEGATE, "lab/x", 100, 2)
    child = parent.delegate(
        ALICE, BOB.entity_id, TokenScope.ALL | TokenScope.WILDCARD, now=NOW + 40
    )
    assert child.issuer == ALICE.entity_id
    assert child.subject == BOB.entity_id
    assert child.scope == TokenScope.PUBLISH | TokenScope.DELEGATE
    assert child.channel_hash == parent.channel_hash
    assert child.not_before == NOW + 40
    assert child.not_after == parent.not_after
    assert child.delegation_depth == 1
    assert child.nonce != parent.nonce
    child.check_valid(now=NOW + 40)
    grandchild = child.delegate(BOB, OWNER.entity_id, TokenScope.PUBLISH, now=NOW + 50)
    assert grandchild.delegation_depth == 0
    with pytest.raises(DelegationExhaustedError):
        grandchild.delegate(OWNER, BOB.entity_id, TokenScope.PUBLISH, now=NOW + 50)


def test_delegation_rule_order() -> None:
    stranger = BOB
    # exhausted wins over not-allowed and not-authorized
    with pytest.raises(DelegationExhaustedError, match="delegation_exhausted"):
        issue(TokenScope.PUBLISH, depth=0).delegate(stranger, BOB.entity_id, 1, now=NOW)
    # not-allowed wins over not-authorized
    with pytest.raises(DelegationNotAllowedError, match="delegation_not_allowed"):
        issue(TokenScope.PUBLISH, depth=1).delegate(stranger, BOB.entity_id, 1, now=NOW)
    with pytest.raises(NotAuthorizedError, match="not_authorized"):
        issue(TokenScope.DELEGATE, depth=1).delegate(stranger, BOB.entity_id, 1, now=NOW)
    # ... and the parent's validity comes before all of them
    with pytest.raises(TokenExpiredError):
        issue(TokenScope.PUBLISH, depth=0).delegate(stranger, BOB.entity_id, 1, now=NOW + 100)
    wire = bytearray(issue(TokenScope.PUBLISH, depth=0).to_bytes())
    wire[5] ^= 4
    with pytest.raises(InvalidSignatureError):
        PermissionToken.from_bytes(bytes(wire)).delegate(stranger, BOB.entity_id, 1, now=NOW)
    # a public-only signer is reported last
    with pytest.raises(TokenReadOnlyError):
        issue(TokenScope.DELEGATE, depth=1).delegate(ALICE.to_public(), BOB.entity_id, 8, now=NOW)


def test_delegate_with_an_empty_intersection_yields_an_inert_token() -> None:
    parent = issue(TokenScope.PUBLISH | TokenScope.DELEGATE, depth=1)
    child = parent.delegate(ALICE, BOB.entity_id, TokenScope.ADMIN, now=NOW)
    assert child.scope == TokenScope.NONE
    assert not child.authorizes(TokenScope.PUBLISH, parent.channel_hash)


def test_all_token_errors_share_the_base_and_print_the_kind() -> None:
    for cls in (ZeroTtlError, TokenFormatError, NotAuthorizedError, TokenReadOnlyError):
        err = cls()
        assert isinstance(err, TokenError)
        assert str(err) == f"token: {cls.kind}"


# -- cache ---------------------------------------------------------------------------------


def test_cache_checks_exact_then_wildcard() -> None:
    cache = TokenCache()
    chash = channel_hash("lab/x")
    cache.insert(issue(TokenScope.PUBLISH, chash))
    cache.check(ALICE.entity_id, TokenScope.PUBLISH, chash, now=NOW)
    with pytest.raises(NotAuthorizedError):
        cache.check(ALICE.entity_id, TokenScope.SUBSCRIBE, chash, now=NOW)
    with pytest.raises(NotAuthorizedError):
        cache.check(BOB.entity_id, TokenScope.PUBLISH, chash, now=NOW)
    cache.insert(issue(TokenScope.SUBSCRIBE | TokenScope.WILDCARD, 99))
    cache.check(ALICE.entity_id, TokenScope.SUBSCRIBE, chash, now=NOW)
    cache.check(ALICE.entity_id, TokenScope.SUBSCRIBE, 12345, now=NOW)
    assert not cache.allows(ALICE.entity_id, TokenScope.ADMIN, 12345, now=NOW)
    assert len(cache) == 2
    assert cache.slot_count == 2


def test_cache_channel_zero_token_does_not_act_as_wildcard() -> None:
    cache = TokenCache()
    cache.insert(issue(TokenScope.PUBLISH, 0))
    cache.check(ALICE.entity_id, TokenScope.PUBLISH, 0, now=NOW)
    assert not cache.allows(ALICE.entity_id, TokenScope.PUBLISH, 7, now=NOW)


def test_cache_refuses_forgeries_but_insert_unchecked_trusts() -> None:
    cache = TokenCache()
    wire = bytearray(issue().to_bytes())
    wire[64] ^= 2
    forged = PermissionToken.from_bytes(bytes(wire))
    with pytest.raises(InvalidSignatureError):
        cache.insert(forged)
    assert len(cache) == 0
    assert cache.insert_unchecked(forged)
    # check still demands validity, so the forgery authorizes nothing
    assert not cache.allows(ALICE.entity_id, forged.scope, forged.channel_hash, now=NOW)


def test_cache_same_scope_replaces_distinct_scopes_coexist() -> None:
    cache = TokenCache()
    first = issue(TokenScope.PUBLISH, ttl=10)
    second = issue(TokenScope.PUBLISH, ttl=50)
    cache.insert(first)
    cache.insert(second)
    assert len(cache) == 1
    assert cache.get(ALICE.entity_id, first.channel_hash, now=NOW) == second
    cache.insert(issue(TokenScope.SUBSCRIBE))
    assert len(cache) == 2


def test_expired_exact_token_does_not_block_the_wildcard() -> None:
    cache = TokenCache()
    chash = channel_hash("lab/x")
    cache.insert(issue(TokenScope.PUBLISH, chash, ttl=5))
    cache.insert(issue(TokenScope.PUBLISH | TokenScope.WILDCARD, 0, ttl=500))
    cache.check(ALICE.entity_id, TokenScope.PUBLISH, chash, now=NOW + 100)


def test_cache_bounds_are_enforced_and_counted() -> None:
    cache = TokenCache(max_slots=2, max_per_slot=2)
    assert cache.insert(issue(TokenScope.PUBLISH, 1))
    assert cache.insert(issue(TokenScope.PUBLISH, 2))
    assert not cache.insert(issue(TokenScope.PUBLISH, 3))
    assert cache.stats.rejected_slots_full == 1
    # an existing slot still refreshes at the slot cap
    assert cache.insert(issue(TokenScope.PUBLISH, 1, ttl=999))
    assert cache.insert(issue(TokenScope.SUBSCRIBE, 1))
    assert not cache.insert(issue(TokenScope.ADMIN, 1))
    assert cache.stats.rejected_slot_full == 1
    assert len(cache) == 3
    with pytest.raises(ValueError, match="at least 1"):
        TokenCache(max_slots=0)


def test_evict_expired() -> None:
    cache = TokenCache()
    cache.insert(issue(TokenScope.PUBLISH, 1, ttl=10))
    cache.insert(issue(TokenScope.SUBSCRIBE, 1, ttl=20))
    cache.insert(issue(TokenScope.PUBLISH, 2, ttl=10))
    assert cache.evict_expired(now=NOW + 9) == 0
    # not_after <= now is expired: the boundary token goes
    assert cache.evict_expired(now=NOW + 10) == 2
    assert len(cache) == 1
    assert cache.slot_count == 1
    assert cache.stats.evicted_expired == 2
    assert [t.scope for t in cache] == [TokenScope.SUBSCRIBE]
    assert cache.get(ALICE.entity_id, 2) is None
