"""The ingest pipeline on DirectRunner: every row accounted for, each failure its own reason,
byte-identical shards in-memory and multi_processing, webdataset-readable, resumable."""

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curation.samples.data import check_outcomes
from pipelines.ingest import run_ingest
from curation.core.jobstate import OutputConflict
from tests.conftest import local_config

pytestmark = pytest.mark.slow

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".parquet", ".json")
            and p.name != "_job.json"}


@pytest.fixture(scope="module")
def runs(sample, tmp_path_factory):
    base = tmp_path_factory.mktemp("ingest")
    cfg = local_config("laion.yaml")
    mem = run_ingest(cfg, [str(sample["laion"])], str(base / "mem"), ["--direct_running_mode=in_memory"])
    multi = run_ingest(cfg, [str(sample["laion"])], str(base / "multi"), MULTI)
    return base, mem, multi


def test_every_input_row_is_accounted_for(runs, sample):
    base, index, _ = runs
    n_rows = pq.read_metadata(sample["laion"]).num_rows
    manifest = [r for p in sorted((base / "mem").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(manifest) == n_rows == index["totals"]["inputs"]
    assert index["rows"] == {"rows_read": n_rows, "rows_assigned": n_rows, "rows_written": n_rows}  # checked in-stage
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    assert sum(r["status"] == "kept" for r in manifest) == index["totals"]["kept"]
    assert all(r["reason"] for r in manifest if r["status"] == "rejected")
    assert index["_metrics"]["inputs"] == n_rows


def test_each_failure_case_gets_its_own_reason(runs, sample):
    base, index, _ = runs
    assert check_outcomes(base / "mem", sample["expected"]) == []
    must = {"http_404", "http_500", "http_403", "timeout", "not_an_image", "truncated_image", "decode_error",
            "robots_noai", "redirect_loop", "body_too_large", "empty_body", "connection_error", "decompression_bomb",
            "too_small", "bad_aspect_ratio", "unsupported_scheme", "invalid_url", "missing_url", "dup_url",
            "empty_caption", "placeholder_caption", "caption_too_short", "nsfw", "watermark", "low_clip_similarity",
            "declared_too_small"}
    assert must <= set(index["reasons"])


def test_in_memory_and_multi_processing_are_byte_identical(runs):
    base, mem, multi = runs
    a, b = outputs(base / "mem"), outputs(base / "multi")
    assert sorted(a) == sorted(b) and len([n for n in a if n.endswith(".tar")]) == mem["num_shards"] > 1
    for name in a:
        assert a[name] == b[name], name


def test_tars_read_back_with_plain_webdataset(runs):
    base, index, _ = runs
    tars = sorted(str(p) for p in (base / "mem").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert len(samples) == index["totals"]["kept"]
    for s in samples:
        assert {"jpg", "txt", "json"} <= set(s) and "." not in s["__key__"]
        assert s["jpg"][:2] == b"\xff\xd8"
    names = [s["__key__"] for s in samples]
    assert len(set(names)) == len(names)


def test_rerun_of_finished_job_writes_nothing(runs, sample):
    base, index, _ = runs
    folder = base / "mem"
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    again = run_ingest(local_config("laion.yaml"), [str(sample["laion"])], str(folder), [])
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert again["shards"] == index["shards"]


def test_rerun_of_crashed_job_completes_it(runs, sample, tmp_path):
    base, index, _ = runs
    crashed = tmp_path / "crashed"
    shutil.copytree(base / "mem", crashed)
    # what a crash leaves: no index, one shard never written, another half-written (no marker)
    (crashed / "_index.json").unlink()
    victim, torn = index["shards"][0]["name"], index["shards"][1]["name"]
    for suffix in (".tar", ".parquet"):
        (crashed / f"{victim}{suffix}").unlink()
    (crashed / "_progress" / f"{victim}.json").unlink()
    (crashed / "_progress" / f"{torn}.json").unlink()
    (crashed / f"{torn}.tar").write_bytes(b"partial")
    survivors = {p.name: p.stat().st_mtime_ns for p in crashed.glob("*.tar") if p.stem not in (victim, torn)}
    run_ingest(local_config("laion.yaml"), [str(sample["laion"])], str(crashed), [])
    assert outputs(crashed) == outputs(base / "mem")
    assert {p.name: p.stat().st_mtime_ns for p in crashed.glob("*.tar") if p.stem not in (victim, torn)} == survivors
    assert not [p for p in crashed.iterdir() if p.name.startswith(".tmp-")]


def test_another_job_in_the_same_folder_is_refused(runs, sample):
    base, _, _ = runs
    with pytest.raises(OutputConflict, match="another job"):
        run_ingest(local_config("laion.yaml", image={"image_size": 128}), [str(sample["laion"])], str(base / "mem"), [])


def test_coyo_profile_end_to_end(sample, tmp_path):
    index = run_ingest(local_config("coyo.yaml"), [str(sample["coyo"])], str(tmp_path / "coyo"), [])
    assert check_outcomes(tmp_path / "coyo", sample["expected"]) == []
    rows = [r for p in sorted((tmp_path / "coyo").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert all(r["uid"].startswith("coyo--") and r["uid"][6:].isdigit() for r in rows)  # COYO ids, in the source's namespace
    assert index["source"] == "coyo"


def test_local_image_paths_from_internvl_jsonl(tmp_path, images):
    import json

    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(images["0000.jpg"])
    (root / "b.png").write_bytes(images["palette.png"])
    rows = [
        {"id": "s1", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                          {"from": "gpt", "value": "Coloured shapes on a gradient."}]},
        {"id": "s2", "image": "b.png", "conversations": [{"from": "gpt", "value": "A palette picture."}]},
        {"id": "s3", "image": "../../etc/passwd", "conversations": [{"from": "gpt", "value": "An escape attempt."}]},
        {"id": "s4", "image": "missing.jpg", "conversations": [{"from": "gpt", "value": "Nothing there."}]},
    ]
    meta = tmp_path / "convs.jsonl"
    meta.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    cfg = local_config("internvl_jsonl.yaml", source={"image_root": str(root)})
    index = run_ingest(cfg, [str(meta)], str(tmp_path / "out"), [])
    assert index["totals"] == {"inputs": 5, "kept": 2, "rejected": 3}
    assert index["reasons"] == {"local_file_error": 2, "malformed_row": 1}
    assert os.path.exists(tmp_path / "out" / "_index.json")
