"""The packed-shard format: plan packs for one shard, write them, read them back.

One webdataset entry per pack: `{pack}.json` (limits, images with their tile grids, segments with
token offsets), `{pack}.input_ids.npy` and `{pack}.labels.npy` (int32, -100 = not supervised), and
the original image bytes `{pack}.img{i}.{ext}`, tiled at load time from the stored grid. Position
ids, cu_seqlens and loss weights derive from the segments. Per shard, a parquet manifest accounts
for every input row and a parquet index lists the packs (tokens, tiles, fill, samples).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from curation.core.records import Rejection, RowRef, first_kept_per_uid
from curation.core.shards import HashingWriter, ShardReport, iter_tar_groups, rejection_counts, write_rows, write_tar
from curation.core.manifests import PACK_INDEX, PACK_MANIFEST
from packing.meta import dataset_stats
from packing.packer import GreedyPacker, Item, Oversized
from packing.units import PackUnit

FORMAT_VERSION = 1



@dataclass(frozen=True)
class PackPlan:
    l_max: int
    t_max: int
    buffer: int | None = 256


def plan_packs(units: list[PackUnit], plan: PackPlan) -> list[list[PackUnit]]:
    """Units sorted by uid (a hash order: a well-mixed stream) -> packs, deterministically."""
    units = sorted(units, key=lambda u: u.uid)
    by_uid = {u.uid: u for u in units}
    packer: GreedyPacker[str] = GreedyPacker(plan.l_max, plan.t_max, plan.buffer)
    packs: list[list[PackUnit]] = []

    def take(results):
        for res in results:
            if isinstance(res, Oversized):  # units are built within the limits; this is a bug, not data
                raise AssertionError(f"unit {res.item.key} over the limits reached the packer")
            packs.append([by_uid[it.key] for it in res.items])

    for u in units:
        take(packer.add(Item(u.uid, u.tokens, u.tiles)))
    take(packer.flush())
    return packs


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.int32), allow_pickle=False)
    return buf.getvalue()


def pack_members(key: str, units: list[PackUnit], plan: PackPlan,
                 read_image: Callable[[str], bytes]) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The tar members of one pack and its index row."""
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    images: list[dict[str, Any]] = []
    blobs: list[tuple[str, bytes]] = []
    segments: list[dict[str, Any]] = []
    offset = 0
    for u in units:
        base = len(images)
        for k, im in enumerate(u.images):
            name = f"img{base + k}.{im.ext}"
            blobs.append((f"{key}.{name}", read_image(im.path)))
            images.append({"name": name, "path": im.path, "width": im.width, "height": im.height,
                           "grid": [im.tiling.columns, im.tiling.rows], "thumbnail": im.tiling.thumbnail,
                           "tiles": im.tiling.tiles, "unit": u.uid, "max_num": im.max_num, "min_num": im.min_num})
        for seg in u.segments:
            n = len(seg.input_ids)
            segments.append({
                "id": u.uid, "source": u.source_file, "row": u.source_row, "kind": u.kind, "role": seg.role,
                "method": u.method or None, "offset": offset, "length": n, "supervised": seg.supervised,
                "truncated": seg.truncated,
                "image_spans": [[offset + s, offset + e, base + i] for s, e, i in seg.image_spans],
            })
            ids.append(seg.input_ids)
            labels.append(seg.labels)
            offset += n
    blank = sum(u.blank_tiles for u in units)  # image-less samples' InternVL blank tiles, counted, not stored
    tiles = sum(im["tiles"] for im in images) + blank
    meta = {"pack": key, "format_version": FORMAT_VERSION, "l_max": plan.l_max, "t_max": plan.t_max,
            "tokens": offset, "tiles": tiles, "images": images, "segments": segments,
            **({"blank_tiles": blank} if blank else {})}
    members = [
        (f"{key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()),
        (f"{key}.input_ids.npy", _npy(np.concatenate(ids))),
        (f"{key}.labels.npy", _npy(np.concatenate(labels))),
        *blobs,
    ]
    row = {"pack": key, "tokens": offset, "tiles": tiles, "fill": offset / plan.l_max,
           "tile_fill": tiles / plan.t_max if plan.t_max else 0.0, "units": len(units), "segments": len(segments),
           "images": len(images), "supervised": sum(s["supervised"] for s in segments)}
    return members, row


@dataclass(frozen=True)
class PackedShardKind:
    """One flavour of packed shard for `write_packed_shard`: `curate pack`'s token packs, or `curate
    plan`'s predicted packs. Units carry uid, source_file, source_row, tokens, tiles, truncated, text_only."""

    stage: str  # the stage of a later duplicate's `dup_uid` rejection
    manifest: pa.Schema
    index: pa.Schema
    row: Callable[[Any], Any]  # unit -> the row a rejection of it keeps (`Rejection.row`)
    pack: Callable[[str, list[Any]], tuple[list[tuple[str, bytes]], dict[str, Any]]]  # key, units -> members, index row
    kept_row: Callable[[Any, str], dict[str, Any]]  # unit, its pack -> manifest row
    rejected_row: Callable[[Rejection], dict[str, Any]]
    stats: Callable[[list[dict[str, Any]]], dict[str, int]] | None = None  # manifest rows -> more index stats


def write_packed_shard(shard: int, name: str, records: Iterable[Any], tar_file: IO[bytes], manifest_file: IO[bytes],
                       *, plan: PackPlan, kind: PackedShardKind) -> tuple[ShardReport, dict[str, bytes]]:
    """The one packed-shard writer: first unit per uid in source order (later ones `dup_uid`), the
    greedy packer over the rest, `kind.pack` per pack into the tar, one manifest row per input
    row; returns the shard report and `{name}.packs.parquet`."""
    resolved = first_kept_per_uid(
        records, order_key=lambda r: (r.source_file, r.source_row, r.uid), uid=lambda r: r.uid,
        kept=lambda r: not isinstance(r, Rejection),
        dup=lambda r, first: Rejection(kind.row(r), kind.stage, "dup_uid",
                                       f"uid already kept from {first.source_file}:{first.source_row}"))
    units = [r for r in resolved if not isinstance(r, Rejection)]
    packs = plan_packs(units, plan)
    pack_of: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    members: list[tuple[str, bytes]] = []
    for k, group in enumerate(packs):
        key = f"{name.replace('-', '_')}_{k:06d}"
        m, row = kind.pack(key, group)
        members += m
        rows.append(row)
        pack_of.update((u.uid, key) for u in group)
    tar_out = HashingWriter(tar_file)
    write_tar(tar_out, members)
    man_out = HashingWriter(manifest_file)
    manifest = [kind.rejected_row(r) if isinstance(r, Rejection) else kind.kept_row(r, pack_of[r.uid]) for r in resolved]
    write_rows(manifest, kind.manifest, man_out)
    packs_buf = io.BytesIO()
    write_rows(rows, kind.index, packs_buf)
    report = ShardReport(
        shard=shard, name=name, kept=len(units), rows=len(resolved), tar_sha256=tar_out.hexdigest(),
        manifest_sha256=man_out.hexdigest(), tar_bytes=tar_out.size,
        **rejection_counts(r for r in resolved if isinstance(r, Rejection)),
        stats={"packs": len(packs), "tokens": sum(r["tokens"] for r in rows), "tiles": sum(r["tiles"] for r in rows),
               "segments": sum(r["segments"] for r in rows), "truncated": sum(u.truncated for u in units),
               "text_tokens": sum(u.tokens for u in units if u.text_only), **dataset_stats(manifest),
               **(kind.stats(manifest) if kind.stats else {})},
    )
    return report, {f"{name}.packs.parquet": packs_buf.getvalue()}


def _kept_unit_row(u: PackUnit, pack: str) -> dict[str, Any]:
    return {"uid": u.uid, "source_file": u.source_file, "source_row": u.source_row, "kind": u.kind, "status": "kept",
            "pack": pack, "tokens": u.tokens, "tiles": u.tiles, "truncated": u.truncated}


def _rejected_row(r: Rejection) -> dict[str, Any]:
    return {"uid": r.uid, "source_file": r.source_file, "source_row": r.source_row, "status": "rejected",
            "stage": r.stage, "reason": r.reason, "detail": r.detail}


def write_pack_shard(shard: int, name: str, records: Iterable[PackUnit | Rejection], tar_file: IO[bytes],
                     manifest_file: IO[bytes], *, plan: PackPlan, read_image: Callable[[str], bytes]
                     ) -> tuple[ShardReport, dict[str, bytes]]:
    """`curate pack`'s shard: token packs with their images (`read_image(path)` gives the bytes)."""
    kind = PackedShardKind(
        stage="pack", manifest=PACK_MANIFEST, index=PACK_INDEX, row=lambda u: RowRef(u.uid, u.source_file, u.source_row),
        pack=lambda key, units: pack_members(key, units, plan, read_image), kept_row=_kept_unit_row,
        rejected_row=_rejected_row)
    return write_packed_shard(shard, name, records, tar_file, manifest_file, plan=plan, kind=kind)


@dataclass(frozen=True)
class PackedSample:
    """One pack read back: its metadata, token arrays and image bytes by name."""

    key: str
    meta: dict[str, Any]
    input_ids: np.ndarray
    labels: np.ndarray
    images: dict[str, bytes]


def iter_packs(tar_path_or_file: str | IO[bytes]) -> Iterator[PackedSample]:
    """Read a packed shard in order (members of one pack are contiguous, as written)."""
    for key, group in iter_tar_groups(tar_path_or_file, strict=True):  # refuses links and path-like names
        meta = json.loads(group.pop("json"))
        ids = np.load(io.BytesIO(group.pop("input_ids.npy")), allow_pickle=False)
        labels = np.load(io.BytesIO(group.pop("labels.npy")), allow_pickle=False)
        yield PackedSample(key, meta, ids, labels, group)
