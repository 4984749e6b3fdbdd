"""``Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s``: the handshake pattern, as a pure state machine.

Theory of operation. This is the Noise Protocol Framework (revision 34) reduced to the
one pattern the mesh speaks::

    NKpsk0:
      <- s
      ...
      -> psk, e, es
      <- e, ee

The initiator is anonymous and knows the responder's static X25519 key out of band;
both sides hold the same 32-byte PSK. Primitives: X25519 and ChaCha20-Poly1305 (IETF,
nonce = 4 zero bytes + u64 LE counter) from ``cryptography``; BLAKE2s-256 from
``hashlib``; HMAC-BLAKE2s (block 64) and HKDF as the Noise spec defines them. Because of
the psk modifier every ``e`` token is also mixed into the chaining key.

:class:`NoiseInitiator` and :class:`NoiseResponder` each move through a fixed table of
states; a call in the wrong state raises :class:`HandshakeOrderError`, and any failure
(malformed message, failed authentication) moves the machine to ``FAILED`` for good, so
a half-failed handshake can never be continued. Ephemeral private keys may be injected
(deterministic tests, Noise test vectors); by default they come from the OS CSPRNG.

This module never does I/O. It knows nothing about Net packets, node ids or session
keys; :mod:`net_core.mesh._handshake` builds the mesh handshake on top of it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from net_core.mesh._errors import HandshakeAuthError, HandshakeDecodeError, HandshakeOrderError

__all__ = [
    "DH_LEN",
    "HASH_LEN",
    "MAX_NOISE_MESSAGE",
    "NOISE_PROTOCOL_NAME",
    "PSK_LEN",
    "CipherState",
    "HandshakePhase",
    "NoiseInitiator",
    "NoiseResponder",
    "x25519_public_key",
]

NOISE_PROTOCOL_NAME: Final = b"Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s"
DH_LEN: Final = 32
HASH_LEN: Final = 32
PSK_LEN: Final = 32
KEY_LEN: Final = 32
TAG_LEN: Final = 16
MAX_NOISE_MESSAGE: Final = 65535
_MAX_NONCE: Final = 2**64 - 1  # reserved by the spec: never used for encryption


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "blake2s")


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    # Noise HKDF: extract with HMAC(ck, ikm), expand with a 1-byte counter.
    temp_key = _hmac(chaining_key, ikm)
    out: list[bytes] = []
    prev = b""
    for i in range(1, outputs + 1):
        prev = _hmac(temp_key, prev + bytes([i]))
        out.append(prev)
    return tuple(out)


def x25519_public_key(private_key: bytes) -> bytes:
    """Return the 32-byte X25519 public key of a 32-byte private key."""
    if len(private_key) != DH_LEN:
        raise ValueError(f"an X25519 private key is {DH_LEN} bytes, got {len(private_key)}")
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def _dh(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError as exc:
        # A low-order point gives the all-zero shared secret; treat it as forged.
        raise HandshakeAuthError("X25519 produced a degenerate shared secret") from exc


def _private_key(raw: bytes | None) -> X25519PrivateKey:
    if raw is None:
        return X25519PrivateKey.generate()
    if len(raw) != DH_LEN:
        raise ValueError(f"an X25519 private key is {DH_LEN} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@final
class CipherState:
    """A Noise CipherState: a ChaCha20-Poly1305 key (or none) and a u64 nonce counter."""

    __slots__ = ("_aead", "key", "nonce")

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        self.key = key
        self.nonce = nonce
        self._aead = ChaCha20Poly1305(key) if key is not None else None

    def _next_nonce(self) -> bytes:
        if self.nonce >= _MAX_NONCE:
            raise HandshakeOrderError("noise cipher nonce exhausted")
        raw = b"\x00\x00\x00\x00" + self.nonce.to_bytes(8, "little")
        self.nonce += 1
        return raw

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt (or pass through when no key is set), advancing the nonce."""
        if self._aead is None:
            return plaintext
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate; :class:`HandshakeAuthError` on a bad tag. The nonce
        advances only on success (the spec's rule)."""
        if self._aead is None:
            return ciphertext
        if self.nonce >= _MAX_NONCE:
            raise HandshakeOrderError("noise cipher nonce exhausted")
        nonce = b"\x00\x00\x00\x00" + self.nonce.to_bytes(8, "little")
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, ad)
        except InvalidTag as exc:
            raise HandshakeAuthError("noise message failed authentication") from exc
        self.nonce += 1
        return plaintext


