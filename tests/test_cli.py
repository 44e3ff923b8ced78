"""The `curate` console script as a user runs it: Beam options after `--`, clear config errors,
and the README's demo command end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.cli.main import split_beam_args
from tests.conftest import CONFIGS, LOCAL_DOWNLOAD

CURATE = [sys.executable, "-m", "curation.cli"]


def test_split_beam_args():
    assert split_beam_args(["ingest", "--config", "x", "--", "--runner", "DirectRunner"]) == (
        ["ingest", "--config", "x"], ["--runner", "DirectRunner"])
    assert split_beam_args(["demo"]) == (["demo"], [])


def test_config_error_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {name: x, columns: {url: URL}}\ndownload: {threads: many}\n")
    res = subprocess.run(CURATE + ["ingest", "--config", str(bad), "--input", "x", "--output", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "bad.yaml: download.threads: expected int, got str 'many'" in res.stderr


def test_no_matching_input_is_a_clear_error(tmp_path):
    res = subprocess.run(CURATE + ["ingest", "--config", "laion.yaml", "--input", str(tmp_path / "none*.parquet"),
                                   "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2 and "no input files match" in res.stderr


@pytest.mark.slow
def test_ingest_command_passes_beam_options_through(sample, tmp_path):
    recipe = yaml.safe_load((CONFIGS / "coyo.yaml").read_text())
    recipe["download"] = {**recipe["download"], **LOCAL_DOWNLOAD}
    recipe["shards"]["samples_per_shard"] = 40
    cfg = tmp_path / "coyo-local.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    res = subprocess.run(CURATE + ["ingest", "--config", str(cfg), "--input", str(sample["coyo"]), "--output", str(out),
                                   "--no-progress", "--", "--runner", "DirectRunner",
                                   "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "accounting: inputs" in res.stdout and "OK" in res.stdout
    index = json.loads((out / "_index.json").read_text())
    assert index["num_shards"] == 2 and index["totals"]["kept"] > 40


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the whole pipeline on 2 cores, the rater's 300-probe calibration included
def test_demo_command(tmp_path):
    res = subprocess.run(CURATE + ["demo", "--output", str(tmp_path / "demo"), "--no-progress"],
                         capture_output=True, text=True, timeout=2300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "all outcomes as expected" in res.stdout
    for source in ("laion", "coyo"):
        index = json.loads((tmp_path / "demo" / "ingest" / source / "_index.json").read_text())
        assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
        assert index["totals"]["kept"] >= 40
    assert Path(tmp_path / "demo" / "input" / "expected.json").exists()
    video = json.loads((tmp_path / "demo" / "ingest" / "video" / "_index.json").read_text())
    assert video["totals"] == {"inputs": 2, "kept": 2, "rejected": 0}  # one clip read from disk, one downloaded
    dedup = json.loads((tmp_path / "demo" / "dedup" / "_index.json").read_text())
    assert dedup["totals"]["inputs"] == 2 * index["totals"]["inputs"]  # both sources, every row once
    assert dedup["reasons"]["dup_url"] >= index["totals"]["kept"]  # COYO's rows repeat LAION's URLs
    assert dedup["reasons"].get("near_dup_image", 0) >= 3  # one picture stored as CMYK, palette, 16-bit, WebP
    assert "duplicates removed" in res.stdout
    pack = json.loads((tmp_path / "demo" / "pack" / "_index.json").read_text())
    assert pack["kind"] == "packs" and pack["stats"]["packs"] > 0 and pack["stats"]["truncated"] == 1
    assert pack["totals"]["inputs"] == pack["totals"]["kept"] + sum(pack["reasons"].values())
    annotate = json.loads((tmp_path / "demo" / "annotate" / "_index.json").read_text())
    assert annotate["totals"]["inputs"] == dedup["totals"]["inputs"]  # every row carried through
    assert annotate["totals"]["inputs"] == annotate["totals"]["kept"] + sum(annotate["reasons"].values())
    assert annotate["stats"]["conversations"] == annotate["totals"]["kept"] > 0
    assert "conversations:" in res.stdout and "OCR paddleocr" in res.stdout
    assert pack["totals"]["kept"] >= annotate["totals"]["kept"]  # every annotated pair became a packed conversation
    assert "sequences per pack" in res.stdout
    assert "check: OK" in res.stdout  # the packed output streamed through the model core
    metrics = [json.loads(line) for line in (tmp_path / "demo" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 8 and metrics[-1]["loss"] != metrics[0]["loss"]
    fit = [json.loads(line) for line in (tmp_path / "demo" / "train-overfit" / "metrics.jsonl").read_text().splitlines()]
    assert len(fit) == 30 and min(m["loss"] for m in fit[-3:]) <= 0.7 * fit[0]["loss"]  # it learns one pack
    gates = annotate["calibration"]["gates"]
    assert gates["quality"]["enforced"] is False and "low_quality_score" not in annotate["reasons"]  # 135M may not reject
    mmpr = json.loads((tmp_path / "demo" / "mmpr" / "_index.json").read_text())
    assert mmpr["kind"] == "mmpr" and mmpr["stats"]["pairs_correctness"] >= 1 and mmpr["stats"]["pairs_dropout_ntp"] >= 1
    assert mmpr["totals"]["inputs"] == mmpr["totals"]["kept"] + sum(mmpr["reasons"].values())
    mpo = [json.loads(line) for line in (tmp_path / "demo" / "train-mpo" / "metrics.jsonl").read_text().splitlines()]
    assert len(mpo) == 4 and all(m["pairs"] >= 1 for m in mpo) and mpo[-1]["loss"] != mpo[0]["loss"]


@pytest.mark.slow
def test_pack_command(conv_sample, tmp_path):
    out = tmp_path / "packed"
    res = subprocess.run(CURATE + ["pack", "--config", "pack.yaml", "--input", str(conv_sample["conversations"]),
                                   "--input", str(conv_sample["preferences"]), "--output", str(out), "--no-progress",
                                   "--", "--runner", "DirectRunner"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "accounting: inputs" in res.stdout and "token fill" in res.stdout
    index = json.loads((out / "_index.json").read_text())
    assert index["l_max"] == 16384 and index["t_max"] == 48 and index["reasons"]["placeholder_mismatch"] == 1


def test_pack_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "pack.yaml"
    bad.write_text("l_max: 8192\ntemplate: llama3\n")
    res = subprocess.run(CURATE + ["pack", "--config", str(bad), "--input", "x", "--output", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "pack.yaml: template:" in res.stderr and "internvl2_5" in res.stderr


def test_annotate_config_errors_name_the_key(tmp_path):
    recipe = (Path(__file__).parent.parent / "configs" / "annotate.yaml").read_text()
    for bad_text, expected in (
        (recipe.replace("engine: paddleocr", "engine: easyocr"), "annotate.yaml: ocr.engine: expected one of"),
        (recipe.replace("threshold: null ", "threshold: high "), "annotate.yaml: quality.threshold: expected float"),
        (recipe + "\nllm_backend: vllm\n", "annotate.yaml: llm_backend: unknown key"),
        (recipe.replace("{caption}", "{capton}", 1), "unknown placeholder {capton}"),
    ):
        bad = tmp_path / "annotate.yaml"
        bad.write_text(bad_text)
        res = subprocess.run(CURATE + ["annotate", "--config", str(bad), "--input", "x", "--output", str(tmp_path / "o")],
                             capture_output=True, text=True)
        assert res.returncode == 2 and expected in res.stderr, res.stderr[-500:]
        assert "Traceback" not in res.stderr


def test_missing_tokenizer_is_a_clear_error(conv_sample, tmp_path):
    cfg = tmp_path / "pack.yaml"
    cfg.write_text(f"tokenizer: {tmp_path / 'no-such-tokenizer'}\n")
    res = subprocess.run(CURATE + ["pack", "--config", str(cfg), "--input", str(conv_sample["conversations"]),
                                   "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "cannot be loaded" in res.stderr and "Traceback" not in res.stderr
