"""Channel names and channel hashes.

A channel name is 1..255 UTF-8 bytes of ``[A-Za-z0-9-_./]``; it must not start or end
with ``/``, contain ``//``, or have a ``.`` or ``..`` segment. Segments separated by
``/`` form a hierarchy: ``depth`` counts them and prefix matching stops at segment
boundaries (``a/b`` is a prefix of ``a/b/c`` but not of ``a/bc``).

Two hashes name a channel compactly, both projections of ``xxh3_64(name)``:

* the canonical :func:`channel_hash` (low 32 bits): token scopes, ACLs, configs and
  storage keys use it;
* the :func:`wire_channel_hash` (low 16 bits): the packet header's fast-path hint.
  Sixteen bits collide often; it is a hint, never an authorization key.

Both are byte-identical to the reference (``ai2070-net`` 0.18). This module is pure.
"""

from __future__ import annotations

import re
from typing import Final, final

import xxhash

from net_core.identity._errors import ChannelNameDecodeError, ChannelNameError

__all__ = [
    "MAX_CHANNEL_NAME_BYTES",
    "ChannelName",
    "channel_hash",
    "validate_channel_name",
    "wire_channel_hash",
]

MAX_CHANNEL_NAME_BYTES: Final = 255
# Up to 255 allowed (ASCII) characters, not starting or ending with "/".
_FAST_NAME: Final = re.compile(r"(?!/)[A-Za-z0-9\-_./]{1,255}(?<!/)")
_CHANNEL_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./"
)


def validate_channel_name(name: str) -> None:
    """Raise :class:`ChannelNameError` unless ``name`` is a valid channel name.

    The checks run in the reference's order (empty, too long, leading/trailing ``/``,
    ``//``, bad character, reserved segment), so the first violation reported, and its
    text, are the same.
    """
    if not isinstance(name, str):
        raise ChannelNameError(f"channel name must be a str, got {type(name).__name__}")
    if not name:
        raise ChannelNameError("channel name is empty")
    # surrogatepass: a lone surrogate must reach the character check, not escape as a
    # UnicodeEncodeError.
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_CHANNEL_NAME_BYTES:
        raise ChannelNameError(f"channel name too long ({size} > {MAX_CHANNEL_NAME_BYTES})")
    if name[0] == "/" or name[-1] == "/":
        raise ChannelNameError("invalid channel name format: must not start or end with '/'")
    if "//" in name:
        raise ChannelNameError("invalid channel name format: must not contain '//'")
    for char in name:
        if char not in _CHANNEL_CHARS:
            raise ChannelNameError(f"invalid character '{char}' in channel name")
    for segment in name.split("/"):
        if segment in (".", ".."):
            raise ChannelNameError(f'invalid channel name format: segment "{segment}" is reserved')


def _is_valid_fast(name: str) -> bool:
    # The common case in one regex pass; anything it refuses goes through
    # validate_channel_name for the precise error.
    return (
        _FAST_NAME.fullmatch(name) is not None
        and "//" not in name
        and ("." not in name or all(s not in (".", "..") for s in name.split("/")))
    )


def channel_hash(name: str | ChannelName) -> int:
    """The canonical u32 hash of a (validated) channel name."""
    if isinstance(name, ChannelName):
        return name.hash
    if not (isinstance(name, str) and _is_valid_fast(name)):
        validate_channel_name(name)
    return xxhash.xxh3_64_intdigest(name.encode("utf-8")) & 0xFFFF_FFFF


def wire_channel_hash(name: str | ChannelName) -> int:
    """The u16 wire hash (the low 16 bits of :func:`channel_hash`)."""
    return channel_hash(name) & 0xFFFF


@final
class ChannelName:
    """A validated channel name with its hashes computed once."""

    __slots__ = ("_hash", "_name")

    def __init__(self, name: str) -> None:
        if not (isinstance(name, str) and _is_valid_fast(name)):
            validate_channel_name(name)
        self._name = name
        self._hash = xxhash.xxh3_64_intdigest(name.encode("utf-8")) & 0xFFFF_FFFF

    @classmethod
    def decode(cls, data: bytes) -> ChannelName:
        """Decode a UTF-8 name from wire bytes; raises :class:`ChannelNameDecodeError`."""
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ChannelNameDecodeError("channel name is not valid UTF-8") from exc
        try:
            return cls(text)
        except ChannelNameError as exc:
            raise ChannelNameDecodeError(str(exc)) from exc

    @property
    def name(self) -> str:
        """The name as text."""
        return self._name

    @property
    def hash(self) -> int:
        """The canonical u32 channel hash."""
        return self._hash

    @property
    def wire_hash(self) -> int:
        """The u16 wire hash."""
        return self._hash & 0xFFFF

    @property
    def depth(self) -> int:
        """The number of ``/``-separated segments."""
        return self._name.count("/") + 1

    def is_prefix_of(self, other: ChannelName | str) -> bool:
        """True when ``other`` equals this name or lies below it (segment boundary)."""
        text = other.name if isinstance(other, ChannelName) else other
        return text == self._name or text.startswith(self._name + "/")

    def encode(self) -> bytes:
        """The UTF-8 bytes of the name."""
        return self._name.encode("utf-8")

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"ChannelName({self._name!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChannelName):
            return self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._name)
