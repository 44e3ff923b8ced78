"""The annotate stage's record logic, without Beam: heuristic verdicts, OCR and quality results
merged into a sample's `{uid}.json`, rejections with reasons, and the conversation a kept sample
becomes. A kept sample's other members (image, caption) are rewritten byte for byte."""

from __future__ import annotations

import json
from typing import Any

from curation.annotate.config import AnnotateConfig
from curation.annotate.ocr import OcrError, OcrResult
from curation.annotate.quality import QualityResult, ScoreInput
from curation.core.records import Rejection, Sample
from curation.annotate.tasks import build_conversation
from filters.text_quality import TextRules

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


def apply_ocr(sample: Sample, result: OcrResult | OcrError, engine: str) -> Sample | Rejection:
    """OCR lines and image-level text features into the json; an unreadable image is rejected."""
    if isinstance(result, OcrError):
        return Rejection(sample.pair, STAGE, result.reason, f"ocr: {result.detail}")
    meta = meta_of(sample)
    meta["ocr"] = {"engine": engine, "lines": [line.to_json() for line in result.lines], **result.features()}
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
    lines = [line["text"] for line in (meta.get("ocr") or {}).get("lines", [])]
    meta["conversation"] = build_conversation(sample.pair.uid, "", sample.pair.caption, lines, cfg.conversations,
                                              sample.image.width, sample.image.height)
    return with_meta(sample, meta)


def conversation_row(sample: Sample, image_path: str) -> dict[str, Any] | None:
    """The sample's conversation jsonl row with its image path filled in, or None if it has none."""
    conv = meta_of(sample).get("conversation")
    if not conv:
        return None
    return {**conv, "image": image_path}
