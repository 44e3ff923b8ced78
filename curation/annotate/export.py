"""`curate export internvl`: an annotate output as InternVL's own reader wants it. Annotate keeps
each image once, inside its shard's tar, and its conversation rows name it there
(`shard.tar!/uid.jpg@offset:size`); this writes `{name}.conversations.jsonl` with the rows
unchanged but for `image`, now `images/{name}/{uid}.{ext}`, and those image files beside it - the
layout annotate wrote before, which InternVL's `LazySupervisedDataset` loads with the export
folder as its root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curation.core.fs import join, open_binary
from curation.core.image_refs import parse_member_ref, read_range
from curation.core.shards import INDEX_NAME, ShardFormatError, check_index_names


def export_internvl(folder: str, out_dir: str | Path) -> dict[str, Any]:
    """Write the export of annotate output `folder` (local or an fsspec URL) under `out_dir`;
    returns {"shards", "conversations", "images", "bytes"}. Every row's image is read by its byte
    range (one open per shard tar) and written once; a row naming a member its tar does not hold
    is a broken shard: ShardFormatError."""
    out = Path(out_dir)
    with open_binary(join(folder, INDEX_NAME)) as f:
        index = json.load(f)
    check_index_names(index, join(folder, INDEX_NAME))
    totals = {"shards": 0, "conversations": 0, "images": 0, "bytes": 0}
    for shard in index["shards"]:
        name = shard["name"]
        jsonl = f"{name}.conversations.jsonl"
        if jsonl not in (shard.get("files") or {}):
            raise ShardFormatError(f"{folder}: {name} has no {jsonl}: not an annotate output")
        with open_binary(join(folder, jsonl)) as f:
            rows = [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
        lines = []
        with open_binary(join(folder, shard["tar"])) as tar:
            for row in rows:
                ref = parse_member_ref(row["image"])
                if ref is None or ref.tar != shard["tar"]:
                    raise ShardFormatError(f"{folder}/{jsonl}: {row['id']}: image {row['image']!r} is not in {shard['tar']}")
                try:
                    data = read_range(tar, ref.offset, ref.size, f"{folder}/{shard['tar']}: {ref.member}")
                except OSError as err:
                    raise ShardFormatError(str(err)) from None
                rel = f"images/{name}/{ref.member}"
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
                lines.append(json.dumps({**row, "image": rel}, ensure_ascii=False, sort_keys=True))
                totals["images"] += 1
                totals["bytes"] += len(data)
        out.mkdir(parents=True, exist_ok=True)
        (out / jsonl).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        totals["shards"] += 1
        totals["conversations"] += len(lines)
    return totals
