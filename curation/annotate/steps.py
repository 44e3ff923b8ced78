"""The annotate stage's record logic, without Beam: heuristic verdicts, OCR and quality results
merged into a sample's `{uid}.json`, rejections with reasons, and the conversation a kept sample
becomes. A kept sample's other members (image, caption) are rewritten byte for byte."""

from __future__ import annotations

import json
from typing import Any

from curation.annotate.config import AnnotateConfig, LanguageConfig
from curation.annotate.ocr.records import OcrError, OcrResult
from curation.annotate.quality import QualityResult, ScoreInput
from curation.core.records import Rejection, Sample
from curation.annotate.tasks import build_conversation
from filters.quality.text import TextRules

STAGE = "annotate"


def meta_of(sample: Sample) -> dict[str, Any]:
    """The sample's `{uid}.json` as a dict (from its stored member, else from its fields)."""
    if sample.stored is not None and "json" in sample.stored:
        return json.loads(sample.stored["json"])
    return sample.metadata()


def with_meta(sample: Sample, meta: dict[str, Any]) -> Sample:
    """The same sample with `{uid}.json` replaced; every other stored member unchanged."""
    from curation.core.shards import sample_members

    stored = dict(sample.stored) if sample.stored is not None else {
        name.partition(".")[2]: data for name, data in sample_members(sample)}
    stored["json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True, allow_nan=False).encode()
    return Sample(sample.pair, sample.image, stored=stored)


def apply_rules(sample: Sample, rules: TextRules) -> Sample | Rejection:
    verdict = rules(sample.pair.caption)
    if verdict.ok:
        return sample
    return Rejection(sample.pair, STAGE, verdict.reason, verdict.detail)  # type: ignore[arg-type]


def apply_decontam(sample: Sample, index: Any) -> Sample | Rejection:
    """A caption sharing a long n-gram with an eval set, or an image near an eval image's pHash
    (filters/quality/decontam.py): rejected `eval_contaminated`, naming the set and the match."""
    hit = index.hit([sample.pair.caption], [sample.image.phash])
    return sample if hit is None else Rejection(sample.pair, STAGE, "eval_contaminated", hit)


def apply_language(sample: Sample, cfg: LanguageConfig) -> Sample | Rejection:
    """The caption's language into the json (`language.caption`); with a `keep` list, a caption
    confidently in another language is rejected."""
    from filters.quality.language import LanguageFilter, detect

    guess = detect(sample.pair.caption, tuple(cfg.candidates))
    if cfg.keep:
        verdict = LanguageFilter(cfg.keep, cfg.min_confidence, cfg.candidates).judge(guess)
        if not verdict.ok:
            return Rejection(sample.pair, STAGE, verdict.reason, verdict.detail)  # type: ignore[arg-type]
    meta = meta_of(sample)
    meta["language"] = {"caption": guess.to_json()}
    return with_meta(sample, meta)


def expected_script(sample: Sample, cfg: LanguageConfig) -> str | None:
    """The script the image's text is expected in, from the caption's language (or letters)."""
    from filters.quality.language import LanguageGuess, expected_script as script

    found = (meta_of(sample).get("language") or {}).get("caption")
    guess = LanguageGuess(found["lang"], found["confidence"]) if found else None
    return script(sample.pair.caption, guess, cfg.min_confidence)


def apply_ocr(sample: Sample, result: OcrResult | OcrError, engine: str, language: LanguageConfig | None = None
              ) -> Sample | Rejection:
    """OCR lines (flagged where the engine cannot read the expected script or a line is in another
    one), image-level text features and the OCR text's language into the json; an unreadable image
    is rejected."""
    if isinstance(result, OcrError):
        return Rejection(sample.pair, STAGE, result.reason, f"ocr: {result.detail}")
    meta = meta_of(sample)
    meta["ocr"] = {"engine": result.engine or engine, "lines": [line.to_json() for line in result.lines],
                   **result.features()}
    text = "\n".join(line.text for line in result.lines if not line.flag)
    if language is not None and language.enabled and text.strip():
        from filters.quality.language import detect

        meta.setdefault("language", {})["ocr"] = detect(text, tuple(language.candidates)).to_json()
    return with_meta(sample, meta)


def score_input(sample: Sample) -> ScoreInput:
    ocr = meta_of(sample).get("ocr") or {}
    text = "\n".join(line["text"] for line in ocr.get("lines", []))
    return ScoreInput(caption=sample.pair.caption, ocr_text=text, ocr_chars=int(ocr.get("ocr_chars", 0)))


def apply_quality(sample: Sample, result: QualityResult | None, cfg: AnnotateConfig) -> Sample | Rejection:
    """The rater's scores (and raw answers) into the json; below a threshold or unusable: rejected.
    A kept sample also gets the training conversation it becomes (`conversation`)."""
    if result is not None and result.reason is not None:
        return Rejection(sample.pair, STAGE, result.reason, result.detail)
    meta = meta_of(sample)
    if result is not None:
        meta["quality"] = result.to_json()
    ocr = meta.get("ocr") or {}
    languages = meta.get("language") or {}
    meta["conversation"] = build_conversation(
        sample.pair.uid, "", sample.pair.caption, ocr.get("lines", []), cfg.conversations, sample.image.width,
        sample.image.height, caption_lang=_sure(languages.get("caption"), cfg.language),
        ocr_lang=_sure(languages.get("ocr"), cfg.language), low_confidence=int(ocr.get("ocr_low_confidence_lines", 0)))
    return with_meta(sample, meta)


def _sure(guess: dict[str, Any] | None, cfg: LanguageConfig) -> str | None:
    return guess["lang"] if guess and guess.get("lang") and guess["confidence"] >= cfg.min_confidence else None


def conversation_row(sample: Sample, image_path: str) -> dict[str, Any] | None:
    """The sample's conversation jsonl row with its image path filled in, or None if it has none."""
    conv = meta_of(sample).get("conversation")
    if not conv:
        return None
    return {**conv, "image": image_path}
