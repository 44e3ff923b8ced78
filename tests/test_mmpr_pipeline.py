"""MMPR end to end on CPU with real small models, seeded: the model core's smollm2 preset (SmolLM2-
135M-Instruct behind a random vision tower) samples answers WITH the images, the SmolLM2 chat LLM
continues Dropout NTP prefixes WITHOUT them; then `curate pack` (pairs never split) and
`curate train --loss mpo` (finite, changing loss). Plus the stage's per-row logic on given responses."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from curation.core.config import ConfigError, load_config
from curation.annotate.llm import LlmError
from curation.mmpr.pairs import MmprItem
from curation.mmpr.tasks import MmprTask, after_continuation, after_sampling, finish, image_digest, sample_requests
from curation.mmpr.config import MmprConfig
from curation.mmpr.policy import PolicyResponse
from curation.core.reasons import check_reason
from curation.samples.vqa import check_mmpr, write_vqa
from tests.conftest import CONFIGS

CURATE = [sys.executable, "-m", "curation.cli"]
# The production recipe made small enough for 2 CPU cores (4 samples of 40 tokens, one tile per image).
FAST = {
    "correctness": {"samples": 4, "max_pairs": 2},
    "sampling": {"max_new_tokens": 40, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "seed": 0},
    "policy": {"prompt": {"max_num": 1, "use_thumbnail": False}, "batch_size": 4},
    "continuation": {"backend": "transformers", "llm": {"model": "builtin:smollm2", "device": "cpu"}},
    "shards": {"samples_per_shard": 6},
    "progress": False,
}


def recipe(**over) -> MmprConfig:
    from curation.core.config import deep_merge

    return load_config(CONFIGS / "mmpr.yaml", MmprConfig, deep_merge(FAST, over))


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    return write_vqa(tmp_path_factory.mktemp("vqa"))


@pytest.fixture(scope="module")
def mmpr_run(vqa, tmp_path_factory):
    from pipelines.mmpr import run_mmpr

    out = tmp_path_factory.mktemp("mmpr") / "out"
    index = run_mmpr(recipe(), [str(vqa["questions"])], str(out))
    return out, index


@pytest.mark.slow
def test_mmpr_accounts_for_every_row_and_makes_both_kinds_of_pair(mmpr_run, vqa):
    out, index = mmpr_run
    assert check_mmpr(out, vqa["expected"]) == []
    totals = index["totals"]
    assert index["rows"]["rows_read"] == index["rows"]["rows_written"] == totals["inputs"]  # checked in-stage
    n_lines = len(vqa["questions"].read_text().splitlines())
    assert totals["inputs"] == n_lines == totals["kept"] + sum(index["reasons"].values())
    assert all(check_reason(r) for r in index["reasons"])
    stats = index["stats"]
    assert stats["pairs_correctness"] >= 1 and stats["pairs_dropout_ntp"] >= 1, stats
    assert stats["responses"] > 0 and 0 < stats["correct_responses"] < stats["responses"]
    pairs = [json.loads(line) for p in sorted(out.glob("*.jsonl")) for line in p.read_text().splitlines()]
    gt = {"q0": "19", "q1": "3", "q2": "12", "q5": "4"}
    for pair in pairs:
        assert pair["question"].endswith("'Final Answer: <answer>'.")  # the prompt the responses answered
        if pair["method"] == "correctness":
            assert pair["chosen_meta"]["correct"] and not pair["rejected_meta"]["correct"]
            assert pair["chosen"].strip() not in pair["rejected"]
            item = pair["id"].rsplit("_", 1)[0]
            if item in gt:
                # judged as a number: "4 feet" or "4feet" is 4 (the checker reads the number, the unit aside)
                number = re.search(r"-?\d+(?:\.\d+)?", pair["chosen_meta"]["answer"])
                assert pair["answer_gt"] == gt[item] and number and number.group() == gt[item], pair["chosen_meta"]
        else:
            assert pair["method"] == "dropout_ntp" and pair["answer_gt"] is None
            prefix = pair["chosen"][:pair["rejected_meta"]["prefix_chars"]]  # cut by words: no tokenizer named
            assert len(prefix.split()) == len(pair["chosen"].split()) // 2 and pair["rejected_meta"]["with_image"] is False
            assert pair["rejected"].startswith(prefix)
            assert pair["rejected_meta"]["policy"].startswith("transformers:")
    # the tar holds every kept question's pairs and all its sampled responses
    import webdataset as wds

    tars = [str(t) for t in sorted(out.glob("*.tar"))]
    docs = [json.loads(s["json"]) for s in wds.WebDataset(tars, shardshuffle=False, empty_check=False)]
    assert sum(len(d["pairs"]) for d in docs) == len(pairs) and all(d["responses"] for d in docs)


@pytest.mark.slow
def test_rerun_of_a_finished_mmpr_job_does_nothing(mmpr_run, vqa):
    from pipelines.mmpr import run_mmpr

    out, index = mmpr_run
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    again = run_mmpr(recipe(), [str(vqa["questions"])], str(out))
    assert again["config_fingerprint"] == index["config_fingerprint"] and "_metrics" not in again
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
def test_mmpr_then_pack_then_mpo_training(mmpr_run, tmp_path, tokenizer):
    from packing.format import iter_packs

    out, index = mmpr_run
    packed = tmp_path / "packed"
    res = subprocess.run(CURATE + ["pack", "--config", str(CONFIGS / "pack.yaml"), "--input", str(out / "*.jsonl"),
                                   "--output", str(packed), "--no-progress"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    pack_index = json.loads((packed / "_index.json").read_text())
    assert pack_index["totals"]["kept"] == index["stats"]["pairs"]
    roles: dict[str, list[str]] = {}
    for shard in pack_index["shards"]:
        for p in iter_packs(str(packed / shard["tar"])):
            for s in p.meta["segments"]:
                roles.setdefault(s["id"], []).append((p.key, s["role"]))
    for uid, segs in roles.items():  # a pair is one unit: chosen then rejected, in the same pack
        assert [r for _, r in segs] == ["chosen", "rejected"] and len({k for k, _ in segs}) == 1, (uid, segs)
    res = subprocess.run(CURATE + ["train", "--config", str(CONFIGS / "train.yaml"), "--loss", "mpo", "--data", str(packed),
                                   "--steps", "4", "--output", str(tmp_path / "train"), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    metrics = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses) and len(set(losses)) > 1, losses
    assert all(m["pairs"] >= 1 and np.isfinite(m["dpo"]) for m in metrics)


@pytest.mark.slow
def test_mmpr_keeps_images_only_in_its_tars_and_exports_them_for_internvl(mmpr_run, tmp_path):
    """No image is stored outside a tar; `curate export internvl` writes the pairs with `image` a
    relative file path holding the tar member's bytes, each image once."""
    from curation.cli.main import main
    from curation.core.image_refs import parse_member_ref, read_image_bytes

    out, index = mmpr_run
    assert not (out / "images").exists() and {p.suffix for p in out.iterdir() if p.is_file()} <= {
        ".tar", ".parquet", ".jsonl", ".json"}
    target = tmp_path / "internvl"
    assert main(["export", "internvl", "--input", str(out), "--output", str(target)]) == 0
    names = set()
    for src in sorted(out.glob("*.jsonl")):
        ours = [json.loads(line) for line in src.read_text().splitlines()]
        theirs = [json.loads(line) for line in (target / src.name).read_text().splitlines()]
        assert [{**r, "image": None} for r in ours] == [{**r, "image": None} for r in theirs]
        for a, b in zip(ours, theirs):
            refs = a["image"] if isinstance(a["image"], list) else [a["image"]]
            files = b["image"] if isinstance(b["image"], list) else [b["image"]]
            for ref, rel in zip(refs, files):
                assert rel == f"images/{src.stem}/{parse_member_ref(ref).member}"
                assert (target / rel).read_bytes() == read_image_bytes(str(out / ref), lambda p: open(p, "rb"))
                names.add(rel)
    assert index["stats"]["pairs"] > 0 and sorted(names) == sorted(
        str(p.relative_to(target)) for p in (target / "images").rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# The per-row logic on given responses (no model)

ITEM = MmprItem("q", ("a.png",), "What is 2 + 2?", "4", "number")


def _task(item=ITEM) -> MmprTask:
    return MmprTask(item.id, "f.jsonl", 0, item, image_paths=[""], image_exts=["png"], embedded=[b"png"])


def _resp(text: str, finish_reason: str = "stop") -> PolicyResponse:
    return PolicyResponse(text, finish_reason, {"backend": "test"})


def test_truncated_responses_are_never_chosen_and_all_truncated_is_too_long():
    cfg = recipe()
    right = "2 and 2 make 4.\nFinal Answer: 4"
    wrong = "2 and 2 make 5.\nFinal Answer: 5"
    task = after_sampling(_task(), [_resp(right, "length"), _resp(wrong), _resp(right + " ")], cfg, "p")
    assert task.reason is None and len(task.pairs) == 1 and task.pairs[0]["rejected"] == wrong
    assert [r["correct"] for r in task.responses] == [None, False, True]
    task = after_sampling(_task(), [_resp(right, "length")] * 3, cfg, "p")
    assert task.reason == "too_long" and not task.pairs


def test_backend_errors_and_no_method():
    cfg = recipe()
    task = after_sampling(_task(), [LlmError("llm_error", "HTTP 500")] * 2, cfg, "p")
    assert task.reason == "llm_error" and "HTTP 500" in task.detail
    no_dropout = recipe(dropout_ntp={"enabled": False})
    task = _task(MmprItem("d", ("a.png",), "Describe the image."))
    assert sample_requests(task, no_dropout, False, ()) == [] and finish(task).reason == "no_applicable_method"


def test_dropout_for_all_uses_a_right_response_and_both_methods_combine():
    cfg = recipe(dropout_ntp={"apply_to": "all"})
    right = "Two plus two is four, as counting shows.\nFinal Answer: 4"
    wrong = "Two plus two is five.\nFinal Answer: 5"
    task = after_sampling(_task(), [_resp(wrong), _resp(right)], cfg, "p")
    assert task.chosen == right and len(task.pairs) == 1  # the correctness pair, waiting for the continuation
    task = after_continuation(task, _resp(" two is five, as I recall.\nFinal Answer: 5"), cfg, "c")
    assert task.reason is None and [p["method"] for p in task.pairs] == ["correctness", "dropout_ntp"]
    assert task.pairs[1]["rejected"].startswith("Two plus two is four,")
    # a failed continuation leaves the correctness pair standing; with no pair at all, the first reason wins
    task = after_sampling(_task(), [_resp(wrong), _resp(right)], cfg, "p")
    assert after_continuation(task, LlmError("llm_error", "timeout"), cfg, "c").pairs
    task = after_sampling(_task(), [_resp(wrong), _resp(wrong.replace("5", "6"))], cfg, "p")
    assert task.reason == "all_wrong" and "dropout_ntp" in task.detail


def test_requests_are_seeded_per_question_not_per_batch():
    cfg = recipe()
    task = _task()
    batched = sample_requests(task, cfg, False, (b"png",))
    assert len(batched) == 4 and len({r.seed for r in batched}) == 1  # one seeded batch per question
    per_request = sample_requests(task, cfg, True, (b"png",))
    assert len({r.seed for r in per_request}) == 4  # a vLLM / server request each: distinct seeds
    other = sample_requests(_task(MmprItem("other", ("a.png",), "What is 2 + 2?", "4", "number")), cfg, False, (b"png",))
    assert other[0].seed != batched[0].seed and other[0].prompt == batched[0].prompt
    assert batched[0].history and batched[0].history[1].role == "assistant"  # the few-shot examples


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="text only"):
        recipe(policy={"backend": "transformers"})
    with pytest.raises(ConfigError, match="temperature"):
        recipe(sampling={"temperature": 0.0})
    with pytest.raises(ConfigError, match=r"prompt.templates.final_answer"):
        recipe(prompt={"templates": {"final_answer": "{question} {answer}", "boxed": "{question}"}})
    with pytest.raises(ConfigError, match="dropout_ntp.ratio"):
        recipe(dropout_ntp={"ratio": 1.5})
    with pytest.raises(ConfigError, match=r"policy\.llm\.base_url|base_url"):
        recipe(policy={"backend": "openai"})


