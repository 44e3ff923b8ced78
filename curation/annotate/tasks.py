"""The one pair -> conversation builder. Kept pairs -> InternVL training conversations: captioning
(English / Chinese prompt templates), OCR tasks from the OCR lines (as InternVL 2.0 built its OCR data from Wukong and LAION-COCO with
PaddleOCR), and InternVL 3.5 `pretrain` turns for raw captions. The task and the prompt are drawn
per uid from a seeded stable hash, so the mix is reproducible and independent of sharding."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Sequence

from curation.annotate.config import ConversationConfig
from curation.core.shards import INDEX_NAME, ShardFormatError, check_index_names, iter_tar_groups, stable_hash

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
TASKS = ("caption", "ocr", "pretrain")


def language(text: str) -> str:
    """`zh` when a fifth or more of the letters are Chinese characters, else `en`: the fallback
    where language ID is off or unsure."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(1 for c in letters if _CJK.match(c)) * 5 >= len(letters):
        return "zh"
    return "en"


def _draw(uid: str, seed: int, salt: str) -> float:
    """A stable number in [0, 1) per (uid, seed, salt)."""
    return stable_hash(f"{seed}\x00{salt}\x00{uid}") / 2.0 ** 64


def pick_task(uid: str, cfg: ConversationConfig, ocr_chars: int) -> str:
    """The task for this uid: drawn from `mix`; `ocr` without enough OCR text becomes `caption`."""
    total = sum(cfg.mix.values())
    x, acc, task = _draw(uid, cfg.seed, "task") * total, 0.0, "caption"
    for name in TASKS:
        w = cfg.mix.get(name, 0.0)
        if w > 0 and x < acc + w:
            task = name
            break
        acc += w
    if task == "ocr" and ocr_chars < cfg.min_ocr_chars:
        return "caption"
    return task


def _prompt(uid: str, prompts: dict[str, list[str]], lang: str, seed: int, salt: str) -> str:
    options = prompts.get(lang) or prompts["en"]
    return options[int(_draw(uid, seed, salt) * len(options))]


