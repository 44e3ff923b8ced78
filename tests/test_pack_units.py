"""Parsing conversation / MPO rows, building pack units (limits, truncation, pairs), the shard format."""

import io
import json

import numpy as np
import pytest

from curation.core.conversations import Conversation, PreferencePair, Turn, read_conversations
from curation.core.records import Rejection, RowRef
from packing.format import PackPlan, iter_packs, plan_packs, write_pack_shard
from packing.tokenizer import IMG_CONTEXT
from packing.tokens import ChatEncoder, EncodeError
from packing.units import UnitBuilder, UnitLimits, read_header, resolve_image
from packing.validate import TokenIds, pack_problems


def rows(*lines):
    return list(read_conversations(io.BytesIO("\n".join(lines).encode()), "x/convs.jsonl"))


def test_rows_parse_into_conversations_pairs_or_reasoned_rejections():
    out = rows(
        json.dumps({"id": "a.1", "image": "i.jpg", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
        json.dumps({"id": "p", "image": "i.jpg", "question": "q", "chosen": "c", "rejected": "r", "method": "dropout_ntp"}),
        '{"id": 3, "conversations": [{"from": "robot", "value": "x"}]}',
        "not json",
        json.dumps({"conversations": [{"from": "pretrain", "value": "text"}]}),
        json.dumps({"id": "bad_img", "image": [1], "conversations": [{"from": "gpt", "value": "a"}]}),
    )
    assert isinstance(out[0], Conversation) and out[0].uid == "a-2e1" and out[0].turns[0] == Turn("user", "q")
    assert isinstance(out[1], PreferencePair) and out[1].method == "dropout_ntp"
    assert [r.reason for r in out[2:4]] == ["malformed_row", "malformed_row"]
    assert isinstance(out[4], Conversation) and len(out[4].uid) == 32  # no id: a content hash
    assert isinstance(out[5], Rejection) and "image" in out[5].detail
    assert [r.source_row for r in out] == list(range(6)) and all(r.source_file == "convs.jsonl" for r in out)


def test_resolve_image_refuses_escapes():
    assert resolve_image("/data", "a/b.jpg") == "/data/a/b.jpg"
    for bad in ("../x.jpg", "/etc/passwd", "a/../../x", "http://h/x.jpg"):
        with pytest.raises(EncodeError):
            resolve_image("/data", bad)


def test_read_header_sizes_without_decoding_and_rejects_junk(images):
    from curation.samples.data import pixel_bomb_png

    w, h, ext = read_header(io.BytesIO(next(iter(images.values()))), 10**8)
    assert w > 0 and h > 0 and ext in ("jpg", "png", "webp", "gif")
    with pytest.raises(EncodeError) as err:
        read_header(io.BytesIO(pixel_bomb_png()), 89_478_485)
    assert err.value.reason == "decompression_bomb"
    with pytest.raises(EncodeError) as err:
        read_header(io.BytesIO(b"junk"), 10**8)
    assert err.value.reason == "decode_error"


def builder(tokenizer, **kw):
    return UnitBuilder(ChatEncoder(tokenizer), UnitLimits(**{"l_max": 4096, "t_max": 16, **kw}))


def conv(uid, turns, images=()):
    return Conversation(uid, "c.jsonl", 0, list(images), [Turn(r, v) for r, v in turns])


def test_units_respect_tile_and_token_limits(tokenizer):
    b = builder(tokenizer)
    unit = b.build(conv("u", [("user", "<image>\nq"), ("assistant", "a")], ["a.jpg"]), [(800, 1300, "jpg")])
    assert unit.tiles == 7 and unit.images[0].tiling.columns == 2 and unit.tokens == len(unit.segments[0].input_ids)
    with pytest.raises(EncodeError) as err:  # 3 images x (4 tiles + thumbnail) > 14
        builder(tokenizer, t_max=14).build(conv("u", [("user", "<image><image><image>"), ("assistant", "a")], "abc"),
                                           [(1000, 1000, "jpg")] * 3)
    assert err.value.reason == "too_many_tiles"
    with pytest.raises(EncodeError) as err:
        b.build(conv("u", [("user", "hi")]), [])
    assert err.value.reason == "no_supervised_tokens"


def test_long_text_is_truncated_keeping_images_whole_or_rejected(tokenizer):
    long = " ".join(["word"] * 6000)
    unit = builder(tokenizer).build(conv("u", [("user", "<image>\nstory"), ("assistant", long)], ["a.jpg"]), [(448, 448, "jpg")])
    seg = unit.segments[0]
    assert seg.truncated and len(seg.input_ids) == 4096 and seg.supervised > 0 and len(unit.images) == 1
    with pytest.raises(EncodeError) as err:
        builder(tokenizer, truncate=False).build(conv("u", [("user", "s"), ("assistant", long)]), [])
    assert err.value.reason == "too_long"
    # the answer sits after an image that ends past the limit: nothing supervised fits -> rejected
    with pytest.raises(EncodeError) as err:
        builder(tokenizer, l_max=1000).build(conv("u", [("user", "<image>\nq"), ("assistant", "a")], ["a.jpg"]),
                                             [(1300, 800, "jpg")])
    assert err.value.reason == "too_long"


def test_preference_pair_is_one_unit_with_shared_images(tokenizer):
    pair = PreferencePair("p", "m.jsonl", 0, ["a.jpg"], "<image>\nWhat?", "Final Answer: red", "Final Answer: blue",
                          "correctness")
    unit = builder(tokenizer).build(pair, [(448, 448, "jpg")])
    assert [s.role for s in unit.segments] == ["chosen", "rejected"] and unit.tiles == 1 and len(unit.images) == 1
    assert all(s.image_spans[0][2] == 0 for s in unit.segments)
    with pytest.raises(EncodeError) as err:
        builder(tokenizer, l_max=300).build(pair, [(448, 448, "jpg")])
    assert err.value.reason == "too_long"


def test_shard_format_round_trip(tokenizer):
    b = builder(tokenizer)
    units = [b.build(conv(f"u{i}", [("user", "<image>\nq"), ("assistant", "a" * (i + 1))], ["img.jpg"]), [(448, 448, "jpg")])
             for i in range(6)]
    units.append(b.build(PreferencePair("pp", "m.jsonl", 1, ["img.jpg"], "<image>\nq", "yes", "no"), [(448, 448, "jpg")]))
    plan = PackPlan(4096, 16)
    assert sorted(u.uid for p in plan_packs(units, plan) for u in p) == sorted(u.uid for u in units)
    rej = Rejection(RowRef("bad", "c.jsonl", 9), "read", "malformed_row", "x")
    tar, man = io.BytesIO(), io.BytesIO()
    report, extras = write_pack_shard(0, "packed-00000-of-00001", units + [rej], tar, man, plan=plan,
                                      read_image=lambda p: b"IMAGE:" + p.encode())
    assert report.kept == 7 and report.rows == 8 and report.reasons == {"malformed_row": 1}
    assert set(extras) == {"packed-00000-of-00001.packs.parquet"}
    tar.seek(0)
    packs = list(iter_packs(tar))
    assert len(packs) == report.stats["packs"] and sum(len(p.meta["segments"]) for p in packs) == 8
    ctx = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    ids = TokenIds.of(tokenizer, len(tokenizer))
    for p in packs:
        assert pack_problems(p.meta, p.input_ids, p.labels, members={"json", *p.images}, tokens=ids) == []
        assert len(p.input_ids) == len(p.labels) == p.meta["tokens"] <= 4096 and p.meta["tiles"] <= 16
        assert p.input_ids.dtype == np.int32
        ends = [s["offset"] + s["length"] for s in p.meta["segments"]]
        assert [s["offset"] for s in p.meta["segments"]] == [0] + ends[:-1] and ends[-1] == p.meta["tokens"]
        for s in p.meta["segments"]:
            for start, end, img in s["image_spans"]:
                assert s["offset"] <= start < end <= s["offset"] + s["length"]
                assert int(np.sum(p.input_ids[start:end] == ctx)) == 256 * p.meta["images"][img]["tiles"]
        assert set(p.images) == {im["name"] for im in p.meta["images"]}
        roles = [s["role"] for s in p.meta["segments"] if s["id"] == "pp"]
        assert roles in ([], ["chosen", "rejected"])
    broken = packs[0]
    labels = broken.labels.copy()
    labels[np.flatnonzero(broken.input_ids == ctx)[0]] = ctx  # a label on an image token
    assert ("labels", "1 labels on image tokens") in pack_problems(broken.meta, broken.input_ids, labels, tokens=ids)


def test_a_preference_pair_is_packed_with_the_tiling_its_policy_sampled_under(tokenizer):
    """MMPR records the policy's tiling in the MPO row; pack applies it (not the recipe's max_num),
    stores the budget beside the grid, and the validator fails a grid that does not follow it."""
    (pair,) = rows(json.dumps({"id": "p", "image": "i.jpg", "question": "<image>\nq", "chosen": "c", "rejected": "r",
                               "tiling": {"max_num": 1, "min_num": 1, "use_thumbnail": False}}))
    assert pair.tiling == {"max_num": 1, "min_num": 1, "use_thumbnail": False}
    (bad,) = rows(json.dumps({"id": "p", "image": "i.jpg", "question": "q", "chosen": "c", "rejected": "r",
                              "tiling": {"max_num": 0}}))
    assert isinstance(bad, Rejection) and bad.reason == "malformed_row" and "tiling" in bad.detail
    b = builder(tokenizer)  # the recipe's max_num 12 would cut 1344x448 into 3x1 + a thumbnail
    assert b.build(PreferencePair("q", "m.jsonl", 0, ["i.jpg"], "<image>\nq", "c", "r"), [(1344, 448, "jpg")]).images[0].tiling.tiles == 4
    unit = b.build(pair, [(1344, 448, "jpg")])
    assert unit.images[0].tiling.tiles == 1 and unit.images[0].max_num == 1
    plan = PackPlan(4096, 16)
    tar, man = io.BytesIO(), io.BytesIO()
    write_pack_shard(0, "packed-00000-of-00001", [unit], tar, man, plan=plan, read_image=lambda p: b"IMG")
    tar.seek(0)
    (packed,) = list(iter_packs(tar))
    ids = TokenIds.of(tokenizer, len(tokenizer))
    assert packed.meta["images"][0]["max_num"] == 1
    assert pack_problems(packed.meta, packed.input_ids, packed.labels, tokens=ids) == []
    packed.meta["images"][0]["max_num"] = 12  # the grid no longer follows the budget it claims
    problems = pack_problems(packed.meta, packed.input_ids, packed.labels, tokens=ids)
    assert any(kind == "images" and "tiles as 3x1" in detail for kind, detail in problems), problems
