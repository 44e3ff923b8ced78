"""Translation (InternVL 1.5's bilingual pipeline): the output checks on given strings (a right
translation passes; wrong language, a dropped <image>, an absurd length ratio, an empty turn, the
source echoed are each rejected with their reason), the recipe's validation, the shard rows
`curate pack` reads, and one real run of the stage with the offline SmolLM2 backend (it translates badly: its outputs are
expected to fail the checks, and every row must still be accounted for)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from curation.annotate.translate import (TranslateConfig, TranslationItem, check_translation, check_turn, item_of,
                                         plan, split_edges, write_translate_shard)
from curation.core.config import ConfigError, load_config
from curation.core.conversations import Conversation, Turn
from curation.core.reasons import REASONS
from tests.conftest import CONFIGS

CHECKS = {"translation_empty", "translation_truncated", "translation_echo", "translation_wrong_language", "translation_length_ratio",
          "translation_placeholders", "llm_error"}
EN = ["<image>\nWhat is the man in the red jacket holding?", "He is holding a black umbrella over his head."]
ZH = ["<image>\n穿红色夹克的男人手里拿着什么？", "他在头顶上撑着一把黑色的雨伞。"]


def recipe(**over) -> TranslateConfig:
    return load_config(CONFIGS / "translate.yaml", TranslateConfig, {"progress": False, **over})


def test_a_right_translation_passes_both_ways():
    cfg = recipe()
    verdict, confidence = check_translation(EN, ZH, "en", "zh", cfg)
    assert verdict.ok, verdict
    assert confidence is not None and confidence >= cfg.min_confidence
    assert check_translation(ZH, EN, "zh", "en", cfg)[0].ok


@pytest.mark.parametrize("translated, reason", [
    (["<image>\nWhat does the man in the red coat have?", "A black umbrella above his head."],
     "translation_wrong_language"),  # rephrased in English, not translated into Chinese
    (["穿红色夹克的男人手里拿着什么？", ZH[1]], "translation_placeholders"),  # <image> dropped
    (["<image>\n<image>\n穿红色夹克的男人手里拿着什么？", ZH[1]], "translation_placeholders"),  # one invented
    (["<image>\n男人？", ZH[1]], "translation_length_ratio"),  # far too short for the question
    ([ZH[0], "他在头顶上撑着一把黑色的雨伞。" * 12], "translation_length_ratio"),  # runaway repetition
    ([ZH[0], "  "], "translation_empty"),
    ([ZH[0], "He is holding a black umbrella over his head.\n\n翻译：他在头顶上撑着一把黑色的雨伞。"],
     "translation_echo"),  # the source repeated before the attempt (SmolLM2's habit)
])
def test_each_failure_is_rejected_with_its_reason(translated, reason):
    verdict, _ = check_translation(EN, translated, "en", "zh", recipe())
    assert not verdict.ok and verdict.reason == reason, verdict
    assert reason in REASONS


def test_short_turns_skip_the_ratio_and_placeholders_at_the_edges_are_kept_out_of_the_prompt():
    assert check_turn("Yes.", "是的，没错，就是这样。", (0.12, 1.0), 12).ok  # 3 letters: the ratio says nothing
    assert not check_turn("What colour is the bus?", "公共汽车是什么颜色的？" * 6, (0.12, 1.0), 12).ok
    assert split_edges("<image>\n<image>\nCompare them.\n") == ("<image>\n<image>\n", "Compare them.", "\n")
    assert split_edges("Left <image> right") == ("", "Left <image> right", "")


def test_rows_are_planned_by_their_language():
    cfg = recipe(candidates=["fr"])

    def planned(values):
        conv = Conversation("u", "f.jsonl", 0, [], [Turn("user", values[0]), Turn("assistant", values[1])])
        return plan(item_of(conv), cfg)

    assert planned(EN).target == "zh" and planned(ZH).target == "en"
    french = planned(["Que tient l'homme à la veste rouge ?", "Il tient un parapluie noir au-dessus de sa tête."])
    assert french.reason == "no_translation_pair" and french.source_language == "fr", french


@pytest.mark.parametrize("over, message", [
    ({"pairs": [["en", "zh"], ["en", "de"]]}, "one target per source"),
    ({"pairs": [["en", "xx"]]}, "unknown ISO 639-1"),
    ({"prompt": "Translate {txt}"}, "prompt"),
    ({"length_ratio": {"en-zh": [2.0, 1.0], "default": [0.5, 2.0]}}, "0 < min < max"),
])
def test_bad_recipes_fail_early(over, message):
    with pytest.raises(ConfigError, match=message):
        recipe(**over)


def _kept_item(tmp_path) -> TranslationItem:
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "bus.jpg")
    conv = Conversation("row1", "a.jsonl", 0, ["bus.jpg"], [Turn("user", EN[0]), Turn("assistant", EN[1])])
    item = plan(item_of(conv), recipe())
    item.translated = list(ZH)
    return item


def test_a_translated_shard_is_what_curate_pack_reads(tmp_path):
    import io

    from pipelines.pack import run_pack
    from packing.config import PackConfig

    item = _kept_item(tmp_path)
    bad = TranslationItem("row2", "a.jsonl", 1).reject("read", "malformed_row", "invalid JSON")
    tar, man = io.BytesIO(), io.BytesIO()
    report, files = write_translate_shard(0, "translated-00000-of-00001", [item, bad], tar, man)
    assert (report.kept, report.rows, report.reasons) == (1, 2, {"malformed_row": 1})
    (row,) = [json.loads(line) for line in files["translated-00000-of-00001.jsonl"].decode().splitlines()]
    assert row == {"id": "row1-zh", "translated_from": "row1", "language": "zh", "image": "bus.jpg",
                   "conversations": [{"from": "human", "value": ZH[0]}, {"from": "gpt", "value": ZH[1]}]}
    manifest = pq.read_table(io.BytesIO(man.getvalue())).to_pylist()
    assert [(m["uid"], m["status"], m["reason"]) for m in manifest] == [("row1", "kept", None),
                                                                         ("row2", "rejected", "malformed_row")]
    (tmp_path / "t.jsonl").write_bytes(files["translated-00000-of-00001.jsonl"])
    cfg = load_config(CONFIGS / "pack.yaml", PackConfig, {"progress": False, "image_root": str(tmp_path)})
    index = run_pack(cfg, [str(tmp_path / "t.jsonl")], str(tmp_path / "packed"))
    assert index["totals"] == {"inputs": 1, "kept": 1, "rejected": 0}, index["reasons"]


@pytest.mark.slow
def test_smollm2_run_accounts_for_every_row(tmp_path):
    """The real stage on CPU: English and Chinese rows (one with <image>, one with a turn without
    letters), a French row (no pair), a broken line; SmolLM2-135M's translations are checked, not trusted."""
    from PIL import Image

    from curation.cli.main import main
    from pipelines.pack import run_pack
    from pipelines.translate import run_translate
    from packing.config import PackConfig

    src = tmp_path / "convs"
    src.mkdir()
    Image.new("RGB", (64, 48), (30, 30, 200)).save(src / "cat.jpg")
    rows = [
        {"id": "en1", "image": "cat.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is in the picture?"},
                                                            {"from": "gpt", "value": "A cat on a mat."}]},
        {"id": "zh1", "conversations": [{"from": "human", "value": "你好吗？"}, {"from": "gpt", "value": "我很好。"}]},
        {"id": "en2", "conversations": [{"from": "human", "value": "What is 5 + 6?"}, {"from": "gpt", "value": "11"}]},
        {"id": "fr1", "conversations": [{"from": "human", "value": "Bonjour, comment allez-vous aujourd'hui ?"},
                                        {"from": "gpt", "value": "Très bien, merci beaucoup."}]},
    ]
    (src / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "not json\n")
    cfg = recipe(candidates=["fr"], llm={"sampling": {"max_new_tokens": 16}}, shards={"samples_per_shard": 2})
    out = tmp_path / "out"
    index = run_translate(cfg, [str(src / "*.jsonl")], str(out))
    totals = index["totals"]
    assert totals["inputs"] == 5 == totals["kept"] + sum(index["reasons"].values())
    assert index["rows"] == {"rows_read": 5, "rows_assigned": 5, "rows_written": 5}  # checked in-stage
    manifest = [r for s in index["shards"] for r in pq.read_table(out / s["manifest"]).to_pylist()]
    by_row = {r["source_row"]: r for r in manifest}
    assert len(manifest) == 5 and set(by_row) == {0, 1, 2, 3, 4}
    assert by_row[3]["reason"] == "no_translation_pair" and by_row[3]["llm_requests"] == 0
    assert by_row[4]["reason"] == "malformed_row"
    assert by_row[2]["llm_requests"] == 1  # "11" has no letters: copied, not translated
    assert (by_row[0]["source_language"], by_row[0]["target_language"]) == ("en", "zh")
    assert (by_row[1]["source_language"], by_row[1]["target_language"]) == ("zh", "en")
    assert by_row[0]["llm_requests"] == by_row[1]["llm_requests"] == 2
    for r in (by_row[0], by_row[1], by_row[2]):  # each turn went to the LLM; the output was kept only if it passed
        assert r["status"] == "kept" or r["reason"] in CHECKS, r
    kept = [json.loads(line) for s in index["shards"] for line in (out / f"{s['name']}.jsonl").read_text().splitlines()]
    assert len(kept) == totals["kept"]
    originals = {r["id"]: r for r in rows}
    for row in kept:  # a kept row names its source and passes the checks again
        source = originals[row["translated_from"].split("--")[-1]]
        src_turns = [t["value"] for t in source["conversations"]]
        lang = "zh" if row["language"] == "en" else "en"
        assert check_translation(src_turns, [t["value"] for t in row["conversations"]], lang, row["language"], cfg)[0].ok
        assert row.get("image") == source.get("image")
    pack_cfg = load_config(CONFIGS / "pack.yaml", PackConfig, {"progress": False, "image_root": str(src)})
    packed = run_pack(pack_cfg, [str(out / "*.jsonl")], str(tmp_path / "packed"))
    assert packed["totals"]["inputs"] == totals["kept"] == packed["totals"]["kept"]
    assert main(["inspect", "summary", str(out)]) == 0  # the accounting as `curate inspect` prints it
    # a finished job is not run again
    assert run_translate(cfg, [str(src / "*.jsonl")], str(out))["totals"] == totals