def build_conversation(uid: str, image: str, caption: str, ocr_lines: Sequence[str | dict[str, Any]],
                       cfg: ConversationConfig, width: int | None = None, height: int | None = None, *,
                       caption_lang: str | None = None, ocr_lang: str | None = None,
                       low_confidence: int = 0) -> dict[str, Any]:
    """One InternVL jsonl row for a kept pair; `task` records which builder made it. OCR lines are
    strings or the json's line dicts: a line an engine flagged (`script_not_covered`,
    `script_mismatch`, `not_text`) never becomes an OCR target. An `ocr` draw that flagged or dropped
    low-confidence lines left without text becomes captioning with `ocr_task_skipped` naming why."""
    texts = [ln if isinstance(ln, str) else ln["text"] for ln in ocr_lines
             if isinstance(ln, str) or not ln.get("flag")]
    flags = [ln["flag"] for ln in ocr_lines if isinstance(ln, dict) and ln.get("flag")]
    ocr_text = "\n".join(line for line in texts if line.strip())
    task = pick_task(uid, cfg, len(ocr_text.replace("\n", "")))
    skipped = None
    if task == "caption" and pick_task(uid, cfg, cfg.min_ocr_chars) == "ocr" and (flags or low_confidence):
        skipped = max(sorted(set(flags)), key=flags.count) if flags else "low_confidence"
    if task == "pretrain":
        turns = [{"from": "pretrain", "value": f"<image>\n{caption}"}]
    elif task == "ocr":
        prompt = _prompt(uid, cfg.ocr_prompts, ocr_lang or language(ocr_text), cfg.seed, "ocr")
        turns = [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": ocr_text}]
    else:
        prompt = _prompt(uid, cfg.caption_prompts, caption_lang or language(caption), cfg.seed, "caption")
        turns = [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": caption}]
    row: dict[str, Any] = {"id": uid, "image": image}
    if width and height:
        row.update(width=width, height=height)
    row.update(task=task, conversations=turns)
    if skipped:
        row["ocr_task_skipped"] = skipped
    return row


CAPTION_PROMPT = "Describe this image in one sentence."


def plain_tasks(style: Literal["caption", "pretrain"]) -> ConversationConfig:
    """The builder's config for plain captioning (one fixed prompt) or InternVL 3.5 `pretrain` turns:
    what `curate plan` predicts and the demo packs when it skips annotate."""
    return ConversationConfig(mix={style: 1.0}, caption_prompts={"en": [CAPTION_PROMPT]}, ocr_prompts={"en": [CAPTION_PROMPT]})


VIDEO_PROMPT = "Describe this video in one sentence."
VIDEO_TILING = {"max_num": 1, "min_num": 1, "use_thumbnail": False}  # InternVL: one 448 px tile per frame


def video_conversation(uid: str, group: dict[str, bytes], meta: dict[str, Any], out: Path,
                       style: Literal["caption", "pretrain"], frame_label: str = "Frame-") -> dict[str, Any]:
    """A video sample's frames written under `out/images/` -> an InternVL video conversation:
    `Frame-1: <image>` ... per frame (InternVL 2.5 / 3's fine-tuning prompt; `frame_label` "Frame"
    for its chat demo's), one tile per frame (`tiling`), the caption as the answer (or, for
    `pretrain`, the text after the frames)."""
    from curation.core.records import frame_member
    from curation.ingest.video import video_prompt

    n = int(meta["video"]["frames"])
    images = []
    for k in range(n):  # frame members in their numeric order
        member = frame_member(k)
        if member not in group:
            raise ShardFormatError(f"video sample {uid} has no {member} (its json says {n} frames)")
        path = f"images/{uid}.{member}"
        (out / path).write_bytes(group[member])
        images.append(path)
    caption = group["txt"].decode("utf-8")
    if style == "pretrain":
        turns = [{"from": "pretrain", "value": f"{video_prompt(n, frame_label)}{caption}"}]
    else:
        turns = [{"from": "human", "value": f"{video_prompt(n, frame_label)}{VIDEO_PROMPT}"},
                 {"from": "gpt", "value": caption}]
    return {"id": uid, "image": images, "task": f"video_{style}", "tiling": dict(VIDEO_TILING),
            "timestamps": meta["video"]["timestamps"], "conversations": turns}


def pairs_to_conversations(pair_dir: str | Path, out_dir: str | Path,
                           style: Literal["caption", "pretrain"] = "caption",
                           frame_label: str = "Frame-") -> tuple[Path, int]:
    """A pair-shard folder (read through its `_index.json`) -> `out_dir/{prefix}.jsonl` with one
    conversation per kept pair, images under `out_dir/images/`; returns (jsonl path, conversations).
    A kept sample without its image or caption is a broken shard: ShardFormatError, never a skip."""
    import json

    pair_dir, out = Path(pair_dir), Path(out_dir)
    index = json.loads((pair_dir / INDEX_NAME).read_text())
    check_index_names(index, str(pair_dir / INDEX_NAME))
    (out / "images").mkdir(parents=True, exist_ok=True)
    target = out / f"{index['prefix']}.jsonl"
    cfg = plain_tasks(style)
    n = 0
    with target.open("w", encoding="utf-8") as f:
        for shard in index["shards"]:
            for uid, group in iter_tar_groups(str(pair_dir / shard["tar"])):
                ext = next((e for e in ("jpg", "webp", "png") if e in group), None)
                if ext is None or "txt" not in group:
                    raise ShardFormatError(f"{pair_dir / shard['tar']}: kept sample {uid} has no image or no caption")
                meta = json.loads(group.get("json", b"{}"))
                if "video" in meta:
                    row = video_conversation(uid, group, meta, out, style, frame_label)
                else:
                    image = f"images/{uid}.{ext}"
                    (out / image).write_bytes(group[ext])
                    row = build_conversation(uid, image, group["txt"].decode("utf-8"), [], cfg, meta.get("width"),
                                             meta.get("height"))
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return target, n
