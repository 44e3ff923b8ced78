"""`inspect show`: one pair sample (caption, metadata, manifest row) or one pack (segments with
decoded text, supervised spans marked, `<IMG_CONTEXT>` runs collapsed) as a person reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from curation.core.shardset import InspectError, ShardSet
from packing.tokens import IGNORE_INDEX
from curation.core.shards import iter_tar_groups, safe_member_name, shard_name, shard_of

SUPERVISED_OPEN, SUPERVISED_CLOSE = "⟦", "⟧"  # marks the tokens that carry labels


def _save(folder: str | Path, name: str, data: bytes) -> Path:
    """Write one member into `folder` only: a name that is a path is refused."""
    problem = safe_member_name(name)
    if problem:
        raise InspectError(problem)
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    path = (target / name).resolve()
    if path.parent != target.resolve():
        raise InspectError(f"member name {name!r} escapes {folder}; refused")
    path.write_bytes(data)
    return path


def uid_matches(uid: str, wanted: str) -> bool:
    """`wanted` is the uid itself, or the row's own id under a uid namespace (`{namespace}--{id}`)."""
    from curation.core.records import clean_uid

    return uid == wanted or uid.endswith("--" + clean_uid(wanted))


def find_pair(ss: ShardSet, uid: str | None = None, index: int | None = None) -> dict[str, Any]:
    """A pair sample by uid (its shard is found by the same hash the writer used) or by position
    among kept samples; returns {"manifest": row, "members": {suffix: bytes} or None}."""
    if uid is not None:
        n = ss.index["num_shards"]
        name = shard_name(ss.index["prefix"], shard_of(uid, n), n)
        first = [e for e in ss.shards if e["name"] == name]
        for entry in first + [e for e in ss.shards if e not in first]:  # the uid's own shard, else a source id
            rows = [r for r in ss.manifest(entry).to_pylist() if uid_matches(r["uid"], uid)]
            if rows:
                row = next((r for r in rows if r["status"] == "kept"), rows[0])
                found = row["uid"]
                return {"manifest": row, "members": _members(ss, entry, found) if row["status"] == "kept" else None}
        raise InspectError(f"no sample with uid {uid!r} in {ss.folder}")
    seen = 0
    for entry in ss.shards:
        if index is not None and index < seen + entry["count"]:
            with ss.open_tar(entry) as f:  # the reader is closed before the manifest is read
                groups = iter_tar_groups(f)
                try:
                    key, group = next(g for i, g in enumerate(groups) if i == index - seen)
                finally:
                    groups.close()
            row = next(r for r in ss.manifest(entry).to_pylist() if r["uid"] == key and r["status"] == "kept")
            return {"manifest": row, "members": group}
        seen += entry["count"]
    raise InspectError(f"index {index} out of range: {seen} kept samples")


def _members(ss: ShardSet, entry: dict[str, Any], uid: str) -> dict[str, bytes] | None:
    with ss.open_tar(entry) as f:
        for key, group in iter_tar_groups(f):
            if key == uid:
                return group
    return None


def _status_line(row: dict[str, Any], label: str) -> str:
    rejected = f"   {row['stage']}/{row['reason']}: {row['detail']}" if row["status"] == "rejected" else ""
    return f"{label}: {row['uid']}   status: {row['status']}{rejected}"


