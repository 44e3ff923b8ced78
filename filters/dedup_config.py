"""The dedup recipe: exact keys, near-caption MinHash-LSH, near-image pHash, components. Used by
`curate dedup` and, on metadata alone, inside ingest and plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from curation.core.config import ConfigError, ShardConfig


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
