"""Configuration as data: attrs config classes, one cattrs converter, loaders.

Every config class in net-core is an ``attrs`` frozen class whose validators come from
this module. Invalid values fail at construction with a :class:`~net_core.errors.ConfigError`
naming the field path and the bound (``ring.capacity: must be a power of two >= 1024, got
1000``). :func:`structure` turns a plain mapping (from code, JSON or TOML) into a config
object through the single :data:`converter`, rejecting unknown keys, and translates every
cattrs failure into one ``ConfigError`` that lists each bad field with its dotted path.

This module must not import any layer of net-core: the layers import it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from net_core.errors import ConfigError

__all__ = [
    "ConfigError",
    "converter",
    "in_range",
    "load_toml",
    "non_empty",
    "one_of",
    "positive",
    "power_of_two",
    "structure",
    "unstructure",
]

T = TypeVar("T")

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

#: The one converter of the project: structures config classes from plain data and back.
converter = cattrs.Converter(forbid_extra_keys=True)


def _structure_attrs(cls: type[Any]) -> Callable[[Any, type[Any]], Any]:
    # Unknown keys are an error for every config class (a typo must not be ignored).
    return make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)


converter.register_structure_hook_factory(attrs.has, _structure_attrs)


class _WrongType(TypeError):
    pass


# Strict scalars: cattrs would otherwise call int("3") or int(3.7) and silently accept
# the wrong type (or truncate). A config value must already have the right type.
def _strict_int(value: Any, _t: type[Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _WrongType(f"expected an integer, got {type(value).__name__} {value!r}")
    return value


def _strict_float(value: Any, _t: type[Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _WrongType(f"expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def _strict_str(value: Any, _t: type[Any]) -> str:
    if not isinstance(value, str):
        raise _WrongType(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _strict_bool(value: Any, _t: type[Any]) -> bool:
    if not isinstance(value, bool):
        raise _WrongType(f"expected true or false, got {type(value).__name__} {value!r}")
    return value


converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(bool, _strict_bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def in_range(lo: int | float | None = None, hi: int | float | None = None) -> _Validator:
    """Validator: the value is a number with ``lo <= value <= hi`` (either bound optional)."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"must be a number, got {type(value).__name__} {value!r}", path=attribute.name
            )
        if lo is not None and value < lo:
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ConfigError(f"must be {bound}, got {value}", path=attribute.name)
        if hi is not None and value > hi:
            bound = f"in [{lo}, {hi}]" if lo is not None else f"<= {hi}"
            raise ConfigError(f"must be {bound}, got {value}", path=attribute.name)

    return check


def positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: an integer ``>= 1``."""
    if value is None:
        return
    if not _is_int(value):
        raise ConfigError(
            f"must be an integer, got {type(value).__name__} {value!r}", path=attribute.name
        )
    if value < 1:
        raise ConfigError(f"must be >= 1, got {value}", path=attribute.name)


def power_of_two(minimum: int = 1) -> _Validator:
    """Validator: an integer power of two ``>= minimum``."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_int(value) or value < minimum or value & (value - 1):
            raise ConfigError(
                f"must be a power of two >= {minimum}, got {value!r}", path=attribute.name
            )

    return check


def one_of(*choices: str) -> _Validator:
    """Validator: the value is one of ``choices``."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"must be one of {listed}, got {value!r}", path=attribute.name)

    return check


def non_empty(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a non-empty string or collection."""
    if not value:
        raise ConfigError("must not be empty", path=attribute.name)


def _flatten(exc: BaseException, path: str) -> list[ConfigError]:
    """Turn a (nested) cattrs failure into ConfigErrors carrying dotted field paths."""
    if isinstance(exc, ConfigError):
        # Raised by one of our validators: its own path is the attribute name, which
        # cattrs also notes; keep the deeper of the two.
        if exc.path and path.endswith(exc.path):
            return [ConfigError(exc.message, path=path or None)]
        return [exc.at(path) if path else exc]
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        return [ConfigError(f"unknown field(s): {keys}", path=path or None)]
    if isinstance(exc, ClassValidationError | IterableValidationError):
        out: list[ConfigError] = []
        for sub in exc.exceptions:
            note = _note_of(sub)
            out.extend(_flatten(sub, f"{path}.{note}" if path and note else note or path))
        return out
    if isinstance(exc, _WrongType):
        return [ConfigError(str(exc), path=path or None)]
    if isinstance(exc, KeyError):
        return [ConfigError("required field is missing", path=path or None)]
    if isinstance(exc, TypeError | ValueError | cattrs.errors.StructureHandlerNotFoundError):
        return [ConfigError(f"invalid value: {exc}", path=path or None)]
    return [ConfigError(f"{type(exc).__name__}: {exc}", path=path or None)]


def _note_of(exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", ()):
        name = getattr(note, "name", None)
        if name is not None:
            return str(name)
        index = getattr(note, "index", None)
        if index is not None:
            return str(index)
    return ""


def structure(data: Mapping[str, Any] | None, cls: type[T], *, path: str = "") -> T:
    """Build a config object of type ``cls`` from plain data.

    Raises :class:`ConfigError` listing every invalid or unknown field with its dotted
    path (prefixed by ``path`` when given). ``None`` means "all defaults".
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a table/mapping for {cls.__name__}, got {type(data).__name__}",
            path=path or None,
        )
    try:
        return converter.structure(dict(data), cls)
    except ConfigError as exc:
        raise (exc.at(path) if path else exc) from None
    except Exception as exc:
        errors = _flatten(exc, path)
        if len(errors) == 1:
            raise errors[0] from exc
        combined = ConfigError(
            "; ".join(str(e) for e in errors) or f"invalid {cls.__name__}", path=None
        )
        combined.errors = errors  # type: ignore[attr-defined]
        raise combined from exc


def unstructure(obj: Any) -> Any:
    """Turn a config object back into plain data (the inverse of :func:`structure`)."""
    return converter.unstructure(obj)


def load_toml(source: str | PathLike[str], cls: type[T], *, table: str | None = None) -> T:
    """Load a config object of type ``cls`` from a TOML file.

    ``table`` selects a dotted sub-table (``"bus"`` or ``"tool.net.bus"``); field paths in
    errors are prefixed with it.
    """
    path = Path(source)
    try:
        with path.open("rb") as fh:
            data: Any = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if table:
        for part in table.split("."):
            if not isinstance(data, dict) or part not in data:
                raise ConfigError(f"{path}: table [{table}] not found")
            data = data[part]
    return structure(data, cls, path=table or "")
