"""`curate pack --meta`: an InternVL meta file with two datasets (repeat_time 0.5 and 2, their own
roots and max_dynamic_patch), written here in InternVL's layout over the conversation sample."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile

import pyarrow.parquet as pq
import pytest

from curation.core.config import ConfigError
from packing.meta import copies, datasets_from_stats, load_meta


def test_repeat_time_copies_are_deterministic_and_distinct():
    uids = [f"u{k}" for k in range(4000)]
    half = [copies(u, 0.5) for u in uids]
    assert half == [copies(u, 0.5) for u in uids]  # seeded: the same rows every run
    kept = sum(len(c) for c in half)
    assert 1800 < kept < 2200 and all(c in ([], [u]) for c, u in zip(half, uids))
    assert all(copies(u, 2) == [u, f"{u}_r1"] for u in uids[:50])
    extra = sum(len(copies(u, 1.25)) for u in uids)
    assert 4900 < extra < 5100 and len({x for u in uids for x in copies(u, 3.5)}) == sum(len(copies(u, 3.5)) for u in uids)


def test_meta_file_errors_name_the_dataset(tmp_path):
    path = tmp_path / "meta.json"
    ok = load_meta(str(path), json.dumps({"a": {"root": "img/", "annotation": "a.jsonl", "repeat_time": 0.5,
                                               "max_dynamic_patch": 6, "data_augment": True, "length": 10}}))
    assert ok[0].annotation == str(tmp_path / "a.jsonl") and ok[0].root == str(tmp_path / "img")
    assert ok[0].repeat_time == 0.5 and ok[0].max_dynamic_patch == 6 and ok[0].data_augment
    for doc, message in (({"a": {"root": "x"}}, "needs an `annotation`"),
                         ({"a": {"annotation": "a.jsonl", "repeat": 2}}, "unknown key 'repeat'"),
                         ({"a": {"annotation": "a.jsonl", "repeat_time": 0}}, "repeat_time"),
                         ({"a": {"annotation": "a.jsonl", "max_dynamic_patch": "6"}}, "max_dynamic_patch"),
                         ([1, 2], "an object of datasets")):
        with pytest.raises(ConfigError, match=message):
            load_meta(str(path), json.dumps(doc))


@pytest.mark.slow
def test_pack_meta_mixture(conv_sample, tmp_path):
    # two datasets from the sample's conversations, each file in its own folder with its images elsewhere
    rows = [line for line in conv_sample["conversations"].read_text().splitlines() if line.strip()]

    def renamed(line: str, name: str) -> str:  # ids say which dataset a unit came from; broken rows stay broken
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return line
        return json.dumps(dict(row, id=f"{name}-{row['id']}")) if isinstance(row, dict) and "id" in row else line

    for name in ("caps", "docs"):
        (tmp_path / name).mkdir()
        shutil.copytree(conv_sample["images"], tmp_path / name / "images")
        (tmp_path / name / "train.jsonl").write_text("".join(renamed(line, name) + "\n" for line in rows))
    meta = {"caps": {"root": "caps", "annotation": "caps/train.jsonl", "repeat_time": 0.5, "data_augment": False,
                     "length": len(rows)},
            "docs": {"root": "docs", "annotation": "docs/train.jsonl", "repeat_time": 2, "max_dynamic_patch": 2,
                     "data_augment": True, "length": len(rows)}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "packed"
    done = subprocess.run([sys.executable, "-m", "curation.cli", "pack", "--config", "configs/pack.yaml", "--no-progress",
                           "--meta", str(tmp_path / "meta.json"), "--output", str(out)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "meta datasets" in done.stdout and "text-only : multimodal tokens" in done.stdout
    index = json.loads((out / "_index.json").read_text())
    per = datasets_from_stats(index["stats"])
    manifest = [r for s in index["shards"] for r in pq.read_table(out / s["manifest"]).to_pylist()]
    caps = [r for r in manifest if r["source_file"] == "caps/train.jsonl"]
    docs = [r for r in manifest if r["source_file"] == "docs/train.jsonl"]
    assert len(caps) == len(rows) and len(docs) >= 2 * len(rows) - 4  # copies (bad rows are rejected once)
    subsampled = [r for r in caps if r["reason"] == "subsampled"]
    assert 0 < len(subsampled) < len(rows)
    assert per["caps"]["rows"] == len(caps) and per["docs"]["kept"] == sum(r["status"] == "kept" for r in docs)
    assert per["docs"]["kept"] > 1.5 * per["caps"]["kept"]
    kept_docs = {r["uid"] for r in docs if r["status"] == "kept"}
    assert any(u.endswith("_r1") and u[:-3] in kept_docs for u in kept_docs)  # a repeat has its own uid
    assert sum(d["tokens"] for d in per.values()) == index["stats"]["tokens"]
    # docs' max_dynamic_patch 2: no image of that dataset tiles past it; caps keeps the recipe's 12
    budgets: dict[str, set[int]] = {"caps": set(), "docs": set()}
    dataset_of = {r["uid"]: r["source_file"].split("/")[0] for r in manifest}
    for s in index["shards"]:
        with tarfile.open(out / s["tar"]) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    for im in json.loads(tar.extractfile(m).read())["images"]:
                        budgets.get(dataset_of.get(im["unit"], ""), set()).add(im["max_num"])
    assert budgets["docs"] and max(budgets["docs"]) <= 2 and max(budgets["caps"]) > 2
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    shown = subprocess.run([sys.executable, "-m", "curation.cli", "inspect", "summary", str(out), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["datasets"] == per
