"""Stream entries of the ``redis`` backend: the layout, the batch encoder, the decoder.

Layout (the reference's, so both implementations read each other's streams). Shard ``n``
is the stream ``{prefix}:shard:{n}``; every event is one entry with two fields, in this
order::

    d         {"r":<raw bytes>,"t":<insertion_ts>,"s":<shard id>}
    dedup_id  {nonce:x}:{shard}:{sequence_start}:{index}

``d`` is built by concatenation: the event's bytes go in verbatim, unvalidated (a JSON
event makes ``d`` valid JSON, which is all the reference's reader needs; any other bytes
survive the round trip through this module unchanged, because the decoder never parses
``r`` as JSON: it cuts it out between the fixed head and the numeric tail). The entry id
(``ms-seq``, assigned by the server) is the event's position.

Beside the streams, ``{prefix}:marks:{n}`` is a hash ``{nonce:x} -> next sequence``: for
each producer, one past the last event it stored on shard ``n``, written in the same
transaction as the events. It is what lets a restarted producer continue its sequence
(``resume_sequence``) and a retry skip what a timed-out attempt already stored.

A batch is one request: ``MULTI``, one ``XADD`` per event (with ``MAXLEN ~ N`` when a
length cap is configured), the ``HSET`` of the mark, ``EXEC``. :class:`BatchEncoder`
builds it into one buffer with one ``%`` formatting per event; no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, final

from net_adapter_redis._resp import ServerError, first_error
from net_core.bus import StoredEvent
from net_core.errors import DecodeError

__all__ = [
    "MAX_SHARD_ID",
    "BatchEncoder",
    "EntryDecodeError",
    "check_exec_reply",
    "decode_entries",
    "decode_entry",
    "decode_payload",
    "encode_payload",
    "marks_key",
    "stream_key",
]

#: Shard ids are u16.
MAX_SHARD_ID: Final = 65_535

_HEAD: Final = b'{"r":'
_TAIL: Final = re.compile(rb',"t":(0|[1-9][0-9]{0,19}),"s":(0|[1-9][0-9]{0,4})\}')
_T_MARK: Final = b',"t":'
_FIELD_D: Final = b"d"
_FIELD_DEDUP: Final = b"dedup_id"


class EntryDecodeError(DecodeError):
    """A stream entry is not an event in this backend's layout."""


def stream_key(prefix: str, shard_id: int) -> str:
    """The stream of ``shard_id``: ``{prefix}:shard:{shard_id}``."""
    return f"{prefix}:shard:{shard_id}"


def marks_key(prefix: str, shard_id: int) -> str:
    """The producer marks of ``shard_id``: ``{prefix}:marks:{shard_id}``."""
    return f"{prefix}:marks:{shard_id}"


def encode_payload(raw: bytes, insertion_ts: int, shard_id: int) -> bytes:
    """The ``d`` field of one event."""
    return b'{"r":%b,"t":%d,"s":%d}' % (raw, insertion_ts, shard_id)


def decode_payload(d: bytes) -> tuple[bytes, int, int]:
    """``(raw, insertion_ts, shard_id)`` from a ``d`` field; :class:`EntryDecodeError` if
    it is not ``{"r":...,"t":<u64>,"s":<u16>}``."""
    if type(d) is not bytes:
        raise EntryDecodeError(f"field d is a {type(d).__name__}, not a string")
    if not d.startswith(_HEAD):
        raise EntryDecodeError(f"field d does not start with {_HEAD!r}: {d[:32]!r}")
    cut = d.rfind(_T_MARK)
    m = _TAIL.fullmatch(d, cut) if cut >= len(_HEAD) else None
    if m is None:
        raise EntryDecodeError(f'field d does not end with ,"t":<ts>,"s":<shard>}}: {d[-48:]!r}')
    ts = int(m[1])
    shard = int(m[2])
    if ts >= 1 << 64 or shard > MAX_SHARD_ID:
        raise EntryDecodeError(f"field d has t={ts} / s={shard} outside u64 / u16")
    return d[len(_HEAD) : cut], ts, shard


