"""Every stage on a real dask.distributed cluster (a scheduler and 2 worker processes, one thread
each, started here) with `--runner pipelines.dask_runner.DaskRunner`, on the inputs of
tests/test_portable.py: the output must be byte-identical to DirectRunner's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import local_config, output_files

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow
DIRECT = ["--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def loads(tmp_path_factory) -> Path:
    """Where the workers leave one marker per model copy they load (pipelines/annotate.py record_load)."""
    return tmp_path_factory.mktemp("loads")


@pytest.fixture(scope="module")
def dask_args(tmp_path_factory, loads):
    from curation.samples.dask_cluster import dask_cluster

    with dask_cluster(tmp_path_factory.mktemp("dask"), env={"CURATE_MODEL_LOAD_DIR": str(loads)}) as address:
        yield ["--runner", "pipelines.dask_runner.DaskRunner", "--dask_client_address", address]


def both(run, cfg, inputs: list[str], base: Path, dask_args: list[str]) -> tuple[dict, dict]:
    """Run a stage on DirectRunner and on the Dask cluster; returns both indexes."""
    direct = run(cfg, inputs, str(base / "direct"), DIRECT)
    on_dask = run(cfg, inputs, str(base / "dask"), dask_args)
    assert output_files(base / "dask") == output_files(base / "direct")
    assert on_dask["totals"] == direct["totals"] and on_dask["config_fingerprint"] == direct["config_fingerprint"]
    assert on_dask["_metrics"] == {}  # no runner metrics on Dask: every count above came from the graph
    return direct, on_dask


def test_ingest_dedup_pack_on_dask(sample, conv_sample, dask_args, tmp_path):
    from curation.core.config import ShardConfig, load_config
    from filters.dedup.config import DedupConfig
    from packing.config import PackConfig
    from pipelines.dedup.stage import run_dedup
    from pipelines.ingest import run_ingest
    from pipelines.pack import run_pack
    from tests.conftest import CONFIGS

    ingest, _ = both(run_ingest, local_config("laion.yaml"), [str(sample["laion"])], tmp_path / "ingest", dask_args)
    assert ingest["totals"]["kept"] > 40
    dedup_cfg = load_config(CONFIGS / "dedup.yaml", DedupConfig, {"progress": False, "shards": {"samples_per_shard": 30}})
    dedup, _ = both(run_dedup, dedup_cfg, [str(tmp_path / "ingest" / "direct")], tmp_path / "dedup", dask_args)
    assert dedup["totals"]["inputs"] == ingest["totals"]["inputs"]
    pack_cfg = PackConfig(l_max=8192, t_max=24, progress=False, shards=ShardConfig(prefix="packed", samples_per_shard=12))
    pack, _ = both(run_pack, pack_cfg, [str(conv_sample["conversations"]), str(conv_sample["preferences"])],
                   tmp_path / "pack", dask_args)
    assert pack["stats"]["packs"] > 0


def test_plan_on_dask(dask_args, tmp_path):
    from curation.plan.config import load_plan_config
    from curation.samples.laion import generate_laion
    from pipelines.plan import run_plan
    from tests.conftest import CONFIGS

    generate_laion(tmp_path / "meta", 600, part_rows=300, seed=5)
    cfg = load_plan_config(CONFIGS / "plan.yaml", {"progress": False, "ingest": {"progress": False},
                                                   "pack": {"progress": False}, "shards": {"samples_per_shard": 200}})
    plan, _ = both(run_plan, cfg, [str(tmp_path / "meta" / "*.parquet")], tmp_path / "plan", dask_args)
    assert plan["totals"]["inputs"] == 600 and plan["stats"]["packs"] > 0 and plan["reasons"].get("dup_url", 0) > 0


def test_annotate_and_mmpr_on_dask(dask_args, loads, tmp_path):
    from curation.mmpr.config import MmprConfig
    from curation.samples.vqa import write_vqa
    from pipelines.annotate import run_annotate
    from pipelines.mmpr import run_mmpr
    from tests.test_annotate_pipeline import _cfg, text_pair_folder
    from tests.test_mmpr_pipeline import recipe

    folder = text_pair_folder(tmp_path / "pairs")
    annotate, _ = both(run_annotate, _cfg(), [str(folder)], tmp_path / "annotate", dask_args)
    assert annotate["stats"]["conversations"] >= 4
    # each model loaded once per worker process that ran its step, not once per partition
    for step in ("ocr", "llm"):
        pids = [p.name.split("-")[1] for p in loads.glob(f"{step}-*")]
        assert 1 <= len(pids) == len(set(pids)) <= 2, (step, pids)
    vqa = write_vqa(tmp_path / "vqa")
    cfg: MmprConfig = recipe()
    mmpr, _ = both(run_mmpr, cfg, [str(vqa["questions"])], tmp_path / "mmpr", dask_args)
    assert mmpr["stats"]["pairs"] >= 1
