"""Every stage on a real dask.distributed cluster (a scheduler and 2 worker processes, one thread
each, started here) with `--runner pipelines.dask_runner.DaskRunner`, on the inputs of
tests/test_portable.py: the output must be byte-identical to DirectRunner's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import output_files

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow
DIRECT = ["--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def loads(tmp_path_factory) -> Path:
    """Where the workers leave one marker per model copy they load (pipelines/model_handlers.py record_load)."""
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
    from tests import stage_scenarios

    stage_scenarios.ingest_dedup_pack(lambda *a: both(*a, dask_args), sample, conv_sample, tmp_path)


def test_plan_on_dask(dask_args, tmp_path):
    from tests import stage_scenarios

    stage_scenarios.plan(lambda *a: both(*a, dask_args), tmp_path)


def test_annotate_and_mmpr_on_dask(dask_args, loads, tmp_path):
    from tests import stage_scenarios

    stage_scenarios.annotate_mmpr(lambda *a: both(*a, dask_args), tmp_path)
    # each model loaded once per worker process that ran its step, not once per partition
    for step in ("ocr", "llm"):
        pids = [p.name.split("-")[1] for p in loads.glob(f"{step}-*")]
        assert 1 <= len(pids) == len(set(pids)) <= 2, (step, pids)