def decode_entry(entry: Any) -> StoredEvent:
    """One XRANGE entry (``[id, [field, value, ...]]``) as a :class:`StoredEvent`.

    The first ``d`` field is the event (as the reference reads it); ``dedup_id`` is
    optional (entries written without one report ``None``). Anything else raises
    :class:`EntryDecodeError`.
    """
    if type(entry) is not list or len(entry) != 2:
        raise EntryDecodeError(f"a stream entry is [id, fields], got {entry!r:.80}")
    raw_id, fields = entry
    if type(raw_id) is not bytes or type(fields) is not list:
        raise EntryDecodeError(f"a stream entry is [id, fields], got {entry!r:.80}")
    d: bytes | None = None
    dedup: bytes | None = None
    if len(fields) >= 4 and fields[0] == _FIELD_D and fields[2] == _FIELD_DEDUP:
        # The layout this backend writes: checked directly, without the general walk.
        d, dedup = fields[1], fields[3]
    else:
        if len(fields) % 2:
            raise EntryDecodeError(f"entry {raw_id!r:.40} has an odd number of field items")
        for i in range(0, len(fields), 2):
            name = fields[i]
            if name == _FIELD_D and d is None:
                d = fields[i + 1]
            elif name == _FIELD_DEDUP and dedup is None:
                dedup = fields[i + 1]
        if d is None:
            raise EntryDecodeError(f"entry {raw_id!r:.40} has no field d")
    raw, ts, shard = decode_payload(d)
    try:
        position = raw_id.decode("ascii")
        dedup_text = None if dedup is None else dedup.decode("utf-8")
    except (UnicodeDecodeError, AttributeError) as exc:
        raise EntryDecodeError(f"entry {raw_id!r:.40}: undecodable id or dedup_id") from exc
    return StoredEvent(position, raw, ts, shard, dedup_text)


def decode_entries(reply: list[Any], shard_id: int, out: list[StoredEvent]) -> int:
    """Append the events of an XRANGE reply to ``out`` (with ``shard_id``, the stream's
    shard); return how many entries were not events (skipped).

    The same rules as :func:`decode_entry`, with the layout this backend writes decoded
    inline (no call, no regex per entry); anything else takes :func:`decode_entry`.
    """
    append = out.append
    make = StoredEvent
    head = len(_HEAD)
    malformed = 0
    for entry in reply:
        try:
            raw_id, fields = entry
            if len(fields) == 4 and fields[0] == b"d" and fields[2] == b"dedup_id":
                d = fields[1]
                cut = d.rfind(b',"t":', head)
                t_text, sep, s_text = d[cut + 5 : -1].partition(b',"s":')
                if (
                    cut > 0
                    and sep
                    and d[:head] == _HEAD
                    and d[-1:] == b"}"
                    and t_text.isdigit()
                    and s_text.isdigit()
                    and len(t_text) <= 20
                    and len(s_text) <= 5
                    and (t_text[0] != 48 or len(t_text) == 1)
                    and (s_text[0] != 48 or len(s_text) == 1)
                ):
                    ts = int(t_text)
                    if ts < 18446744073709551616 and int(s_text) <= MAX_SHARD_ID:
                        append(
                            make(
                                raw_id.decode("ascii"),
                                d[head:cut],
                                ts,
                                shard_id,
                                fields[3].decode("utf-8"),
                            )
                        )
                        continue
            event = decode_entry(entry)
        except (EntryDecodeError, ValueError, TypeError, AttributeError):
            malformed += 1
            continue
        append(event._replace(shard_id=shard_id) if event.shard_id != shard_id else event)
    return malformed


# -- the write path ----------------------------------------------------------------------


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


_MULTI: Final = _command(b"MULTI")
_EXEC: Final = _command(b"EXEC")
_PAYLOAD_CONST: Final = len(b'{"r":,"t":,"s":}')


def _digits(value: int) -> int:
    return len(b"%d" % value)


