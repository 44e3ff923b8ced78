"""MMPR preference pairs from sampled responses, without models or Beam: correctness-based pairs
(responses judged against the ground truth; right x wrong, at most K per question, seeded) and
Dropout NTP pairs (the chosen response cut at a fraction of its tokens, or of its words and
unspaced-script characters; the policy's continuation of that prefix without the image is the
rejected one). Rows follow InternVL's MPO jsonl."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from curation.mmpr.answers import AnswerType, Extracted, Verdict, extract_answer, judge_answer


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


def _row(item: MmprItem, chosen: str, rejected: str, method: str, chosen_meta: dict, rejected_meta: dict) -> dict[str, Any]:
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


# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, CJK ideographs):
# without a tokenizer, each character there (with its combining marks) is one unit of the cut.
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x31F0, 0x31FF),
             (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x2FA1F))


def _unspaced(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _UNSPACED)


def unit_ends(text: str) -> list[int]:
    """Where each unit of `text` ends: words in spaced scripts, characters (with their combining
    marks) in scripts written without spaces, so "我喜欢猫 and dogs" has 6 units."""
    import unicodedata

    ends, i, n = [], 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i + 1
        if _unspaced(text[i]):
            while j < n and unicodedata.category(text[j]).startswith("M"):
                j += 1
        else:
            while j < n and not text[j].isspace() and not _unspaced(text[j]):
                j += 1
        ends.append(j)
        i = j
    return ends


def token_ends(tokenizer: Any, text: str) -> list[int]:
    """Where each of the tokenizer's tokens of `text` ends, in characters (a fast tokenizer's
    offsets; byte pieces of one character end with it, so a cut never splits a character)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [end for _, end in enc["offset_mapping"] if end > 0]


def dropout_prefix(response: str, ratio: float, tokenizer: Any = None) -> str:
    """The first floor(ratio x units) units of `response`, its own spacing kept: the policy
    tokenizer's tokens when given, else words (characters where a script has no spaces)."""
    ends = token_ends(tokenizer, response) if tokenizer is not None else unit_ends(response)
    k = math.floor(ratio * len(ends))
    return response[: ends[k - 1]] if k > 0 else ""


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
    joint = "" if continuation[:1].isspace() or _unspaced(prefix[-1]) or _unspaced(continuation[0]) else " "
    rejected = prefix + joint + continuation.rstrip()
    if rejected.strip() == chosen.strip():
        return Outcome(reason="identical_pair", detail="the continuation reproduced the chosen response")
    row = _row(item, chosen, rejected, "dropout_ntp", {"with_image": True},
               {"prefix_chars": len(prefix), "ratio": ratio, "with_image": with_image})
    row["id"] = f"{item.id}_d0"
    return Outcome([row])


# ---------------------------------------------------------------------------------------------
# The stage, one input row at a time: parse -> load images -> sample -> judge and pair -> continue
# (Dropout NTP) -> outcome. Pure functions over `MmprTask`; pipelines/mmpr.py only wires them.

ANSWER_TYPES = ("exact", "multiple_choice", "number", "vqa", "anls", "relaxed")


@dataclass
class MmprTask:
    """One input row on its way through the stage; it ends kept (pairs) or rejected (reason)."""

    uid: str
    source_file: str
    source_row: int
    item: MmprItem | None = None
    images: list[bytes] = field(default_factory=list)
    image_exts: list[str] = field(default_factory=list)
    embedded: list[bytes | None] = field(default_factory=list)  # image k's bytes when the row carried them
    responses: list[dict[str, Any]] = field(default_factory=list)  # text, finish_reason, correct, meta
    pairs: list[dict[str, Any]] = field(default_factory=list)
    chosen: str | None = None  # Dropout NTP: the response waiting for its continuation
    prefix: str | None = None  # Dropout NTP: the cut of `chosen` the policy was asked to continue
    stage: str = ""
    reason: str | None = None
    detail: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # method -> why it made no pair

    @property
    def order_key(self) -> tuple[str, int]:
        return self.source_file, self.source_row

    def reject(self, stage: str, reason: str, detail: str = "") -> "MmprTask":
        self.stage, self.reason, self.detail = stage, reason, detail[:500]
        self.images, self.embedded = [], []
        return self


def _answer_gt(value: Any) -> str | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("`answer_gt` must be a string, a number or a list of them")
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return tuple(str(v) for v in value)
    raise ValueError("`answer_gt` must be a string, a number or a non-empty list of them")


