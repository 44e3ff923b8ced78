"""MMPR preference pairs from sampled responses, without models or Beam: correctness-based pairs
(responses judged against the ground truth; right x wrong, at most K per question, seeded) and
Dropout NTP pairs (the chosen response cut at a fraction of its words; the policy's continuation
of that prefix without the image is the rejected one). Rows follow InternVL's MPO jsonl."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from curation.answers import AnswerType, Extracted, extract_answer, is_correct


@dataclass(frozen=True)
class MmprItem:
    """One input question: `{"id", "image": path | [paths], "question", "answer_gt"?, "answer_type"?}`."""

    id: str
    images: tuple[str, ...]
    question: str
    answer_gt: str | tuple[str, ...] | None = None
    answer_type: AnswerType = "exact"
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Judged:
    response: str
    extracted: Extracted
    correct: bool  # right answer in the right format


@dataclass
class Outcome:
    """The pairs made for one item, or the reason none could be."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    detail: str = ""


def judge(item: MmprItem, responses: Sequence[str], style: Literal["final_answer", "boxed"] = "final_answer",
          rel_tol: float = 1e-4) -> list[Judged]:
    out = []
    for text in responses:
        ex = extract_answer(text, style)
        ok = bool(ex.format_ok and ex.answer is not None and item.answer_gt is not None
                  and is_correct(ex.answer, item.answer_gt, item.answer_type, item.options, rel_tol))
        out.append(Judged(text, ex, ok))
    return out


def _row(item: MmprItem, chosen: str, rejected: str, method: str, chosen_meta: dict, rejected_meta: dict) -> dict[str, Any]:
    gt = item.answer_gt
    return {"id": "", "image": list(item.images) if len(item.images) != 1 else item.images[0],
            "question": item.question, "chosen": chosen, "rejected": rejected,
            "answer_gt": list(gt) if isinstance(gt, tuple) else gt, "method": method,
            "chosen_meta": chosen_meta, "rejected_meta": rejected_meta}


def correctness_pairs(item: MmprItem, judged: Sequence[Judged], max_pairs: int, seed: int) -> Outcome:
    """Right (chosen) x wrong or badly formatted (rejected) responses; a pair whose chosen text is
    a substring of its rejected text is skipped (it would teach nothing about the answer)."""
    if not any(j.response.strip() for j in judged):
        return Outcome(reason="empty_response", detail=f"{len(judged)} empty responses")
    if not any(j.extracted.answer is not None for j in judged):
        return Outcome(reason="no_parseable_answer", detail=judged[0].extracted.problem)
    right = _unique([j for j in judged if j.correct])
    wrong = _unique([j for j in judged if not j.correct and j.response.strip()])
    if not right:
        return Outcome(reason="all_wrong", detail=f"0 of {len(judged)} correct")
    if not wrong:
        return Outcome(reason="all_correct", detail=f"{len(judged)} of {len(judged)} correct")
    candidates = [(c, r) for c in right for r in wrong if c.response.strip() not in r.response]
    if not candidates:
        return Outcome(reason="all_correct", detail="every wrong response contains a right one")
    random.Random(f"{seed}\x00{item.id}").shuffle(candidates)
    pairs = []
    for i, (c, r) in enumerate(candidates[:max_pairs]):
        row = _row(item, c.response, r.response, "correctness",
                   {"answer": c.extracted.answer, "correct": True},
                   {"answer": r.extracted.answer, "correct": False, "format_ok": r.extracted.format_ok,
                    **({"problem": r.extracted.problem} if r.extracted.problem else {})})
        row["id"] = f"{item.id}_c{i}"
        pairs.append(row)
    return Outcome(pairs)


def _unique(judged: list[Judged]) -> list[Judged]:
    seen, out = set(), []
    for j in judged:
        if j.response not in seen:
            seen.add(j.response)
            out.append(j)
    return out


_WORD = re.compile(r"\S+")


def dropout_prefix(response: str, ratio: float) -> str:
    """The first floor(ratio x words) words of `response`, with its own spacing kept."""
    words = list(_WORD.finditer(response))
    k = math.floor(ratio * len(words))
    return response[: words[k - 1].end()] if k > 0 else ""


def dropout_pair(item: MmprItem, chosen: str, continuation: str, ratio: float, with_image: bool) -> Outcome:
    """Chosen = a response sampled with the image; rejected = its prefix + the policy's continuation
    (sampled without the image unless `with_image`)."""
    if not chosen.strip():
        return Outcome(reason="empty_response", detail="the chosen response is empty")
    prefix = dropout_prefix(chosen, ratio)
    if not prefix or not continuation.strip():
        return Outcome(reason="empty_response", detail="nothing to cut or an empty continuation")
    rejected = prefix + ("" if continuation[:1].isspace() else " ") + continuation.rstrip()
    if rejected.strip() == chosen.strip():
        return Outcome(reason="identical_pair", detail="the continuation reproduced the chosen response")
    row = _row(item, chosen, rejected, "dropout_ntp", {"with_image": True},
               {"prefix_words": len(prefix.split()), "ratio": ratio, "with_image": with_image})
    row["id"] = f"{item.id}_d0"
    return Outcome([row])
