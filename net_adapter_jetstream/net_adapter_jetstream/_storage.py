"""The ``jetstream`` storage backend: one JetStream stream per bus shard.

Theory of operation.

* **Layout.** Shard ``id`` is the stream ``{prefix}_shard_{id}`` with the one subject
  ``{prefix}.shard.{id}`` (file storage, limits retention, discard old, direct get
  allowed), created on first write (get-or-create, single-flight per shard, cached).
  Each event is one message laid out by :mod:`net_adapter_jetstream._message`; its
  position is the stream sequence, in decimal.
* **Writes** publish every event of a batch with a reply inbox, at most
  ``max_in_flight`` unacknowledged, and return once the server acknowledged all of them
  (the ack means stored). The ``Nats-Msg-Id`` header makes a re-published event a no-op
  within the server's duplicate window, so a retried batch never duplicates.
* **Producer marks.** ``resume_sequence`` must say where a restarted producer (same
  nonce) continues, or its new dedup ids would repeat old ones and the server would drop
  the new events as duplicates. Before a batch's events, the backend records the end of
  the batch's sequence range in the stream ``{prefix}_marks`` (subject
  ``{prefix}.mark.{shard}.{nonce:x}``, one message kept per subject) unless an earlier
  mark already covers it; ``resume_sequence`` reads that mark back with one direct get.
  A crash between mark and events leaves a harmless gap in the sequence, never a repeat.
* **Reads** never take one round trip per message. ``batch`` mode asks for a page with
  one batched direct get (``{"seq": N, "batch": K}``, servers >= 2.11; the server skips
  deleted sequences and ends the batch with an EOB status carrying the pending count).
  ``pipelined`` mode (any server with direct get) sends one probe
  ``{"seq": N, "next_by_subj": subject}`` and then pipelines such requests for the rest
  of the page in a single write; ``next_by_subj`` makes each one return the first message
  at or after its sequence, so gaps of deleted messages are walked, not mistaken for the
  end. A read stops early (the cold-stream bail) only when the server says there is no
  message at or after the position, i.e. when the stream is empty from there on: a
  sparse but populated stream is always walked to its end.
* **Failures.** A lost connection is retried once on a fresh connection inside the call
  (writes and reads are idempotent); server restarts are therefore invisible beyond a
  delay. What still fails is :class:`~net_core.errors.TransientAdapterError`, except
  what retrying cannot fix: :class:`~net_core.errors.FatalAdapterError` for shard ids
  above 65,535, malformed stored messages (never empty bytes instead), events larger
  than the server's ``max_payload``, invalid positions and rejected stream configs.

The backend uses anyio only and owns no task: the calling task reads the socket
(:mod:`net_adapter_jetstream._client`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final, TypeVar, final

import anyio
import orjson

from net_adapter_jetstream._client import NatsClient, NatsConnectionLost, NatsTimeout
from net_adapter_jetstream._config import JetStreamStorageConfig
from net_adapter_jetstream._message import (
    MAX_SHARD_ID,
    MAX_U64,
    StoredMessageError,
    decode_stored,
)
from net_adapter_jetstream._protocol import Msg, NatsProtocolError, parse_headers
from net_core.bus import Batch, ShardPollResult, StorageBackend, StoredEvent
from net_core.errors import FatalAdapterError, TransientAdapterError

__all__ = ["JetStreamApiError", "JetStreamStorage"]

log = logging.getLogger("net_adapter_jetstream")

T = TypeVar("T")

_MS: Final = 1_000_000  # nanoseconds per millisecond (JetStream durations are ns)
#: err_code of "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE: Final = 10058
#: err_code of "stream not found".
_STREAM_NOT_FOUND: Final = 10059
#: Publish-ack error codes that retrying cannot fix (expectation headers, size limits).
_FATAL_ACK_CODES: Final = frozenset({10054, 10060, 10070, 10071, 10164})
_NAMES_PAGE_GUARD: Final = 100_000


class JetStreamApiError(TransientAdapterError):
    """The JetStream API answered a request with an error (``code`` / ``err_code``)."""

    def __init__(self, what: str, code: int, err_code: int, description: str) -> None:
        self.code = code
        self.err_code = err_code
        self.description = description
        super().__init__(f"{what}: JetStream error {code}/{err_code}: {description}")


def _check_shard(shard_id: int) -> None:
    if not 0 <= shard_id <= MAX_SHARD_ID:
        raise FatalAdapterError(f"shard_id {shard_id} outside u16 range [0, {MAX_SHARD_ID}]")


def _start_after(after: str | None) -> int | None:
    """The first sequence to read after position ``after``; ``None`` if none can follow."""
    if after is None:
        return 1
    if not (after.isdigit() and after.isascii()) or len(after) > 20:
        raise FatalAdapterError(f"jetstream: invalid position {after[:40]!r} (not a sequence)")
    seq = int(after)
    if seq > MAX_U64:
        raise FatalAdapterError(f"jetstream: position {after} is above the u64 range")
    # Checked: at u64::MAX nothing can follow (the reference wrapped to 0 here).
    return seq + 1 if seq < MAX_U64 else None


def _status(msg: Msg) -> int | None:
    """The status code of a reply (``None`` for a message carrying data)."""
    header = msg.header
    if header is None or header[8:9] != b" ":
        return None
    code = header[9:12]
    return int(code) if code.isdigit() else 0


def _is_terminal(msg: Msg) -> bool:
    # A status reply ends a batched direct get (204 EOB, 404 none, 503, 408 ...); so does
    # a stored message without Nats-Num-Pending (a server that ignored "batch").
    header = msg.header
    return header is None or header[8:9] == b" " or b"Nats-Num-Pending" not in header


@final
class JetStreamStorage(StorageBackend):
    """Bus storage on NATS JetStream (see the module docstring).

    Build it from a :class:`JetStreamStorageConfig` (the plugin does so from the bus's
    ``storage.options``); :meth:`open` connects and checks that JetStream answers.
    """

    name: ClassVar[str] = "jetstream"
    dedups: ClassVar[bool] = True

    def __init__(self, config: JetStreamStorageConfig | None = None) -> None:
        self.config = config or JetStreamStorageConfig()
        self._client = NatsClient(
            self.config.address,
            connect_timeout=self.config.connect_timeout_ms / 1000,
            name=f"net-adapter-jetstream/{self.config.prefix}",
        )
        self._timeout = self.config.request_timeout_ms / 1000
        self._streams: set[int] = set()
        self._stream_locks: dict[int, anyio.Lock] = {}
        self._marks_ready = False
        self._marks_lock = anyio.Lock()
        #: (shard, nonce) -> end of the sequence range already covered by a mark.
        self._marks: dict[tuple[int, int], int] = {}
        self._mode: str | None = None
        self._opened = False
        self._closed = False

    # -- naming ------------------------------------------------------------------------

    def stream_name(self, shard_id: int) -> str:
        """``{prefix}_shard_{id}``."""
        return f"{self.config.prefix}_shard_{shard_id}"

    def subject(self, shard_id: int) -> str:
        """``{prefix}.shard.{id}``."""
        return f"{self.config.prefix}.shard.{shard_id}"

    @property
    def marks_stream(self) -> str:
        """``{prefix}_marks``: where producers' sequence marks are kept."""
        return f"{self.config.prefix}_marks"

    def _mark_subject(self, shard_id: int, nonce: int) -> str:
        return f"{self.config.prefix}.mark.{shard_id}.{nonce:x}"

    @property
    def read_mode(self) -> str | None:
        """``batch`` or ``pipelined`` once open (``auto`` resolved by server version)."""
        return self._mode

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check that JetStream answers, pick the read mode. Idempotent."""
        if self._closed:
            raise FatalAdapterError("jetstream backend is closed")
        if self._opened:
            return
        await self._retrying(lambda: self._api("$JS.API.INFO", b"", "JetStream info"))
        mode = self.config.read_mode
        if mode == "auto":
            mode = "batch" if _version(self._client.server_info) >= (2, 11) else "pipelined"
        self._mode = mode
        self._opened = True

    async def close(self) -> None:
        """Close the connection (idempotent); the backend cannot be used afterwards."""
        self._closed = True
        self._streams.clear()
        await self._client.aclose()

    async def health(self) -> bool:
        """Whether the server and JetStream answer within the request timeout."""
        if self._closed or not self._opened:
            return False
        try:
            await self._retrying(lambda: self._api("$JS.API.INFO", b"", "JetStream info"))
        except (TransientAdapterError, FatalAdapterError):
            return False
        return True

    async def flush(self) -> None:
        """Nothing to do: a write returns only once the server stored every event."""
        self._require_open()

    def _require_open(self) -> None:
        if self._closed:
            raise FatalAdapterError("jetstream backend is closed")
        if not self._opened:
            raise FatalAdapterError("jetstream backend is not open (call open() first)")

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        # Every operation is idempotent (dedup ids, reads): after a lost connection, do it
        # once more on a fresh one. A server restart then costs a delay, not an error.
        try:
            return await op()
        except NatsConnectionLost as exc:
            log.info("retrying on a new connection after: %s", exc)
            return await op()

    # -- JetStream API -----------------------------------------------------------------

    async def _api(self, subject: str, payload: bytes, what: str) -> dict[str, Any]:
        replies = await self._client.request(subject, payload, wait_s=self._timeout)
        reply = replies[0]
        status = _status(reply)
        if status == 503:
            raise TransientAdapterError(f"{what}: JetStream is not available (no responders)")
        if status is not None:
            raise TransientAdapterError(f"{what}: unexpected status reply {reply.header!r}")
        try:
            data = orjson.loads(reply.payload)
        except orjson.JSONDecodeError as exc:
            raise TransientAdapterError(f"{what}: reply is not JSON") from exc
        if not isinstance(data, dict):
            raise TransientAdapterError(f"{what}: reply is not a JSON object")
        error = data.get("error")
        if isinstance(error, dict):
            raise JetStreamApiError(
                what,
                int(error.get("code", 0) or 0),
                int(error.get("err_code", 0) or 0),
                str(error.get("description", "")),
            )
        return data

    def _stream_config(self, shard_id: int) -> dict[str, Any]:
        cfg = self.config
        config: dict[str, Any] = {
            "name": self.stream_name(shard_id),
            "subjects": [self.subject(shard_id)],
            "retention": "limits",
            "storage": "file",
            "num_replicas": cfg.replicas,
            "discard": "old",
            "allow_direct": True,
            "duplicate_window": int(cfg.duplicate_window_ms * _MS),
        }
        if cfg.max_messages is not None:
            config["max_msgs"] = cfg.max_messages
        if cfg.max_bytes is not None:
            config["max_bytes"] = cfg.max_bytes
        if cfg.max_age_ms is not None:
            config["max_age"] = int(cfg.max_age_ms * _MS)
        return config

    async def _create_stream(self, config: dict[str, Any]) -> None:
        name = config["name"]
        try:
            await self._api(
                f"$JS.API.STREAM.CREATE.{name}", orjson.dumps(config), f"create stream {name}"
            )
        except JetStreamApiError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                if 400 <= exc.code < 500:
                    raise FatalAdapterError(str(exc)) from exc
                raise
            # It exists with other settings (changed by an operator, or older options):
            # use it if it holds our subjects.
            info = await self._api(f"$JS.API.STREAM.INFO.{name}", b"", f"stream info {name}")
            subjects = (info.get("config") or {}).get("subjects") or []
            if sorted(subjects) != sorted(config["subjects"]):
                raise FatalAdapterError(
                    f"stream {name} exists with subjects {subjects}, expected {config['subjects']}"
                ) from exc

    async def _stream_exists(self, name: str) -> bool:
        try:
            await self._api(f"$JS.API.STREAM.INFO.{name}", b"", f"stream info {name}")
        except JetStreamApiError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:
                return False
            raise
        return True

    async def _known_stream(self, shard_id: int) -> bool:
        # Direct gets to a stream that does not exist are not answered by every server
        # version (2.9 stays silent): check first, and remember streams that exist.
        if shard_id in self._streams:
            return True
        if await self._stream_exists(self.stream_name(shard_id)):
            self._streams.add(shard_id)
            return True
        return False

    async def _ensure_stream(self, shard_id: int) -> None:
        if shard_id in self._streams:
            return
        lock = self._stream_locks.setdefault(shard_id, anyio.Lock())
        async with lock:
            if shard_id not in self._streams:
                await self._create_stream(self._stream_config(shard_id))
                self._streams.add(shard_id)

    async def _ensure_marks_stream(self) -> None:
        if self._marks_ready:
            return
        async with self._marks_lock:
            if not self._marks_ready:
                await self._create_stream(
                    {
                        "name": self.marks_stream,
                        "subjects": [f"{self.config.prefix}.mark.>"],
                        "retention": "limits",
                        "storage": "file",
                        "num_replicas": self.config.replicas,
                        "discard": "old",
                        "allow_direct": True,
                        "max_msgs_per_subject": 1,
                    }
                )
                self._marks_ready = True

    # -- producer marks ----------------------------------------------------------------

    async def _read_mark(self, shard_id: int, nonce: int) -> int:
        subject = self._mark_subject(shard_id, nonce)
        if not self._marks_ready:
            if not await self._stream_exists(self.marks_stream):
                return 0
            self._marks_ready = True
        request = orjson.dumps({"last_by_subj": subject})
        replies = await self._client.request(
            f"$JS.API.DIRECT.GET.{self.marks_stream}", request, wait_s=self._timeout
        )
        reply = replies[0]
        status = _status(reply)
        if status in (404, 503):  # no mark, or no marks stream yet
            return 0
        if status is not None:
            raise TransientAdapterError(f"reading mark {subject}: status {status}")
        text = reply.payload.decode("ascii", "replace")
        if not (text.isdigit() and text.isascii()) or len(text) > 20:
            raise FatalAdapterError(f"mark {subject} is malformed: {reply.payload[:40]!r}")
        return int(text)

    async def _reserve(self, shard_id: int, nonce: int, end: int) -> None:
        key = (shard_id, nonce)
        covered = self._marks.get(key)
        if covered is None:
            covered = self._marks[key] = await self._read_mark(shard_id, nonce)
        if end <= covered:
            return
        await self._ensure_marks_stream()
        subject = self._mark_subject(shard_id, nonce)
        acks = await self._client.publish_acked(
            subject,
            [b"NATS/1.0\r\n\r\n"],
            [str(end).encode()],
            max_in_flight=1,
            wait_s=self._timeout,
        )
        self._check_acks(acks, subject, shard_id=None)
        self._marks[key] = max(end, self._marks.get(key, 0))

    async def resume_sequence(self, shard_id: int, nonce: int) -> int:
        """One past the highest sequence ``nonce`` reserved on ``shard_id`` (0 if none)."""
        self._require_open()
        _check_shard(shard_id)
        covered = await self._retrying(lambda: self._read_mark(shard_id, nonce))
        self._marks[(shard_id, nonce)] = max(covered, self._marks.get((shard_id, nonce), 0))
        return covered

    async def known_shards(self) -> list[int]:
        """Shards whose stream exists on the server (from any earlier run), sorted."""
        self._require_open()
        return await self._retrying(self._list_shards)

    async def _list_shards(self) -> list[int]:
        pattern = re.compile(rf"^{re.escape(self.config.prefix)}_shard_(\d{{1,5}})$")
        found: set[int] = set()
        offset = 0
        while offset < _NAMES_PAGE_GUARD:
            page = await self._api(
                "$JS.API.STREAM.NAMES",
                orjson.dumps({"offset": offset, "subject": f"{self.config.prefix}.shard.*"}),
                "list streams",
            )
            names = page.get("streams") or []
            for name in names:
                match = pattern.match(str(name))
                if match and int(match[1]) <= MAX_SHARD_ID:
                    found.add(int(match[1]))
            offset += len(names)
            if not names or offset >= int(page.get("total", 0) or 0):
                break
        return sorted(found)

    # -- writes ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> None:
        """Store the batch's events (acknowledged by the server) or raise."""
        self._require_open()
        shard_id = batch.shard_id
        _check_shard(shard_id)
        n = len(batch.events)
        if n == 0:
            return
        limit = int(self._client.server_info.get("max_payload", 0) or 0)
        nonce_x = f"{batch.nonce:x}"
        start = batch.sequence_start
        stamps = batch.timestamps
        headers = [
            (
                f"NATS/1.0\r\nNats-Msg-Id: {nonce_x}:{shard_id}:{start}:{i}\r\n"
                f"Net-Ts: {stamps[i]}\r\nNet-Shard: {shard_id}\r\n\r\n"
            ).encode()
            for i in range(n)
        ]
        payloads = [bytes(e) if type(e) is not bytes else e for e in batch.events]
        if limit:
            for i, payload in enumerate(payloads):
                if len(headers[i]) + len(payload) > limit:
                    raise FatalAdapterError(
                        f"event {i} of the batch ({len(payload)} bytes) exceeds the server's "
                        f"max_payload of {limit} bytes"
                    )

        async def attempt() -> None:
            await self._ensure_stream(shard_id)
            await self._reserve(shard_id, batch.nonce, start + n)
            subject = self.subject(shard_id)
            acks = await self._client.publish_acked(
                subject,
                headers,
                payloads,
                max_in_flight=self.config.max_in_flight,
                wait_s=self._timeout,
            )
            self._check_acks(acks, subject, shard_id=shard_id)

        try:
            await self._retrying(attempt)
        except _StreamMissing:
            # Deleted behind our back (or lost): create it again and publish once more.
            await self._retrying(attempt)

    def _check_acks(self, acks: list[Msg], subject: str, *, shard_id: int | None) -> None:
        for ack in acks:
            if ack.header is not None:
                status = _status(ack)
                if status == 503:
                    if shard_id is not None:
                        self._streams.discard(shard_id)
                        raise _StreamMissing(f"no stream takes {subject} (no responders)")
                    self._marks_ready = False
                    raise TransientAdapterError(f"no stream takes {subject} (no responders)")
                raise TransientAdapterError(f"publish to {subject}: status reply {status}")
            payload = ack.payload
            if b'"error"' not in payload:
                continue
            try:
                error = orjson.loads(payload).get("error") or {}
            except (orjson.JSONDecodeError, AttributeError) as exc:
                raise TransientAdapterError(f"publish to {subject}: malformed ack") from exc
            err_code = int(error.get("err_code", 0) or 0)
            text = f"publish to {subject}: {error.get('description', error)}"
            if err_code in _FATAL_ACK_CODES:
                raise FatalAdapterError(text)
            if err_code == _STREAM_NOT_FOUND and shard_id is not None:
                self._streams.discard(shard_id)
                raise _StreamMissing(text)
            raise TransientAdapterError(text)

    # -- reads -------------------------------------------------------------------------

    async def read_shard(self, shard_id: int, after: str | None, limit: int) -> ShardPollResult:
        """Up to ``limit`` events of ``shard_id`` with a sequence above ``after``."""
        self._require_open()
        _check_shard(shard_id)
        start = _start_after(after)
        if limit <= 0 or start is None:
            return ShardPollResult([], None, False)
        fetch = limit + 1  # one more than asked: tells whether more follow
        read = self._read_batched if self._mode == "batch" else self._read_pipelined

        async def attempt() -> list[Msg]:
            if not await self._known_stream(shard_id):
                return []
            try:
                return await read(shard_id, start, fetch)
            except NatsTimeout:
                # Perhaps deleted behind our back: check again next time.
                self._streams.discard(shard_id)
                raise

        found = await self._retrying(attempt)
        # Only what is returned is decoded: the extra message says "more follow" and is
        # read (and judged) by the next page.
        has_more = len(found) > limit
        out = [self._decode(msg, shard_id) for msg in found[:limit]]
        return ShardPollResult(out, out[-1].id if out else None, has_more)

    def _seq(self, msg: Msg, shard_id: int) -> int:
        """The stream sequence of a direct-get reply (from its ``Nats-Sequence``)."""
        header = msg.header or b""
        at = header.find(b"Nats-Sequence: ")
        end = header.find(b"\r", at) if at >= 0 else -1
        raw = header[at + 15 : end] if end > at else b""
        if not raw.isdigit() or len(raw) > 20:
            raise FatalAdapterError(
                f"stream {self.stream_name(shard_id)}: a reply lacks a valid Nats-Sequence"
            )
        return int(raw)

    def _decode(self, msg: Msg, shard_id: int) -> StoredEvent:
        try:
            return decode_stored(msg.header, msg.payload, shard_id)
        except StoredMessageError as exc:
            raise FatalAdapterError(
                f"stream {self.stream_name(shard_id)} holds a malformed message: {exc}"
            ) from exc

    def _missing_stream(self, shard_id: int) -> None:
        """A read found no stream: empty if we never saw it, an error if we did."""
        if shard_id in self._streams:
            raise TransientAdapterError(
                f"stream {self.stream_name(shard_id)} does not answer (no responders)"
            )

    async def _read_batched(self, shard_id: int, start: int, fetch: int) -> list[Msg]:
        api = f"$JS.API.DIRECT.GET.{self.stream_name(shard_id)}"
        out: list[Msg] = []
        seq = start
        while len(out) < fetch:
            want = min(fetch - len(out), self.config.read_batch)
            request = orjson.dumps(
                {"seq": seq, "batch": want, "max_bytes": self.config.read_max_bytes}
            )
            replies = await self._client.request(
                api, request, wait_s=self._timeout, stop=_is_terminal, max_replies=want + 1
            )
            last = replies[-1]
            status = _status(last)
            if status is None:
                raise FatalAdapterError(
                    "the server ignored the batched direct get (nats-server < 2.11?); "
                    "set read_mode to 'pipelined'"
                )
            out.extend(replies[:-1])
            if status == 404:
                break
            if status == 503:
                self._missing_stream(shard_id)
                break
            if status != 204:
                raise TransientAdapterError(
                    f"batched read of {self.stream_name(shard_id)}: status {status}"
                )
            if _pending(last) == 0 or len(replies) == 1:
                break
            seq = self._seq(out[-1], shard_id) + 1
        return out

    async def _read_pipelined(self, shard_id: int, start: int, fetch: int) -> list[Msg]:
        api = f"$JS.API.DIRECT.GET.{self.stream_name(shard_id)}"
        subject = self.subject(shard_id)
        out: list[Msg] = []
        last_seq = start - 1
        want = 1  # the first round is a single probe: an empty tail costs one request
        while len(out) < fetch:
            base = last_seq + 1
            requests = [
                orjson.dumps({"seq": base + i, "next_by_subj": subject}) for i in range(want)
            ]
            replies = await self._client.request_each(api, requests, wait_s=self._timeout)
            ended = False
            for msg in replies:
                if msg is None:  # the server answered the request twice or not at all
                    raise TransientAdapterError(f"pipelined read of {api}: a reply is missing")
                status = _status(msg)
                if status == 404:
                    ended = True
                    continue
                if status == 503:
                    self._missing_stream(shard_id)
                    ended = True
                    continue
                if status is not None:
                    raise TransientAdapterError(f"pipelined read of {api}: status {status}")
                seq = self._seq(msg, shard_id)
                if seq > last_seq:
                    out.append(msg)
                    last_seq = seq
                    if len(out) >= fetch:
                        break
            if ended or last_seq >= MAX_U64:
                break
            want = min(fetch - len(out), self.config.read_batch)
        return out


class _StreamMissing(TransientAdapterError):
    """A publish found no stream for its subject (it was deleted or never existed)."""


def _pending(msg: Msg) -> int:
    try:
        fields = parse_headers(msg.header or b"").fields
    except NatsProtocolError:
        return 0
    text = fields.get("Nats-Num-Pending", "0")
    return int(text) if text.isdigit() and text.isascii() else 0


def _version(info: dict[str, Any]) -> tuple[int, int]:
    match = re.match(r"^v?(\d+)\.(\d+)", str(info.get("version", "")))
    return (int(match[1]), int(match[2])) if match else (0, 0)