def render_pair(found: dict[str, Any], save_images: str | None = None) -> str:
    row, members = found["manifest"], found["members"]
    lines = [_status_line(row, "uid")]
    lines.append(f"url: {row.get('url')}")
    lines.append(f"caption: {row.get('caption')}")
    if members:
        meta = json.loads(members.get("json", b"{}"))
        lines.append(f"image: {meta.get('width')}x{meta.get('height')} {meta.get('ext')} (original "
                     f"{meta.get('original_width')}x{meta.get('original_height')} {meta.get('original_format')}), "
                     f"sha256 {str(meta.get('sha256'))[:16]}..., phash {meta.get('phash')}")
        ocr = meta.get("ocr") if isinstance(meta.get("ocr"), dict) else {}
        if ocr:
            lines.append(f"ocr ({ocr.get('engine')}): {ocr.get('ocr_lines')} lines, {ocr.get('ocr_chars')} chars, "
                         f"text area {ocr.get('text_area_fraction')}, mean confidence {ocr.get('ocr_mean_confidence')}")
        for line in ocr.get("lines", []):
            lines.append(f"  {line.get('text')!r} confidence {line.get('confidence')} box {line.get('box')}")
        quality = meta.get("quality") if isinstance(meta.get("quality"), dict) else {}
        if quality:
            raw = quality.get("raw", {})
            lines.append(f"quality: domain {quality.get('domain')}, score {quality.get('score')}, repetition "
                         f"{quality.get('repetition_score')}, verdict {quality.get('verdict')} (by "
                         f"{raw.get('score', {}).get('backend')} {raw.get('score', {}).get('model')})")
        conv = meta.get("conversation") if isinstance(meta.get("conversation"), dict) else {}
        if conv:
            lines.append(f"conversation ({conv.get('task')}):")
            for turn in conv.get("conversations", []):
                lines.append(f"  {turn.get('from')}: {turn.get('value')!r}")
        scores = {k: v for k, v in meta.items() if k.endswith("_score") or k.startswith("clip_similarity")}
        if scores:
            lines.append("scores: " + ", ".join(f"{k}={v}" for k, v in sorted(scores.items())))
        video = meta.get("video") if isinstance(meta.get("video"), dict) else {}
        if video:
            lines.append(f"video: {video.get('frames')} frames ({video.get('sampling')}) at "
                         f"{', '.join(f'{t:g}' for t in video.get('timestamps', []))} s of {video.get('duration_s')} s, "
                         f"{video.get('codec')} in {video.get('container')}, {video.get('source_fps')} fps"
                         + (f", truncated at {video['truncated_at_s']} s" if video.get("truncated_at_s") else ""))
        pixels = {k: meta[k] for k in ("nsfw_pixels", "clip_pixel_similarity", "clip_model", "aesthetic_pixels")
                  if meta.get(k) is not None}
        if meta.get("faces") is not None:
            pixels["faces"] = len(meta["faces"])
        if meta.get("clip_embedding"):
            pixels["clip_embedding"] = f"{len(meta['clip_embedding']) * 3 // 8} bytes"  # float16, base64
        if pixels:
            lines.append("pixel models: " + ", ".join(f"{k}={v}" for k, v in pixels.items()))
        if save_images:
            for suffix, data in members.items():
                if suffix in ("jpg", "webp", "png") or (suffix.startswith("frame") and suffix.endswith(".jpg")):
                    lines.append(f"saved {_save(save_images, row['uid'] + '.' + suffix, data)}")
    lines.append("manifest: " + json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False,
                                           sort_keys=True))
    return "\n".join(lines)


def render_question(found: dict[str, Any], save_images: str | None = None) -> str:
    """An MMPR question: its outcome, every sampled response with its verdict, and its pairs."""
    row, members = found["manifest"], found["members"]
    lines = [_status_line(row, "id")]
    lines.append(f"question: {row.get('question')!r}   answer_gt: {row.get('answer_gt')!r} ({row.get('answer_type')})")
    lines.append(f"responses: {row.get('samples')} sampled, {row.get('correct')} right; pairs: {row.get('pairs')}")
    if members:
        doc = json.loads(members.get("json", b"{}"))
        for i, r in enumerate(doc.get("responses", [])):
            verdict = {True: "right", False: "wrong", None: "unchecked"}[r.get("correct")]
            lines.append(f"  [{i}] {verdict} ({r.get('finish_reason')}): {r.get('text')!r}")
        for pair in doc.get("pairs", []):
            lines.append(f"pair {pair['id']} ({pair['method']}):")
            lines.append(f"  chosen:   {pair['chosen']!r}")
            lines.append(f"  rejected: {pair['rejected']!r}   {json.dumps(pair.get('rejected_meta'), sort_keys=True)}")
        if save_images:
            for suffix, data in members.items():
                if suffix != "json":
                    lines.append(f"saved {_save(save_images, row['uid'] + '.' + suffix, data)}")
    return "\n".join(lines)


