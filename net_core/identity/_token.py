"""Permission tokens: signed, delegatable, expiring grants of actions on a channel.

Theory of operation. An issuer signs a grant of a :class:`TokenScope` (PUBLISH,
SUBSCRIBE, ADMIN, DELEGATE, and WILDCARD for "every channel") on one channel to a
subject. The 161-byte wire layout, little-endian, is byte-identical to the reference
(``ai2070-net`` 0.18)::

    issuer 32 | subject 32 | scope u32 | channel_hash u32 | not_before u64 |
    not_after u64 | delegation_depth u8 | nonce u64 | signature 64

The signature is ed25519 by the issuer over the first 97 bytes. Times are unix seconds;
a token is live while ``not_before <= now < not_after``. A channel hash of 0 is an
ordinary channel, never a wildcard: only the WILDCARD scope bit widens a token.

Delegation: the subject of a token that holds DELEGATE and has ``delegation_depth > 0``
may sign a child for another subject, with the scope narrowed to the intersection, the
same channel, ``not_before = now``, the parent's ``not_after`` (never extended) and depth
minus one. The checks run in the reference's order: the parent must be valid, then
"exhausted", then "not allowed", then "not authorized" (the signer is not the parent's
subject).

:class:`TokenCache` holds verified tokens keyed by (subject, channel), with a dedicated
slot for WILDCARD tokens; it is bounded and counts what it refuses.

Every function that needs the time takes ``now`` (unix seconds) and reads the wall
clock only when it is omitted. Nothing here logs or does I/O; ``issue`` emits a
:class:`ZeroTtlWarning` when it clamps a zero TTL.
"""

from __future__ import annotations

import enum
import secrets
import struct
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, final

import attrs

from net_core.identity._channel import ChannelName, channel_hash
from net_core.identity._errors import (
    DelegationExhaustedError,
    DelegationNotAllowedError,
    InvalidSignatureError,
    NotAuthorizedError,
    ReadOnlyKeypairError,
    TokenExpiredError,
    TokenFormatError,
    TokenNotYetValidError,
    TokenReadOnlyError,
    ZeroTtlError,
)
from net_core.identity._keypair import EntityId, EntityKeypair, verify_strict

__all__ = [
    "MAX_TOKENS_PER_SLOT",
    "MAX_TOKEN_SLOTS",
    "TOKEN_SIGNED_SIZE",
    "TOKEN_WIRE_SIZE",
    "PermissionToken",
    "TokenCache",
    "TokenCacheStats",
    "TokenScope",
    "ZeroTtlWarning",
]

TOKEN_SIGNED_SIZE: Final = 97
TOKEN_WIRE_SIZE: Final = 161
MAX_TOKEN_SLOTS: Final = 65_536
MAX_TOKENS_PER_SLOT: Final = 32

_U8_MAX: Final = 0xFF
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
# issuer, subject, scope, channel_hash, not_before, not_after, delegation_depth, nonce
_SIGNED: Final = struct.Struct("<32s32sIIQQBQ")
_WIRE: Final = struct.Struct("<32s32sIIQQBQ64s")
_WILDCARD_SLOT: Final = 0


class TokenScope(enum.IntFlag):
    """The actions a token grants. Unknown bits from the wire are kept, not dropped."""

    NONE = 0
    PUBLISH = 0b0001
    SUBSCRIBE = 0b0010
    ADMIN = 0b0100
    DELEGATE = 0b1000
    #: Channel-agnostic: the token's actions apply to every channel. Never implied by
    #: a channel hash of 0.
    WILDCARD = 0b1_0000
    #: Every action on one channel; does NOT include WILDCARD.
    ALL = 0b1111

    def grants(self, action: TokenScope) -> bool:
        """True when every bit of ``action`` is in this scope; never for NONE."""
        bits = int(action)
        return bits != 0 and (int(self) & bits) == bits

    @classmethod
    def from_names(cls, names: Iterable[str]) -> TokenScope:
        """Build a scope from names such as ``["publish", "subscribe"]``."""
        scope = cls.NONE
        for name in names:
            key = name.strip().upper()
            if key not in cls.__members__ or key in ("NONE", "ALL"):
                known = "publish | subscribe | admin | delegate | wildcard"
                raise ValueError(f"unknown scope {name!r}; expected {known}")
            scope |= cls[key]
        return scope

    def names(self) -> list[str]:
        """The lowercase names of the single-action bits that are set, in bit order."""
        singles = (self.PUBLISH, self.SUBSCRIBE, self.ADMIN, self.DELEGATE, self.WILDCARD)
        return [str(flag.name).lower() for flag in singles if int(self) & int(flag)]


