"""YAML recipes validated into typed dataclasses, failing early with one clear line.

The loader and the few configs every stage shares (shards, sampling); each stage's own recipe
lives beside its logic (`curation.ingest.config`, `filters.dedup.config`, `packing.config`, ...).

`load_config(path, SomeConfig)` reads YAML and builds the dataclass tree; an unknown key, a
missing required key or a wrong type raises `ConfigError("file: a.b.c: what was expected")`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml


T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, as one line: `file: key.path: message`."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a type hint; raise ConfigError(where: ...) on mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error says what is wrong inside it
            return _convert(value, options[0], where)
        for arg in options:
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_convert(k, key_tp, where): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key (expected one of: {', '.join(sorted(fields))})".lstrip(".")
        )
    kwargs = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key_where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_where}: required key missing (expected {_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors become one ConfigError line with the position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: config is not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        pos = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML: {pos}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's mapping; `extends: other.yaml` (relative to this file) is the base its keys merge over,
    so a variant recipe (a training stage, say) holds only what differs."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(p.name for p in _seen)}")
    data = load_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a recipe file name, got {type(base).__name__}")
    return deep_merge(load_recipe(path.parent / base, _seen + (path.resolve(),)), data)


def load_config(path: str | Path, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Load the recipe at `path` (with its `extends:` chain) into `cls`; every error names the file."""
    return load_config_data(path, cls, load_recipe(path), overrides)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge mapping `over` into a copy of `base`."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class ShardConfig:
    """Output shard naming and size."""

    prefix: str = "pairs"  # shard names: {prefix}-00000-of-00012 (no '/' or '.')
    samples_per_shard: int = 10_000  # rows per shard: ceil(rows read / this) shards, rows spread by uid hash

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1 or not self.prefix or "/" in self.prefix or "." in self.prefix:
            raise ConfigError("shards: samples_per_shard >= 1 and a prefix without '/' or '.'")


def config_fingerprint(cfg: Any) -> str:
    """A stable hash of a config, recorded in outputs so a rerun can tell its own job."""
    import hashlib
    import json

    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling for every generator: the model core (`curate generate`, MMPR) and the LLM backends;
    temperature 0 is greedy."""

    max_new_tokens: int = 64  # tokens generated per answer at most (>= 1)
    temperature: float = 0.0  # 0: greedy (argmax); above 0: sampled, with top_k / top_p
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # nucleus sampling: probability mass kept, in (0, 1]; 1: off
    seed: int = 0  # the sampling seed; a per-request seed, where a caller gives one, replaces it

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError("max_new_tokens >= 1, temperature >= 0, 0 < top_p <= 1, top_k >= 0")



def load_config_data(path: str | Path, cls: type[T], data: dict[str, Any], overrides: dict[str, Any] | None = None) -> T:
    """`data` (read from `path`) + overrides -> `cls`; every error names the file."""
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return build(cls, data, "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
