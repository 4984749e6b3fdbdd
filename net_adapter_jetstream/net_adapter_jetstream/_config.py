"""Options of the ``jetstream`` storage backend (:class:`JetStreamStorageConfig`)."""

from __future__ import annotations

import math
import re
from typing import Any, Final, final
from urllib.parse import unquote, urlsplit

import attrs

from net_core.config import ConfigError, in_range, one_of

__all__ = ["READ_MODES", "JetStreamStorageConfig", "ServerAddress", "parse_url"]

#: How shards are read: ``auto`` picks ``batch`` on servers >= 2.11, else ``pipelined``.
READ_MODES: Final = ("auto", "batch", "pipelined")

_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@final
@attrs.frozen(slots=True)
class ServerAddress:
    """Where to connect and how to authenticate (from the ``url`` option)."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None


def parse_url(url: str) -> ServerAddress:
    """``nats://[user:password@ | token@]host[:port]`` as a :class:`ServerAddress`.

    Raises:
        ConfigError: another scheme (TLS is not supported), no host, or a bad port.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid NATS URL {url!r}: {exc}", path="url") from None
    if parts.scheme != "nats":
        raise ConfigError(
            f"must be a nats://host:port URL (TLS is not supported), got {url!r}", path="url"
        )
    if not parts.hostname:
        raise ConfigError(f"NATS URL {url!r} names no host", path="url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"NATS URL {url!r} has a path, query or fragment", path="url")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if user is not None and password is None:
        return ServerAddress(parts.hostname, port or 4222, token=user)
    return ServerAddress(parts.hostname, port or 4222, user=user, password=password)


def _check_url(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, got {type(value).__name__}", path="url")
    parse_url(value)


def _check_prefix(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _PREFIX.match(value):
        raise ConfigError(
            f"must be 1-64 characters of [A-Za-z0-9_-] (it names streams and subjects), "
            f"got {value!r}",
            path="prefix",
        )


def _finite(_inst: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", path=attribute.name)


@final
@attrs.frozen(slots=True)
class JetStreamStorageConfig:
    """Options of the ``jetstream`` backend.

    * ``url``: ``nats://[user:password@ | token@]host[:port]`` of the server.
    * ``prefix``: names the streams ``{prefix}_shard_{id}`` (subjects
      ``{prefix}.shard.{id}``) and the producer-marks stream ``{prefix}_marks``.
    * ``connect_timeout_ms`` bounds a connection attempt; ``request_timeout_ms`` each
      JetStream API request, publish window and read.
    * ``replicas``, ``max_messages``, ``max_bytes``, ``max_age_ms``: the stream limits
      given when a shard stream is created (``None``: unlimited); the oldest messages are
      discarded beyond them. ``duplicate_window_ms`` is the server's dedup window.
    * ``max_in_flight``: published messages awaiting their acks, at most (a batch larger
      than that is published in windows).
    * ``read_batch``: messages asked for per read request; ``read_max_bytes`` caps the
      bytes of one batched read reply.
    * ``read_mode``: ``batch`` (one batched direct get per page, servers >= 2.11),
      ``pipelined`` (a pipeline of direct gets, any server with direct get) or ``auto``.
    """

    url: str = attrs.field(default="nats://127.0.0.1:4222", validator=_check_url)
    prefix: str = attrs.field(default="net", validator=_check_prefix)
    connect_timeout_ms: float = attrs.field(
        default=5_000.0, validator=[_finite, in_range(1, 600_000)]
    )
    request_timeout_ms: float = attrs.field(
        default=10_000.0, validator=[_finite, in_range(1, 600_000)]
    )
    replicas: int = attrs.field(default=1, validator=in_range(1, 5))
    max_messages: int | None = attrs.field(default=None, validator=in_range(1, 2**63 - 1))
    max_bytes: int | None = attrs.field(default=None, validator=in_range(1, 2**63 - 1))
    max_age_ms: float | None = attrs.field(
        default=None, validator=[_finite, in_range(1, 10 * 365 * 86_400_000)]
    )
    duplicate_window_ms: float = attrs.field(
        default=120_000.0, validator=[_finite, in_range(100, 7 * 86_400_000)]
    )
    max_in_flight: int = attrs.field(default=4096, validator=in_range(1, 1_000_000))
    read_batch: int = attrs.field(default=1000, validator=in_range(1, 100_000))
    read_max_bytes: int = attrs.field(default=8 << 20, validator=in_range(1024, 1 << 30))
    read_mode: str = attrs.field(default="auto", validator=one_of(*READ_MODES))

    @property
    def address(self) -> ServerAddress:
        """The parsed ``url``."""
        return parse_url(self.url)
