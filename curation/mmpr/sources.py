"""VQA benchmark rows as MMPR questions: ScienceQA, A-OKVQA, ChartQA, DocVQA and MathVista as their
Hugging Face parquet (image structs `{"bytes", "path"}`) or jsonl releases (image paths) ship them,
and our own question jsonl. Each schema maps its fields to one canonical row (`{"id", "image",
"question", "answer_gt", "answer_type", "options"}`) with the answer type its benchmark scores by;
`parse_item` checks that row. The schema is named in the recipe or detected from a file's first row.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable

from curation.core.conversations import row_uid
from curation.core.image_refs import image_values, split_images

SCHEMAS = ("mmpr", "scienceqa", "aokvqa", "chartqa", "docvqa", "mathvista")
LETTERS = string.ascii_uppercase


class SchemaError(ValueError):
    """A row that does not hold what its schema needs; the message names the keys it has."""


@dataclass(frozen=True)
class Canonical:
    """One question in our row shape: `paths` its images (`embedded:k` where image k's bytes are
    `embedded[k]`, carried by the row)."""

    row: dict[str, Any]
    paths: list[str] = field(default_factory=list)
    embedded: list[bytes | None] = field(default_factory=list)


def with_options(question: str, options: list[str]) -> str:
    """The question with its options listed the way the recipe's few-shot example lists them."""
    return f"{question.strip()}\nOptions: " + " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def _need(raw: dict[str, Any], schema: str, *keys: str) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise SchemaError(f"{schema} row lacks {', '.join(missing)} (keys: {', '.join(sorted(raw)) or 'none'})")


def _choices(raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key)
    if not isinstance(value, list) or not 2 <= len(value) <= len(LETTERS) or not all(isinstance(c, (str, int, float)) for c in value):
        raise SchemaError(f"`{key}` must be a list of 2 to 26 options")
    return [str(c) for c in value]


def _letter(index: Any, options: list[str], key: str) -> str:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(options):
        raise SchemaError(f"`{key}` must be an option index in 0..{len(options) - 1}, got {index!r}")
    return LETTERS[index]


def _answers(value: Any, key: str) -> list[str]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(a, (str, int, float)) for a in value):
        raise SchemaError(f"`{key}` must be an answer or a non-empty list of answers")
    return [str(a) for a in value]


def _row(raw: dict[str, Any], id_key: str | None, images: list[str | bytes], question: str, answer_gt: Any,
         answer_type: str, options: list[str] | None = None) -> Canonical:
    paths, embedded = split_images(images)
    row = {"image": paths, "question": question, "answer_gt": answer_gt, "answer_type": answer_type}
    if options:
        row["options"] = options
    rid = raw.get(id_key) if id_key else None
    row["id"] = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) else row_uid(raw, "", 0)
    return Canonical(row, paths, embedded)


def _mmpr(raw: dict[str, Any], answer_type: str | None) -> Canonical:
    """Our own rows (`image` may also be an image struct), as they are: their content ids stay."""
    paths, embedded = split_images(image_values(raw.get("image", raw.get("images")), "image"))
    row = dict(raw)
    if any(b is not None for b in embedded):
        row.pop("images", None)
        row["image"] = paths
    if answer_type:
        row["answer_type"] = answer_type
    return Canonical(row, paths, embedded)


def _scienceqa(raw: dict[str, Any], answer_type: str | None) -> Canonical:
    """ScienceQA (derek-thomas/ScienceQA): `choices` + the right one's index `answer`; `hint` is the
    context (text-only questions have no image)."""
    _need(raw, "scienceqa", "question", "choices", "answer")
    options = _choices(raw, "choices")
    hint = raw.get("hint") if isinstance(raw.get("hint"), str) else ""
    question = (f"Context: {hint.strip()}\n" if hint.strip() else "") + with_options(raw["question"], options)
    return _row(raw, "id", image_values(raw.get("image"), "image"), question, _letter(raw["answer"], options, "answer"),
                answer_type or "multiple_choice", options)


