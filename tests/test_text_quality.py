"""Heuristic text rules, score parsing, the scorer's verdict logic and the conversation builders:
plain objects, no Beam, no model."""

from __future__ import annotations

import collections
import io
import json

import pytest

from curation.annotate.config import AnnotateConfig, ConversationConfig, QualityConfig
from filters.quality.text import HeuristicsConfig
from curation.core.config import SamplingConfig
from curation.core.config import ConfigError, build, load_config
from curation.annotate.llm import LlmError, LlmResponse
from curation.annotate.quality import QualityScorer, ScoreInput, parse_score
from curation.annotate.tasks import build_conversation, language, pick_task
from filters.quality.text import TextRules, max_ngram_repeats
from tests.conftest import CONFIGS

RULES = TextRules(HeuristicsConfig())


@pytest.mark.parametrize("text, reason", [
    ("A brown dog runs across a green field chasing a red ball.", None),
    ("一只棕色的狗在绿色的草地上奔跑，追逐一个红色的球。", None),
    ("Line one of a menu\nLine two of a menu\nCoffee 3.50", None),
    ("dog " * 30, "repetitive_ngrams"),
    ("the best deal of the year " * 4, "repetitive_ngrams"),
    ("好" * 40, "repetitive_ngrams"),
    ("Order number 000000000012 shipped", "long_number_run"),
    ("Serial 123456789012345678901234567890", "long_number_run"),
    ("Buy now\nBuy now\nBuy now\nFree shipping", "duplicate_lines"),
    ("word " * 150 + ".", "abnormal_sentence_length"),
    ("x" * 1200, "abnormal_sentence_length"),
])
def test_heuristic_rules(text, reason):
    verdict = RULES(text)
    assert verdict.reason == reason, verdict


def test_ngram_rule_counts_the_most_frequent_gram():
    count, gram = max_ngram_repeats("a b c " * 5, 3)
    assert count == 5 and gram == "a b c"
    assert max_ngram_repeats("short text", 10) == (0, "")
    assert TextRules(HeuristicsConfig(max_ngram_repeats=0, max_duplicate_line_fraction=0))("dog " * 30).ok


def test_data_juicer_repetition_measures():
    """Word / character n-gram repetition ratios and compression as Data-Juicer and Gopher define
    them, with the recipe's thresholds, on clean multilingual text and on degraded copies."""
    from filters.quality.text import char_repetition_ratio, compression_ratio, word_repetition_ratio

    cfg = load_config(CONFIGS / "annotate.yaml", AnnotateConfig).heuristics
    rules = TextRules(HeuristicsConfig(**{**cfg.__dict__, "max_ngram_repeats": 0, "max_duplicate_line_fraction": 0}))
    clean = ["A red double-decker bus drives past Big Ben on a rainy afternoon in central London, with tourists "
             "holding umbrellas on the pavement and a black taxi waiting at the lights beside the bridge.",
             "一只橘色的猫躺在阳光下的窗台上，旁边放着一盆绿色的植物和一本打开的书，窗外是一条安静的小街，远处有几棵高大的梧桐树。",
             "Квартира с видом на море: две спальни, просторная гостиная, современная кухня и большой балкон. Рядом "
             "пляж, магазины и остановка автобуса.", "Shop now", "Kane and Gretzka celebrate"]
    assert all(rules(t).ok for t in clean), [rules(t) for t in clean]
    assert word_repetition_ratio("a b c d e f g h i j k " * 3, 10) > 0.5 and word_repetition_ratio("one two", 10) == 0
    assert char_repetition_ratio("ha" * 150, 10) > 0.5 and char_repetition_ratio("abcdefghijklmnop", 10) == 0
    assert compression_ratio("buy cheap shoes online " * 12) < 0.2 < 0.5 < compression_ratio(clean[0])
    assert rules("buy cheap shoes online " * 12).reason == "repetitive_words"
    assert rules("ha" * 150).reason == "repetitive_chars"
    boiler = " ".join(f"Item {k}: add to cart, free shipping on orders over 50 dollars, see details." for k in range(8))
    assert word_repetition_ratio(boiler, 10) <= 0.5  # numbered items: no 10-gram repeats whole
    assert rules(boiler).reason == "low_compression_ratio"
    assert TextRules(HeuristicsConfig(max_ngram_repeats=0))("buy cheap shoes online " * 12).ok  # all off by default


