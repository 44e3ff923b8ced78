"""`curate plan` (metadata-only dry run) and the scale simulation that drives it: real Beam runs on
generated LAION-schema parquet, checked row by row against what ingest and pack would do."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.core.config import ConfigError
from curation.ingest.config import ImageConfig
from curation.plan.config import load_plan_config
from curation.ingest.images import process_image, stored_size
from curation.samples.laion import generate_laion
from packing.tiling import tile_image

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "configs" / "plan.yaml"
QUIET = {"progress": False, "ingest": {"progress": False}, "pack": {"progress": False}}


@pytest.mark.parametrize("mode", ["keep_ratio", "keep_ratio_largest", "center_crop", "border", "no"])
@pytest.mark.parametrize("size", [(1000, 300), (300, 1000), (200, 150), (640, 640), (513, 257)])
def test_stored_size_is_what_ingest_stores(mode, size):
    cfg = ImageConfig(resize_mode=mode, image_size=256, encode_format="jpg")
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "PNG")  # PNG: no JPEG draft rounding
    info = process_image(buf.getvalue(), cfg)
    assert (info.width, info.height) == stored_size(*size, cfg)


def test_plan_config_merges_over_named_recipes(tmp_path):
    cfg = load_plan_config(PLAN)
    assert cfg.ingest.source.name == "laion5b" and cfg.ingest.metadata_dedup().near_caption.enabled
    assert cfg.ingest.download.threads == 64  # the rest of laion.yaml came along
    assert cfg.pack.l_max == 16384 and cfg.shards.prefix == "plan"
    bad = tmp_path / "plan.yaml"
    bad.write_text(f"ingest: {{recipe: {ROOT / 'configs' / 'laion.yaml'}, dedup: {{near_caption: {{treshold: 0.8}}}}}}\n")
    with pytest.raises(ConfigError, match=r"plan.yaml: ingest.dedup.near_caption.treshold: unknown key"):
        load_plan_config(bad)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    from pipelines.plan import run_plan

    root = tmp_path_factory.mktemp("plan")
    gen = generate_laion(root / "input", 3000, part_rows=1000, seed=3)
    cfg = load_plan_config(PLAN, {**QUIET, "shards": {"samples_per_shard": 1000}})
    index = run_plan(cfg, [str(root / "input" / "*.parquet")], str(root / "plan"))
    return root, gen, cfg, index


def _manifest(folder: Path):
    return pq.read_table([str(p) for p in sorted(folder.glob("plan-*.parquet")) if ".packs." not in p.name]).to_pylist()


def test_every_row_is_kept_or_rejected_with_its_reason(planned):
    root, gen, _, index = planned
    rows = _manifest(root / "plan")
    assert len(rows) == index["totals"]["inputs"] == 3000
    assert index["rows"] == {"rows_read": 3000, "rows_assigned": 3000, "rows_written": 3000}  # checked in-stage
    assert index["totals"]["kept"] + sum(index["reasons"].values()) == 3000
    assert {(r["source_file"], r["source_row"]) for r in rows} == {
        (f.name, i) for f in gen.files for i in range(1000)}
    # each planted kind shows up under its own reason
    for reason in ("dup_url", "dup_caption", "near_dup_caption", "declared_too_small", "nsfw", "watermark",
                   "low_clip_similarity", "missing_url", "no_declared_size", "placeholder_caption"):
        assert index["reasons"].get(reason, 0) > 0, reason
    assert index["reasons"]["no_declared_size"] <= gen.injected["no_size"]
    assert index["stages"]["plan"] == index["reasons"]["no_declared_size"]


def test_planned_units_tile_and_pack_like_ingest_and_pack(planned):
    root, _, cfg, index = planned
    kept = {r["uid"]: r for r in _manifest(root / "plan") if r["status"] == "kept"}
    from curation.plan.planner import iter_plan_packs

    seen = {}
    for tar in sorted((root / "plan").glob("plan-*.tar")):
        with open(tar, "rb") as f:
            for pack in iter_plan_packs(f):
                assert pack.meta["tokens"] <= cfg.pack.l_max and pack.meta["tiles"] <= cfg.pack.t_max
                for u in pack.meta["units"]:
                    seen[u["uid"]] = (pack.key, u)
    assert set(seen) == set(kept)
    for uid, (key, u) in list(seen.items())[:200]:
        row = kept[uid]
        assert row["pack"] == key and row["tokens"] == u["tokens"]
        w, h = stored_size(row["declared_width"], row["declared_height"], cfg.ingest.image)
        assert (u["width"], u["height"]) == (w, h)
        assert u["tiles"] == tile_image(w, h, cfg.pack.tiling.max_num).tiles
    assert index["stats"]["packs"] == len({k for k, _ in seen.values()})


def test_plan_tokens_match_pack_on_the_same_conversation(planned, tokenizer):
    """A planned unit's token count is what `curate pack` counts for the captioning conversation."""
    root, _, cfg, _ = planned
    from curation.core.conversations import Conversation, Turn
    from curation.annotate.tasks import CAPTION_PROMPT
    from packing.tokens import ChatEncoder

    enc = ChatEncoder.from_recipe(tokenizer, cfg.pack.template, cfg.pack.system_prompt)
    source = {}
    for path in sorted((root / "input").glob("*.parquet")):
        for i, r in enumerate(pq.read_table(path).to_pylist()):
            source[(path.name, i)] = r["TEXT"]
    rows = [r for r in _manifest(root / "plan") if r["status"] == "kept"][:50]
    for r in rows:
        caption = source[(r["source_file"], r["source_row"])]
        conv = Conversation(r["uid"], r["source_file"], r["source_row"], ["x"],
                            [Turn("user", f"<image>\n{CAPTION_PROMPT}"), Turn("assistant", caption)])
        assert len(enc.encode(conv.turns, [r["tiles"]])) == r["tokens"]


