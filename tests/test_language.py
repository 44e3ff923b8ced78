"""Language ID (lingua, offline) on short web alt texts in 16 languages, and the `language` keep-list
filter that rejects only a confident other language."""

from __future__ import annotations

import pytest

from curation.core.config import ConfigError
from curation.core.records import Pair
from curation.samples.languages import ALT_TEXTS, labelled
from filters.quality.language import LanguageFilter, detect
from filters.registry import build_filters

LANGS = tuple(ALT_TEXTS)


def test_short_alt_texts_in_16_languages_are_identified():
    items = labelled()
    guesses = [detect(text, LANGS) for text, _ in items]
    right = sum(g.lang == lang for g, (_, lang) in zip(guesses, items))
    assert right / len(items) >= 0.97, [(t, lang, g.lang) for g, (t, lang) in zip(guesses, items) if g.lang != lang]
    assert {g.lang for g in guesses} == set(LANGS)
    assert all(0 < g.confidence <= 1 for g in guesses)
    assert detect("1234 !!! ---").lang is None


def pair(caption: str) -> Pair:
    return Pair(uid="u", url="http://example.com/a.jpg", caption=caption, source="laion", source_file="a.parquet", source_row=0)


def test_keep_list_rejects_only_a_confident_other_language():
    (f,) = build_filters([{"language": {"keep": ["en", "zh"], "min_confidence": 0.5, "candidates": list(LANGS)}}],
                         "metadata_filters")
    assert f(pair("Sunset over the mountains in autumn")).ok
    assert f(pair("秋天山上的日落")).ok
    german = f(pair("Sonnenuntergang über den Bergen im Herbst"))
    assert not german.ok and german.reason == "language_not_kept" and german.detail.startswith("de (")
    # a product name no detector can place is not thrown away
    strict = LanguageFilter(keep=["zh"], min_confidence=0.5, candidates=list(LANGS))
    assert strict(pair("Nike Air Max 90")).ok and strict(pair("IMG 2034 summer")).ok
    assert not strict(pair("Дети читают книги в библиотеке")).ok


def test_unknown_language_codes_are_config_errors():
    with pytest.raises(ConfigError, match="'xx'"):
        build_filters([{"language": {"keep": ["en", "xx"]}}], "metadata_filters")
    with pytest.raises(ConfigError, match="at least one"):
        LanguageFilter(keep=[])


def test_flagged_ocr_lines_never_become_an_ocr_task_and_prompts_follow_the_caption():
    from curation.annotate.config import ConversationConfig
    from curation.annotate.tasks import build_conversation

    cfg = ConversationConfig(mix={"ocr": 1.0}, caption_prompts={"en": ["Describe."], "ru": ["Опиши."]},
                             ocr_prompts={"en": ["Read it."]})
    clean = [{"text": "GRAND OPENING", "confidence": 0.9, "box": []}]
    flagged = [{"text": "YKPrA3 EHEPrO", "confidence": 0.9, "box": [], "flag": "script_not_covered"}]
    row = build_conversation("u1", "a.jpg", "Вывеска магазина", clean + flagged, cfg, caption_lang="ru")
    assert row["task"] == "ocr" and row["conversations"][1]["value"] == "GRAND OPENING"
    row = build_conversation("u1", "a.jpg", "Вывеска магазина", flagged, cfg, caption_lang="ru")
    assert row["task"] == "caption" and row["ocr_task_skipped"] == "script_not_covered"
    assert row["conversations"][0]["value"] == "<image>\nОпиши."  # the caption's language has a template
    row = build_conversation("u1", "a.jpg", "Ein Schild", [], cfg, caption_lang="de", low_confidence=2)
    assert row["ocr_task_skipped"] == "low_confidence" and row["conversations"][0]["value"] == "<image>\nDescribe."
    assert "ocr_task_skipped" not in build_conversation("u1", "a.jpg", "A sign", [], cfg, caption_lang="en")
