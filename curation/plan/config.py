"""The plan recipe (`curate plan`, the metadata-only dry run): an ingest recipe plus a pack recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.core.config import ConfigError, ShardConfig, deep_merge, load_config_data, load_yaml
from curation.ingest.config import IngestConfig
from packing.config import PackConfig


@dataclass(frozen=True)
class MissingSize:
    """What a plan assumes for a row with no declared size (many scraped URL + TEXT lists).

    `sizes`: [[width, height, weight], ...] - a size distribution (one entry: a fixed size). Each
    sizeless row draws one size by a seeded hash of its uid, so the plan's tiles follow the
    distribution's own spread of aspect ratios (a mean size would not: InternVL's grid is not
    linear in size) and reruns give the same plan. Such rows are marked `estimated`. Empty: they
    are rejected `no_declared_size`, as a plan cannot know their tiles."""

    # [[width, height], ...] or [[width, height, weight], ...]: whole pixels >= 1, weight > 0
    # (default 1); empty: sizeless rows are rejected no_declared_size
    sizes: list[list[float]] = field(default_factory=list)
    seed: int = 0  # seeds the uid hash that draws each sizeless row's size

    def __post_init__(self) -> None:
        for entry in self.sizes:
            if len(entry) not in (2, 3) or min(entry) <= 0 or any(int(x) != x or x < 1 for x in entry[:2]):
                raise ConfigError(f"missing_size.sizes: {entry!r}: [width, height] or [width, height, weight], "
                                  "whole pixels >= 1 and a weight > 0")

    def draw(self, uid: str) -> tuple[int, int]:
        """The assumed (width, height) of a sizeless row: the uid's hashed point on the cumulative weights."""
        from packing.meta import hashed_fraction

        weights = [e[2] if len(e) == 3 else 1.0 for e in self.sizes]
        point = hashed_fraction(uid, self.seed) * sum(weights)
        for entry, w in zip(self.sizes, weights):
            point -= w
            if point < 0:
                return int(entry[0]), int(entry[1])
        return int(self.sizes[-1][0]), int(self.sizes[-1][1])


@dataclass(frozen=True)
class PlanConfig:
    """`curate plan`: an ingest recipe's metadata steps (filters, URL/caption dedup, pixel filters
    on declared sizes, resize) and a pack recipe, over metadata alone: packs, tokens and tiles
    predicted before any download."""

    ingest: IngestConfig
    pack: PackConfig = field(default_factory=PackConfig)
    style: Literal["caption", "pretrain"] = "caption"  # the conversation each pair becomes (annotate.tasks.plain_tasks)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="plan", samples_per_shard=10_000))
    missing_size: MissingSize = field(default_factory=MissingSize)  # rows with no declared size: assumed, or rejected
    progress: bool = True  # a progress bar per plan worker on stderr (--no-progress: false)


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