@final
class BatchEncoder:
    """Builds the request of one batch (see the module docstring) for one key prefix.

    ``max_stream_len`` adds ``MAXLEN ~ N`` (or ``MAXLEN N`` when not ``approximate``) to
    every ``XADD``. The per-batch constants (stream key, trim arguments, the dedup-id
    prefix) are formatted once; each event costs one ``%`` formatting.
    """

    __slots__ = ("_headers", "_index", "_index_len", "_prefix", "_trim")

    def __init__(
        self, prefix: str, *, max_stream_len: int | None = None, approximate: bool = True
    ) -> None:
        self._prefix = prefix
        if max_stream_len is None:
            self._trim: tuple[bytes, ...] = ()
        elif approximate:
            self._trim = (b"MAXLEN", b"~", b"%d" % max_stream_len)
        else:
            self._trim = (b"MAXLEN", b"%d" % max_stream_len)
        self._index: list[bytes] = []
        self._index_len: list[int] = []
        # dedup-id prefix length -> bulk headers "$<len>\r\n" of the ids, by index
        self._headers: dict[int, list[bytes]] = {}
        self._grow_index(1024)

    def _grow_index(self, n: int) -> None:
        start = len(self._index)
        for i in range(start, n):
            text = b"%d" % i
            self._index.append(text)
            self._index_len.append(len(text))

    def _id_headers(self, prefix_len: int, n: int) -> list[bytes]:
        headers = self._headers.get(prefix_len)
        if headers is None or len(headers) < n:
            lengths = self._index_len
            headers = [b"$%d\r\n" % (prefix_len + k) for k in lengths]
            if len(self._headers) >= 64:
                self._headers.clear()
            self._headers[prefix_len] = headers
        return headers

    def encode(
        self,
        shard_id: int,
        nonce: int,
        sequence_start: int,
        events: Sequence[bytes],
        timestamps: Sequence[int],
        skip: int = 0,
    ) -> tuple[bytes, int]:
        """The request storing ``events[skip:]`` and the producer mark; returns the
        buffer and the number of commands queued inside the transaction.

        Raises ``TypeError`` / ``ValueError`` for events that are not bytes-like or
        timestamps that are not integers (the caller maps them to a fatal error).
        """
        n = len(events)
        if n > len(self._index):
            self._grow_index(n)
        key = stream_key(self._prefix, shard_id).encode()
        head = b"*%d\r\n" % (7 + len(self._trim)) + b"".join(
            _bulk(a) for a in (b"XADD", key, *self._trim, b"*", b"d")
        )
        id_prefix = b"%x:%d:%d:" % (nonce, shard_id, sequence_start)
        shard_text = b"%d" % shard_id
        # Per event: the bulk length of d, d's variable parts, then the dedup id's bulk
        # header and index from a table (the id's length only depends on the index and
        # the per-batch prefix length).
        fixed = (
            head.replace(b"%", b"%%")
            + b'$%d\r\n{"r":%b,"t":%d,"s":'
            + shard_text
            + b"}\r\n$8\r\ndedup_id\r\n%b"
            + id_prefix.replace(b"%", b"%%")
            + b"%b\r\n"
        )
        const = _PAYLOAD_CONST + len(shard_text)
        headers = self._id_headers(len(id_prefix), n)
        index = self._index
        if skip:
            events = events[skip:]
            timestamps = timestamps[skip:]
        lo, hi = (min(timestamps), max(timestamps)) if events else (0, 0)
        if lo < 0:
            raise ValueError(f"negative insertion timestamp {lo}")
        t_len = _digits(lo)
        if t_len == _digits(hi):
            # One digit count for the whole batch (the usual case: wall-clock ns).
            c = const + t_len
            body = [
                fixed % (len(r) + c, r, t, headers[i], index[i])
                for i, r, t in zip(range(skip, n), events, timestamps, strict=True)
            ]
        else:
            body = [
                fixed % (len(r) + const + _digits(t), r, t, headers[i], index[i])
                for i, r, t in zip(range(skip, n), events, timestamps, strict=True)
            ]
        mark = _command(
            b"HSET",
            marks_key(self._prefix, shard_id).encode(),
            b"%x" % nonce,
            b"%d" % (sequence_start + n),
        )
        return b"".join((_MULTI, *body, mark, _EXEC)), len(body) + 1


def check_exec_reply(replies: list[Any] | None, result: Any, queued: int) -> ServerError | None:
    """The first error of a MULTI/EXEC exchange, or ``None`` when every command
    succeeded. ``replies`` are the replies to ``MULTI`` and the queued commands (``None``
    when the connection already saw them all accepted), ``result`` the EXEC reply."""
    if replies is not None:
        for reply in replies[:-1]:
            if isinstance(reply, ServerError):
                return reply
    if isinstance(result, ServerError):
        return result
    if result is None:
        return ServerError("EXECABORT the transaction was discarded")
    if type(result) is not list or len(result) != queued:
        return ServerError(f"ERR unexpected EXEC reply {result!r:.80}")
    return first_error(result)