def test_rerun_is_a_no_op_and_inspect_reads_the_plan(planned, capsys):
    from curation.cli.main import main
    from pipelines.plan import run_plan

    root, _, cfg, index = planned
    before = {p.name: p.read_bytes() for p in (root / "plan").iterdir() if p.is_file()}
    again = run_plan(cfg, [str(root / "input" / "*.parquet")], str(root / "plan"))
    assert again["config_fingerprint"] == index["config_fingerprint"]
    assert {p.name: p.read_bytes() for p in (root / "plan").iterdir() if p.is_file()} == before
    assert main(["inspect", "validate", str(root / "plan")]) == 0
    capsys.readouterr()
    assert main(["inspect", "show", "--index", "0", str(root / "plan")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["units"] and shown["tokens"] == sum(u["tokens"] for u in shown["units"])


def test_inspect_summary_of_a_plan(planned, capsys):
    from curation.cli.main import main

    root, _, _, index = planned
    assert main(["inspect", "summary", "--json", str(root / "plan")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "plan" and doc["accounting_ok"] and doc["packs"] == index["stats"]["packs"]


@pytest.mark.slow
def test_scale_bench_prints_its_line(tmp_path):
    """bench/scale.py on 2 DirectRunner multi_processing workers, small: the JSON line, accounting,
    group bounds, and per-worker RSS read from real SDK harness processes."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--rows", "1500", "--part-rows", "500",
                          "--samples-per-shard", "500", "--max-bucket", "20"],
                         capture_output=True, text=True, timeout=600, check=True)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"rows", "rows_per_s", "peak_rss_mb", "max_group_size", "workers"} <= set(line)
    assert line["rows"] == 1500 and line["accounted"] and line["workers"] == 2
    assert len(line["worker_peak_rss_mb"]) == 2 and 0 < line["peak_rss_mb"] < 2048
    assert line["groups_over_bound"] == {} and 0 < line["max_group_size"] <= 550
    assert line["group_max"]["caption_bucket"] <= 21


def test_plan_overrides_may_name_another_recipe():
    cfg = load_plan_config(PLAN, {"ingest": {"recipe": "coyo.yaml", "shards": {"samples_per_shard": 7}}})
    assert cfg.ingest.source.name == "coyo" and cfg.ingest.shards.samples_per_shard == 7
    assert cfg.ingest.metadata_dedup().near_caption.enabled  # plan.yaml's dedup section still applies


@pytest.mark.slow
def test_a_plan_of_url_and_text_metadata_assumes_sizes_and_marks_them_estimated(tmp_path):
    """A scraped URL + TEXT list (no sizes): without `missing_size` every row is `no_declared_size`
    and nothing is planned; with a size distribution the plan predicts packs, tokens and tiles, each
    such row marked estimated in its manifest row and counted in the index."""

    from curation.plan.planner import iter_plan_packs
    from pipelines.plan import run_plan

    gen = generate_laion(tmp_path / "full", 400, part_rows=400, seed=5)
    table = pq.read_table(gen.files[0])
    (tmp_path / "input").mkdir()
    pq.write_table(table.select(["URL", "TEXT"]), tmp_path / "input" / "part.parquet")  # like many scraped lists
    glob = [str(tmp_path / "input" / "*.parquet")]
    none = run_plan(load_plan_config(PLAN, QUIET), glob, str(tmp_path / "none"))
    assert none["stats"]["packs"] == 0 and none["reasons"]["no_declared_size"] > 0
    assert none["stats"]["estimated_rows"] == 0

    sizes = [[640, 480, 3], [448, 448, 1], [1600, 400, 1]]  # 4:1 fails laion.yaml's aspect filter, as it would after download
    cfg = load_plan_config(PLAN, {**QUIET, "missing_size": {"sizes": sizes}})
    index = run_plan(cfg, glob, str(tmp_path / "assumed"))
    stats = index["stats"]
    assert "no_declared_size" not in index["reasons"] and stats["packs"] > 0
    assert index["totals"]["kept"] == stats["estimated_kept"] > 0 and stats["estimated_tokens"] == stats["tokens"]
    assert stats["estimated_tiles"] == stats["tiles"] and index["missing_size"]["sizes"] == sizes
    assert index["totals"]["inputs"] == 400 == index["totals"]["kept"] + sum(index["reasons"].values())
    rows = _manifest(tmp_path / "assumed")
    planned = [r for r in rows if r["status"] == "kept" or r["stage"] == "plan"]
    assert all(r["estimated"] for r in planned) and stats["estimated_rows"] == sum(r["estimated"] for r in rows)
    assert not any(r["estimated"] for r in rows if r["stage"] in ("read", "metadata", "dedup"))
    want = {tile_image(*stored_size(w, h, cfg.ingest.image), cfg.pack.tiling.max_num).tiles for w, h, _ in sizes[:2]}
    kept = [r for r in rows if r["status"] == "kept"]
    assert {r["tiles"] for r in kept} == want == {13, 1}  # each assumed size tiled as ingest + pack would
    wide = [r for r in rows if r["reason"] == "bad_aspect_ratio"]
    assert wide and all(r["estimated"] and r["detail"].startswith("assumed size 1600x400") for r in wide)
    drawn = {cfg.missing_size.draw(r["uid"]) for r in kept}
    assert {(r["width"], r["height"]) for r in kept} == {stored_size(w, h, cfg.ingest.image) for w, h in drawn}
    share = sum(cfg.missing_size.draw(r["uid"]) == (640, 480) for r in kept) / len(kept)
    assert 0.6 < share < 0.9  # weight 3 of the 4 that pass the filters
    with open(tmp_path / "assumed" / index["shards"][0]["tar"], "rb") as f:
        assert all(u.get("estimated") for pack in iter_plan_packs(f) for u in pack.meta["units"])
