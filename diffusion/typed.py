"""Typed configuration sections from plain mappings (YAML, JSON, `--set` overrides).

`build(cls, raw, prefix, check)` turns a nested mapping into the dataclass `cls`: unknown keys
are refused, each value is coerced to its field's annotated type (every `Literal` option is
checked here, once) and `check` runs the section's range checks. Errors are `ConfigError`s
naming the key, so a bad value fails at parse time, not deep inside training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Literal

from diffusion.errors import InputError


class ConfigError(InputError):
    """A configuration file or override that cannot be used."""


def coerce(tp: Any, value: Any, key: str) -> Any:
    """`value` as the annotated type `tp` (bool, int, float, str, Literal, tuple, Optional), or a ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, key)
    if origin is Literal:  # the one check of every string option
        if value not in args:
            raise ConfigError(f"Config key '{key}' must be one of {list(args)}, got {value!r}.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{key}' needs a list, got {value!r}.")
        return tuple(coerce(args[0], v, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"Config key '{key}' needs true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"Config key '{key}' needs an integer, got {value!r}.")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key '{key}' needs a number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"Config key '{key}' needs a string, got {value!r}.")
        return value
    return value


def build(cls: type, raw: dict[str, Any], prefix: str, check: Callable[[Any, str], None]) -> Any:
    """An instance of dataclass `cls` from a plain mapping: unknown keys refused, every value
    coerced to its field's type, nested sections built alike, `check(obj, prefix)` run on each."""
    if not isinstance(raw, dict):
        raise ConfigError(f"Config section '{prefix.rstrip('.')}' must be a mapping, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"Unknown config key(s) {[prefix + u for u in unknown]} (known in this section: {sorted(names)}).")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build(tp, raw[f.name], f"{prefix}{f.name}.", check)
        else:
            kwargs[f.name] = coerce(tp, raw[f.name], prefix + f.name)
    obj = cls(**kwargs)
    check(obj, prefix)
    return obj
