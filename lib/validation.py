"""Typed validation of parameter values into frozen dataclasses.

:func:`make` builds a dataclass from a mapping, checking every field against its type hint:
bool, int, float (ints pass), str, ``X | None``, ``tuple[X, ...]`` (a YAML list),
``dict[K, V]``, nested dataclasses, and ``typing.Literal`` choices (the value must be one of
the listed ones). Every problem is one :class:`ConfigError` naming the section and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A parameter problem, naming the section and the key."""


def make(cls: type, values: Mapping[str, Any], stage: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in values:
            raise ConfigError(f"[{stage}] missing parameter: {key}")
        kwargs[f.name] = _check(values[f.name], hints[f.name], stage, key)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"[{stage}] unknown parameter(s): {', '.join(prefix + u for u in unknown)}")
    return cls(**kwargs)


def _check(value: Any, hint: Any, stage: str, key: str) -> Any:
    """``value`` if it is of type ``hint`` (ints pass as floats; bools never pass as numbers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:  # a choice (lib.choices): one of the allowed values
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise ConfigError(
                f"[{stage}] {key}={value!r} is not a valid choice; valid: "
                f"{', '.join(map(str, args))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], stage, key)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{stage}] {key} must be a mapping, got {value!r}")
        return make(hint, value, stage, prefix=f"{key}.")
    if origin is tuple:  # a YAML list, kept as a tuple so a frozen config stays unchanged
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"[{stage}] {key} must be a list, got {type(value).__name__} {value!r}")
        return tuple(_check(v, args[0], stage, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:  # a YAML mapping of simple values, e.g. {classname: 2.0}
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{stage}] {key} must be a mapping, got {type(value).__name__} {value!r}")
        return {
            _check(k, args[0], stage, f"{key} key {k!r}"): _check(v, args[1], stage, f"{key}.{k}")
            for k, v in value.items()
        }
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ConfigError(
            f"[{stage}] {key} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return float(value) if hint is float else value


