"""The stages on the same small inputs, each run by `both` (a stage on DirectRunner and on another
runner, their outputs compared by the caller's `both`): shared by tests/test_portable.py and
tests/test_dask_stages.py, so every runner is checked on the same work."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import CONFIGS, local_config

Both = Callable[[Callable, object, list[str], Path], tuple[dict, dict]]  # (run, cfg, inputs, base) -> indexes


def ingest_dedup_pack(both: Both, sample, conv_sample, tmp_path: Path) -> dict[str, tuple[dict, dict]]:
    from curation.core.config import ShardConfig, load_config
    from filters.dedup.config import DedupConfig
    from packing.config import PackConfig
    from pipelines.dedup.stage import run_dedup
    from pipelines.ingest import run_ingest
    from pipelines.pack import run_pack

    ingest = both(run_ingest, local_config("laion.yaml"), [str(sample["laion"])], tmp_path / "ingest")
    assert ingest[0]["totals"]["kept"] > 40
    dedup_cfg = load_config(CONFIGS / "dedup.yaml", DedupConfig, {"progress": False, "shards": {"samples_per_shard": 30}})
    dedup = both(run_dedup, dedup_cfg, [str(tmp_path / "ingest" / "direct")], tmp_path / "dedup")
    assert dedup[0]["totals"]["inputs"] == ingest[0]["totals"]["inputs"]
    pack_cfg = PackConfig(l_max=8192, t_max=24, progress=False, shards=ShardConfig(prefix="packed", samples_per_shard=12))
    pack = both(run_pack, pack_cfg, [str(conv_sample["conversations"]), str(conv_sample["preferences"])],
                tmp_path / "pack")
    assert pack[0]["stats"]["packs"] > 0
    return {"ingest": ingest, "dedup": dedup, "pack": pack}


def plan(both: Both, tmp_path: Path) -> tuple[dict, dict]:
    from curation.plan.config import load_plan_config
    from curation.samples.laion import generate_laion
    from pipelines.plan import run_plan

    generate_laion(tmp_path / "meta", 600, part_rows=300, seed=5)
    cfg = load_plan_config(CONFIGS / "plan.yaml", {"progress": False, "ingest": {"progress": False},
                                                   "pack": {"progress": False}, "shards": {"samples_per_shard": 200}})
    out = both(run_plan, cfg, [str(tmp_path / "meta" / "*.parquet")], tmp_path / "plan")
    index = out[0]
    assert index["totals"]["inputs"] == 600 and index["stats"]["packs"] > 0 and index["reasons"].get("dup_url", 0) > 0
    return out


def annotate_mmpr(both: Both, tmp_path: Path) -> dict[str, tuple[dict, dict]]:
    from curation.samples.vqa import write_vqa
    from pipelines.annotate import run_annotate
    from pipelines.mmpr import run_mmpr
    from tests.test_annotate_pipeline import _cfg, text_pair_folder
    from tests.test_mmpr_pipeline import recipe

    folder = text_pair_folder(tmp_path / "pairs")
    annotate = both(run_annotate, _cfg(), [str(folder)], tmp_path / "annotate")
    assert annotate[0]["stats"]["conversations"] >= 4
    vqa = write_vqa(tmp_path / "vqa")
    mmpr = both(run_mmpr, recipe(), [str(vqa["questions"])], tmp_path / "mmpr")
    assert mmpr[0]["stats"]["pairs"] >= 1
    return {"annotate": annotate, "mmpr": mmpr}
