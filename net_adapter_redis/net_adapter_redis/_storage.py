"""The ``redis`` storage backend: bus shards as Redis Streams.

Theory of operation. Shard ``n`` is the stream ``{prefix}:shard:{n}``; each event is one
entry (layout in :mod:`net_adapter_redis._entry`, the reference's, so the reference's
consumer reads what we write and the other way round). A batch is one ``MULTI`` /
``EXEC`` transaction: every ``XADD`` of the batch plus the producer mark
(``{prefix}:marks:{n}``, nonce -> next sequence), built into one buffer and sent in one
write over a connection of our own (:mod:`net_adapter_redis._connection`); no redis-py
on this path. Reads are ``XRANGE key (after + COUNT limit+1``: the exclusive start gives
the cursor semantics, the one extra entry gives an exact ``has_more``.

Every command (``PING`` of :meth:`RedisStorage.health` included) runs under
``command_timeout_ms``; dialling under ``connect_timeout_ms``. A lost connection, a
timeout and a server that is loading, busy, read-only or out of memory are
:class:`~net_core.errors.TransientAdapterError` (the bus retries when ``retries > 0``);
the next command dials a new connection, so the backend recovers by itself when the
server comes back. Other server errors (wrong type, bad auth, syntax) are
:class:`~net_core.errors.FatalAdapterError`.

Delivery: at least once. A transaction whose reply was lost (timeout, connection drop)
may or may not have been applied. Before retrying a shard after such a failure the
backend reads the producer mark and skips what is already stored; but the lost
transaction can in principle still be executing on the server after that check, so
``dedups`` is ``False``: duplicates are possible under retry and carry the same dedup id.
Consumers drop them with :class:`~net_adapter_redis.RedisStreamDedup`. The backend says
so once per process when it opens (``warn_duplicates``).

Entries that are not events (written by something else into the stream) are skipped
by reads, counted in :attr:`RedisStorage.malformed_entries` and logged.

This module must never block the event loop on I/O nor send a command without a timeout.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar, Final, final

import anyio
import attrs

from net_adapter_redis._connection import ConnectionPool, RedisAddress
from net_adapter_redis._entry import (
    MAX_SHARD_ID,
    BatchEncoder,
    check_exec_reply,
    decode_entries,
    marks_key,
    stream_key,
)
from net_adapter_redis._resp import RespProtocolError, ServerError, encode_command
from net_core.bus import Batch, ShardPollResult, StorageBackend, StoredEvent
from net_core.config import ConfigError, in_range
from net_core.errors import FatalAdapterError, TransientAdapterError

__all__ = [
    "MAX_COUNT",
    "READ_CHUNK",
    "RedisStorage",
    "RedisStorageConfig",
    "saturating_count",
]

log = logging.getLogger("net_adapter_redis")

#: Largest COUNT / MAXLEN Redis accepts (a signed 64-bit integer).
MAX_COUNT: Final = (1 << 63) - 1
#: Entries fetched per XRANGE at most; longer reads loop (bounded replies, bounded memory
#: per round trip).
READ_CHUNK: Final = 10_000

#: Server error codes worth retrying: the condition passes by itself.
_TRANSIENT_CODES: Final = frozenset(
    {
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "READONLY",
        "OOM",
        "MISCONF",
        "NOREPLICAS",
        "EXECABORT",
    }
)
_POSITION: Final = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_PREFIX_FORBIDDEN: Final = re.compile(r"[\s\x00-\x1f\x7f]")

_warned_duplicates = False


def saturating_count(limit: int, chunk: int = READ_CHUNK) -> int:
    """The COUNT of one XRANGE that wants ``limit`` events and one more (for
    ``has_more``): ``limit + 1`` capped at ``chunk`` and at :data:`MAX_COUNT`, never
    wrapping, never below 1."""
    return max(1, min(limit, MAX_COUNT - 1, chunk - 1) + 1)


def _url(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    RedisAddress.parse(value, path=attribute.name)


def _prefix(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ConfigError(
            f"must be a string of 1-256 characters, got {value!r}", path=attribute.name
        )
    if _PREFIX_FORBIDDEN.search(value):
        raise ConfigError(
            f"must not contain whitespace or control characters, got {value!r}",
            path=attribute.name,
        )


@final
@attrs.frozen(slots=True)
class RedisStorageConfig:
    """Options of the ``redis`` backend.

    * ``url``: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
      ``unix:///path``.
    * ``prefix``: key prefix; shard ``n`` is the stream ``{prefix}:shard:{n}``.
    * ``max_stream_len``: cap each stream at about this many entries (``XADD MAXLEN ~``;
      exact when ``approximate_trim`` is false, which costs the server more); ``None``
      keeps everything.
    * ``command_timeout_ms``: bound on every command (a batch is one command here);
      ``connect_timeout_ms``: bound on dialling a connection.
    * ``max_connections``: connections used at once (writes of different shards and
      reads run in parallel over them).
    * ``warn_duplicates``: log, once per process, that retried writes can duplicate
      (set it false once consumers deduplicate by dedup id).
    """

    url: str = attrs.field(validator=_url)
    prefix: str = attrs.field(default="net", validator=_prefix)
    max_stream_len: int | None = attrs.field(default=None, validator=in_range(1, MAX_COUNT))
    approximate_trim: bool = True
    command_timeout_ms: float = attrs.field(default=1000.0, validator=in_range(1, 3_600_000))
    connect_timeout_ms: float = attrs.field(default=5000.0, validator=in_range(1, 3_600_000))
    max_connections: int = attrs.field(default=8, validator=in_range(1, 1024))
    warn_duplicates: bool = True

    def address(self) -> RedisAddress:
        """The parsed :attr:`url`."""
        return RedisAddress.parse(self.url)


@final
class RedisStorage(StorageBackend):
    """Bus storage on Redis Streams; see the module docstring.

    Counters (cumulative): :attr:`malformed_entries` (entries skipped by reads because
    they are not events), :attr:`skipped_on_retry` (events a retry found already stored
    and did not write again).
    """

    name: ClassVar[str] = "redis"
    dedups: ClassVar[bool] = False

    def __init__(self, config: RedisStorageConfig) -> None:
        self.config = config
        self._address = config.address()
        self._timeout = config.command_timeout_ms / 1000
        self._encoder = BatchEncoder(
            config.prefix,
            max_stream_len=config.max_stream_len,
            approximate=config.approximate_trim,
        )
        self._pool: ConnectionPool | None = None
        self._closed = False
        self._keys: dict[int, bytes] = {}
        # shard id -> (nonce -> next sequence this backend knows is stored)
        self._marks: dict[int, dict[int, int]] = {}
        # shards whose last write has an unknown outcome (reply lost)
        self._uncertain: set[int] = set()
        self._warned_malformed: set[int] = set()
        self.malformed_entries = 0
        self.skipped_on_retry = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and ``PING`` (raises :class:`TransientAdapterError` if the server is
        unreachable). Idempotent."""
        if self._closed:
            raise FatalAdapterError("redis backend: open() after close()")
        if self._pool is None:
            self._pool = ConnectionPool(
                self._address,
                max_connections=self.config.max_connections,
                connect_timeout=self.config.connect_timeout_ms / 1000,
            )
        (reply,) = await self._call(encode_command("PING"), 1, "PING")
        if isinstance(reply, ServerError):
            # NOAUTH is fatal; LOADING (a restarting server replaying its AOF) transient
            raise _server_error("PING", reply)
        if reply != b"PONG":
            raise FatalAdapterError(f"redis backend: PING answered {reply!r:.80}")
        global _warned_duplicates  # noqa: PLW0603 - once per process, like the reference
        if self.config.warn_duplicates and not _warned_duplicates:
            _warned_duplicates = True
            log.warning(
                "redis backend: writes are at-least-once: a batch whose reply is lost "
                "(timeout, dropped connection) and is then retried (bus retries > 0) can be "
                "stored twice, with the same dedup ids; deduplicate on the consumer side "
                "with net_adapter_redis.RedisStreamDedup (or the 'redis' dedup backend). "
                "Set warn_duplicates=false to silence this."
            )

    async def close(self) -> None:
        """Close the connections. Idempotent; stored data stays on the server."""
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    async def health(self) -> bool:
        """Open, and the server answers ``PING`` within ``command_timeout_ms``."""
        if self._closed or self._pool is None:
            return False
        try:
            reply = await self._call(encode_command("PING"), 1, "PING")
        except (TransientAdapterError, FatalAdapterError):
            return False
        return bool(reply[0] == b"PONG")

    # -- writes ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> None:
        """Store ``batch`` as one MULTI/EXEC transaction (see the module docstring)."""
        shard_id = batch.shard_id
        _check_shard_id(shard_id)
        n = len(batch.events)
        if len(batch.timestamps) != n:
            raise FatalAdapterError(
                f"redis backend: shard {shard_id}: batch has {n} events but "
                f"{len(batch.timestamps)} timestamps"
            )
        if n == 0:
            return
        nonce, start = batch.nonce, batch.sequence_start
        if not (0 <= nonce < 1 << 64 and start >= 0 and start + n <= MAX_COUNT):
            raise FatalAdapterError(
                f"redis backend: shard {shard_id}: nonce {nonce} / sequence range "
                f"{start}+{n} outside u64 / i64"
            )
        marks = self._marks.get(shard_id)
        if marks is None:
            marks = self._marks[shard_id] = {}
        if shard_id in self._uncertain:
            # The last write of this shard may have been applied: ask the server.
            stored = await self._stored_mark(shard_id, nonce)
            self._uncertain.discard(shard_id)
            if stored is not None:
                marks[nonce] = max(marks.get(nonce, 0), stored)
        done = marks.get(nonce, 0)
        skip = min(n, max(0, done - start))
        if skip == n:
            self.skipped_on_retry += n
            return
        try:
            buffer, queued = self._encoder.encode(
                shard_id, nonce, start, batch.events, batch.timestamps, skip
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise FatalAdapterError(
                f"redis backend: shard {shard_id}: cannot encode the batch at sequence "
                f"{start}: {exc}"
            ) from exc
        try:
            replies, result = await self._transaction(buffer, queued, f"shard {shard_id}: write")
        except TransientAdapterError:
            self._uncertain.add(shard_id)
            raise
        except BaseException:
            # Cancelled (the bus's own timeout) while the transaction was in flight.
            self._uncertain.add(shard_id)
            raise
        error = check_exec_reply(replies, result, queued)
        if error is not None:
            raise _server_error(f"shard {shard_id}: write", error)
        self.skipped_on_retry += skip
        marks[nonce] = max(done, start + n)

    async def _stored_mark(self, shard_id: int, nonce: int) -> int | None:
        (reply,) = await self._call(
            encode_command("HGET", marks_key(self.config.prefix, shard_id), b"%x" % nonce),
            1,
            f"shard {shard_id}: read mark",
        )
        if isinstance(reply, ServerError):
            raise _server_error(f"shard {shard_id}: read mark", reply)
        if reply is None:
            return None
        if type(reply) is not bytes or not reply.isdigit():
            raise FatalAdapterError(
                f"redis backend: shard {shard_id}: producer mark {reply!r:.40} is not a number"
            )
        return int(reply)

    async def resume_sequence(self, shard_id: int, nonce: int) -> int:
        """One past the last event of ``nonce`` stored on ``shard_id`` (0 if none)."""
        _check_shard_id(shard_id)
        stored = await self._stored_mark(shard_id, nonce)
        value = 0 if stored is None else stored
        marks = self._marks.setdefault(shard_id, {})
        marks[nonce] = max(marks.get(nonce, 0), value)
        return value

    async def known_shards(self) -> list[int]:
        """Shards with a stream under this prefix (``SCAN`` of ``{prefix}:shard:*``)."""
        pattern = _glob_escape(self.config.prefix) + ":shard:*"
        head = len(self.config.prefix) + len(":shard:")
        found: set[int] = set()
        cursor = b"0"
        while True:
            (reply,) = await self._call(
                encode_command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, "TYPE", "stream"),
                1,
                "SCAN",
            )
            if isinstance(reply, ServerError):
                raise _server_error("SCAN", reply)
            if type(reply) is not list or len(reply) != 2 or type(reply[1]) is not list:
                raise FatalAdapterError(f"redis backend: unexpected SCAN reply {reply!r:.80}")
            cursor, keys = reply
            for key in keys:
                tail = key[head:]
                if tail.isdigit() and len(tail) <= 5 and int(tail) <= MAX_SHARD_ID:
                    found.add(int(tail))
            if cursor == b"0":
                return sorted(found)

    # -- reads -------------------------------------------------------------------------

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        """Up to ``limit`` events of ``shard_id`` with ids above ``after`` (exclusive)."""
        _check_shard_id(shard_id)
        if after is not None and not _POSITION.match(after):
            raise FatalAdapterError(
                f"redis backend: invalid position {after!r} (expected a stream id ms-seq)"
            )
        if limit <= 0:
            return ShardPollResult([], None, False)
        key = self._keys.get(shard_id)
        if key is None:
            key = self._keys[shard_id] = stream_key(self.config.prefix, shard_id).encode()
        start = b"-" if after is None else b"(" + after.encode()
        events: list[StoredEvent] = []
        malformed = 0
        while len(events) <= limit:
            count = saturating_count(limit - len(events))
            (reply,) = await self._call(
                encode_command(b"XRANGE", key, start, b"+", b"COUNT", count),
                1,
                f"shard {shard_id}: read",
            )
            if isinstance(reply, ServerError):
                raise _server_error(f"shard {shard_id}: read", reply)
            if type(reply) is not list:
                raise FatalAdapterError(
                    f"redis backend: shard {shard_id}: unexpected XRANGE reply {reply!r:.80}"
                )
            bad = decode_entries(reply, shard_id, events)
            if bad:
                malformed += bad
                if shard_id not in self._warned_malformed:
                    self._warned_malformed.add(shard_id)
                    log.warning(
                        "redis backend: shard %d: skipping stream entries that are not "
                        "events (counted in malformed_entries)",
                        shard_id,
                    )
            if len(reply) < count:
                break
            last = reply[-1][0] if type(reply[-1]) is list and reply[-1] else None
            if type(last) is not bytes:
                raise FatalAdapterError(
                    f"redis backend: shard {shard_id}: unexpected XRANGE entry {reply[-1]!r:.80}"
                )
            start = b"(" + last
        self.malformed_entries += malformed
        has_more = len(events) > limit
        if has_more:
            del events[limit:]
        return ShardPollResult(events, events[-1].id if events else None, has_more)

    # -- plumbing ----------------------------------------------------------------------

    async def _call(self, buffer: bytes, replies: int, what: str) -> list[Any]:
        return await self._run(buffer, replies, what, transaction=False)  # type: ignore[no-any-return]

    async def _transaction(
        self, buffer: bytes, queued: int, what: str
    ) -> tuple[list[Any] | None, Any]:
        return await self._run(buffer, queued, what, transaction=True)  # type: ignore[no-any-return]

    async def _run(self, buffer: bytes, count: int, what: str, *, transaction: bool) -> Any:
        pool = self._pool
        if pool is None:
            if self._closed:
                raise FatalAdapterError("redis backend is closed")
            raise FatalAdapterError("redis backend is not open (call open() first)")
        try:
            with anyio.fail_after(self._timeout):
                async with pool.connection() as conn:
                    if transaction:
                        return await conn.transaction(buffer, count)
                    return await conn.request(buffer, count)
        except TimeoutError:
            raise TransientAdapterError(
                f"redis backend: {what}: no reply within {self._timeout:g} s "
                f"from {self._address.describe()}"
            ) from None
        except ServerError as exc:  # refused handshake (AUTH / SELECT)
            raise _server_error(f"{what}: connecting", exc) from exc
        except (
            OSError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            anyio.ClosedResourceError,
            RespProtocolError,
        ) as exc:
            if self._closed:
                raise FatalAdapterError("redis backend is closed") from exc
            raise TransientAdapterError(
                f"redis backend: {what}: connection to {self._address.describe()} failed: "
                f"{_describe(exc)}"
            ) from exc

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._pool is not None else "new"
        return f"RedisStorage({self._address.describe()!r}, prefix={self.config.prefix!r}, {state})"


def _check_shard_id(shard_id: int) -> None:
    if not 0 <= shard_id <= MAX_SHARD_ID:
        raise FatalAdapterError(f"redis backend: shard id {shard_id} outside 0..{MAX_SHARD_ID}")


def _server_error(what: str, error: ServerError) -> Exception:
    cls = TransientAdapterError if error.code in _TRANSIENT_CODES else FatalAdapterError
    return cls(f"redis backend: {what}: server replied {error.message}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
