"""The MMPR stage's files: reading question jsonl into tasks, and one output shard.

Per shard `{name}.tar` (webdataset: per kept question its images `{uid}.{k}.{ext}`, then
`{uid}.json` with its pairs and every sampled response), `{name}.jsonl` (InternVL MPO rows, sorted
by id, each naming its images inside the tar by byte range, `{name}.tar!/{uid}.0.jpg@offset:size`,
relative to the output folder, pack's default image root; `curate export internvl` writes them as
loose files for InternVL's own reader) and `{name}.parquet` (one manifest row per input row: kept
with its pair count, or rejected with stage, reason and detail). No image is stored outside a tar.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from typing import IO, Any, Callable, Iterable, Iterator


from curation.mmpr.tasks import MmprTask, parse_item
from curation.core.records import first_kept_per_uid, hash_uid
from curation.core.shards import HashingWriter, ShardReport, rejection_counts, write_rows, write_tar
from curation.core.rows import RowError, detect_format, iter_raw_rows
from curation.mmpr.config import MmprSourceConfig
from curation.core.manifests import MMPR_MANIFEST



def read_tasks(f: IO[bytes], name: str, source: MmprSourceConfig | None = None) -> Iterator[MmprTask]:
    """Every row of a question file (jsonl or parquet, in the recipe's schema or the one its first
    row shows) as a task, rejected `malformed_row` when it cannot be used; a file that stops being
    readable ends with one `unreadable_file` task."""
    from curation.mmpr.sources import SchemaError, detect_schema

    source = source or MmprSourceConfig()
    base = posixpath.basename(name.rstrip("/"))
    schema = None if source.schema == "auto" else source.schema
    next_index, fmt = 0, source.format
    try:
        fmt = detect_format(name, source.format)
        for index, raw in iter_raw_rows(f, fmt, parquet_batch_rows=source.parquet_batch_rows):
            next_index = index + 1
            if not isinstance(raw, RowError) and schema is None:
                try:
                    schema = detect_schema(raw)
                except SchemaError as err:
                    raw = RowError(str(err))
            if isinstance(raw, RowError):
                yield MmprTask(hash_uid(f"row:{base}:{index}", ""), base, index).reject("read", raw.reason, str(raw))
            else:
                yield parse_item(raw, base, index, schema, source.answer_type)
    except Exception as err:  # noqa: BLE001 - any reader failure is data, not a crash
        yield MmprTask(hash_uid(f"row:{base}:{next_index}", ""), base, next_index).reject(
            "read", "unreadable_file", f"{fmt} reader stopped: {type(err).__name__}: {str(err)[:200]}")


def _resolve_collisions(tasks: Iterable[MmprTask]) -> list[MmprTask]:
    """The first row per uid (source order) keeps its pairs; a later kept one becomes `dup_uid`."""
    def dup(task: MmprTask, first: MmprTask) -> MmprTask:
        task.pairs = []
        return task.reject("write", "dup_uid", f"uid already kept from {first.source_file}:{first.source_row}")

    return first_kept_per_uid(tasks, order_key=lambda t: t.order_key, uid=lambda t: t.uid, kept=lambda t: bool(t.pairs),
                              dup=dup)


def _manifest_row(t: MmprTask) -> dict[str, Any]:
    item = t.item
    gt = None if item is None or item.answer_gt is None else (
        item.answer_gt if isinstance(item.answer_gt, str) else json.dumps(list(item.answer_gt), ensure_ascii=False))
    return {
        "uid": t.uid, "source_file": t.source_file, "source_row": t.source_row,
        "status": "kept" if t.pairs else "rejected", "stage": None if t.pairs else t.stage,
        "reason": None if t.pairs else t.reason, "detail": None if t.pairs else t.detail,
        "question": None if item is None else item.question, "answer_gt": gt,
        "answer_type": None if item is None else item.answer_type, "samples": len(t.responses),
        "correct": sum(1 for r in t.responses if r.get("correct")), "pairs": len(t.pairs),
        "methods": ",".join(sorted({p["method"] for p in t.pairs})) or None,
        "notes": json.dumps(t.notes, sort_keys=True) if t.notes else None,
    }


def write_mmpr_shard(shard: int, name: str, records: Iterable[MmprTask], tar_file: IO[bytes], manifest_file: IO[bytes],
                     read: Callable[[str], bytes]) -> tuple[ShardReport, dict[str, bytes]]:
    """One shard from all its tasks (kept and rejected). A kept question's images are read again
    (`read(path)`, or from its row), one question at a time, as they are streamed into the tar;
    one that cannot be read is rejected here (`local_file_error`) and nothing of it is written.
    Its pairs name its images in the tar (`{name}.tar!/{uid}.{k}.{ext}@offset:size`), in the
    tar's json and in `{name}.jsonl` alike. Returns the report and `{name}.jsonl`."""
    from curation.core.image_refs import member_ref
    from curation.mmpr.tasks import reread_images

    tasks = _resolve_collisions(records)
    lines, methods = [], Counter()
    where: dict[str, tuple[int, int]] = {}

    def members() -> Iterator[tuple[str, bytes]]:
        for task in sorted((t for t in tasks if t.pairs), key=lambda t: t.uid):
            names = [f"{task.uid}.{k}.{ext}" for k, ext in enumerate(task.image_exts)]
            images = reread_images(task, read, "write")
            if images is None:  # gone or changed since the first read: rejected, nothing of it in the tar
                continue
            yield from zip(names, images)  # images first, so the json after them can name their byte ranges
            refs = [member_ref(f"{name}.tar", m, *where[m]) for m in names]
            doc = {"id": task.uid, "responses": task.responses, "pairs": []}
            for pair in sorted(task.pairs, key=lambda p: p["id"]):
                row = {**pair, "image": refs[0] if len(refs) == 1 else refs}
                lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
                doc["pairs"].append(row)
                methods[pair["method"]] += 1
            yield f"{task.uid}.json", json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()

    tar_out = HashingWriter(tar_file)
    write_tar(tar_out, members(), where)
    kept = [t for t in tasks if t.pairs]
    man_out = HashingWriter(manifest_file)
    rows = [_manifest_row(t) for t in tasks]
    write_rows(rows, MMPR_MANIFEST, man_out)
    rejected = [t for t in tasks if not t.pairs]
    report = ShardReport(
        shard=shard, name=name, kept=len(kept), rows=len(tasks), tar_sha256=tar_out.hexdigest(),
        manifest_sha256=man_out.hexdigest(), tar_bytes=tar_out.size,
        **rejection_counts(rejected),
        stats={"pairs": len(lines), **{f"pairs_{m}": n for m, n in sorted(methods.items())},
               "responses": sum(len(t.responses) for t in tasks),
               "correct_responses": sum(1 for t in tasks for r in t.responses if r.get("correct"))})
    return report, {f"{name}.jsonl": "".join(line + "\n" for line in lines).encode()}
