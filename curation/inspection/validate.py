"""`inspect validate`: integrity of a shard folder, streamed one shard and one sample at a time.

Index: every shard's tar and manifest exist and match the listed sha256 and counts; totals add up.
Tars: readable to the end, member names well-formed (no path, no escape, webdataset key before the
first dot), the members each sample needs. Manifests: one row per input row, kept rows == tar
samples. Packs: `packing.validate.pack_problems`, the validator `curate check` uses too.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

import numpy as np

from curation.core.shardset import ShardSet
from curation.core.fs import open_binary
from curation.core.shards import iter_tar_groups
from packing.validate import pack_problems



class _HashingReader(io.RawIOBase):
    """Read-through wrapper that hashes what tarfile reads (tarfile reads the stream in order)."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.size += n
        return n


def validate(ss: ShardSet, limit: int = 100) -> list[str]:
    """Problems, each naming the shard and member; an empty list means the folder is sound."""
    problems: list[str] = []
    index = ss.index
    totals = index.get("totals", {})
    rows = kept = 0
    reasons: dict[str, int] = {}
    for entry in ss.shards:
        name = entry.get("name", "?")
        try:
            rows_e, kept_e, reasons_e = _check_shard(ss, entry, problems)
        except Exception as err:  # noqa: BLE001 - one broken shard must not hide the others
            problems.append(f"{name}: cannot be checked: {type(err).__name__}: {err}")
            continue
        rows += rows_e
        kept += kept_e
        for r, n in reasons_e.items():
            reasons[r] = reasons.get(r, 0) + n
        if len(problems) >= limit:
            problems.append(f"stopped after {limit} problems")
            return problems
    if len(ss.shards) != index.get("num_shards"):
        problems.append(f"_index.json: lists {len(ss.shards)} shards, num_shards says {index.get('num_shards')}")
    if totals.get("inputs") != rows or totals.get("kept") != kept:
        problems.append(f"_index.json: totals say {totals.get('inputs')} inputs / {totals.get('kept')} kept, "
                        f"the manifests hold {rows} / {kept}")
    if totals.get("inputs") != totals.get("kept", 0) + sum(index.get("reasons", {}).values()):
        problems.append("_index.json: inputs != kept + rejected per reason")
    if index.get("reasons", {}) != dict(sorted(reasons.items())):
        problems.append("_index.json: reason counts differ from the manifests")
    return problems


