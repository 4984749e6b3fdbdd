"""Typed RedEX files: values in, values out, stored as JSON payloads.

:class:`TypedRedexFile` wraps a :class:`~net_core.redex.RedexFile` and a type. Values are
unstructured with the project's cattrs converter (attrs classes, dataclasses, dicts,
lists, primitives) and encoded as compact JSON; reads structure them back. A payload that
does not decode into the type raises :class:`RedexDecodeError` naming the seq.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, TypeVar, final

import cattrs
import orjson

from net_core.config import converter as _default_converter
from net_core.errors import DecodeError, RedexError
from net_core.redex._file import RedexEvent, RedexFile

__all__ = ["RedexDecodeError", "TypedRedexFile"]

T = TypeVar("T")


class RedexDecodeError(DecodeError, RedexError):
    """A stored payload could not be decoded into the typed file's type."""

    def __init__(self, name: str, seq: int, reason: str) -> None:
        self.seq = seq
        super().__init__(f"typed read of {name!r} at seq {seq}: {reason}")


@final
class TypedRedexFile(Generic[T]):
    """A RedEX file of ``T`` values (see the module docstring)."""

    __slots__ = ("_conv", "_dumps", "file", "type")

    def __init__(
        self, file: RedexFile, type_: type[T], *, converter: cattrs.Converter | None = None
    ) -> None:
        self.file = file
        self.type = type_
        self._conv = converter if converter is not None else _default_converter
        self._dumps = orjson.dumps

    def encode(self, value: T) -> bytes:
        """The payload bytes ``value`` is stored as."""
        # An exact-size copy: orjson's result keeps a ~4 KiB buffer alive otherwise, and
        # the file keeps every payload in memory.
        return bytes(memoryview(self._dumps(self._conv.unstructure(value, self.type))))

    def decode(self, event: RedexEvent) -> T:
        """Decode one event's payload (raises :class:`RedexDecodeError`)."""
        try:
            raw: Any = orjson.loads(event.payload)
            return self._conv.structure(raw, self.type)
        except (orjson.JSONDecodeError, cattrs.BaseValidationError, TypeError, ValueError) as exc:
            raise RedexDecodeError(self.file.name, event.seq, str(exc)) from exc

    def append(self, value: T) -> int:
        """Append one value; returns its seq."""
        return self.file.append(self.encode(value))

    def append_batch(self, values: Iterable[T]) -> int | None:
        """Append values with contiguous seqs; ``None`` for an empty batch."""
        return self.file.append_batch([self.encode(v) for v in values])

    def read_range(self, start: int, end: int) -> list[tuple[int, T]]:
        """``(seq, value)`` pairs for ``start <= seq < end``."""
        return [(e.seq, self.decode(e)) for e in self.file.read_range(start, end)]

    def read_one(self, seq: int) -> T:
        """The value at ``seq``."""
        return self.decode(self.file.read_one(seq))

    async def tail(self, from_seq: int = 0) -> AsyncIterator[tuple[int, T]]:
        """Async iterator of ``(seq, value)`` from ``from_seq`` on (see RedexFile.tail)."""
        async with self.file.tail(from_seq) as events:
            async for event in events:
                yield event.seq, self.decode(event)

    def __len__(self) -> int:
        return len(self.file)

    def __repr__(self) -> str:
        return f"TypedRedexFile({self.file.name!r}, {getattr(self.type, '__name__', self.type)})"
