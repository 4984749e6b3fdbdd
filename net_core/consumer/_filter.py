"""The consumer filter language: JSON predicates evaluated on events after retrieval.

Theory of operation. A filter is JSON, exactly the reference's language (untagged serde
enum, variants tried in this order; the first that fits wins, unknown keys are ignored):

* ``{"$and": [F, ...]}`` all match (an empty list matches **nothing**);
* ``{"$or": [F, ...]}`` any matches (empty: nothing);
* ``{"$not": F}``;
* ``{"$eq": {"path": P, "value": V}}`` (or ``{"$eq": [P, V]}``) and the shorthand
  ``{"path": P, "value": V}``: the value at dot path ``P`` equals ``V``.

A path splits on ``.``; a segment selects an object member by key or an array element by
decimal index (``+`` sign and leading zeros allowed, as Rust's ``usize`` parser allows
them); the empty path is the whole event. A missing path never matches, not even
``null``, so ``$not`` matches events lacking the path. Equality is JSON equality with the
types kept apart at every level: ``1`` is not ``1.0``, ``true`` is not ``1``, ``"1"`` is
not ``1``; numbers follow serde_json (integers beyond 64 bits and the literal ``-0`` are
floats, and ``-0.0 == 0.0``).

Parsing raises :class:`InvalidFilter` and nothing else: malformed JSON, a shape that fits
no variant, a key given twice in a filter object (serde's "duplicate field"), non-JSON
Python data, and nesting of 128 or more arrays/objects (serde_json's recursion limit).
Evaluation never raises and never recurses on the Python stack, so filters built in code
may nest arbitrarily deep.

This module is pure: no I/O. It must not evaluate anything but the operators above.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from typing import Any, Final, final

import orjson

from net_core.errors import ConsumerError, DecodeError

__all__ = ["MAX_FILTER_NESTING", "Filter", "InvalidFilter"]

#: Arrays/objects may nest at most this deep minus one (serde_json rejects 128 levels).
MAX_FILTER_NESTING: Final = 128

_AND: Final = 0
_OR: Final = 1
_NOT: Final = 2
_EQ: Final = 3

_NO_VARIANT = "data did not match any variant of untagged enum Filter"
_TOO_DEEP = "recursion limit exceeded"
_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_MISSING: Any = object()
_UNPARSEABLE: Any = object()
# An integer literal ``-0`` (serde_json reads it as the float -0.0; orjson as int 0).
_NEGATIVE_ZERO = re.compile(rb"-0(?![.0-9eE])")


class InvalidFilter(ConsumerError, DecodeError):
    """A filter is malformed (bad JSON, unknown shape, too deep, not JSON data).

    ``reason`` is the text after ``invalid filter:``; the low-level cause, when there is
    one, rides in ``__cause__``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid filter: {reason}")


# -- JSON values --------------------------------------------------------------------------


def _serde_int(text: str) -> int | float:
    """An integer literal as serde_json holds it: u64/i64, else a float."""
    if text == "-0":
        return -0.0
    value = int(text)
    if _I64_MIN <= value <= _U64_MAX:
        return value
    return float(text)


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_value(data: object) -> Any:
    """A canonical copy of ``data``: only dict/list/str/int/float/bool/None, integers
    outside 64 bits as floats, nesting below :data:`MAX_FILTER_NESTING`.

    Iterative, so cyclic or absurdly deep data is rejected, not a ``RecursionError``.
    """
    root: list[Any] = [None]
    # (value, container to store the copy in, slot in it, nesting level if a container)
    stack: list[tuple[object, Any, Any, int]] = [(data, root, 0, 1)]
    while stack:
        value, parent, slot, level = stack.pop()
        if value is None or isinstance(value, bool):
            parent[slot] = value
        elif isinstance(value, int):
            number = int(value)
            if not _I64_MIN <= number <= _U64_MAX:
                try:
                    parent[slot] = float(number)
                except OverflowError:
                    raise InvalidFilter("number out of range") from None
            else:
                parent[slot] = number
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidFilter(f"{value!r} is not a JSON number")
            parent[slot] = float(value)
        elif isinstance(value, str):
            if not _is_utf8(value):
                raise InvalidFilter("string is not valid UTF-8 (lone surrogate)")
            parent[slot] = str(value)
        elif isinstance(value, dict):
            if level >= MAX_FILTER_NESTING:
                raise InvalidFilter(_TOO_DEEP)
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidFilter(f"object key must be a string, got {type(key).__name__}")
                if not _is_utf8(key):
                    raise InvalidFilter("string is not valid UTF-8 (lone surrogate)")
                copy[str(key)] = None  # keep member order; filled when popped
                stack.append((item, copy, str(key), level + 1))
        elif isinstance(value, list | tuple):
            if level >= MAX_FILTER_NESTING:
                raise InvalidFilter(_TOO_DEEP)
            items: list[Any] = [None] * len(value)
            parent[slot] = items
            for index, item in enumerate(value):
                stack.append((item, items, index, level + 1))
        else:
            raise InvalidFilter(f"{type(value).__name__} is not JSON data")
    return root[0]