def parse_item(raw: dict[str, Any], source_file: str, index: int, schema: str = "mmpr",
               answer_type: str | None = None) -> MmprTask:
    """One source row -> a task holding its MmprItem (and the image bytes the row embeds), or
    rejected `malformed_row`. `schema` maps a benchmark's row to `{"id", "image": path | [paths],
    "question", "answer_gt"?, "answer_type"?, "options"?}` (curation/mmpr/sources.py)."""
    from curation.core.conversations import row_uid
    from curation.mmpr.sources import canonical

    try:
        conv = canonical(raw, schema, answer_type)
    except ValueError as err:
        return MmprTask(row_uid(raw, source_file, index), source_file, index).reject("read", "malformed_row", str(err))
    row = conv.row
    task = MmprTask(row_uid(row, source_file, index), source_file, index, embedded=conv.embedded)
    try:
        images = conv.paths
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("`question` must be a non-empty string")
        answer_type = row.get("answer_type") or "exact"
        if answer_type not in ANSWER_TYPES:
            raise ValueError(f"`answer_type` must be one of {', '.join(ANSWER_TYPES)}, got {answer_type!r}")
        options = row.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise ValueError("`options` must be a list of strings")
        task.item = MmprItem(task.uid, tuple(images), question, _answer_gt(row.get("answer_gt")), answer_type,
                             tuple(options))
    except ValueError as err:
        task.reject("read", "malformed_row", str(err))
    return task


