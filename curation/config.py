"""YAML recipes validated into typed dataclasses, failing early with one clear line.

`load_config(path, IngestConfig)` reads YAML and builds the dataclass tree; an unknown key, a
missing required key or a wrong type raises `ConfigError("file: a.b.c: what was expected")`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from curation.records import MAPPABLE_FIELDS

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


def load_config(path: str | Path, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Load YAML at `path` into `cls`; every error names the file."""
    return load_config_data(path, cls, load_yaml(path), overrides)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge mapping `over` into a copy of `base`."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Ingest recipe


@dataclass(frozen=True)
class SourceConfig:
    """How to read one metadata source and map its columns onto canonical fields."""

    name: str
    columns: dict[str, str]
    format: Literal["auto", "parquet", "csv", "tsv", "jsonl"] = "auto"
    keep_extra_columns: bool = True
    image_root: str | None = None  # for jsonl with local image paths
    caption_from_conversation: bool = False  # InternVL/LLaVA jsonl: first gpt turn is the caption

    def __post_init__(self) -> None:
        bad = sorted(set(self.columns) - set(MAPPABLE_FIELDS))
        if bad:
            raise ConfigError(f"columns.{bad[0]}: unknown canonical field (expected one of: {', '.join(MAPPABLE_FIELDS)})")
        if "url" not in self.columns and "image_path" not in self.columns:
            raise ConfigError("columns: map `url` or `image_path` to a column")


@dataclass(frozen=True)
class DownloadConfig:
    """HTTP fetching: limits, retries, politeness and the SSRF guard."""

    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    threads: int = 64
    user_agent_token: str = "curate"
    disallowed_robots: list[str] = field(default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"])
    allow_private_addresses: bool = False
    check_content_type: bool = True

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s: must be > 0")
        if self.retries < 0 or self.max_redirects < 0 or self.threads < 1 or self.max_bytes < 1:
            raise ConfigError("retries/max_redirects must be >= 0; threads, max_bytes >= 1")


@dataclass(frozen=True)
class ImageConfig:
    """Decode, resize and re-encode settings (img2dataset's resize modes)."""

    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "keep_ratio"
    image_size: int = 512
    resize_only_if_bigger: bool = True
    # img2dataset's defaults: area averaging when shrinking (Pillow BOX == cv2 INTER_AREA), lanczos when growing
    downscale_interpolation: Literal["area", "bilinear", "bicubic", "lanczos"] = "area"
    upscale_interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "lanczos"
    encode_format: Literal["jpg", "webp"] = "jpg"
    encode_quality: int = 95
    max_pixels: int = 89_478_485  # Pillow's default decompression-bomb limit

    def __post_init__(self) -> None:
        if self.image_size < 1 or not 1 <= self.encode_quality <= 100 or self.max_pixels < 1:
            raise ConfigError("image_size >= 1, encode_quality in 1..100, max_pixels >= 1")


@dataclass(frozen=True)
class ShardConfig:
    """Output shard naming and size."""

    prefix: str = "pairs"
    samples_per_shard: int = 10_000

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1 or not self.prefix or "/" in self.prefix or "." in self.prefix:
            raise ConfigError("shards: samples_per_shard >= 1 and a prefix without '/' or '.'")


# ---------------------------------------------------------------------------------------------
# Dedup recipe (its own stage, and optionally inside ingest on metadata alone)


@dataclass(frozen=True)
class ExactDedupConfig:
    """Exact keys, checked in this order: normalised URL, normalised caption, image sha256."""

    url: bool = True
    caption: bool = True
    image: bool = True


@dataclass(frozen=True)
class NearCaptionConfig:
    """MinHash LSH over caption shingles; a pair is a near-duplicate at Jaccard >= threshold."""

    enabled: bool = True
    shingle: Literal["char", "word"] = "char"
    ngram: int = 5
    num_perm: int = 128
    seed: int = 1
    threshold: float = 0.8
    # bands x rows are chosen for this lower candidate threshold, so pairs at `threshold` are found
    # with high probability; verification then drops candidates below `threshold`.
    lsh_threshold: float = 0.7
    bands: int | None = None  # explicit bands x rows instead of choosing them from lsh_threshold
    rows: int | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.num_perm < 2:
            raise ConfigError("near_caption: ngram >= 1, num_perm >= 2")
        if not 0.0 < self.threshold <= 1.0 or not 0.0 < self.lsh_threshold < 1.0:
            raise ConfigError("near_caption: threshold in (0, 1], lsh_threshold in (0, 1)")
        if (self.bands is None) != (self.rows is None):
            raise ConfigError("near_caption: give both bands and rows, or neither")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ConfigError(f"near_caption: bands x rows must be >= 1 and <= num_perm ({self.num_perm})")

    def lsh(self) -> tuple[int, int]:
        """(bands, rows)."""
        if self.bands is not None:
            return self.bands, self.rows  # type: ignore[return-value]
        from filters.minhash import lsh_params

        return lsh_params(self.lsh_threshold, self.num_perm)


@dataclass(frozen=True)
class NearImageConfig:
    """64-bit pHash within `hamming` bits, found by multi-index hashing over `bands` bands."""

    enabled: bool = True
    hamming: int = 10
    bands: int | None = None  # default hamming + 1: exact band matches suffice (no probes)

    def __post_init__(self) -> None:
        if not 0 <= self.hamming < 32:
            raise ConfigError("near_image: hamming in 0..31")
        if self.bands is not None and not 1 <= self.bands <= 64:
            raise ConfigError("near_image: bands in 1..64")

    def num_bands(self) -> int:
        return self.bands if self.bands is not None else min(64, self.hamming + 1)


@dataclass(frozen=True)
class ComponentsConfig:
    """Connected components: one union-find when the edges fit a worker, else large/small-star rounds."""

    max_local_edges: int = 2_000_000
    rounds: int = 8

    def __post_init__(self) -> None:
        if self.max_local_edges < 0 or self.rounds < 1:
            raise ConfigError("components: max_local_edges >= 0, rounds >= 1")


@dataclass(frozen=True)
class DedupConfig:
    """The whole dedup recipe. Representatives: highest `score_field`, then smallest uid."""

    score_field: str | None = "clip_similarity"
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_caption: NearCaptionConfig = field(default_factory=NearCaptionConfig)
    near_image: NearImageConfig = field(default_factory=NearImageConfig)
    max_bucket: int = 1000  # a bucket with more members is hot: its members fall back to exact keys
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="dedup"))
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_bucket < 2:
            raise ConfigError("max_bucket: must be >= 2")


