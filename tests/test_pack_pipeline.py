"""The pack pipeline on DirectRunner: every row accounted for, each failure with its reason,
byte-identical shards in-memory and multi_processing, packs that read back consistent."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from packing.config import PackConfig
from curation.core.config import ShardConfig
from curation.samples.conversations import check_pack_outcomes
from packing.format import iter_packs
from packing.tokenizer import IMG_CONTEXT
from pipelines.pack import run_pack

pytestmark = pytest.mark.slow

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
CFG = PackConfig(l_max=8192, t_max=24, progress=False, shards=ShardConfig(prefix="packed", samples_per_shard=12))


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "_job.json"}


@pytest.fixture(scope="module")
def runs(conv_sample, tmp_path_factory):
    base = tmp_path_factory.mktemp("pack")
    inputs = [str(conv_sample["conversations"]), str(conv_sample["preferences"])]
    mem = run_pack(CFG, inputs, str(base / "mem"), ["--direct_running_mode=in_memory"])
    multi = run_pack(CFG, inputs, str(base / "multi"), MULTI)
    return base, mem, multi


def test_every_row_accounted_for_with_its_reason(runs, conv_sample):
    base, index, _ = runs
    assert check_pack_outcomes(base / "mem", conv_sample["expected"]) == []
    n_lines = sum(1 for f in ("conversations", "preferences") for _ in conv_sample[f].open())
    assert index["totals"]["inputs"] == n_lines == index["totals"]["kept"] + sum(index["reasons"].values())
    assert index["rows"] == {"rows_read": n_lines, "rows_assigned": n_lines, "rows_written": n_lines}  # checked in-stage
    assert index["_metrics"]["inputs"] == n_lines and index["stats"]["truncated"] == 1


def test_in_memory_and_multi_processing_are_byte_identical(runs):
    base, mem, _ = runs
    a, b = outputs(base / "mem"), outputs(base / "multi")
    assert sorted(a) == sorted(b) and mem["num_shards"] > 1
    assert len([n for n in a if n.endswith(".packs.parquet")]) == mem["num_shards"]
    for name in a:
        assert a[name] == b[name], name


def test_packs_are_consistent_and_readable_by_webdataset(runs, tokenizer):
    base, index, _ = runs
    ctx = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    manifest = {r["uid"]: r for p in sorted((base / "mem").glob("*-of-*.parquet")) if not p.name.endswith(".packs.parquet")
                for r in pq.read_table(p).to_pylist() if r["status"] == "kept"}
    seen, n_packs = set(), 0
    for shard in index["shards"]:
        packs = list(iter_packs(str(base / "mem" / shard["tar"])))
        rows = pq.read_table(base / "mem" / f"{shard['name']}.packs.parquet").to_pylist()
        assert [r["pack"] for r in rows] == [p.key for p in packs]
        for p, row in zip(packs, rows):
            n_packs += 1
            assert row["tokens"] == len(p.input_ids) <= 8192 and row["tiles"] == p.meta["tiles"] <= 24
            spans = [sp for s in p.meta["segments"] for sp in s["image_spans"]]
            assert int(np.sum(p.input_ids == ctx)) == sum(256 * p.meta["images"][i]["tiles"] for _, _, i in spans)
            assert {i for _, _, i in spans} == set(range(len(p.meta["images"])))  # every stored image is used
            for s in p.meta["segments"]:
                assert manifest[s["id"]]["pack"] == p.key
                seen.add(s["id"])
                sup = p.labels[s["offset"]: s["offset"] + s["length"]]
                assert s["supervised"] == int(np.sum(sup != -100)) > 0
    assert seen == set(manifest) and len(manifest) == index["totals"]["kept"] and n_packs == index["stats"]["packs"]
    tars = [str(base / "mem" / s["tar"]) for s in index["shards"]]
    assert sum(1 for _ in wds.WebDataset(tars, shardshuffle=False)) == n_packs


def test_rerun_of_a_finished_job_does_nothing(runs, conv_sample):
    base, mem, _ = runs
    before = outputs(base / "mem")
    again = run_pack(CFG, [str(conv_sample["conversations"]), str(conv_sample["preferences"])], str(base / "mem"))
    assert again["config_fingerprint"] == mem["config_fingerprint"] and "_metrics" not in again
    assert outputs(base / "mem") == before