class _SymmetricState:
    __slots__ = ("cipher", "ck", "h")

    def __init__(self, prologue: bytes) -> None:
        name = NOISE_PROTOCOL_NAME
        # A name longer than HASHLEN is hashed; this one is 37 bytes.
        self.h = _hash(name) if len(name) > HASH_LEN else name.ljust(HASH_LEN, b"\x00")
        self.ck = self.h
        self.cipher = CipherState()
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k[:KEY_LEN])

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:KEY_LEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1[:KEY_LEN]), CipherState(k2[:KEY_LEN])


class HandshakePhase(enum.Enum):
    """Where a Noise handshake machine stands."""

    START = "start"
    AWAITING_MSG2 = "awaiting_msg2"  # initiator wrote msg1
    READY_TO_RESPOND = "ready_to_respond"  # responder read msg1
    COMPLETE = "complete"
    FAILED = "failed"


def _check_psk(psk: bytes) -> bytes:
    if len(psk) != PSK_LEN:
        raise ValueError(f"the PSK is {PSK_LEN} bytes, got {len(psk)}")
    return bytes(psk)


def _check_message(message: bytes, minimum: int, which: str) -> None:
    if len(message) < minimum:
        raise HandshakeDecodeError(f"{which} is {len(message)} bytes, at least {minimum} needed")
    if len(message) > MAX_NOISE_MESSAGE:
        raise HandshakeDecodeError(f"{which} is {len(message)} bytes, over {MAX_NOISE_MESSAGE}")


class _Machine:
    __slots__ = ("_e", "_hash_at_split", "_phase", "_re", "_ss")

    def __init__(self, prologue: bytes, ephemeral: bytes | None) -> None:
        self._ss = _SymmetricState(bytes(prologue))
        self._e = _private_key(ephemeral)
        self._re: bytes | None = None
        self._phase = HandshakePhase.START
        self._hash_at_split: bytes | None = None

    @property
    def phase(self) -> HandshakePhase:
        """The current state."""
        return self._phase

    @property
    def local_ephemeral_public(self) -> bytes:
        """This side's ephemeral public key (sent in clear in its message)."""
        return _public_bytes(self._e)

    @property
    def remote_ephemeral_public(self) -> bytes | None:
        """The peer's ephemeral public key, once its message was read."""
        return self._re

    @property
    def handshake_hash(self) -> bytes:
        """The final handshake hash ``h`` (channel binding); only once COMPLETE."""
        if self._phase is not HandshakePhase.COMPLETE or self._hash_at_split is None:
            raise HandshakeOrderError(f"handshake hash asked in phase {self._phase.value}")
        return self._hash_at_split

    def split(self) -> tuple[CipherState, CipherState]:
        """The two transport CipherStates (initiator->responder, responder->initiator).

        The mesh does not use them (it derives its own keys from the handshake hash), but
        they complete the Noise machine and are checked against the public vectors.
        """
        if self._phase is not HandshakePhase.COMPLETE:
            raise HandshakeOrderError(f"split asked in phase {self._phase.value}")
        return self._ss.split()

    def _expect(self, phase: HandshakePhase, action: str) -> None:
        if self._phase is not phase:
            raise HandshakeOrderError(
                f"cannot {action} in phase {self._phase.value} (needs {phase.value})"
            )

    def _write_e(self) -> bytes:
        e_pub = _public_bytes(self._e)
        self._ss.mix_hash(e_pub)
        self._ss.mix_key(e_pub)  # psk modifier: e is mixed into the key too
        return e_pub

    def _read_e(self, e_pub: bytes) -> None:
        self._re = e_pub
        self._ss.mix_hash(e_pub)
        self._ss.mix_key(e_pub)

    def _complete(self) -> None:
        self._hash_at_split = self._ss.h
        self._phase = HandshakePhase.COMPLETE