@pytest.mark.parametrize("answer, score", [
    ("7", 7.0), ("Score: 8", 8.0), ("score=6.5", 6.5), ("I'd say 9/10.", 9.0), ("10", 10.0),
    ("3. The caption", 3.0), ("Score: 11", None), ("excellent", None), ("", None),
])
def test_parse_score(answer, score):
    assert parse_score(answer) == score


class _Canned:
    """A stand-in backend answering from a table: only to test the verdict logic without a model
    (the real backends are exercised in test_llm.py)."""

    name = "canned"
    model = "canned"

    def __init__(self, answers):
        self.answers = answers
        self.calls = 0

    def chat(self, conversations, sampling):
        self.calls += 1
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            for needle, answer in self.answers:
                if needle in text:
                    out.append(answer)
                    break
        return out


def _quality() -> QualityConfig:
    return load_config(CONFIGS / "annotate.yaml", AnnotateConfig).quality


def test_scorer_thresholds_and_reasons():
    backend = _Canned([
        ("Caption: good", LlmResponse("9")), ("Text: good", LlmResponse("10")),
        ("Caption: meh", LlmResponse("5")), ("Text: meh", LlmResponse("9")),
        ("Caption: loop", LlmResponse("8")), ("Text: loop", LlmResponse("1")),
        ("Caption: babble", LlmResponse("I like it")), ("Text: babble", LlmResponse("9")),
        ("Caption: down", LlmError("llm_error", "HTTP 500")), ("Text: down", LlmResponse("9")),
        ("Caption: shop", LlmResponse("9")), ("Text: shop", LlmResponse("9")),
    ])
    scorer = QualityScorer(_quality(), backend, SamplingConfig())
    items = [ScoreInput("good"), ScoreInput("meh"), ScoreInput("loop"), ScoreInput("babble"), ScoreInput("down"),
             ScoreInput("shop", "GRAND OPENING SATURDAY", 20)]
    got = scorer.score(items)
    assert backend.calls == 1  # scoring and repetition prompts of the whole batch in one call
    assert [r.reason for r in got] == [None, "low_quality_score", "repetitive_text", "llm_unparseable", "llm_error", None]
    assert got[0].score == 9 and got[0].repetition_score == 10 and got[0].raw["score"]["text"] == "9"
    assert got[5].domain == "ocr" and got[0].domain == "caption"
    assert "5 < 7" in got[1].detail


def test_prompts_render_few_shot_examples():
    from curation.annotate.quality import render

    q = _quality()
    msgs = render(q.prompts["caption"], q.system_prompt, ScoreInput("A cat."))
    assert msgs[0]["role"] == "system" and msgs[-1]["content"].endswith("Caption: A cat.")
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * len(q.prompts["caption"].examples)


def test_quality_config_errors():
    with pytest.raises(ConfigError, match="unknown placeholder"):
        build(QualityConfig, {"prompts": {"caption": {"template": "Rate {captoin}"}}}, "quality")
    with pytest.raises(ConfigError, match="prompts.caption"):
        build(QualityConfig, {"prompts": {}}, "quality")
    with pytest.raises(ConfigError, match="mix.video"):
        build(ConversationConfig, {"mix": {"video": 1.0}, "caption_prompts": {"en": ["a"]}, "ocr_prompts": {"en": ["b"]}}, "c")


