"""Metadata-only dry run: what download + pack would make of a metadata file, before any download.

A pair that passes the ingest recipe's metadata filters becomes a `PlannedUnit`: its declared size
goes through the pixel filters and ingest's resize, the stored size through InternVL tiling, and
the captioning conversation `curate pack` would build through the real tokenizer and template. A
row with no declared size gets one drawn from the recipe's `missing_size` distribution (else it is
rejected `no_declared_size`); its manifest row says `estimated`, the index counts `estimated_rows`. The
shard writer applies the recipe's dedup decisions, then the real packer places the units, so a
plan shows packs, tokens, tiles and every rejection with its reason; `bench/scale.py` runs it over
1M generated rows.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, NamedTuple


from curation.plan.config import PlanConfig
from curation.core.reasons import check_reason
from curation.core.records import FromRow, Pair, Rejection
from curation.core.shards import ShardReport
from curation.core.manifests import PLAN_INDEX, PLAN_MANIFEST

STAGE = "plan"


@dataclass(frozen=True, slots=True)
class PlanRow:
    """What a plan keeps of an input row: enough for its manifest row and nothing more (it crosses
    the shard writer's shuffle, where a whole Pair would be about three times the bytes)."""

    uid: str
    url: str
    source_file: str
    source_row: int
    declared_width: int | None
    declared_height: int | None
    node: str = ""  # its dedup node (rows that share a uid have different nodes), once it reached dedup
    estimated: bool = False  # planned on an assumed size (missing_size), not a declared one

    @staticmethod
    def of(pair: Pair, node: str = "") -> "PlanRow":
        return PlanRow(pair.uid, pair.url, pair.source_file, pair.source_row, pair.declared_width, pair.declared_height,
                       node)


@dataclass(frozen=True, slots=True)
class PlannedUnit(FromRow):
    """A pair as pack would see it after download: stored image size, tiles, tokens."""

    row: PlanRow
    width: int
    height: int
    tiles: int
    tokens: int
    truncated: bool

    @property
    def text_only(self) -> bool:
        """A planned pair always has its image."""
        return False


class UnitPlanner:
    """Pair -> PlannedUnit, or the Rejection that pixel filters or pack's encoder would give it.

    Holds the tokenizer: build once per worker."""

    def __init__(self, cfg: PlanConfig) -> None:
        from curation.annotate.tasks import plain_tasks
        from filters.registry import build_filters
        from packing.tokens import ChatEncoder
        from packing.tokenizer import load_tokenizer
        from packing.units import UnitBuilder, UnitLimits

        dedup = cfg.ingest.metadata_dedup()
        self.score_field = dedup.score_field if dedup is not None else None
        pack = cfg.pack
        encoder = ChatEncoder.from_recipe(load_tokenizer(pack.tokenizer), pack.template, pack.system_prompt, pack.bos,
                                          pack.tokenizer)
        limits = UnitLimits(pack.l_max, pack.t_max, pack.tiling.max_num, pack.tiling.min_num, pack.tiling.use_thumbnail,
                            pack.truncate)
        self.builder = UnitBuilder(encoder, limits)
        self.pixel_filters = build_filters(cfg.ingest.pixel_filters, "pixel_filters")
        self.image = cfg.ingest.image
        self.tasks = plain_tasks(cfg.style)
        self.missing = cfg.missing_size

    def turns(self, pair: Pair) -> list:
        """The conversation `curate pack` would get for this pair: the one pair -> conversation builder's."""
        from curation.annotate.tasks import build_conversation
        from curation.core.conversations import ROLES, Turn

        row = build_conversation(pair.uid, pair.url, pair.caption, [], self.tasks)
        return [Turn(ROLES[t["from"]], t["value"]) for t in row["conversations"]]

    def __call__(self, pair: Pair) -> PlannedUnit | Rejection:
        from curation.core.conversations import Conversation
        from curation.ingest.images import stored_size
        from filters.dedup.keys import dup_key
        from packing.tokens import EncodeError

        row = PlanRow.of(pair, dup_key(pair, self.score_field).node)
        w, h = pair.declared_width, pair.declared_height
        assumed = ""
        if not w or not h or w < 1 or h < 1:
            if not self.missing.sizes:
                return Rejection(row, STAGE, check_reason("no_declared_size"), f"declared size {w}x{h}: tiles cannot be planned")
            w, h = self.missing.draw(pair.uid)
            row = dataclasses.replace(row, estimated=True)
            assumed = f"assumed size {w}x{h} (missing_size): "
        for check in self.pixel_filters:
            verdict = check(w, h)
            if not verdict.ok:
                return Rejection(row, check.stage, check_reason(verdict.reason), assumed + verdict.detail)
        sw, sh = stored_size(w, h, self.image)
        conv = Conversation(pair.uid, pair.source_file, pair.source_row, [pair.url], self.turns(pair))
        try:
            unit = self.builder.build(conv, [(sw, sh, self.image.encode_format)])
        except EncodeError as err:
            return Rejection(row, STAGE, check_reason(err.reason), assumed + err.detail)
        return PlannedUnit(row, sw, sh, unit.tiles, unit.tokens, unit.truncated)


class PlanPack(NamedTuple):
    key: str
    meta: dict[str, Any]  # pack, tokens, tiles, l_max, t_max, units [{uid, url, width, height, tiles, tokens}]


def iter_plan_packs(tar_file: IO[bytes]) -> Iterator[PlanPack]:
    """A plan shard's tar -> its packs in order."""
    from curation.core.shards import iter_tar_groups

    for key, group in iter_tar_groups(tar_file, strict=True):
        yield PlanPack(key, json.loads(group["json"]))


def apply_plan_decisions(elements: Iterable) -> list[PlannedUnit | Rejection]:
    """One shard's plan records mixed with the dedup Decisions for them -> the records, each one a
    Decision names (by dedup node) turned into its `dedup` rejection: dedup comes before the
    planning steps, as it comes before download in ingest."""
    from filters.dedup.keys import split_decisions

    decided, records = split_decisions(elements, lambda d: d.node)
    out = []
    for rec in records:
        d = decided.get(rec.row.node) if rec.row.node else None
        # a duplicate's fate does not hang on an assumed size: its row is not `estimated`
        out.append(Rejection(dataclasses.replace(rec.row, estimated=False), "dedup", d.reason, d.detail)
                   if d is not None else rec)
    return out


def _plan_pack(key: str, group: list[PlannedUnit], l_max: int, t_max: int) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """A predicted pack: one `{pack}.json` with its members' sizes, tiles and tokens, and its index row."""
    tokens, tiles = sum(u.tokens for u in group), sum(u.tiles for u in group)
    doc = {"pack": key, "l_max": l_max, "t_max": t_max, "tokens": tokens, "tiles": tiles,
           "units": [{"uid": u.uid, "url": u.row.url, "width": u.width, "height": u.height, "tiles": u.tiles,
                      "tokens": u.tokens, "truncated": u.truncated, **({"estimated": True} if u.row.estimated else {})}
                     for u in group]}
    row = {"pack": key, "units": len(group), "tokens": tokens, "tiles": tiles, "fill": tokens / l_max,
           "tile_fill": tiles / t_max, "segments": len(group)}
    return [(f"{key}.json", json.dumps(doc, ensure_ascii=False, sort_keys=True).encode())], row


def _row_fields(p: PlanRow) -> dict[str, Any]:
    return {"uid": p.uid, "url": p.url, "source_file": p.source_file, "source_row": p.source_row,
            "declared_width": p.declared_width, "declared_height": p.declared_height, "estimated": p.estimated}


def _estimated_stats(manifest: list[dict[str, Any]]) -> dict[str, int]:
    """Index stats of the rows planned on an assumed size: rows, and of them kept, tokens, tiles."""
    est = [r for r in manifest if r["estimated"]]
    kept = [r for r in est if r["status"] == "kept"]
    return {"estimated_rows": len(est), "estimated_kept": len(kept),
            "estimated_tokens": sum(r["tokens"] for r in kept), "estimated_tiles": sum(r["tiles"] for r in kept)}


def _kept_row(u: PlannedUnit, pack: str) -> dict[str, Any]:
    return {**_row_fields(u.row), "status": "kept", "width": u.width, "height": u.height, "tiles": u.tiles,
            "tokens": u.tokens, "truncated": u.truncated, "pack": pack}


def _rejected_row(r: Rejection) -> dict[str, Any]:
    return {**_row_fields(r.row), "status": "rejected", "stage": r.stage, "reason": r.reason, "detail": r.detail}


def write_plan_shard(shard: int, name: str, records: Iterable, tar_file: IO[bytes],
                     manifest_file: IO[bytes], *, l_max: int, t_max: int, buffer: int | None
                     ) -> tuple[ShardReport, dict[str, bytes]]:
    """One shard's plan records and Decisions -> dedup applied, then pack's own packed-shard writer
    over the predicted units: the tar holds one `{pack}.json` per pack, the manifest one row per
    input row."""
    from packing.format import PackedShardKind, PackPlan, write_packed_shard

    kind = PackedShardKind(stage=STAGE, manifest=PLAN_MANIFEST, index=PLAN_INDEX, row=lambda u: u.row,
                           pack=lambda key, group: _plan_pack(key, group, l_max, t_max), kept_row=_kept_row,
                           rejected_row=_rejected_row, stats=_estimated_stats)
    return write_packed_shard(shard, name, apply_plan_decisions(records), tar_file, manifest_file,
                              plan=PackPlan(l_max, t_max, buffer), kind=kind)


def check_plan_against_ingest(plan_dir: str | Path, ingest_dir: str | Path) -> list[str]:
    """Problems (empty: none) between a plan and an ingest of the same metadata with the same
    recipe: every row read, and every row ingest rejected before download (read errors, metadata
    filters) rejected by the plan at the same stage for the same reason."""
    import pyarrow.parquet as pq

    def rows(folder: str | Path) -> dict[tuple[str, int], dict[str, Any]]:
        folder = Path(folder)
        index = json.loads((folder / "_index.json").read_text())
        table = pq.read_table([str(folder / e["manifest"]) for e in index["shards"]],
                              columns=["source_file", "source_row", "status", "stage", "reason"])
        return {(r["source_file"], r["source_row"]): r for r in table.to_pylist()}

    planned, ingested = rows(plan_dir), rows(ingest_dir)
    problems = []
    if set(planned) != set(ingested):
        problems.append(f"plan holds {len(planned)} rows, ingest {len(ingested)}: not the same input rows")
    for key, r in sorted(ingested.items()):
        p = planned.get(key)
        if r["stage"] in ("read", "metadata") and p is not None and (p["stage"], p["reason"]) != (r["stage"], r["reason"]):
            problems.append(f"{key[0]}:{key[1]}: ingest rejected it at {r['stage']} ({r['reason']}), the plan says "
                            f"{p['status']} {p['stage'] or ''} {p['reason'] or ''}".rstrip())
    return problems
