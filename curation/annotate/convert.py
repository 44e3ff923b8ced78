"""Pair shards -> training conversations: the captioning task InternVL trains on, as jsonl + images.

Reads a pair-shard folder through its `_index.json` (readers trust only the index), writes each
kept image under `images/` and one conversation per pair: a human/gpt captioning exchange, or an
InternVL 3.5 `pretrain` turn (loss on the whole caption).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from curation.core.shards import iter_tar_groups

CAPTION_PROMPT = "<image>\nDescribe this image in one sentence."


def pairs_to_conversations(pair_dir: str | Path, out_dir: str | Path,
                           style: Literal["caption", "pretrain"] = "caption") -> tuple[Path, int]:
    """Write `out_dir/{prefix}.jsonl` + `out_dir/images/`; returns (jsonl path, conversations)."""
    pair_dir, out = Path(pair_dir), Path(out_dir)
    index = json.loads((pair_dir / "_index.json").read_text())
    (out / "images").mkdir(parents=True, exist_ok=True)
    target = out / f"{index['prefix']}.jsonl"
    n = 0
    with target.open("w", encoding="utf-8") as f:
        for shard in index["shards"]:
            for uid, group in iter_tar_groups(str(pair_dir / shard["tar"])):
                ext = next((e for e in ("jpg", "webp", "png") if e in group), None)
                if ext is None or "txt" not in group:
                    continue
                image = f"images/{uid}.{ext}"
                (out / image).write_bytes(group[ext])
                caption = group["txt"].decode("utf-8")
                meta = json.loads(group.get("json", b"{}"))
                turns = ([{"from": "pretrain", "value": f"<image>\n{caption}"}] if style == "pretrain" else
                         [{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": caption}])
                row = {"id": uid, "image": image, "width": meta.get("width"), "height": meta.get("height"),
                       "conversations": turns}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return target, n