def _nesting_reaches(data: object, limit: int) -> bool:
    """Whether arrays/objects in decoded JSON ``data`` nest ``limit`` levels deep."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if level >= limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


class _FilterObject(dict[str, Any]):
    """A JSON object of filter text that repeated some keys (``duplicates``)."""

    __slots__ = ("duplicates",)

    duplicates: frozenset[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) == len(pairs):
        return members
    seen: set[str] = set()
    repeated: set[str] = set()
    for key, _ in pairs:
        (repeated if key in seen else seen).add(key)
    marked = _FilterObject(members)
    marked.duplicates = frozenset(repeated)
    return marked


def _load_text(text: str | bytes) -> Any:
    """Filter JSON text decoded the way serde_json sees it."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = _TOO_DEEP if "depth limit" in exc.msg else str(exc)
        raise InvalidFilter(reason) from exc
    if _nesting_reaches(data, MAX_FILTER_NESTING):
        raise InvalidFilter(_TOO_DEEP)
    # orjson vouched for the syntax, the numbers and the strings; the stdlib decoder runs
    # again only to see repeated keys and ``-0``, which orjson folds away.
    decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    return json.loads(decoded, object_pairs_hook=_object_pairs, parse_int=_serde_int)


def _load_event(raw: bytes) -> Any:
    """An event's bytes decoded as serde_json would, or ``_UNPARSEABLE``."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNPARSEABLE
    # Cheap tests first: 128 levels need 256 brackets; "-0" is rare outside dates.
    if (
        len(raw) >= 2 * MAX_FILTER_NESTING
        and raw.count(b"[") + raw.count(b"{") >= MAX_FILTER_NESTING
        and _nesting_reaches(document, MAX_FILTER_NESTING)
    ):
        return _UNPARSEABLE
    if raw.find(b"-0") >= 0 and _NEGATIVE_ZERO.search(raw) is not None:
        return json.loads(raw.decode("utf-8"), parse_int=_serde_int)
    return document


def _json_equal(expected: Any, actual: Any) -> bool:
    """Strict JSON equality: ``expected`` is canonical JSON, ``actual`` anything."""
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    if expected is None:
        return actual is None
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if isinstance(expected, int):
        return isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
    if isinstance(expected, float):
        return isinstance(actual, float) and actual == expected
    if isinstance(expected, list):
        if not isinstance(actual, list | tuple) or len(actual) != len(expected):
            return False
        return all(_json_equal(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or len(actual) != len(expected):
            return False
        for key, item in expected.items():
            other = actual.get(key, _MISSING)
            if other is _MISSING or not _json_equal(item, other):
                return False
        return True
    return False


def _array_index(segment: str) -> int:
    """The array index a path segment names (Rust ``usize`` syntax), or -1."""
    digits = segment[1:] if segment.startswith("+") else segment
    if not digits or not (digits.isascii() and digits.isdigit()):
        return -1
    significant = digits.lstrip("0")
    if len(significant) > 20:
        return -1
    index = int(significant or "0")
    return index if index <= _U64_MAX else -1


# -- the filter -----------------------------------------------------------------------


@final
class Filter:
    """A parsed filter. Build one with :meth:`parse` (JSON text, bytes or decoded data)
    or in code with :meth:`eq`, :meth:`and_`, :meth:`or_` and :meth:`not_`; test events
    with :meth:`matches` (decoded JSON) or :meth:`matches_raw` (event bytes).
    """

    __slots__ = ("_children", "_kind", "_path", "_steps", "_value")

    _kind: int
    _children: tuple[Filter, ...]
    _path: str
    _steps: tuple[tuple[str, int], ...]
    _value: Any

    def __init__(self) -> None:
        raise TypeError("build filters with Filter.parse(), eq(), and_(), or_() or not_()")

    # -- construction -----------------------------------------------------------------

    @classmethod
    def _node(cls, kind: int, children: tuple[Filter, ...] = ()) -> Filter:
        node = object.__new__(cls)
        node._kind = kind
        node._children = children
        node._path = ""
        node._steps = ()
        node._value = None
        return node

    @classmethod
    def _equality(cls, path: str, value: Any) -> Filter:
        node = cls._node(_EQ)
        node._path = path
        # serde splits the empty path into nothing: it names the whole event.
        node._steps = (
            tuple((segment, _array_index(segment)) for segment in path.split(".")) if path else ()
        )
        node._value = value
        return node

    @classmethod
    def eq(cls, path: str, value: Any) -> Filter:
        """Events whose value at dot path ``path`` equals the JSON value ``value``."""
        if not isinstance(path, str) or not _is_utf8(path):
            raise InvalidFilter("path must be a string")
        return cls._equality(path, _json_value(value))

    @classmethod
    def and_(cls, *filters: Filter) -> Filter:
        """Events matching every filter (none given: no event matches)."""
        return cls._node(_AND, _check_filters(filters))

    @classmethod
    def or_(cls, *filters: Filter) -> Filter:
        """Events matching at least one filter (none given: no event matches)."""
        return cls._node(_OR, _check_filters(filters))

    @classmethod
    def not_(cls, inner: Filter) -> Filter:
        """Events not matching ``inner`` (including events lacking its path)."""
        return cls._node(_NOT, _check_filters((inner,)))

    @classmethod
    def parse(cls, source: object) -> Filter:
        """The filter ``source`` describes.

        ``source`` is JSON text (``str``, ``bytes``, ``bytearray``, ``memoryview``), a
        :class:`Filter` (returned as is), or decoded JSON data (``dict``/``list``/...;
        tuples count as arrays). Raises :class:`InvalidFilter`, and only that, when it
        is not a filter the reference would accept.
        """
        if isinstance(source, Filter):
            return source
        if isinstance(source, str):
            data = _load_text(source)
        elif isinstance(source, bytes | bytearray | memoryview):
            data = _load_text(bytes(source))
        else:
            data = _json_value(source)
        parsed = _Parser().filter(data)
        if parsed is None:
            raise InvalidFilter(_NO_VARIANT)
        return parsed

    # -- evaluation -------------------------------------------------------------------

    def matches(self, event: Any) -> bool:
        """Whether the decoded JSON ``event`` matches. Never raises."""
        if self._kind == _EQ:
            return self._test(event)
        # Iterative walk with short-circuit: no Python recursion whatever the depth.
        stack: list[tuple[Filter, int]] = []
        node = self
        while True:
            kind = node._kind
            if kind == _EQ:
                result = node._test(event)
            elif node._children:
                stack.append((node, 0))
                node = node._children[0]
                continue
            else:
                result = False  # empty $and / $or
            while stack:
                parent, index = stack[-1]
                if parent._kind == _NOT:
                    result = not result
                    stack.pop()
                elif result is (parent._kind == _OR) or index + 1 == len(parent._children):
                    stack.pop()  # decided: $and saw false / $or saw true / last child
                else:
                    stack[-1] = (parent, index + 1)
                    node = parent._children[index + 1]
                    break
            else:
                return result

    def matches_raw(self, raw: bytes | bytearray | memoryview) -> bool | None:
        """Whether the event bytes ``raw`` match; ``None`` when they are not JSON (or
        nest too deep for the reference to read them)."""
        document = _load_event(raw if type(raw) is bytes else bytes(raw))
        if document is _UNPARSEABLE:
            return None
        return self.matches(document)

    def _test(self, event: Any) -> bool:
        current = event
        for key, index in self._steps:
            if isinstance(current, dict):
                current = current.get(key, _MISSING)
                if current is _MISSING:
                    return False
            elif isinstance(current, list | tuple):
                if not 0 <= index < len(current):
                    return False
                current = current[index]
            else:
                return False
        return _json_equal(self._value, current)

    # -- introspection ----------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """The filter as decoded JSON in canonical form (``Filter.parse`` round-trips)."""
        root: list[Any] = [None]
        stack: list[tuple[Filter, Any, Any]] = [(self, root, 0)]
        while stack:
            node, parent, slot = stack.pop()
            if node._kind == _EQ:
                parent[slot] = {"path": node._path, "value": _json_value(node._value)}
            elif node._kind == _NOT:
                holder: dict[str, Any] = {"$not": None}
                parent[slot] = holder
                stack.append((node._children[0], holder, "$not"))
            else:
                items: list[Any] = [None] * len(node._children)
                parent[slot] = {"$and" if node._kind == _AND else "$or": items}
                stack.extend((child, items, i) for i, child in enumerate(node._children))
        result: dict[str, Any] = root[0]
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Filter):
            return NotImplemented
        pairs: list[tuple[Filter, Filter]] = [(self, other)]
        while pairs:
            left, right = pairs.pop()
            if left is right:
                continue
            if left._kind != right._kind or len(left._children) != len(right._children):
                return False
            if left._kind == _EQ and not (
                left._path == right._path and _json_equal(left._value, right._value)
            ):
                return False
            pairs.extend(zip(left._children, right._children, strict=True))
        return True

    __hash__ = None  # type: ignore[assignment]  # values may be dicts and lists

    def __repr__(self) -> str:
        return f"Filter.parse({_REPR.repr(self.to_data())})"


_REPR = reprlib.Repr()
_REPR.maxlevel = 8
_REPR.maxdict = 8
_REPR.maxlist = 8
_REPR.maxstring = 60


def _check_filters(filters: tuple[object, ...]) -> tuple[Filter, ...]:
    checked = []
    for item in filters:
        if not isinstance(item, Filter):
            raise InvalidFilter(f"expected a Filter, got {type(item).__name__}")
        checked.append(item)
    return tuple(checked)


class _Parser:
    """Tries the variants of the untagged enum on decoded JSON, in the reference's order.

    Results are memoised per object: a failing variant makes serde retry the next one on
    the same data, which would otherwise cost time exponential in the nesting.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[int, Filter | None] = {}

    def filter(self, data: Any) -> Filter | None:
        if not isinstance(data, dict):
            return None
        key = id(data)
        if key in self._seen:
            return self._seen[key]
        result = (
            self._combination(data, "$and", _AND)
            or self._combination(data, "$or", _OR)
            or self._negation(data)
            or self._wrapped_equality(data)
            or _equality(data)
        )
        self._seen[key] = result
        return result

    def _combination(self, data: dict[str, Any], field: str, kind: int) -> Filter | None:
        items = _field(data, field)
        if not isinstance(items, list):
            return None
        children = []
        for item in items:
            child = self.filter(item)
            if child is None:
                return None
            children.append(child)
        return Filter._node(kind, tuple(children))

    def _negation(self, data: dict[str, Any]) -> Filter | None:
        inner = _field(data, "$not")
        if inner is _MISSING:
            return None
        child = self.filter(inner)
        return None if child is None else Filter._node(_NOT, (child,))

    def _wrapped_equality(self, data: dict[str, Any]) -> Filter | None:
        inner = _field(data, "$eq")
        if isinstance(inner, list):
            # serde also fills a plain struct from a sequence of its fields.
            if len(inner) == 2 and isinstance(inner[0], str):
                return Filter._equality(inner[0], _json_value(inner[1]))
            return None
        if isinstance(inner, dict):
            return _equality(inner)
        return None


def _field(data: dict[str, Any], name: str) -> Any:
    """Member ``name`` of a filter object, or ``_MISSING`` (also when it was repeated)."""
    if isinstance(data, _FilterObject) and name in data.duplicates:
        return _MISSING
    return data.get(name, _MISSING)


def _equality(data: Any) -> Filter | None:
    if not isinstance(data, dict):
        return None
    path = _field(data, "path")
    value = _field(data, "value")
    if not isinstance(path, str) or value is _MISSING:
        return None
    return Filter._equality(path, _json_value(value))