def test_annotate_recipe_loads():
    cfg = load_config(CONFIGS / "annotate.yaml", AnnotateConfig)
    assert cfg.ocr.engine == "paddleocr" and cfg.llm.backend == "transformers"
    assert cfg.quality.threshold is None and cfg.quality.repetition_threshold is None  # from the probe ROC
    assert {"en", "zh", "ru"} <= set(cfg.conversations.caption_prompts) and cfg.language.enabled


def _conv_cfg() -> ConversationConfig:
    return load_config(CONFIGS / "annotate.yaml", AnnotateConfig).conversations


def test_task_mix_is_seeded_stable_and_close_to_the_weights():
    cfg = _conv_cfg()
    tasks = collections.Counter(pick_task(f"uid{i}", cfg, ocr_chars=50) for i in range(4000))
    assert abs(tasks["caption"] / 4000 - 0.7) < 0.03 and abs(tasks["ocr"] / 4000 - 0.2) < 0.03
    assert [pick_task(f"uid{i}", cfg, 50) for i in range(50)] == [pick_task(f"uid{i}", cfg, 50) for i in range(50)]
    # without OCR text an ocr draw becomes captioning
    assert collections.Counter(pick_task(f"uid{i}", cfg, ocr_chars=0) for i in range(1000))["ocr"] == 0


def test_conversations_by_task_and_language():
    cfg = _conv_cfg()
    rows = [build_conversation(f"u{i}", f"images/u{i}.jpg", "A red bus.", ["OPEN", "24 HOURS"], cfg, 640, 480)
            for i in range(200)]
    by_task = {r["task"]: r for r in rows}
    assert set(by_task) == {"caption", "ocr", "pretrain"}
    assert by_task["ocr"]["conversations"][1] == {"from": "gpt", "value": "OPEN\n24 HOURS"}
    assert by_task["ocr"]["conversations"][0]["value"].startswith("<image>\n")
    assert by_task["caption"]["conversations"][1]["value"] == "A red bus."
    assert by_task["pretrain"]["conversations"] == [{"from": "pretrain", "value": "<image>\nA red bus."}]
    zh = build_conversation("u1", "i.jpg", "一辆红色的公共汽车停在路边。", [], cfg)
    assert zh["task"] in ("caption", "pretrain")
    if zh["task"] == "caption":
        assert zh["conversations"][0]["value"].removeprefix("<image>\n") in cfg.caption_prompts["zh"]
    assert language("一辆红色的公共汽车") == "zh" and language("A red bus") == "en"


def test_pairs_to_conversations_uses_the_one_builder_and_refuses_broken_shards(tmp_path):
    """The demo's plain captioning conversations come from build_conversation (same prompt as plan
    predicts); a kept sample without its caption is a broken shard, never silently skipped."""
    import tarfile

    from curation.annotate.tasks import CAPTION_PROMPT, pairs_to_conversations
    from curation.core.shards import ShardFormatError
    from curation.samples.dups import Planted, write_pair_folder

    folder = write_pair_folder(tmp_path / "pairs", [Planted("a1", "A red bus.", 0), Planted("b2", "一只猫。", 1)])
    path, n = pairs_to_conversations(folder, tmp_path / "conv")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == 2 and sorted(r["id"] for r in rows) == ["a1", "b2"]
    for r in rows:
        assert r["task"] == "caption" and r["conversations"][0] == {"from": "human", "value": f"<image>\n{CAPTION_PROMPT}"}
        assert (tmp_path / "conv" / r["image"]).is_file()
    path, _ = pairs_to_conversations(folder, tmp_path / "pre", style="pretrain")
    assert all(json.loads(x)["conversations"][0]["from"] == "pretrain" for x in path.read_text().splitlines())

    tar_path = next(folder.glob("*.tar"))
    with tarfile.open(tar_path) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers() if not m.name.endswith(".txt")]
    with tarfile.open(tar_path, "w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data))
    with pytest.raises(ShardFormatError, match="no image or no caption"):
        pairs_to_conversations(folder, tmp_path / "broken")
