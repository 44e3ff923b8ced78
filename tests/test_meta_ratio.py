"""A pack recipe's target text-only : multimodal token ratio over a meta file, reached by one
deterministic weight per dataset on its repeat_time, recorded in `_index.json` and shown."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from packing.meta import MetaDataset, load_meta, ratio_weights


def ds(name: str, repeat: float = 1.0) -> MetaDataset:
    return MetaDataset(name, f"/d/{name}.jsonl", "/d", repeat)


def test_ratio_weights_solve_for_the_target_and_pick_the_side_by_policy():
    counts = {"text": {"text": 9000, "multimodal": 0}, "mm": {"text": 0, "multimodal": 6000},
              "mixed": {"text": 500, "multimodal": 3000}}
    datasets = [ds("text"), ds("mm"), ds("mixed")]
    plan = ratio_weights(counts, datasets, [1, 3])
    assert plan.before == pytest.approx(9500 / 9000)
    f = (9000 / 3 - 500) / 9000  # the text side's factor: (f 9000 + 500) / 9000 = 1/3
    assert plan.weights == {"text": pytest.approx(f), "mm": 1.0, "mixed": 1.0}
    assert plan.expected == pytest.approx(1 / 3)
    up = ratio_weights(counts, datasets, [1, 3], by="repeat")  # too much text: repeat the multimodal side
    assert up.weights == {"text": 1.0, "mm": pytest.approx(1 / f), "mixed": pytest.approx(1 / f)}
    assert up.expected == pytest.approx(1 / 3)
    # repeat_time counts: a multimodal dataset already repeated 3x needs less text cut
    tripled = ratio_weights(counts, [ds("text"), ds("mm", 3.0), ds("mixed")], [1, 3])
    assert tripled.weights["text"] > plan.weights["text"] and tripled.expected == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="cannot be reached"):
        ratio_weights({"mm": {"text": 0, "multimodal": 10}}, [ds("mm")], [1, 3])


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_pack_reaches_a_target_ratio_over_a_text_and_a_multimodal_dataset(tmp_path):
    from curation.cli.reports import print_pack_report
    from curation.core.shardset import ShardSet
    from curation.inspection.summary import summarize
    from packing.config import PackConfig
    from pipelines.pack import run_pack

    (tmp_path / "text").mkdir()
    (tmp_path / "mm" / "images").mkdir(parents=True)
    words = " ".join(f"w{k}" for k in range(120))
    with open(tmp_path / "text" / "train.jsonl", "w") as f:
        for k in range(120):
            f.write(json.dumps({"id": k, "conversations": [{"from": "human", "value": f"Tell me {k}."},
                                                           {"from": "gpt", "value": words}]}) + "\n")
    (tmp_path / "mm" / "images" / "a.png").write_bytes(png(448, 448))
    with open(tmp_path / "mm" / "train.jsonl", "w") as f:
        for k in range(40):
            f.write(json.dumps({"id": k, "image": "images/a.png", "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": f"A blue square {k}."}]}) + "\n")
    meta = {"text": {"root": "text", "annotation": "text/train.jsonl", "repeat_time": 1},
            "mm": {"root": "mm", "annotation": "mm/train.jsonl", "repeat_time": 1}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    datasets = list(load_meta(str(tmp_path / "meta.json")))
    base = PackConfig(l_max=4096, t_max=24, progress=False, datasets=datasets)
    plain = run_pack(base, [], str(tmp_path / "plain"))
    text0 = plain["stats"]["text_tokens"]
    before = text0 / (plain["stats"]["tokens"] - text0)
    assert before > 1  # far more text than 1 : 3

    import dataclasses

    cfg = dataclasses.replace(base, target_ratio=[1.0, 3.0])
    index = run_pack(cfg, [], str(tmp_path / "ratio"))
    ratio = index["ratio"]
    assert ratio["target"] == [1.0, 3.0] and ratio["by"] == "subsample" and ratio["weights"]["mm"] == 1.0
    assert 0 < ratio["weights"]["text"] < 1 and ratio["before"] == pytest.approx(before)
    assert ratio["counts"]["text"]["multimodal"] == 0 and ratio["counts"]["mm"]["text"] == 0
    stats = index["stats"]
    got = stats["text_tokens"] / (stats["tokens"] - stats["text_tokens"])
    assert abs(got - 1 / 3) < 0.12, got  # the hashed subsample of 120 rows lands near the target
    rows = [r for s in index["shards"] for r in pq.read_table(tmp_path / "ratio" / s["manifest"]).to_pylist()]
    cut = [r for r in rows if r["reason"] == "subsampled"]
    assert cut and all(r["source_file"] == "text/train.jsonl" and "target-ratio weight" in r["detail"] for r in cut)
    assert index["totals"]["inputs"] == 160 == index["totals"]["kept"] + sum(index["reasons"].values())
    again = run_pack(cfg, [], str(tmp_path / "ratio"))  # deterministic: a rerun finds the same job finished
    assert again["config_fingerprint"] == index["config_fingerprint"] and "_metrics" not in again
    doc = summarize(ShardSet.open(str(tmp_path / "ratio")))
    assert doc["ratio"]["weights"] == ratio["weights"]
    out = io.StringIO()
    print_pack_report(index, str(tmp_path / "ratio"), out)
    assert "ratio weight" in out.getvalue() and "target text : multimodal 1 : 3" in out.getvalue()
