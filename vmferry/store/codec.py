"""Rebuild model dataclasses from the JSON the store keeps (the inverse of ``to_jsonable``).

Driven by the dataclasses' own type hints, so a field added to a model type needs no change
here: enums come back from their values, tuples from lists, nested dataclasses from
objects; a missing field takes its default; a field this vmferry does not know is ignored.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar, Union, cast

__all__ = ["DecodeError", "from_jsonable"]

T = TypeVar("T")


class DecodeError(ValueError):
    """The stored JSON does not fit the type it should become."""


def from_jsonable(cls: type[T], value: Any) -> T:
    """``value`` (as written by :func:`vmferry.model.jsonable.to_jsonable`) as a ``cls``."""
    return cast(T, _decode(cls, value, cls.__name__))


def _decode(hint: Any, value: Any, where: str) -> Any:
    if hint is Any or hint is object:
        return value
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return _decode_union(typing.get_args(hint), value, where)
    if hint is type(None):
        if value is not None:
            raise DecodeError(f"{where}: expected null, got {value!r}")
        return None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError as exc:
            raise DecodeError(f"{where}: {value!r} is not a {hint.__name__}") from exc
    if origin in (tuple, list):
        return _decode_sequence(hint, origin, value, where)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected an object, got {value!r}")
        args = typing.get_args(hint)
        value_hint = args[1] if args else Any
        return {str(k): _decode(value_hint, v, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise DecodeError(f"{where}: expected a number, got {value!r}")
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise DecodeError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise DecodeError(f"{where}: cannot decode type {hint!r}")


def _decode_union(options: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None and type(None) in options:
        return None
    problems = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _decode(option, value, where)
        except DecodeError as exc:
            problems.append(str(exc))
    raise DecodeError("; ".join(problems) or f"{where}: nothing fits {value!r}")


def _decode_sequence(hint: Any, origin: Any, value: Any, where: str) -> Any:
    if not isinstance(value, list | tuple):
        raise DecodeError(f"{where}: expected a list, got {value!r}")
    args = typing.get_args(hint)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(args) != len(value):
            raise DecodeError(f"{where}: expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    item_hint = args[0] if args else Any
    items = [_decode(item_hint, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _decode_dataclass(cls: type[Any], value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise DecodeError(f"{where}: expected an object, got {value!r}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name in value:
            kwargs[field.name] = _decode(
                hints[field.name], value[field.name], f"{where}.{field.name}"
            )
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise DecodeError(f"{where}: the field {field.name!r} is missing")
    return cls(**kwargs)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """``cls``'s resolved type hints, once per class: resolving the string annotations
    (``from __future__ import annotations``) compiles each again, and a job's record holds
    hundreds of dataclasses."""
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = typing.get_type_hints(cls)
    return found
