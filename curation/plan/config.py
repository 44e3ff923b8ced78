"""The plan recipe (`curate plan`, the metadata-only dry run): an ingest recipe plus a pack recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.core.config import ShardConfig, deep_merge, load_config_data, load_yaml
from curation.ingest.config import IngestConfig
from packing.config import PackConfig


@dataclass(frozen=True)
class PlanConfig:
    """`curate plan`: an ingest recipe's metadata steps (filters, URL/caption dedup, pixel filters
    on declared sizes, resize) and a pack recipe, over metadata alone: packs, tokens and tiles
    predicted before any download."""

    ingest: IngestConfig
    pack: PackConfig = field(default_factory=PackConfig)
    style: Literal["caption", "pretrain"] = "caption"  # the conversation each pair becomes (annotate.tasks.plain_tasks)
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
