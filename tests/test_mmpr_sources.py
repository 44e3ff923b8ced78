"""`curate mmpr` reads the VQA benchmarks' own files: ScienceQA / A-OKVQA / ChartQA / DocVQA parquet
with image structs and MathVista jsonl with image paths (fixtures written by
curation/samples/vqa_formats.py in each dataset's column layout), each row mapped to the answer type
its benchmark scores by, bad rows rejected with a reason."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.mmpr.answers import is_correct
from curation.mmpr.config import MmprImageConfig, MmprSourceConfig
from curation.core.image_refs import read_image_bytes
from curation.mmpr.tasks import load_images, task_images
from curation.mmpr.shards import read_tasks
from curation.mmpr.sources import SchemaError, detect_schema
from curation.samples.vqa_formats import EXPECTED, write_vqa_formats


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    return write_vqa_formats(tmp_path_factory.mktemp("vqa_formats"))


def _read(path, source=None):
    with open(path, "rb") as f:
        tasks = list(read_tasks(f, str(path), source))
    return [load_images(t, str(path.parent), MmprImageConfig(), lambda p, n: open(p, "rb").read(n)) for t in tasks]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_benchmark_shape_maps_to_its_answer_type(formats, name):
    tasks = _read(formats[name])
    assert len(tasks) == len(EXPECTED[name])
    for task, want in zip(tasks, EXPECTED[name]):
        if isinstance(want, str):
            assert task.reason == want, (task.uid, task.detail)
            continue
        answer_type, gt, n_options, n_images = want
        assert task.reason is None, (name, task.detail)
        item = task.item
        images = task_images(task, lambda p: open(p, "rb").read())  # what the policy and the writer read again
        assert (item.answer_type, item.answer_gt, len(item.options), len(images)) == want
        assert all(d[:8] == b"\x89PNG\r\n\x1a\n" or d[:3] == b"\xff\xd8\xff" for d in images)
        assert len(task.image_exts) == n_images and set(task.image_exts) <= {"png", "jpg"}
        if n_options:  # options are listed in the question, and the right one is judged right by letter or text
            assert "Options: (A) " in item.question
            letter = gt
            assert is_correct(letter, item.answer_gt, item.answer_type, item.options)
            assert is_correct(item.options[ord(letter) - 65], item.answer_gt, item.answer_type, item.options)
            wrong = next(chr(65 + i) for i in range(n_options) if chr(65 + i) != letter)
            assert not is_correct(wrong, item.answer_gt, item.answer_type, item.options)
        else:
            assert is_correct(gt if isinstance(gt, str) else gt[0], item.answer_gt, item.answer_type)


def test_ids_rows_and_schemas(formats):
    sqa = _read(formats["scienceqa.parquet"])
    assert "Context: Read the sign." in sqa[0].item.question  # ScienceQA's hint is the context
    assert "index" in sqa[2].detail  # the answer index past the choices is named
    again = _read(formats["scienceqa.parquet"])
    assert [t.uid for t in sqa] == [t.uid for t in again] and len({t.uid for t in sqa}) == 3  # content ids, stable
    assert [t.uid for t in _read(formats["aokvqa.parquet"])] == ["22MexNkBPpdZGX6sxbxVBH", "2AanW5vmrTWgeZtDzDmNMR"]
    mv = _read(formats["mathvista.jsonl"])
    assert mv[2].item.question.endswith("(Unit: cm)") and "not one of the choices" in mv[3].detail
    # the recipe can name the schema and override the answer type: A-OKVQA's ten direct answers, VQA accuracy
    direct = _read(formats["aokvqa.parquet"], MmprSourceConfig(schema="aokvqa", answer_type="vqa"))
    item = direct[0].item
    assert item.answer_type == "vqa" and len(item.answer_gt) == 10 and item.options == ()
    assert is_correct("reading", item.answer_gt, "vqa") and not is_correct("eating", item.answer_gt, "vqa")
    # a named schema that does not fit says which keys the rows have
    wrong = _read(formats["chartqa.parquet"], MmprSourceConfig(schema="docvqa"))
    assert all(t.reason == "malformed_row" and "keys: human_or_machine, image, label, query" in t.detail for t in wrong)


def test_detection_and_unknown_schema(tmp_path):
    assert detect_schema({"question": "q", "choices": [], "answer": 0}) == "scienceqa"
    assert detect_schema({"query": "q", "label": ["1"]}) == "chartqa"
    assert detect_schema({"id": "1", "image": "a.png", "question": "q"}) == "mmpr"
    with pytest.raises(SchemaError, match="keys: caption, url"):
        detect_schema({"url": "http://x", "caption": "a dog"})
    path = tmp_path / "captions.parquet"
    pq.write_table(pa.Table.from_pylist([{"url": "http://x/1.jpg", "caption": "a dog"}] * 2), path)
    tasks = _read(path)
    assert [t.reason for t in tasks] == ["malformed_row"] * 2 and "no known question schema" in tasks[0].detail
    # an image struct with neither bytes nor a path is the row's problem, not the file's
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "image": {"bytes": None, "path": None}, "question": "q"}) + "\n"
                   + json.dumps({"id": "y", "image": "a.png", "question": "q"}) + "\n")
    tasks = _read(bad)
    assert tasks[0].reason == "malformed_row" and "image struct" in tasks[0].detail
    assert tasks[1].reason == "local_file_error"  # a.png does not exist


def test_a_torn_parquet_file_is_one_unreadable_row(formats, tmp_path):
    data = formats["docvqa.parquet"].read_bytes()
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(data[: len(data) // 2])
    with open(torn, "rb") as f:
        tasks = list(read_tasks(f, str(torn)))
    assert [t.reason for t in tasks] == ["unreadable_file"] and tasks[0].detail.startswith("parquet reader")


@pytest.mark.slow
def test_mmpr_job_on_benchmark_parquet_writes_the_embedded_images(formats, tmp_path):
    from curation.core.config import deep_merge, load_config
    from curation.mmpr.config import MmprConfig
    from pipelines.mmpr import run_mmpr
    from tests.conftest import CONFIGS

    over = {"correctness": {"samples": 2, "max_pairs": 1},
            "sampling": {"max_new_tokens": 40, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "seed": 0},
            "policy": {"prompt": {"max_num": 1, "use_thumbnail": False}}, "progress": False,
            # a hot, full-vocabulary continuation: it never reproduces the chosen answer, so a pair is certain
            # whatever the sampled texts (they vary with float rounding across processes)
            "continuation_sampling": {"max_new_tokens": 16, "temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": 0}}
    cfg = load_config(CONFIGS / "mmpr.yaml", MmprConfig, deep_merge({}, over))
    # our own schema as parquet, images as structs and no ground truth: Dropout NTP pairs
    docs = pq.read_table(formats["docvqa.parquet"]).to_pylist()
    own = tmp_path / "own.parquet"
    asks = ["What is 2 + 3?", "What is 7 - 4?", "How many legs does a cat have?"]
    pq.write_table(pa.Table.from_pylist([{"id": f"own{k}", "image": docs[k % 2]["image"], "question": f"<image>\n{q}"}
                                         for k, q in enumerate(asks)]), own)
    out = tmp_path / "out"
    index = run_mmpr(cfg, [str(formats["docvqa.parquet"]), str(own)], str(out))
    rows = {r["uid"]: r for s in index["shards"] for r in pq.read_table(out / s["manifest"]).to_pylist()}
    assert len(rows) == 5 and rows["52212"]["answer_type"] == "anls" and rows["52212"]["samples"] == 2
    assert all(r["stage"] != "read" for r in rows.values())  # every image came out of the parquet bytes
    pairs = [json.loads(line) for s in index["shards"] for line in (out / f"{s['name']}.jsonl").read_text().splitlines()]
    assert pairs, [(r["reason"], r["detail"]) for r in rows.values()]
    sources = {r["image"]["bytes"] for r in docs}
    for pair in pairs:
        images = pair["image"] if isinstance(pair["image"], list) else [pair["image"]]
        assert images and all(read_image_bytes(str(out / p), lambda f: open(f, "rb")) in sources for p in images)
