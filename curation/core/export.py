"""`curate export internvl`: an annotate or MMPR output as InternVL's own reader wants it. Both
keep each image once, inside its shard's tar, and their jsonl rows name it there
(`shard.tar!/uid.jpg@offset:size`); this writes each shard's jsonl (`{name}.conversations.jsonl`
for annotate, `{name}.jsonl` for MMPR's MPO pairs) with the rows unchanged but for `image`, now
`images/{name}/{member}` (one path, or a list for a multi-image row), and those image files beside
it: the layout InternVL's `LazySupervisedDataset` (and its MPO dataset) loads with the export folder
as its root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from curation.core.fs import join, open_binary
from curation.core.image_refs import parse_member_ref, read_range
from curation.core.shards import INDEX_NAME, ShardFormatError, check_index_names

# The jsonl that names a shard's images, per output kind: annotate's conversations, MMPR's pairs.
JSONL_OF_KIND = {"pairs": "{name}.conversations.jsonl", "mmpr": "{name}.jsonl"}


def _export_image(folder: str, shard: dict[str, Any], tar: IO[bytes], image: str, where: str, out: Path,
                  written: set[str], totals: dict[str, int]) -> str:
    """One image of a row: read by its byte range in the shard's tar, written once under
    `images/{name}/`; returns its new relative path."""
    ref = parse_member_ref(image)
    if ref is None or ref.tar != shard["tar"]:
        raise ShardFormatError(f"{where}: image {image!r} is not in {shard['tar']}")
    rel = f"images/{shard['name']}/{ref.member}"
    if rel in written:  # several MMPR pairs of one question name the same image
        return rel
    try:
        data = read_range(tar, ref.offset, ref.size, f"{folder}/{shard['tar']}: {ref.member}")
    except OSError as err:
        raise ShardFormatError(str(err)) from None
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    written.add(rel)
    totals["images"] += 1
    totals["bytes"] += len(data)
    return rel


def export_internvl(folder: str, out_dir: str | Path) -> dict[str, Any]:
    """Write the export of annotate or MMPR output `folder` (local or an fsspec URL) under
    `out_dir`; returns {"shards", "rows", "images", "bytes", "jsonl"}. Every image is read by its
    byte range (one open per shard tar) and written once; a row naming a member its tar does not
    hold is a broken shard: ShardFormatError."""
    out = Path(out_dir)
    with open_binary(join(folder, INDEX_NAME)) as f:
        index = json.load(f)
    check_index_names(index, join(folder, INDEX_NAME))
    kind = index.get("kind", "pairs")
    if kind not in JSONL_OF_KIND:
        raise ShardFormatError(f"{folder}: a {kind!r} output has no image rows to export (annotate or mmpr only)")
    totals = {"shards": 0, "rows": 0, "images": 0, "bytes": 0, "jsonl": JSONL_OF_KIND[kind].format(name="*")}
    for shard in index["shards"]:
        name = shard["name"]
        jsonl = JSONL_OF_KIND[kind].format(name=name)
        if jsonl not in (shard.get("files") or {}):
            raise ShardFormatError(f"{folder}: {name} has no {jsonl}: not an annotate or mmpr output")
        with open_binary(join(folder, jsonl)) as f:
            rows = [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
        lines, written = [], set()
        with open_binary(join(folder, shard["tar"])) as tar:
            for row in rows:
                where = f"{folder}/{jsonl}: {row.get('id')}"
                images = row["image"] if isinstance(row.get("image"), list) else [row.get("image")]
                rels = [_export_image(folder, shard, tar, str(image), where, out, written, totals) for image in images]
                lines.append(json.dumps({**row, "image": rels if isinstance(row["image"], list) else rels[0]},
                                        ensure_ascii=False, sort_keys=True))
        out.mkdir(parents=True, exist_ok=True)
        (out / jsonl).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        totals["shards"] += 1
        totals["rows"] += len(lines)
    return totals