class ZeroTtlWarning(RuntimeWarning):
    """:meth:`PermissionToken.issue` was asked for a zero TTL and clamped it to 1 s."""


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def _resolve_channel(channel: int | str | ChannelName) -> int:
    if isinstance(channel, bool):
        raise TypeError("channel must be a hash (int), a name (str) or a ChannelName")
    if isinstance(channel, int):
        if not 0 <= channel <= _U32_MAX:
            raise ValueError(f"channel hash must fit in u32, got {channel}")
        return channel
    return channel_hash(channel)


def _check_range(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in [0, {maximum}], got {value}")


def _field_range(maximum: int) -> Callable[[object, attrs.Attribute[Any], int], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
        _check_range(attribute.name, value, maximum)

    return check


def _signature_bytes(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 64:
        raise ValueError("signature must be 64 bytes")


@final
@attrs.frozen(eq=True)
class PermissionToken:
    """A signed grant of ``scope`` on ``channel_hash`` from ``issuer`` to ``subject``.

    Build one with :meth:`try_issue` / :meth:`issue` / :meth:`delegate`, or decode one
    with :meth:`from_bytes`. A decoded token is *not* verified: call :meth:`verify`
    (signature) or :meth:`check_valid` (signature and time window).
    """

    issuer: EntityId = attrs.field(validator=attrs.validators.instance_of(EntityId))
    subject: EntityId = attrs.field(validator=attrs.validators.instance_of(EntityId))
    scope: TokenScope = attrs.field(converter=TokenScope, validator=_field_range(_U32_MAX))
    channel_hash: int = attrs.field(validator=_field_range(_U32_MAX))
    not_before: int = attrs.field(validator=_field_range(_U64_MAX))
    not_after: int = attrs.field(validator=_field_range(_U64_MAX))
    delegation_depth: int = attrs.field(validator=_field_range(_U8_MAX))
    nonce: int = attrs.field(validator=_field_range(_U64_MAX))
    signature: bytes = attrs.field(
        validator=_signature_bytes, repr=lambda sig: sig.hex()[:16] + "..."
    )

    # -- construction --------------------------------------------------------------------

    @classmethod
    def try_issue(
        cls,
        issuer: EntityKeypair,
        subject: EntityId,
        scope: TokenScope | int,
        channel: int | str | ChannelName,
        ttl_seconds: int,
        delegation_depth: int = 0,
        *,
        now: int | None = None,
        nonce: int | None = None,
    ) -> PermissionToken:
        """Issue a token valid for ``ttl_seconds`` from ``now``.

        ``channel`` is a canonical channel hash or a channel name. ``not_after``
        saturates at the u64 maximum instead of wrapping.

        Raises :class:`ZeroTtlError` for a TTL of 0 (the token would be born expired)
        and :class:`TokenReadOnlyError` when ``issuer`` is public-only.
        """
        _check_range("ttl_seconds", ttl_seconds, _U64_MAX)
        if ttl_seconds == 0:
            raise ZeroTtlError("ttl_seconds is 0; the token would be born expired")
        _check_range("scope", int(scope), _U32_MAX)
        _check_range("delegation_depth", delegation_depth, _U8_MAX)
        if not isinstance(subject, EntityId):
            raise TypeError(f"subject must be an EntityId, got {type(subject).__name__}")
        chash = _resolve_channel(channel)
        start = _now(now)
        _check_range("now", start, _U64_MAX)
        nonce_value = secrets.randbits(64) if nonce is None else nonce
        _check_range("nonce", nonce_value, _U64_MAX)
        return cls._signed(
            issuer,
            subject=subject,
            scope=TokenScope(int(scope)),
            channel_hash=chash,
            not_before=start,
            not_after=min(start + ttl_seconds, _U64_MAX),
            delegation_depth=delegation_depth,
            nonce=nonce_value,
        )

    @classmethod
    def issue(
        cls,
        issuer: EntityKeypair,
        subject: EntityId,
        scope: TokenScope | int,
        channel: int | str | ChannelName,
        ttl_seconds: int,
        delegation_depth: int = 0,
        *,
        now: int | None = None,
        nonce: int | None = None,
    ) -> PermissionToken:
        """Like :meth:`try_issue`, but a TTL of 0 is clamped to 1 second.

        The clamp emits a :class:`ZeroTtlWarning` so the misuse is visible (tests can
        turn it into an error) without taking the process down, as the reference does
        since its fix. Every other failure raises as in :meth:`try_issue`.
        """
        if ttl_seconds == 0:
            warnings.warn(
                "PermissionToken.issue called with ttl_seconds == 0; clamped to 1 second "
                "(use try_issue to get ZeroTtlError instead)",
                ZeroTtlWarning,
                stacklevel=2,
            )
            ttl_seconds = 1
        return cls.try_issue(
            issuer,
            subject,
            scope,
            channel,
            ttl_seconds,
            delegation_depth,
            now=now,
            nonce=nonce,
        )

    @classmethod
    def _signed(
        cls,
        signer: EntityKeypair,
        *,
        subject: EntityId,
        scope: TokenScope,
        channel_hash: int,
        not_before: int,
        not_after: int,
        delegation_depth: int,
        nonce: int,
    ) -> PermissionToken:
        body = _SIGNED.pack(
            signer.entity_id.as_bytes(),
            subject.as_bytes(),
            int(scope),
            channel_hash,
            not_before,
            not_after,
            delegation_depth,
            nonce,
        )
        try:
            signature = signer.sign(body)
        except ReadOnlyKeypairError as exc:
            raise TokenReadOnlyError("the signing keypair is public-only") from exc
        return cls(
            issuer=signer.entity_id,
            subject=subject,
            scope=scope,
            channel_hash=channel_hash,
            not_before=not_before,
            not_after=not_after,
            delegation_depth=delegation_depth,
            nonce=nonce,
            signature=signature,
        )

    # -- codec ---------------------------------------------------------------------------

    def signed_bytes(self) -> bytes:
        """The 97 bytes the signature covers."""
        return _SIGNED.pack(
            self.issuer.as_bytes(),
            self.subject.as_bytes(),
            int(self.scope),
            self.channel_hash,
            self.not_before,
            self.not_after,
            self.delegation_depth,
            self.nonce,
        )

    def to_bytes(self) -> bytes:
        """The 161-byte wire form."""
        return self.signed_bytes() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> PermissionToken:
        """Decode exactly 161 bytes; anything else raises :class:`TokenFormatError`.

        Trailing bytes are rejected: a caller framing a token inside a larger message
        must slice it out first. The signature is not checked here.
        """
        raw = bytes(data)
        if len(raw) != TOKEN_WIRE_SIZE:
            raise TokenFormatError(f"expected {TOKEN_WIRE_SIZE} bytes, got {len(raw)}")
        issuer, subject, scope, chash, nbf, naf, depth, nonce, sig = _WIRE.unpack(raw)
        # Every field comes out of the fixed layout already in range, so the validators
        # are skipped on this hot path (parsing is per subscribe and per cache insert).
        token = object.__new__(cls)
        for name, value in (
            ("issuer", EntityId(issuer)),
            ("subject", EntityId(subject)),
            ("scope", TokenScope(scope)),
            ("channel_hash", chash),
            ("not_before", nbf),
            ("not_after", naf),
            ("delegation_depth", depth),
            ("nonce", nonce),
            ("signature", sig),
        ):
            object.__setattr__(token, name, value)
        return token

    # -- checks --------------------------------------------------------------------------

    def is_signature_valid(self) -> bool:
        """True when the signature strictly verifies against the issuer."""
        return verify_strict(self.issuer.as_bytes(), self.signed_bytes(), self.signature)

    def verify(self) -> None:
        """Raise :class:`InvalidSignatureError` unless the signature verifies."""
        if not self.is_signature_valid():
            raise InvalidSignatureError()

    def check_valid(self, *, now: int | None = None) -> None:
        """Raise unless the signature verifies and ``not_before <= now < not_after``.

        Raises :class:`InvalidSignatureError`, :class:`TokenNotYetValidError` or
        :class:`TokenExpiredError`, checked in that order.
        """
        self.verify()
        self.check_time(now=now)

    def check_time(self, *, now: int | None = None) -> None:
        """The time-window half of :meth:`check_valid` (no signature check)."""
        current = _now(now)
        if current < self.not_before:
            raise TokenNotYetValidError()
        if current >= self.not_after:
            raise TokenExpiredError()

    def is_valid(self, *, now: int | None = None) -> bool:
        """True when the signature verifies and the token is live at ``now``."""
        current = _now(now)
        return self.not_before <= current < self.not_after and self.is_signature_valid()

    def is_expired(self, *, now: int | None = None) -> bool:
        """True when ``now >= not_after``; ignores the signature."""
        return _now(now) >= self.not_after

    def authorizes(self, action: TokenScope, channel_hash: int) -> bool:
        """True when the scope grants ``action`` and the token covers ``channel_hash``.

        A token covers a channel when it holds WILDCARD or its channel hash equals
        ``channel_hash``. Signature and time are not checked here.
        """
        if not self.scope.grants(action):
            return False
        return bool(self.scope & TokenScope.WILDCARD) or self.channel_hash == channel_hash

    def delegate(
        self,
        signer: EntityKeypair,
        new_subject: EntityId,
        restricted_scope: TokenScope | int,
        *,
        now: int | None = None,
        nonce: int | None = None,
    ) -> PermissionToken:
        """A child token for ``new_subject``, signed by this token's subject.

        Checks, in the reference's order: this token is valid (signature, then time);
        ``delegation_depth > 0`` (:class:`DelegationExhaustedError`); DELEGATE is in
        the scope (:class:`DelegationNotAllowedError`); ``signer`` is this token's
        subject (:class:`NotAuthorizedError`); ``signer`` can sign
        (:class:`TokenReadOnlyError`). The child's scope is the intersection, its
        ``not_after`` is this token's (never extended).
        """
        current = _now(now)
        self.check_valid(now=current)
        if self.delegation_depth == 0:
            raise DelegationExhaustedError()
        if not self.scope.grants(TokenScope.DELEGATE):
            raise DelegationNotAllowedError()
        if signer.entity_id != self.subject:
            raise NotAuthorizedError("the signer is not the subject of the parent token")
        if not isinstance(new_subject, EntityId):
            raise TypeError(f"new_subject must be an EntityId, got {type(new_subject).__name__}")
        _check_range("restricted_scope", int(restricted_scope), _U32_MAX)
        nonce_value = secrets.randbits(64) if nonce is None else nonce
        _check_range("nonce", nonce_value, _U64_MAX)
        return self._signed(
            signer,
            subject=new_subject,
            scope=TokenScope(int(self.scope) & int(restricted_scope)),
            channel_hash=self.channel_hash,
            not_before=current,
            not_after=self.not_after,
            delegation_depth=self.delegation_depth - 1,
            nonce=nonce_value,
        )


@final
@attrs.define
class TokenCacheStats:
    """What a :class:`TokenCache` refused or dropped, by reason."""

    #: Valid-signature tokens refused because the cache already had ``max_slots``
    #: (subject, channel) slots and the token needed a new one.
    rejected_slots_full: int = 0
    #: Tokens refused because their slot already held ``max_per_slot`` other scopes.
    rejected_slot_full: int = 0
    #: Tokens removed by :meth:`TokenCache.evict_expired`.
    evicted_expired: int = 0


@final
class TokenCache:
    """Verified tokens by (subject, channel hash), for fast authorization checks.

    A token lives in the slot of its subject and channel hash; a WILDCARD token lives in
    its subject's wildcard slot (keyed like channel 0, which stays an ordinary channel
    for non-wildcard tokens: :meth:`check` tests :meth:`PermissionToken.authorizes` on
    every candidate). Within a slot a token with the same scope bits replaces the older
    one; distinct scopes coexist up to ``max_per_slot``. At most ``max_slots`` slots
    exist; refusals are counted in :attr:`stats` (existing slots always refresh).

    Not thread-safe: use it from one thread (or one event loop).
    """

    __slots__ = ("_max_per_slot", "_max_slots", "_slots", "_wildcard_seen", "stats")

    def __init__(
        self, *, max_slots: int = MAX_TOKEN_SLOTS, max_per_slot: int = MAX_TOKENS_PER_SLOT
    ) -> None:
        if max_slots < 1 or max_per_slot < 1:
            raise ValueError("max_slots and max_per_slot must be at least 1")
        self._max_slots = max_slots
        self._max_per_slot = max_per_slot
        self._slots: dict[tuple[bytes, int, bool], list[PermissionToken]] = {}
        self._wildcard_seen = False
        self.stats = TokenCacheStats()

    def insert(self, token: PermissionToken) -> bool:
        """Verify the signature, then cache the token (see :meth:`insert_unchecked`).

        Raises :class:`InvalidSignatureError` for a forged or tampered token.
        """
        token.verify()
        return self.insert_unchecked(token)

    def insert_unchecked(self, token: PermissionToken) -> bool:
        """Cache a token known to be authentic (for example one this node issued).

        Returns False, and counts it, when the cache is full for it.
        """
        wildcard = bool(token.scope & TokenScope.WILDCARD)
        key = (
            token.subject.as_bytes(),
            _WILDCARD_SLOT if wildcard else token.channel_hash,
            wildcard,
        )
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= self._max_slots:
                self.stats.rejected_slots_full += 1
                return False
            self._slots[key] = [token]
            self._wildcard_seen = self._wildcard_seen or wildcard
            return True
        for index, held in enumerate(slot):
            if held.scope == token.scope:
                slot[index] = token
                return True
        if len(slot) >= self._max_per_slot:
            self.stats.rejected_slot_full += 1
            return False
        slot.append(token)
        return True

    def check(
        self,
        subject: EntityId,
        action: TokenScope,
        channel_hash: int,
        *,
        now: int | None = None,
    ) -> None:
        """Raise :class:`NotAuthorizedError` unless a cached token allows the action.

        Looks in the exact (subject, channel) slot, then the subject's wildcard slot. A
        token counts only if it is valid at ``now`` (signature and time) and
        :meth:`PermissionToken.authorizes` the action; an expired token never blocks a
        valid one.
        """
        if self.find(subject, action, channel_hash, now=now) is None:
            raise NotAuthorizedError()

    def allows(
        self,
        subject: EntityId,
        action: TokenScope,
        channel_hash: int,
        *,
        now: int | None = None,
    ) -> bool:
        """True when :meth:`check` would pass."""
        return self.find(subject, action, channel_hash, now=now) is not None

    def find(
        self,
        subject: EntityId,
        action: TokenScope,
        channel_hash: int,
        *,
        now: int | None = None,
    ) -> PermissionToken | None:
        """The first cached token that allows the action, or None."""
        current = _now(now)
        subject_bytes = subject.as_bytes()
        keys = [(subject_bytes, channel_hash, False)]
        if self._wildcard_seen:
            keys.append((subject_bytes, _WILDCARD_SLOT, True))
        for key in keys:
            for token in self._slots.get(key, ()):
                if (
                    token.subject == subject
                    and token.authorizes(action, channel_hash)
                    and token.is_valid(now=current)
                ):
                    return token
        return None

    def get(
        self, subject: EntityId, channel_hash: int, *, now: int | None = None
    ) -> PermissionToken | None:
        """A cached exact-channel token for (subject, channel): a valid one if any."""
        slot = self._slots.get((subject.as_bytes(), channel_hash, False))
        if not slot:
            return None
        current = _now(now)
        for token in slot:
            if token.is_valid(now=current):
                return token
        return slot[0]

    def evict_expired(self, *, now: int | None = None) -> int:
        """Drop every token with ``not_after <= now``; returns how many were dropped."""
        current = _now(now)
        dropped = 0
        for key in list(self._slots):
            slot = self._slots[key]
            kept = [token for token in slot if token.not_after > current]
            dropped += len(slot) - len(kept)
            if kept:
                self._slots[key] = kept
            else:
                del self._slots[key]
        self.stats.evicted_expired += dropped
        return dropped

    @property
    def slot_count(self) -> int:
        """The number of occupied (subject, channel) slots."""
        return len(self._slots)

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def __iter__(self) -> Iterator[PermissionToken]:
        for slot in list(self._slots.values()):
            yield from slot