@final
class NoiseInitiator(_Machine):
    """The NKpsk0 initiator: writes msg1, reads msg2.

    ``responder_static`` is the responder's 32-byte X25519 public key, known out of band.
    """

    __slots__ = ("_psk", "_rs")

    def __init__(
        self,
        *,
        responder_static: bytes,
        psk: bytes,
        prologue: bytes = b"",
        ephemeral: bytes | None = None,
    ) -> None:
        if len(responder_static) != DH_LEN:
            raise ValueError(
                f"the responder static key is {DH_LEN} bytes, got {len(responder_static)}"
            )
        super().__init__(prologue, ephemeral)
        self._rs = bytes(responder_static)
        self._ss.mix_hash(self._rs)  # pre-message "<- s"
        self._psk = _check_psk(psk)

    @property
    def remote_static_public(self) -> bytes:
        """The responder's static key this initiator authenticates against."""
        return self._rs

    def write_message1(self, payload: bytes = b"") -> bytes:
        """Return msg1 = ``e`` (32 bytes) + encrypted payload (+16-byte tag)."""
        self._expect(HandshakePhase.START, "write msg1")
        ss = self._ss
        ss.mix_key_and_hash(self._psk)
        out = self._write_e()
        try:
            ss.mix_key(_dh(self._e, self._rs))  # es
        except HandshakeAuthError:
            self._phase = HandshakePhase.FAILED
            raise
        message = out + ss.encrypt_and_hash(bytes(payload))
        if len(message) > MAX_NOISE_MESSAGE:
            self._phase = HandshakePhase.FAILED
            raise HandshakeDecodeError(f"msg1 would be {len(message)} bytes")
        self._phase = HandshakePhase.AWAITING_MSG2
        return message

    def read_message2(self, message: bytes) -> bytes:
        """Read msg2 = ``e`` + encrypted payload; return the payload.

        Raises :class:`HandshakeDecodeError` (too short), :class:`HandshakeAuthError`
        (wrong PSK or static key on either side, or tampering) or
        :class:`HandshakeOrderError`; after any failure the machine is FAILED.
        """
        self._expect(HandshakePhase.AWAITING_MSG2, "read msg2")
        try:
            message = bytes(message)
            _check_message(message, DH_LEN + TAG_LEN, "msg2")
            ss = self._ss
            self._read_e(message[:DH_LEN])
            ss.mix_key(_dh(self._e, message[:DH_LEN]))  # ee
            payload = ss.decrypt_and_hash(message[DH_LEN:])
        except BaseException:
            self._phase = HandshakePhase.FAILED
            raise
        self._complete()
        return payload


@final
class NoiseResponder(_Machine):
    """The NKpsk0 responder: reads msg1, writes msg2.

    ``static_private`` is the responder's 32-byte X25519 private key. The responder never
    learns an initiator static key (NK): the initiator is authenticated by the PSK only.
    """

    __slots__ = ("_psk", "_s")

    def __init__(
        self,
        *,
        static_private: bytes,
        psk: bytes,
        prologue: bytes = b"",
        ephemeral: bytes | None = None,
    ) -> None:
        super().__init__(prologue, ephemeral)
        self._s = _private_key(bytes(static_private))
        self._ss.mix_hash(_public_bytes(self._s))  # pre-message "<- s"
        self._psk = _check_psk(psk)

    @property
    def static_public(self) -> bytes:
        """This responder's static public key."""
        return _public_bytes(self._s)

    def read_message1(self, message: bytes) -> bytes:
        """Read msg1 and return its payload (see :meth:`NoiseInitiator.read_message2`
        for the failures)."""
        self._expect(HandshakePhase.START, "read msg1")
        try:
            message = bytes(message)
            _check_message(message, DH_LEN + TAG_LEN, "msg1")
            ss = self._ss
            ss.mix_key_and_hash(self._psk)
            self._read_e(message[:DH_LEN])
            ss.mix_key(_dh(self._s, message[:DH_LEN]))  # es
            payload = ss.decrypt_and_hash(message[DH_LEN:])
        except BaseException:
            self._phase = HandshakePhase.FAILED
            raise
        self._phase = HandshakePhase.READY_TO_RESPOND
        return payload

    def write_message2(self, payload: bytes = b"") -> bytes:
        """Return msg2 = ``e`` + encrypted payload; the handshake is then complete."""
        self._expect(HandshakePhase.READY_TO_RESPOND, "write msg2")
        ss = self._ss
        re = self._re
        if re is None:  # unreachable by the phase table; keeps the types honest
            raise HandshakeOrderError("msg1 was not read")
        out = self._write_e()
        try:
            ss.mix_key(_dh(self._e, re))  # ee
        except HandshakeAuthError:
            self._phase = HandshakePhase.FAILED
            raise
        message = out + ss.encrypt_and_hash(bytes(payload))
        if len(message) > MAX_NOISE_MESSAGE:
            self._phase = HandshakePhase.FAILED
            raise HandshakeDecodeError(f"msg2 would be {len(message)} bytes")
        self._complete()
        return message