@dataclass(frozen=True)
class IngestConfig:
    """The whole ingest recipe."""

    source: SourceConfig
    metadata_filters: list[dict[str, Any]] = field(default_factory=list)
    pixel_filters: list[dict[str, Any]] = field(default_factory=list)
    dedup_urls: bool = True  # shorthand for `dedup: {exact: {url: true, caption: false}, near_caption: {enabled: false}}`
    # URL and caption dedup before any download; image keys only exist after it (`curate dedup`).
    dedup: DedupConfig | None = None
    download: DownloadConfig = field(default_factory=DownloadConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    # Downloaded images wait under {output}/_staging/ and only their metadata crosses the shuffle to
    # the shard writers: flat memory on DirectRunner (whose runner process buffers every stage's
    # output). false: the bytes ride through the shuffle (fine on Dataflow's shuffle service).
    stage_images: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        # Build the filters once so a bad filter spec fails at load time, with its path.
        from filters.registry import build_filters

        build_filters(self.metadata_filters, "metadata_filters")
        build_filters(self.pixel_filters, "pixel_filters")

    def metadata_dedup(self) -> DedupConfig | None:
        """The dedup ingest runs before download (URL / caption keys only), or None."""
        if self.dedup is not None:
            return self.dedup
        if self.dedup_urls:
            return DedupConfig(exact=ExactDedupConfig(url=True, caption=False, image=False),
                               near_caption=NearCaptionConfig(enabled=False), near_image=NearImageConfig(enabled=False))
        return None


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

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError("max_new_tokens >= 1, temperature >= 0, 0 < top_p <= 1, top_k >= 0")



# ---------------------------------------------------------------------------------------------
# Pack recipe


@dataclass(frozen=True)
class TilingConfig:
    """InternVL dynamic high resolution: tiles per image (max_num is shared by multi-image samples)."""

    max_num: int = 12
    min_num: int = 1
    use_thumbnail: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_num <= self.max_num:
            raise ConfigError("tiling: 1 <= min_num <= max_num")


@dataclass(frozen=True)
class PackConfig:
    """The whole pack recipe: limits, tokenizer and template, tiling, packer buffer, shards."""

    l_max: int = 16384
    t_max: int = 48
    tokenizer: str = "builtin:smollm2"  # or a local Hugging Face tokenizer folder
    template: Literal["internvl2_5", "tokenizer"] = "internvl2_5"
    system_prompt: str = "default"  # "default": the template's own; "": none; else this text
    truncate: bool = True  # over-long conversations are cut in text only; else rejected
    buffer: int = 256  # packer buffer (items); planning is bounded by it
    image_root: str | None = None  # relative image paths resolve here; default: the jsonl's folder
    max_pixels: int = 89_478_485
    tiling: TilingConfig = field(default_factory=TilingConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="packed", samples_per_shard=5000))
    progress: bool = True

    def __post_init__(self) -> None:
        if self.l_max < 16 or self.t_max < 1 or self.buffer < 1 or self.max_pixels < 1:
            raise ConfigError("l_max >= 16, t_max >= 1, buffer >= 1, max_pixels >= 1")


# ---------------------------------------------------------------------------------------------
# Plan recipe (metadata-only dry run)


@dataclass(frozen=True)
class PlanConfig:
    """`curate plan`: an ingest recipe's metadata steps (filters, URL/caption dedup, pixel filters
    on declared sizes, resize) and a pack recipe, over metadata alone: packs, tokens and tiles
    predicted before any download."""

    ingest: IngestConfig
    pack: PackConfig = field(default_factory=PackConfig)
    style: Literal["caption", "pretrain"] = "caption"  # the conversation each pair becomes (as curate convert)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="plan", samples_per_shard=10_000))
    progress: bool = True


def load_plan_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PlanConfig:
    """A plan recipe whose `ingest:` / `pack:` may name other recipe files (relative to it): `ingest:
    laion.yaml`, or `ingest: {recipe: laion.yaml, <keys merged over it>}`. Overrides merge into
    the plan recipe first (so they may name another recipe), then the named recipes load."""
    path = Path(path)
    data = load_yaml(path)
    for key in ("ingest", "pack"):
        if isinstance(data.get(key), str):
            data[key] = {"recipe": data[key]}
    data = deep_merge(data, overrides or {})
    for key in ("ingest", "pack"):
        value = data.get(key)
        if isinstance(value, dict) and isinstance(value.get("recipe"), str):
            rest = {k: v for k, v in value.items() if k != "recipe"}
            data[key] = deep_merge(load_yaml(path.parent / value["recipe"]), rest)
    return load_config_data(path, PlanConfig, data)


def load_config_data(path: str | Path, cls: type[T], data: dict[str, Any], overrides: dict[str, Any] | None = None) -> T:
    """`data` (read from `path`) + overrides -> `cls`; every error names the file."""
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return build(cls, data, "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