def _aokvqa(raw: dict[str, Any], answer_type: str | None) -> Canonical:
    """A-OKVQA (HuggingFaceM4/A-OKVQA): multiple choice by `correct_choice_idx`, or with answer_type
    vqa the ten `direct_answers` scored by VQA accuracy."""
    _need(raw, "aokvqa", "question", "choices")
    images = image_values(raw.get("image"), "image")
    if (answer_type or "multiple_choice") == "multiple_choice":
        _need(raw, "aokvqa", "correct_choice_idx")
        options = _choices(raw, "choices")
        return _row(raw, "question_id", images, with_options(raw["question"], options),
                    _letter(raw["correct_choice_idx"], options, "correct_choice_idx"), "multiple_choice", options)
    _need(raw, "aokvqa", "direct_answers")
    return _row(raw, "question_id", images, raw["question"], _answers(raw["direct_answers"], "direct_answers"), answer_type)


def _chartqa(raw: dict[str, Any], answer_type: str | None) -> Canonical:
    """ChartQA (HuggingFaceM4/ChartQA): `query`, `label` ([answer]); scored by relaxed accuracy."""
    _need(raw, "chartqa", "query", "label")
    return _row(raw, None, image_values(raw.get("image"), "image"), raw["query"], _answers(raw["label"], "label"),
                answer_type or "relaxed")


def _docvqa(raw: dict[str, Any], answer_type: str | None) -> Canonical:
    """DocVQA (lmms-lab/DocVQA): `question`, `answers` (list); scored by ANLS."""
    _need(raw, "docvqa", "question", "answers")
    return _row(raw, "questionId", image_values(raw.get("image"), "image"), raw["question"],
                _answers(raw["answers"], "answers"), answer_type or "anls")


MATHVISTA_TYPES = {"integer": "number", "float": "number", "text": "exact", "list": "exact"}


def _mathvista(raw: dict[str, Any], answer_type: str | None) -> Canonical:
    """MathVista (AI4Math/MathVista): multi_choice rows name the right option's text, free-form ones an
    integer, float, text or list answer; the image is `decoded_image` (parquet) or the `image` path."""
    _need(raw, "mathvista", "question", "answer", "question_type")
    images = image_values(raw.get("decoded_image") or raw.get("image"), "image")
    question = raw["question"]
    if isinstance(raw.get("unit"), str) and raw["unit"].strip():
        question = f"{question.strip()} (Unit: {raw['unit'].strip()})"
    if raw["question_type"] == "multi_choice":
        options = _choices(raw, "choices")
        answer = str(raw["answer"])
        if answer not in options:
            raise SchemaError(f"mathvista answer {answer[:80]!r} is not one of the choices")
        return _row(raw, "pid", images, with_options(question, options), LETTERS[options.index(answer)],
                    answer_type or "multiple_choice", options)
    kind = answer_type or MATHVISTA_TYPES.get(str(raw.get("answer_type")), "exact")
    return _row(raw, "pid", images, question, _answers(raw["answer"], "answer")[0], kind)


CONVERTERS: dict[str, Callable[[dict[str, Any], str | None], Canonical]] = {
    "mmpr": _mmpr, "scienceqa": _scienceqa, "aokvqa": _aokvqa, "chartqa": _chartqa, "docvqa": _docvqa,
    "mathvista": _mathvista,
}


def detect_schema(raw: dict[str, Any]) -> str:
    """The schema a row's keys say it follows; SchemaError naming the keys when none fits."""
    keys = set(raw)
    if {"question_type", "pid"} <= keys or "decoded_image" in keys:
        return "mathvista"
    if {"correct_choice_idx"} & keys or {"direct_answers"} & keys:
        return "aokvqa"
    if {"query", "label"} <= keys:
        return "chartqa"
    if {"question", "answers"} <= keys:
        return "docvqa"
    if {"question", "choices", "answer"} <= keys:
        return "scienceqa"
    if "question" in keys:
        return "mmpr"
    raise SchemaError(f"no known question schema ({', '.join(SCHEMAS)}) fits a row with keys: "
                      f"{', '.join(sorted(keys)) or 'none'}")


def canonical(raw: dict[str, Any], schema: str, answer_type: str | None = None) -> Canonical:
    """One source row in our shape; SchemaError when it lacks what its schema needs."""
    return CONVERTERS[schema](raw, answer_type)
