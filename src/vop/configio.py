"""Typed configs from YAML: ``defaults:`` composition, ``--set key=value`` overrides, and
strict conversion into frozen dataclasses that names any unknown key or wrong type before
any work starts."""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def merge(base: Mapping, update: Mapping) -> dict:
    """``update`` on top of ``base``, sections merged key by key. Returns a new dict that
    shares nothing mutable with either (overrides are applied in place afterwards)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, first merging the files its ``defaults:`` list names (relative
    to it, in order), then its own keys on top."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config defaults form a cycle: {' -> '.join(map(str, (*_seen, path)))}")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    merged: dict = {}
    defaults = data.pop("defaults", []) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    for item in defaults:
        merged = merge(merged, load_yaml(path.parent / item, (*_seen, path)))
    return merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``["optim.lr=1e-3", "data.flip=false"]`` -> nested updates (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a section (mapping), got {type(value).__name__}")
        return from_dict(hint, value, where)
    if origin in (tuple,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict,) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls, data: Mapping, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data`` strictly: unknown keys and wrong types raise
    :class:`ConfigError` naming the dotted key and the allowed ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; allowed in {where or 'the top level'}: {names}")
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{where}.{name}" if where else name
            kwargs[name] = _convert(data[name], hints[name], key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """A dataclass config -> plain YAML/JSON-ready data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def configs_dir() -> Path:
    """The shipped configs (package data; ``configs/`` at the repository's top links here)."""
    return Path(str(importlib.resources.files("vop").joinpath("configs")))


def data_presets() -> list[str]:
    """Names accepted by ``--data``: the files of ``configs/data/``."""
    return sorted(p.stem for p in (configs_dir() / "data").glob("*.yaml"))


def load_preset(name: str) -> tuple[dict, dict]:
    """Data preset ``name``: its settings and its per-method table (``methods: {NAME: {...}}``)."""
    path = configs_dir() / "data" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown data preset {name!r}; known: {', '.join(data_presets())} "
                          "(or pass a YAML file for custom data)")
    preset = load_yaml(path)
    table = preset.pop("methods", None) or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: 'methods' must map method names to settings")
    return preset, dict(table)


def load_settings(source: str | Path) -> dict:
    """A data preset's settings (by name) or a YAML config file's (by path)."""
    if isinstance(source, str) and source in data_presets():
        return load_preset(source)[0]
    return load_yaml(source)
