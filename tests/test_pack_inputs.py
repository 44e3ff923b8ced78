"""Pack inputs as InternVL's loader sees them: an image named twice in one sample is stored once,
and (by recipe) an image-less sample counts InternVL's blank tile toward t_max, ids unchanged."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation.core.conversations import Conversation, Turn
from packing.format import PackPlan, iter_packs, plan_packs, write_pack_shard
from packing.tokens import ChatEncoder
from packing.units import UnitBuilder, UnitLimits
from packing.validate import TokenIds, pack_problems


def jpeg(w: int, h: int, color=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


def builder(tokenizer, **kw) -> UnitBuilder:
    return UnitBuilder(ChatEncoder(tokenizer), UnitLimits(**{"l_max": 8192, "t_max": 24, **kw}))


def written(units, blobs: dict[str, bytes], plan=PackPlan(8192, 24)):
    tar, man = io.BytesIO(), io.BytesIO()
    report, _ = write_pack_shard(0, "packed-00000-of-00001", units, tar, man, plan=plan, read_image=blobs.__getitem__)
    tar.seek(0)
    return report, list(iter_packs(tar))


TWICE = [("user", "Image-1: <image>\nImage-2: <image>\nAre they the same?"), ("assistant", "Yes, one picture twice.")]


@pytest.mark.parametrize("paths,keys", [(["a.jpg", "a.jpg"], None),  # the same path
                                        (["a.jpg", "copy/a.jpg"], ["h1", "h1"])])  # two paths, one content hash
def test_an_image_used_twice_is_stored_once_and_passes_the_validator_and_the_batch_builder(tokenizer, paths, keys):
    from model.batches import build_batch

    data = jpeg(896, 448)
    conv = Conversation("twice", "c.jsonl", 0, paths, [Turn(r, v) for r, v in TWICE])
    unit = builder(tokenizer).build(conv, [(896, 448, "jpg")] * 2, keys)
    distinct = builder(tokenizer).build(conv, [(896, 448, "jpg")] * 2, ["h1", "h2"])
    assert len(unit.images) == 1 and len(distinct.images) == 2
    spans = unit.segments[0].image_spans
    assert [i for _, _, i in spans] == [0, 0]  # both placeholders name the one stored image
    assert unit.tokens == distinct.tokens and unit.tiles * 2 == distinct.tiles  # same ids; the encoder runs once
    np.testing.assert_array_equal(unit.segments[0].input_ids, distinct.segments[0].input_ids)

    report, (pack,) = written([unit], {p: data for p in paths})
    assert len(pack.images) == 1 and len(pack.meta["images"]) == 1 and pack.meta["tiles"] == unit.tiles
    assert [sp[2] for s in pack.meta["segments"] for sp in s["image_spans"]] == [0, 0]
    ids = TokenIds.of(tokenizer, len(tokenizer))
    assert pack_problems(pack.meta, pack.input_ids, pack.labels, members=set(pack.images), tokens=ids) == []
    batch = build_batch(pack, ids)
    assert batch.pixel_values.shape[0] == unit.tiles  # tiled once
    rows = batch.feature_rows.numpy()
    half = len(rows) // 2
    assert len(rows) == 2 * 256 * unit.tiles and (rows[:half] == rows[half:]).all()  # both spans read the same features


def test_the_blank_tile_of_a_text_only_sample_counts_toward_t_max_only_by_recipe(tokenizer):
    text = [Conversation(f"t{k}", "c.jsonl", k, [], [Turn("user", f"question {k}"), Turn("assistant", "answer")])
            for k in range(6)]
    plain = [builder(tokenizer, t_max=4).build(c, []) for c in text]
    blank = [builder(tokenizer, t_max=4, blank_tile=True).build(c, []) for c in text]
    assert [u.tiles for u in plain] == [0] * 6 and [u.tiles for u in blank] == [1] * 6
    for a, b in zip(plain, blank):  # the token ids do not change
        np.testing.assert_array_equal(a.segments[0].input_ids, b.segments[0].input_ids)
        np.testing.assert_array_equal(a.segments[0].labels, b.segments[0].labels)
    plan = PackPlan(8192, 4)
    assert len(plan_packs(plain, plan)) == 1 and len(plan_packs(blank, plan)) == 2  # 6 blank tiles over t_max 4
    image = builder(tokenizer, t_max=4, blank_tile=True).build(
        Conversation("i", "c.jsonl", 9, ["a.jpg"], [Turn("user", "<image>\nq"), Turn("assistant", "a")]), [(448, 448, "jpg")])
    assert image.tiles == 1 and image.blank_tiles == 0  # a sample with an image has no blank tile

    report, packs = written(blank + [image], {"a.jpg": jpeg(448, 448)}, plan)
    ids = TokenIds.of(tokenizer, len(tokenizer))
    assert sum(p.meta.get("blank_tiles", 0) for p in packs) == 6 and all(p.meta["tiles"] <= 4 for p in packs)
    for p in packs:
        assert pack_problems(p.meta, p.input_ids, p.labels, members=set(p.images), tokens=ids) == []
        stored = sum(im["tiles"] for im in p.meta["images"])
        assert p.meta["tiles"] == stored + p.meta.get("blank_tiles", 0)
    assert report.stats["text_tokens"] == sum(u.tokens for u in blank)  # blank tiles do not make text multimodal
    bad = dict(packs[0].meta, blank_tiles=packs[0].meta.get("blank_tiles", 0) + 5)
    bad["tiles"] += 5
    assert any("blank tiles" in d for _, d in pack_problems(bad, packs[0].input_ids, packs[0].labels, tokens=ids))


@pytest.mark.slow
def test_pack_stores_an_image_named_twice_once_by_path_or_by_bytes(tmp_path, tokenizer):
    """`curate pack` on rows naming one image twice (the same path; two paths holding the same
    bytes): one stored image per pack entry of that sample, validated and batched; two different
    images stay two."""
    import json

    from model.batches import build_batch
    from packing.config import PackConfig
    from pipelines.pack import run_pack

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(jpeg(896, 448))
    (tmp_path / "img" / "copy.jpg").write_bytes(jpeg(896, 448))
    (tmp_path / "img" / "b.jpg").write_bytes(jpeg(896, 448, (10, 200, 10)))
    turns = [{"from": "human", "value": "Image-1: <image>\nImage-2: <image>\nSame?"}, {"from": "gpt", "value": "Maybe."}]
    rows = {"path": ["a.jpg", "a.jpg"], "bytes": ["a.jpg", "copy.jpg"], "distinct": ["a.jpg", "b.jpg"]}
    with open(tmp_path / "rows.jsonl", "w") as f:
        for uid, images in rows.items():
            f.write(json.dumps({"id": uid, "image": images, "conversations": turns}) + "\n")
    cfg = PackConfig(l_max=4096, t_max=24, progress=False, image_root=str(tmp_path / "img"))
    index = run_pack(cfg, [str(tmp_path / "rows.jsonl")], str(tmp_path / "out"))
    assert index["totals"]["kept"] == 3
    ids = TokenIds.of(tokenizer, len(tokenizer))
    stored: dict[str, int] = {}
    for s in index["shards"]:
        for pack in iter_packs(str(tmp_path / "out" / s["tar"])):
            assert pack_problems(pack.meta, pack.input_ids, pack.labels, members=set(pack.images), tokens=ids) == []
            build_batch(pack, ids)
            for seg in pack.meta["segments"]:
                stored[seg["id"].rsplit("--", 1)[-1]] = len({i for _, _, i in seg["image_spans"]})
    assert stored == {"path": 1, "bytes": 1, "distinct": 2}