def _check_shard(ss: ShardSet, entry: dict[str, Any], problems: list[str]) -> tuple[int, int, dict[str, int]]:
    name = entry["name"]
    manifest_bytes = open_binary(ss.path(entry["manifest"])).read()
    if hashlib.sha256(manifest_bytes).hexdigest() != entry.get("manifest_sha256"):
        problems.append(f"{entry['manifest']}: sha256 differs from _index.json")
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(manifest_bytes), use_threads=False)
    man = table.select([c for c in ("uid", "status", "reason", "pack", "kind") if c in table.column_names]).to_pylist()
    kept_rows = [r for r in man if r["status"] == "kept"]
    reasons: dict[str, int] = {}
    for r in man:
        if r["status"] == "rejected":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        elif r["status"] != "kept":
            problems.append(f"{entry['manifest']}: row {r['uid']} has status {r['status']!r}")
    if len(man) != entry.get("rows"):
        problems.append(f"_index.json: {name} lists {entry.get('rows')} rows, its manifest has {len(man)}")
    if len(kept_rows) != entry.get("count"):
        problems.append(f"_index.json: {name} lists count {entry.get('count')}, its manifest keeps {len(kept_rows)}")
    with ss.open_tar(entry) as raw:
        reader = _HashingReader(raw)
        stream = io.BufferedReader(reader, 1 << 20)
        try:
            if ss.kind == "preference":
                questions = _check_preferences(ss, entry, iter_tar_groups(stream, strict=True, lazy=_not_json), problems)
                if questions != {r["uid"] for r in kept_rows}:
                    problems.append(f"{entry['tar']}: tar questions differ from the manifest's kept rows")
            elif ss.kind == "pair":
                samples = _check_pairs(name, iter_tar_groups(stream, strict=True), problems)
                expected = {r["uid"] for r in kept_rows}
                if samples != expected:
                    missing, extra = sorted(expected - samples)[:3], sorted(samples - expected)[:3]
                    problems.append(f"{entry['tar']}: tar samples differ from the manifest's kept rows "
                                    f"(missing {missing}, not in manifest {extra})")
            elif ss.kind == "plan":
                planned = _check_plan(name, iter_tar_groups(stream, strict=True), problems)
                expected = {(r["uid"], r["pack"]) for r in kept_rows}
                if planned != expected:
                    problems.append(f"{entry['tar']}: planned packs differ from the manifest's kept rows and packs")
            else:
                packs = _check_packs(name, iter_tar_groups(stream, strict=True), problems)
                listed = {r["pack"] for r in kept_rows}
                if packs != listed:
                    problems.append(f"{entry['tar']}: packs in the tar differ from the manifest "
                                    f"({len(packs)} in tar, {len(listed)} named by kept rows)")
                if entry.get("stats", {}).get("packs", len(packs)) != len(packs):
                    problems.append(f"_index.json: {name} lists {entry['stats']['packs']} packs, the tar has {len(packs)}")
            stream.read()  # hash to the end
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            problems.append(f"{entry['tar']}: unreadable tar ({type(err).__name__}: {err}); truncated or corrupt")
            return len(man), len(kept_rows), reasons
    if reader.sha.hexdigest() != entry.get("tar_sha256"):
        problems.append(f"{entry['tar']}: sha256 differs from _index.json (changed or truncated)")
    if reader.size != entry.get("tar_bytes", reader.size):
        problems.append(f"{entry['tar']}: {reader.size} bytes, _index.json says {entry.get('tar_bytes')}")
    return len(man), len(kept_rows), reasons


def _check_pairs(name: str, groups, problems: list[str]) -> set[str]:
    seen: set[str] = set()
    for key, group in groups:
        if key in seen:
            problems.append(f"{name}: sample {key} appears in two places")
        seen.add(key)
        image = [s for s in group if s in ("jpg", "webp", "png")]
        if len(image) != 1 or "json" not in group or "txt" not in group:
            problems.append(f"{name}: sample {key} has members {sorted(group)}, wants one image, json and txt")
            continue
        try:
            meta = json.loads(group["json"])
            group["txt"].decode("utf-8")
        except (ValueError, UnicodeDecodeError) as err:
            problems.append(f"{name}: sample {key}: unreadable json or txt ({err})")
            continue
        if meta.get("uid") != key:
            problems.append(f"{name}: sample {key}: json uid is {meta.get('uid')!r}")
        # `sha256` is the stored bytes' hash where `source_sha256` is there too (shards written since)
        if meta.get("source_sha256") and hashlib.sha256(group[image[0]]).hexdigest() != meta.get("sha256"):
            problems.append(f"{name}: sample {key}: its image's sha256 differs from the json's")
    return seen


def _not_json(suffix: str) -> bool:
    return suffix != "json"