def find_pack(ss: ShardSet, index: int | None = None, key: str | None = None, read=None):
    """A pack by position in index order, by pack key, or by the uid of a sample packed in it;
    `read` iterates a tar's packs (default: packed shards; a plan folder passes its own)."""
    from packing.format import iter_packs

    read = read or iter_packs

    seen = 0
    for entry in ss.shards:
        n = entry.get("stats", {}).get("packs", 0)
        wanted = key
        if key is not None and not key.startswith(entry["name"].replace("-", "_")):
            rows = [r for r in ss.manifest(entry, ["uid", "status", "pack"]).to_pylist() if uid_matches(r["uid"], key)]
            wanted = next((r["pack"] for r in rows if r["status"] == "kept"), None)
            if wanted is None:
                seen += n
                continue
        if index is not None and not seen <= index < seen + n:
            seen += n
            continue
        with ss.open_tar(entry) as f:
            for i, pack in enumerate(read(f)):
                if (wanted is not None and pack.key == wanted) or (index is not None and seen + i == index):
                    return pack
        seen += n
    raise InspectError(f"no pack {'at index ' + str(index) if index is not None else repr(key)} in {ss.folder}")


def collapse_runs(ids: list[int], context_id: int | None, decode) -> str:
    """Token ids -> text with every `<IMG_CONTEXT>` run written as `[256 x N tiles]`."""
    out, i = [], 0
    while i < len(ids):
        j = i
        if ids[i] == context_id:
            while j < len(ids) and ids[j] == context_id:
                j += 1
            run = j - i
            out.append(f"[256 x {run // 256} tiles]" if run % 256 == 0 else f"[{run} image tokens]")
        else:
            while j < len(ids) and ids[j] != context_id:
                j += 1
            out.append(decode(ids[i:j]))
        i = j
    return "".join(out)


def render_pack(ss: ShardSet, pack, save_images: str | None = None) -> str:
    meta = pack.meta
    lines = [f"pack {pack.key}: {meta['tokens']}/{meta['l_max']} tokens, {meta['tiles']}/{meta['t_max']} tiles, "
             f"{len(meta['segments'])} segments, {len(meta['images'])} images"]
    for i, im in enumerate(meta["images"]):
        lines.append(f"  image {i}: {im['name']} {im['width']}x{im['height']} grid {im['grid'][0]}x{im['grid'][1]}"
                     f"{' + thumbnail' if im['thumbnail'] and im['tiles'] > 1 else ''} = {im['tiles']} tiles (sample {im['unit']})")
    decode = _decoder(ss)
    for seg in meta["segments"]:
        s, n = seg["offset"], seg["length"]
        lines.append(f"--- {seg['id']} [{seg['role']}{'/' + seg['method'] if seg.get('method') else ''}] tokens "
                     f"{s}..{s + n} ({n}, {seg['supervised']} supervised{', truncated' if seg['truncated'] else ''})")
        lines.append(decode(pack.input_ids[s:s + n], pack.labels[s:s + n]))
    if save_images:
        for name, data in sorted(pack.images.items()):
            lines.append(f"saved {_save(save_images, pack.key + '.' + name, data)}")
    return "\n".join(lines)


def _decoder(ss: ShardSet):
    """ids, labels -> text with supervised runs marked; token ids when the tokenizer is unavailable."""
    try:
        from packing.tokenizer import load_tokenizer

        tok = load_tokenizer(ss.index.get("tokenizer", "builtin:smollm2"))
    except Exception as err:  # noqa: BLE001 - show what we can without it
        reason = f"{type(err).__name__}: {err}"

        def raw(ids: np.ndarray, labels: np.ndarray) -> str:
            return f"(tokenizer unavailable: {reason[:120]}) ids: {ids[:64].tolist()}..."

        return raw

    context_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")

    def text(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def decode(ids: np.ndarray, labels: np.ndarray) -> str:
        pieces: list[str] = []
        sup = labels != IGNORE_INDEX
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or sup[i] != sup[start]:
                chunk = collapse_runs(ids[start:i].tolist(), context_id, text)
                pieces.append(f"{SUPERVISED_OPEN}{chunk}{SUPERVISED_CLOSE}" if sup[start] else chunk)
                start = i
        return "".join(pieces)

    return decode
