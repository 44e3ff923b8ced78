"""One MMPR question through the stage: parsed from its row, prompts rendered, policy requests
sampled, answers judged, a continuation requested for Dropout NTP, images loaded for the pairs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from curation.mmpr.dropout import dropout_prefix
from curation.mmpr.pairs import MmprItem, correctness_pairs, dropout_pair, judge


ANSWER_TYPES = ("exact", "multiple_choice", "number", "vqa", "anls", "relaxed")



@dataclass
class MmprTask:
    """One input row on its way through the stage; it ends kept (pairs) or rejected (reason)."""

    uid: str
    source_file: str
    source_row: int
    item: MmprItem | None = None
    # Image k is read again where its bytes are needed (the policy, the shard writer), never carried
    # through the shuffles: its full path, or "" when the row carried its bytes (kept in `embedded`).
    image_paths: list[str] = field(default_factory=list)
    image_exts: list[str] = field(default_factory=list)
    image_digests: list[str] = field(default_factory=list)  # blake2b-128 of image k as first read
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
        self.image_paths, self.image_exts, self.image_digests, self.embedded = [], [], [], []
        return self


def image_digest(data: bytes) -> str:
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


class ImageChanged(OSError):
    """An image's bytes differ from what the job first read."""


def task_images(task: MmprTask, read: Any) -> tuple[bytes, ...]:
    """The task's image bytes, in order: the row's own, or read again by path with `read(path)`.
    OSError naming the file when it cannot be read, or when its bytes differ from the first read
    (the input changed under the running job: the pairs would name another image)."""
    out = []
    for k, path in enumerate(task.image_paths):
        data = task.embedded[k] if k < len(task.embedded) and task.embedded[k] is not None else read(path)
        if k < len(task.image_digests) and image_digest(data) != task.image_digests[k]:
            raise ImageChanged(f"{path or task.source_file}: image {k} of {task.uid} changed since the job read it")
        out.append(data)
    return tuple(out)


def reread_images(task: MmprTask, read: Any, stage: str) -> tuple[bytes, ...] | None:
    """`task_images`, or None with the task rejected `local_file_error` at `stage` (its pairs
    dropped): a file gone or changed since the first read fails its own row, never the job. Any
    other error (a store that did not answer) propagates, so the runner retries the bundle."""
    import errno

    try:
        return task_images(task, read)
    except OSError as err:
        if not isinstance(err, (FileNotFoundError, ImageChanged)) and err.errno != errno.ENOENT:
            raise
        task.pairs, task.chosen, task.prefix = [], None, None
        task.reject(stage, "local_file_error", f"read again: {type(err).__name__}: {err}"[:300])
        return None



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



def sample_requests(task: MmprTask, cfg, per_request_seed: bool, images: tuple[bytes, ...]):
    """The policy requests for one question (`images`: its image bytes): `correctness.samples` of
    them with a ground truth, one (the Dropout NTP chosen response) without."""
    from curation.mmpr.policy import PolicyRequest

    n = cfg.correctness.samples if wants_correctness(task, cfg) else 1 if wants_dropout(task, cfg) else 0
    base = item_seed(cfg.sampling.seed, task.uid)
    prompt = render_prompt(cfg.prompt.template, task.item.question)
    history = _history(cfg)
    return [PolicyRequest(prompt, images, history, "", (base + k) & 0x7FFFFFFF if per_request_seed else base)
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



def continuation_request(task: MmprTask, cfg, per_request_seed: bool, tokenizer: Any,
                         images: tuple[bytes, ...]):
    """Dropout NTP: continue the chosen response's prefix (cut by `tokenizer`'s tokens when given;
    kept on the task for the pair), without the image (`images`) unless configured."""
    from curation.mmpr.policy import PolicyRequest

    d = cfg.dropout_ntp
    prompt = render_prompt(cfg.prompt.template, task.item.question)
    images = images if d.with_image else ()
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



def load_images(task: MmprTask, root: str, cfg, read: Any, held: list[bytes] | None = None) -> MmprTask:
    """Read the row's images (embedded bytes, or relative paths under `root`, never outside it) and
    check their headers: a missing, oversized or undecodable image rejects the row with its reason.
    Only the paths and formats stay on the task (and the bytes a row embeds); `held`, if given,
    receives each image's bytes for the caller's next step (decontamination hashes them)."""
    import io

    from packing.tokens import EncodeError
    from packing.units import read_header, resolve_image

    if task.reason or task.item is None:
        return task
    try:
        for k, path in enumerate(task.item.images):
            data = task.embedded[k] if k < len(task.embedded) else None
            full = ""
            if data is None:
                full = resolve_image(root, path)
                try:
                    data = read(full, cfg.max_bytes + 1)
                except Exception as err:  # noqa: BLE001 - missing / unreadable: this row's problem
                    raise EncodeError("local_file_error", f"{path}: {type(err).__name__}: {err}"[:300]) from None
            if len(data) > cfg.max_bytes:
                raise EncodeError("file_too_large", f"{path}: above images.max_bytes {cfg.max_bytes}")
            _, _, ext = read_header(io.BytesIO(data), cfg.max_pixels)
            task.image_paths.append(full)
            task.image_exts.append(ext)
            task.image_digests.append(image_digest(data))
            if held is not None:
                held.append(data)
    except EncodeError as err:
        task.reject("read", err.reason, err.detail)
    return task
