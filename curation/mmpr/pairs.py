"""MMPR preference pairs from sampled responses, without models or Beam: correctness-based pairs
(responses judged against the ground truth; right x wrong, at most K per question, seeded); Dropout
NTP pairs (the cut: curation/mmpr/dropout.py). Rows follow InternVL's MPO jsonl."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from curation.mmpr.answers import AnswerType, Extracted, Verdict, extract_answer, judge_answer
from curation.mmpr.dropout import dropout_prefix, unspaced


@dataclass(frozen=True)
class MmprItem:
    """One input question: `{"id", "image": path | [paths], "question", "answer_gt"?, "answer_type"?}`."""

    id: str
    images: tuple[str, ...]
    question: str
    answer_gt: str | tuple[str, ...] | None = None
    answer_type: AnswerType = "exact"
    options: tuple[str, ...] = ()
    # the InternVL tiling the policy saw the images with ({max_num, min_num, use_thumbnail}): pack applies it
    tiling: dict[str, Any] | None = None


@dataclass(frozen=True)
class Judged:
    response: str
    extracted: Extracted
    correct: bool  # right answer in the right format
    # correct; ambiguous (a well-formed near miss: neither chosen nor rejected); wrong (a clearly
    # wrong answer, or a badly formatted response)
    verdict: Verdict = "wrong"


@dataclass
class Outcome:
    """The pairs made for one item, or the reason none could be."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    detail: str = ""


def judge(item: MmprItem, responses: Sequence[str], style: Literal["final_answer", "boxed"] = "final_answer",
          rel_tol: float = 0.0) -> list[Judged]:
    """Each response's verdict (answers.judge_answer) against the item's ground truth; a response
    without a well-formed final answer is wrong whatever it says."""
    out = []
    for text in responses:
        ex = extract_answer(text, style)
        verdict: Verdict = "wrong"
        if ex.format_ok and ex.answer is not None and item.answer_gt is not None:
            verdict = judge_answer(ex.answer, item.answer_gt, item.answer_type, item.options, rel_tol)
        out.append(Judged(text, ex, verdict == "correct", verdict))
    return out


def pair_row(item: MmprItem, chosen: str, rejected: str, method: str, chosen_meta: dict, rejected_meta: dict) -> dict[str, Any]:
    gt = item.answer_gt
    return {"id": "", "image": list(item.images) if len(item.images) != 1 else item.images[0],
            "question": item.question, "chosen": chosen, "rejected": rejected,
            "answer_gt": list(gt) if isinstance(gt, tuple) else gt, "method": method,
            "chosen_meta": chosen_meta, "rejected_meta": rejected_meta,
            **({"tiling": item.tiling} if item.tiling is not None and item.images else {})}


def correctness_pairs(item: MmprItem, judged: Sequence[Judged], max_pairs: int, seed: int) -> Outcome:
    """Right (chosen) x clearly wrong or badly formatted (rejected) responses; near misses take no
    side. A pair whose chosen text is a substring of its rejected text is skipped (it would teach
    nothing about the answer)."""
    if not any(j.response.strip() for j in judged):
        return Outcome(reason="empty_response", detail=f"{len(judged)} empty responses")
    if not any(j.extracted.answer is not None for j in judged):
        return Outcome(reason="no_parseable_answer", detail=judged[0].extracted.problem)
    right = _unique([j for j in judged if j.correct])
    wrong = _unique([j for j in judged if j.verdict == "wrong" and j.response.strip()])
    near = sum(j.verdict == "ambiguous" for j in judged)
    if not right:
        if near and not wrong:
            return Outcome(reason="ambiguous_answer", detail=f"0 of {len(judged)} correct, {near} near misses")
        return Outcome(reason="all_wrong", detail=f"0 of {len(judged)} correct" + (f", {near} near misses" if near else ""))
    if not wrong:
        if near:
            return Outcome(reason="ambiguous_answer", detail=f"{len(right)} correct, {near} near misses, none clearly wrong")
        return Outcome(reason="all_correct", detail=f"{len(judged)} of {len(judged)} correct")
    candidates = [(c, r) for c in right for r in wrong if c.response.strip() not in r.response]
    if not candidates:
        return Outcome(reason="all_correct", detail="every wrong response contains a right one")
    random.Random(f"{seed}\x00{item.id}").shuffle(candidates)
    pairs = []
    for i, (c, r) in enumerate(candidates[:max_pairs]):
        row = pair_row(item, c.response, r.response, "correctness",
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


# ---------------------------------------------------------------------------------------------
# The stage, one input row at a time: parse -> load images -> sample -> judge and pair -> continue
# (Dropout NTP) -> outcome. Pure functions over `MmprTask`; pipelines/mmpr.py only wires them.


def dropout_pair(item: MmprItem, chosen: str, continuation: str, ratio: float, with_image: bool,
                 prefix: str | None = None) -> Outcome:
    """Chosen = a response sampled with the image; rejected = its prefix (`prefix`, the one the
    policy continued; else dropout_prefix's) + the policy's continuation (sampled without the image
    unless `with_image`)."""
    if not chosen.strip():
        return Outcome(reason="empty_response", detail="the chosen response is empty")
    prefix = dropout_prefix(chosen, ratio) if prefix is None else prefix
    if not prefix or not continuation.strip():
        return Outcome(reason="empty_response", detail="nothing to cut or an empty continuation")
    # a space between them only where the script uses spaces ("cat" + "sat", never "猫" + "坐")
    joint = "" if continuation[:1].isspace() or unspaced(prefix[-1]) or unspaced(continuation[0]) else " "
    rejected = prefix + joint + continuation.rstrip()
    if rejected.strip() == chosen.strip():
        return Outcome(reason="identical_pair", detail="the continuation reproduced the chosen response")
    row = pair_row(item, chosen, rejected, "dropout_ntp", {"with_image": True},
                   {"prefix_chars": len(prefix), "ratio": ratio, "with_image": with_image})
    row["id"] = f"{item.id}_d0"
    return Outcome([row])