def item_seed(seed: int, uid: str) -> int:
    """A per-question seed: the samples of a question do not depend on the rest of its batch."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}\x00{uid}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def render_prompt(template: str, question: str) -> str:
    return template.format(question=question.strip())


def row_item(task: MmprTask, cfg) -> MmprItem:
    """The item as its pairs record it: the question is the prompt the responses answered (with
    one `<image>` per image when there are several; pack puts a single image first)."""
    from curation.mmpr.policy import with_placeholders

    prompt = render_prompt(cfg.prompt.template, task.item.question)
    n = len(task.item.images)
    return dataclasses.replace(task.item, question=with_placeholders(prompt, n) if n > 1 else prompt,
                               tiling=policy_tiling(cfg))


def policy_tiling(cfg) -> dict[str, Any] | None:
    """The tiling the sampling policy applies to a question's images (the model core's prompt
    config); None for served models, whose image processor decides."""
    if cfg.policy.backend != "model":
        return None
    return {"max_num": cfg.policy.prompt.max_num, "min_num": 1, "use_thumbnail": cfg.policy.prompt.use_thumbnail}


def _history(cfg) -> tuple:
    from curation.core.conversations import Turn

    out = []
    for shot in cfg.prompt.examples:
        out += [Turn("user", render_prompt(cfg.prompt.template, shot.question)), Turn("assistant", shot.response)]
    return tuple(out)


def wants_correctness(task: MmprTask, cfg) -> bool:
    return cfg.correctness.enabled and task.item is not None and task.item.answer_gt is not None


def wants_dropout(task: MmprTask, cfg) -> bool:
    d = cfg.dropout_ntp
    return d.enabled and task.item is not None and (d.apply_to == "all" or task.item.answer_gt is None)


def sample_requests(task: MmprTask, cfg, per_request_seed: bool):
    """The policy requests for one question: `correctness.samples` of them with a ground truth, one
    (the Dropout NTP chosen response) without."""
    from curation.mmpr.policy import PolicyRequest

    n = cfg.correctness.samples if wants_correctness(task, cfg) else 1 if wants_dropout(task, cfg) else 0
    base = item_seed(cfg.sampling.seed, task.uid)
    prompt = render_prompt(cfg.prompt.template, task.item.question)
    history = _history(cfg)
    return [PolicyRequest(prompt, tuple(task.images), history, "", (base + k) & 0x7FFFFFFF if per_request_seed else base)
            for k in range(n)]


def after_sampling(task: MmprTask, responses: Sequence[Any], cfg, policy_label: str) -> MmprTask:
    """Judge the samples, make the correctness pairs and pick the Dropout NTP chosen response. A
    response that hit max_new_tokens is cut off: it is neither chosen nor rejected."""
    from curation.annotate.llm import LlmError

    item = task.item
    errors = [r for r in responses if isinstance(r, LlmError)]
    good = [r for r in responses if not isinstance(r, LlmError)]
    if not good:
        return task.reject("sample", "llm_error", errors[0].detail if errors else "no response")
    whole = [r for r in good if r.finish_reason != "length"]
    judged = judge(item, [r.text for r in whole], cfg.prompt.style, cfg.correctness.rel_tol) if item.answer_gt is not None else []
    verdict = {id(r): j for r, j in zip(whole, judged)}
    task.responses = [{"text": r.text, "finish_reason": r.finish_reason,
                       "correct": verdict[id(r)].correct if id(r) in verdict else None,
                       "verdict": verdict[id(r)].verdict if id(r) in verdict else None, "meta": r.meta} for r in good]
    if not whole:
        return task.reject("sample", "too_long", f"all {len(good)} responses hit max_new_tokens "
                                                 f"{cfg.sampling.max_new_tokens}")
    if wants_correctness(task, cfg):
        out = correctness_pairs(row_item(task, cfg), judged, cfg.correctness.max_pairs, cfg.sampling.seed)
        for pair in out.pairs:
            pair["chosen_meta"]["policy"] = pair["rejected_meta"]["policy"] = policy_label
        task.pairs += out.pairs
        if out.reason:
            task.notes["correctness"] = f"{out.reason}: {out.detail}"
    if wants_dropout(task, cfg):
        if item.answer_gt is not None:
            right = [j.response for j in judged if j.correct]
            task.chosen = right[0] if right else None
            if task.chosen is None:
                task.notes["dropout_ntp"] = "all_wrong: no right response to use as the chosen one"
        else:
            task.chosen = next((r.text for r in whole if r.text.strip()), None)
            if task.chosen is None:
                task.notes["dropout_ntp"] = "empty_response: the sampled response is empty"
    return task if task.chosen is not None else finish(task)


def continuation_request(task: MmprTask, cfg, per_request_seed: bool, tokenizer: Any = None):
    """Dropout NTP: continue the chosen response's prefix (cut by `tokenizer`'s tokens when given;
    kept on the task for the pair), without the image unless configured."""
    from curation.mmpr.policy import PolicyRequest

    d = cfg.dropout_ntp
    prompt = render_prompt(cfg.prompt.template, task.item.question)
    images = tuple(task.images) if d.with_image else ()
    task.prefix = dropout_prefix(task.chosen, d.ratio, tokenizer)
    return PolicyRequest(prompt, images, _history(cfg), task.prefix, item_seed(cfg.continue_sampling.seed + 1, task.uid))


def after_continuation(task: MmprTask, response: Any, cfg, policy_label: str) -> MmprTask:
    from curation.annotate.llm import LlmError

    d = cfg.dropout_ntp
    if isinstance(response, LlmError):
        task.notes["dropout_ntp"] = f"llm_error: {response.detail}"
    else:
        out = dropout_pair(row_item(task, cfg), task.chosen, response.text, d.ratio, d.with_image, task.prefix)
        for pair in out.pairs:
            pair["rejected_meta"]["policy"] = policy_label
            pair["rejected_meta"]["finish_reason"] = response.finish_reason
        task.pairs += out.pairs
        if out.reason:
            task.notes["dropout_ntp"] = f"{out.reason}: {out.detail}"
    task.chosen = task.prefix = None
    return finish(task)


def finish(task: MmprTask) -> MmprTask:
    """Kept with its pairs, or rejected with the first method's reason (the others in the detail)."""
    if task.pairs or task.reason:
        return task
    notes = list(task.notes.items())
    if not notes:
        return task.reject("pair", "no_applicable_method", "correctness needs answer_gt; dropout_ntp is off or only for no_gt")
    reason, _, detail = notes[0][1].partition(": ")
    others = "; ".join(f"{m}: {n}" for m, n in notes[1:])
    return task.reject("pair", reason, detail + (f" ({others})" if others else ""))


def load_images(task: MmprTask, root: str, cfg, read: Any) -> MmprTask:
    """Read the row's images (embedded bytes, or relative paths under `root`, never outside it) and
    check their headers: a missing, oversized or undecodable image rejects the row with its reason."""
    import io

    from packing.tokens import EncodeError
    from packing.units import read_header, resolve_image

    if task.reason or task.item is None:
        return task
    try:
        for k, path in enumerate(task.item.images):
            data = task.embedded[k] if k < len(task.embedded) else None
            if data is None:
                full = resolve_image(root, path)
                try:
                    data = read(full, cfg.max_bytes + 1)
                except Exception as err:  # noqa: BLE001 - missing / unreadable: this row's problem
                    raise EncodeError("local_file_error", f"{path}: {type(err).__name__}: {err}"[:300]) from None
            if len(data) > cfg.max_bytes:
                raise EncodeError("file_too_large", f"{path}: above images.max_bytes {cfg.max_bytes}")
            _, _, ext = read_header(io.BytesIO(data), cfg.max_pixels)
            task.images.append(data)
            task.image_exts.append(ext)
        task.embedded = []
    except EncodeError as err:
        task.reject("read", err.reason, err.detail)
    return task