def test_smollm2_preset_needs_its_own_tokenizer():
    with pytest.raises(ConfigError, match="builtin:smollm2"):
        recipe(policy={"model": {"preset": "smollm2", "tokenizer": "/models/other"}})



@pytest.mark.slow
def test_inspect_reads_mmpr_folders(mmpr_run, tmp_path):
    import shutil

    out, index = mmpr_run
    res = subprocess.run(CURATE + ["inspect", "summary", str(out), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kind"] == "preference" and doc["accounting_ok"] and doc["stats"]["pairs"] == index["stats"]["pairs"]
    assert doc["distributions"]["pairs_per_question"]["count"] == index["totals"]["kept"]
    res = subprocess.run(CURATE + ["inspect", "validate", str(out)], capture_output=True, text=True)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr
    res = subprocess.run(CURATE + ["inspect", "show", str(out), "--id", "q0"], capture_output=True, text=True)
    assert res.returncode == 0 and "What is 12 + 7?" in res.stdout and "responses:" in res.stdout, res.stderr
    res = subprocess.run(CURATE + ["inspect", "show", str(out), "--index", "1"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("id: "), res.stderr  # once aborted at exit (pyarrow threads)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    jsonl = next(p for p in sorted(broken.glob("*.jsonl")) if p.stat().st_size)
    jsonl.write_text(jsonl.read_text().replace('"chosen": "', '"chosen": "edited ', 1))
    res = subprocess.run(CURATE + ["inspect", "validate", str(broken)], capture_output=True, text=True)
    assert res.returncode == 1 and f"{jsonl.name}: sha256 differs" in res.stdout and "pairs differ" in res.stdout
    # a pair naming its image at a wrong byte range, or another question's image, is found
    shutil.rmtree(broken)
    shutil.copytree(out, broken)
    jsonl = next(p for p in sorted(broken.glob("*.jsonl")) if p.stat().st_size)
    from curation.core.image_refs import member_ref, parse_member_ref

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    refs = [parse_member_ref(r["image"] if isinstance(r["image"], str) else r["image"][0]) for r in rows]
    first = refs[0]
    other = next((r for r, ref in zip(rows, refs) if ref.member.split(".")[0] != first.member.split(".")[0]), None)
    if other is not None:  # a pair of another question naming the first question's image
        other["image"] = member_ref(first.tar, first.member, first.offset, first.size)
    rows[0]["image"] = member_ref(first.tar, first.member, first.offset + 512, first.size)
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    res = subprocess.run(CURATE + ["inspect", "validate", str(broken)], capture_output=True, text=True)
    assert res.returncode == 1 and "at that byte range" in res.stdout, res.stdout
    assert other is None or "belongs to another question" in res.stdout, res.stdout


def test_a_uid_kept_twice_keeps_the_first_row_only():
    import io

    from curation.mmpr.shards import write_mmpr_shard

    def kept(row: int) -> MmprTask:
        task = _task()
        task.source_row = row
        task.pairs = [{"id": f"q_c{row}", "method": "correctness", "chosen": "a", "rejected": "b"}]
        return task

    def on_disk(row: int) -> MmprTask:
        task = kept(row)
        task.uid = f"q{row}"
        task.image_paths, task.embedded, task.image_digests = [f"/images/{row}.png"], [], [image_digest(b"png")]
        return task

    loaded = []
    tar = io.BytesIO()
    report, extra = write_mmpr_shard(0, "mmpr-00000-of-00001", [kept(7), kept(3)], tar, io.BytesIO(),
                                     lambda path: loaded.append(path) or b"png")
    assert report.kept == 1 and report.reasons == {"dup_uid": 1} and report.rows == 2
    rows = [json.loads(line) for line in extra["mmpr-00000-of-00001.jsonl"].decode().splitlines()]
    assert [r["id"] for r in rows] == ["q_c3"] and loaded == []  # its image came from its row, not a file
    # the pair names its image inside the tar, by byte range, and nothing is written beside the shard
    from curation.core.image_refs import parse_member_ref, read_range

    ref = parse_member_ref(rows[0]["image"])
    assert ref.tar == "mmpr-00000-of-00001.tar" and ref.member == "q.0.png"
    assert read_range(tar, ref.offset, ref.size, "tar") == b"png"
    # an image gone or changed since the job first read it rejects its own question, not the shard
    files = {"/images/1.png": b"png", "/images/2.png": b"PNG, edited"}

    def read(path: str) -> bytes:
        loaded.append(path)
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    tar = io.BytesIO()
    report, extra = write_mmpr_shard(0, "s", [on_disk(1), on_disk(2), on_disk(4)], tar, io.BytesIO(), read)
    assert (report.kept, report.rows, report.reasons) == (1, 3, {"local_file_error": 2})
    assert sorted(loaded) == ["/images/1.png", "/images/2.png", "/images/4.png"]
    rows = [json.loads(line) for line in extra["s.jsonl"].decode().splitlines()]
    assert [r["id"] for r in rows] == ["q_c1"] and "q1.0.png" in rows[0]["image"]
    import tarfile

    tar.seek(0)
    assert sorted(tarfile.open(fileobj=tar).getnames()) == ["q1.0.png", "q1.json"]


def test_the_policy_step_rereads_images_and_rejects_a_question_whose_image_is_gone(tmp_path):
    """PolicyHandler's own batch logic, with a stand-in for the model's generate (the real policy
    runs in the slow tests above): requests carry the bytes read again from disk; a question whose
    file vanished since the read step is rejected `local_file_error`, with no request sent."""
    from pipelines.mmpr import PolicyHandler, _after_sampling

    cfg = recipe()
    (tmp_path / "a.png").write_bytes(b"png")

    def on_disk(uid: str, name: str) -> MmprTask:
        task = _task(MmprItem(uid, (name,), "What is 2 + 2?", "4", "number"))
        task.image_paths, task.embedded, task.image_digests = [str(tmp_path / name)], [], [image_digest(b"png")]
        return task

    class Model:
        sent: list = []

        def info(self):
            return {"per_request_seed": False, "label": "stand-in"}

        def generate(self, requests, sampling):
            self.sent += requests
            return [_resp("2 + 2 = 4.\nFinal Answer: 4") for _ in requests]

    model = Model()
    handler = PolicyHandler(cfg.policy, cfg, "sample")
    here, gone = on_disk("here", "a.png"), on_disk("gone", "missing.png")
    results = list(handler.run_inference([here, gone], model))
    assert len(model.sent) == cfg.correctness.samples and all(r.images == (b"png",) for r in model.sent)
    assert [len(r.inference) for r in results] == [cfg.correctness.samples, 0]
    assert gone.reason == "local_file_error" and "missing.png" in gone.detail
    routed = list(_after_sampling(results[1], cfg))
    assert len(routed) == 1 and routed[0].tag == "done" and routed[0].value.reason == "local_file_error"
