"""Loading plain data (a YAML file, Snakemake's `--config`) into frozen dataclasses, strictly: an unknown key, a value
of the wrong type or out of its range raises `ConfigError` naming the source, the dotted key and what is expected.
Generic: `sgilo.config` holds the params schema (its dataclasses and the rules between their keys) and uses this.

Range constraints live next to the field as metadata (`bounds`: `min`, `max`, `power_of_two`); a rule between a
dataclass's own keys is its `__post_init__`, raising `SectionError` with the keys it names.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file, the key and the fix."""


class SectionError(ValueError):
    """A rule between a section's own keys, broken: raised by a config dataclass's `__post_init__` with the keys (relative
    to the section) it concerns; `from_dict` prefixes the section and the source."""

    def __init__(self, keys: str, rule: str) -> None:
        super().__init__(f"{keys}: {rule}")
        self.keys, self.rule = keys, rule


def bounds(lo: float | None = None, hi: float | None = None, **extra: Any) -> dict[str, Any]:
    """A field's metadata: its range (and `power_of_two=True` where it must be one), checked by `from_dict`."""
    return {"min": lo, "max": hi, **extra}


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`: mappings merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def typed(value: Any) -> Any:
    # Snakemake parses a nested --config value (`invert={images: 1024}`) with YAML's BaseLoader, which leaves every
    # scalar a string: read those strings as a params file would.
    if isinstance(value, Mapping):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return yaml.safe_load(value) if isinstance(value, str) and value else value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found; pass --params PATH (e.g. params.yaml or profiles/<name>/params.yaml)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level: expected a mapping of keys, got {_describe(raw)}")
    return raw or {}


def from_dict(
    cls: type, raw: Any, source: str = "<params>", prefix: str = "", retired: Mapping[str, str] | None = None
) -> Any:
    """Build dataclass `cls` from plain data, rejecting unknown keys, wrong types and out-of-range values. `retired`:
    dotted keys that are gone, with what replaced them, for the message."""
    retired = retired or {}
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping of keys, got {_describe(raw)}")
    # A retired key first (dotted from the top, so the top-level call checks them all): its message says where the
    # value went, which a missing key's cannot.
    for key, fix in retired.items():
        if has_key(raw, key):
            raise ConfigError(f"{source}: {key} is no longer a key: {fix}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]!s}; allowed keys under {where}: {', '.join(sorted(known))}"
        )
    missing = [name for name, f in known.items() if name not in raw and _required(f)]
    if missing:
        raise ConfigError(
            f"{source}: missing key{'s' if len(missing) > 1 else ''} {', '.join(prefix + name for name in missing)}: "
            "every key is required (params.yaml, the demo profile, gives each one with its meaning)"
        )
    values = {
        name: _convert(hints[name], raw[name], f, source, prefix + name) for name, f in known.items() if name in raw
    }
    try:
        return cls(**values)
    except SectionError as exc:  # a rule between the section's own keys (its __post_init__), naming them
        raise ConfigError(f"{source}: {prefix}{exc.keys}: {exc.rule}") from exc
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from exc


def has_key(raw: Any, dotted: str) -> bool:
    """Whether plain data `raw` (a params file as read) has the dotted key, e.g. "evaluate.sgilo.temperature"."""
    for part in dotted.split("."):
        if not isinstance(raw, Mapping) or part not in raw:
            return False
        raw = raw[part]
    return True


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _convert(hint: Any, value: Any, f: dataclasses.Field, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, key + ".")
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"{source}: {key}: expected one of {', '.join(map(repr, choices))}, got {_describe(value)}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(args[0], value, f, source, key)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {_describe(value)}")
        return tuple(_convert(item, v, f, source, f"{key}[{i}]") for i, v in enumerate(value))
    return _check_scalar(hint, value, f, source, key)


def _check_scalar(hint: Any, value: Any, f: dataclasses.Field, source: str, key: str) -> Any:
    # bool is an int subclass in Python: `steps: true` must not pass as 1.
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"config field {key} has unsupported type {hint!r}")
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {hint.__name__}{_range_text(f)}, got {_describe(value)}")
    value = float(value) if hint is float else value
    if hint is float and not math.isfinite(value):  # .nan passes every range comparison; .inf is no setting either
        raise ConfigError(f"{source}: {key}: expected a finite float{_range_text(f)}, got {value!r}")
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{source}: {key}: expected {hint.__name__}{_range_text(f)}, got {value!r}")
    if f.metadata.get("power_of_two") and value & (value - 1):
        raise ConfigError(f"{source}: {key}: expected a power of two{_range_text(f)}, got {value!r}")
    return value


def _range_text(f: dataclasses.Field) -> str:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data form of a config, for the JSON saved beside every artifact."""
    return dataclasses.asdict(config)
