"""Typed configs from YAML: ``defaults:`` composition, ``--set key=value`` overrides, and
strict conversion into frozen dataclasses that names any unknown key or wrong type before
any work starts.

Everything read here is untrusted text: YAML is parsed by :func:`parse_yaml` (safe types
only, and aliases may not expand a document beyond :data:`MAX_NODES` nodes, so a
kilobyte-sized "billion laughs" fails at once instead of filling memory), malformed YAML is
one :class:`ConfigError` naming the file or the override, and no number anywhere in a
config may be NaN or infinite."""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


# Nodes a config may hold once its aliases are expanded (the shipped ones hold under 200).
MAX_NODES = 20_000


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes under ``node`` counting every alias as a full copy (shared nodes are sized once)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError("a YAML alias refers to the node that contains it (a recursive structure)")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo, active)
            if size > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, active) + _expanded_size(v, memo, active)
            if size > MAX_NODES:
                break
    active.discard(key)
    memo[key] = size
    return size


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``, refusing alias bombs and turning syntax errors into one
    :class:`ConfigError` line that names ``source`` (a file, or ``override 'k=v'``)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > MAX_NODES:
            raise ConfigError(f"{source}: its YAML aliases expand to more than {MAX_NODES} values (an alias "
                              "bomb?); write the values out instead of nesting anchors")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where} ({problem})") from None
    except ConfigError as exc:
        if str(exc).startswith(source):
            raise
        raise ConfigError(f"{source}: {exc}") from None
    finally:
        loader.dispose()


def check_finite(data: Any, where: str = "") -> None:
    """Refuse NaN and infinite numbers anywhere in ``data`` (a learning rate of ``.inf``
    would train NaN weights), naming the dotted key."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(f"{where or 'the config'}: must be a finite number, got {data!r}")
    if isinstance(data, Mapping):
        for key, value in data.items():
            check_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            check_finite(value, f"{where}[{i}]")


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
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" if not path.exists()
                          else f"config file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a config is a YAML file") from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    merged: dict = {}
    defaults = data.pop("defaults", []) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: 'defaults' must be a list of config file names, got {defaults!r}")
    for item in defaults:
        merged = merge(merged, load_yaml(path.parent / item, (*_seen, path)))
    return merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``["optim.lr=1e-3", "data.flip=false"]`` -> nested updates (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: the key must be dotted names like optim.lr")
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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def convert_fields(cls, data: Mapping, where: str = "") -> dict:
    """``data``'s values converted to the types ``cls`` (a dataclass) declares, strictly:
    :class:`ConfigError` names the dotted key of a wrong type. Keys ``cls`` lacks are left
    out (the caller refuses them with its own message)."""
    hints = typing.get_type_hints(cls)
    return {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items() if k in hints}


def from_dict(cls, data: Mapping, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data`` strictly: unknown keys and wrong types raise
    :class:`ConfigError` naming the dotted key and the allowed ones."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a section (mapping), got {data!r}")
    check_finite(data, where)
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