def _check_preferences(ss: ShardSet, entry: dict[str, Any], groups, problems: list[str]) -> set[str]:
    """MMPR shards: each kept question's json and images in the tar, its pairs equal to the rows of
    `{name}.jsonl` (whose sha256 the index lists), every pair's image a member of this tar at the
    byte range it names (a shard from before images moved into the tar: a file beside it)."""
    from curation.core.image_refs import parse_member_ref

    name = entry["name"]
    seen: set[str] = set()
    ranges: dict[str, tuple[int, int]] = {}
    owner: dict[str, str] = {}  # pair id -> the question whose images it may name
    tar_pairs: list[dict[str, Any]] = []
    for key, group in groups:
        seen.add(key)
        ranges.update({f"{key}.{suffix}": where for suffix, where in group.items() if suffix != "json"})
        try:
            doc = json.loads(group["json"])
            tar_pairs += doc["pairs"]
            owner.update({pair["id"]: key for pair in doc["pairs"]})
        except (KeyError, ValueError, TypeError) as err:
            problems.append(f"{name}: question {key}: missing or unreadable json ({err})")
    jsonl = f"{name}.jsonl"
    try:
        data = open_binary(ss.path(jsonl)).read()
    except OSError as err:
        problems.append(f"{jsonl}: unreadable ({err})")
        return seen
    if hashlib.sha256(data).hexdigest() != (entry.get("files") or {}).get(jsonl):
        problems.append(f"{jsonl}: sha256 differs from _index.json")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    if sorted(json.dumps(r, sort_keys=True) for r in rows) != sorted(json.dumps(r, sort_keys=True) for r in tar_pairs):
        problems.append(f"{jsonl}: its {len(rows)} pairs differ from the {len(tar_pairs)} in {entry['tar']}")
    for row in rows:
        missing = [k for k in ("id", "image", "question", "chosen", "rejected", "method") if k not in row]
        if missing:
            problems.append(f"{jsonl}: pair {row.get('id')} lacks {missing}")
            continue
        for image in row["image"] if isinstance(row["image"], list) else [row["image"]]:
            ref = parse_member_ref(image)
            if ref is not None:
                if ref.tar != entry["tar"] or ranges.get(ref.member) != (ref.offset, ref.size):
                    problems.append(f"{jsonl}: pair {row['id']}: image {image} is not a member of {entry['tar']} "
                                    f"at that byte range")
                elif ref.member.split(".", 1)[0] != owner.get(row["id"]):
                    problems.append(f"{jsonl}: pair {row['id']}: image {image} belongs to another question")
                continue
            try:
                open_binary(ss.path(image)).close()
            except OSError:
                problems.append(f"{jsonl}: pair {row['id']}: image {image} missing")
    return seen


def _check_plan(name: str, groups, problems: list[str]) -> set[tuple[str, str]]:
    """A plan shard: one json per pack whose units add up and fit the limits -> {(uid, pack)}."""
    seen: set[tuple[str, str]] = set()
    for key, group in groups:
        where = f"{name}: pack {key}"
        try:
            meta = json.loads(group["json"])
            units = meta["units"]
            tokens, tiles = sum(u["tokens"] for u in units), sum(u["tiles"] for u in units)
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"{where}: unreadable plan ({type(err).__name__}: {err})")
            continue
        if (tokens, tiles) != (meta["tokens"], meta["tiles"]):
            problems.append(f"{where}: units add up to {tokens} tokens / {tiles} tiles, json says {meta['tokens']} / {meta['tiles']}")
        if tokens > meta["l_max"] or tiles > meta["t_max"]:
            problems.append(f"{where}: {tokens} tokens / {tiles} tiles overrun l_max {meta['l_max']} / t_max {meta['t_max']}")
        seen.update((u["uid"], key) for u in units)
    return seen


def _check_packs(name: str, groups, problems: list[str]) -> set[str]:
    seen: set[str] = set()
    for key, group in groups:
        seen.add(key)
        where = f"{name}: pack {key}"
        missing = [m for m in ("json", "input_ids.npy", "labels.npy") if m not in group]
        if missing:
            problems.append(f"{where}: missing {missing}")
            continue
        try:
            meta = json.loads(group["json"])
            ids = np.load(io.BytesIO(group["input_ids.npy"]), allow_pickle=False)
            labels = np.load(io.BytesIO(group["labels.npy"]), allow_pickle=False)
        except (ValueError, OSError) as err:
            problems.append(f"{where}: unreadable member ({err})")
            continue
        for _, detail in pack_problems(meta, ids, labels, members=set(group)):
            problems.append(f"{where}: {detail}")
    return seen
