"""The dedup stage on DirectRunner over real pair shards with planted duplicates: recall and precision
against brute-force ground truth, byte-identical output in-memory / multi_processing / distributed
components, the same decisions from another input layout, hot buckets, and ingest's metadata dedup before download."""

import json
import random
from itertools import combinations
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from filters.dedup.config import DedupConfig
from curation.core.config import load_config
from curation.samples.dups import Planted, caption_truth, closure, components_to_pairs, group_truth, planted_captions, planted_images, representatives, score, write_pair_folder
from curation.core.shards import iter_tar_groups
from filters.dedup.keys import DETAIL, representative_of
from pipelines.dedup.stage import run_dedup
from tests.conftest import CONFIGS, local_config

pytestmark = pytest.mark.slow

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
NO_IMAGES = {"exact": {"image": False}, "near_image": {"enabled": False}}  # caption corpus: one blank image


def config(**overrides) -> DedupConfig:
    from curation.core.config import deep_merge

    return load_config(CONFIGS / "dedup.yaml", DedupConfig,
                       deep_merge({"progress": False, "shards": {"samples_per_shard": 400}}, overrides))


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".parquet", ".json")
            and p.name != "_job.json"}


def manifest(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    base = tmp_path_factory.mktemp("dedup-captions")
    recs = planted_captions(500, seed=11)
    rng = random.Random(0)
    scores = {r.uid: round(rng.uniform(0.2, 0.4), 3) for r in recs if rng.random() < 0.7}  # some have no score
    write_pair_folder(base / "in", recs, samples_per_shard=300, scores=scores)
    cfg = config(**NO_IMAGES)
    index = run_dedup(cfg, [str(base / "in")], str(base / "mem"), ["--direct_running_mode=in_memory"])
    return base, recs, scores, cfg, index


def test_caption_near_duplicates_meet_recall_and_precision(captions):
    base, recs, _, _, index = captions
    truth = caption_truth({r.uid: r.caption for r in recs}, 0.8)
    result = score(components_to_pairs(representatives(base / "mem")), truth, closure(truth))
    assert result["true_pairs"] > 800
    assert result["recall"] >= 0.95 and result["precision"] >= 0.95, result
    assert index["reasons"]["near_dup_caption"] > 0 and index["reasons"]["dup_caption"] > 0  # case/punctuation copies


def test_every_row_accounted_and_representatives_are_kept_and_best(captions):
    base, recs, scores, _, index = captions
    rows = manifest(base / "mem")
    assert len(rows) == len(recs) == index["totals"]["inputs"] == index["_metrics"]["inputs"]
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    kept = {r["uid"] for r in rows if r["status"] == "kept"}
    for r in rows:
        if r["status"] == "rejected":
            assert r["stage"] == "dedup" and r["reason"] in DETAIL and r["detail"].startswith(DETAIL[r["reason"]])
            rep = representative_of(r["detail"])
            if r["reason"] == "near_dup_caption":  # components are the last step: their roots are kept
                assert rep in kept
                # the representative ranks first: higher score, or equal/no score and a smaller uid
                mine, theirs = scores.get(r["uid"]), scores.get(rep)
                assert (theirs is not None and (mine is None or theirs > mine)) or (theirs == mine and rep < r["uid"])


def test_kept_samples_are_unchanged(captions):
    base, *_ = captions
    before = {k: g for p in sorted((base / "in").glob("*.tar")) for k, g in iter_tar_groups(str(p))}
    after = {k: g for p in sorted((base / "mem").glob("*.tar")) for k, g in iter_tar_groups(str(p))}
    assert after and all(before[k] == g for k, g in after.items())


def test_multi_processing_distributed_components_and_input_layout_give_identical_bytes(captions, tmp_path):
    base, recs, scores, cfg, index = captions
    reference = outputs(base / "mem")
    multi = run_dedup(cfg, [str(base / "in")], str(tmp_path / "multi"), MULTI)
    assert outputs(tmp_path / "multi") == reference and multi["totals"] == index["totals"]
    # components through large-star / small-star rounds instead of one union-find
    star_cfg = config(**NO_IMAGES, components={"max_local_edges": 0, "rounds": 8})
    stars = run_dedup(star_cfg, [str(base / "in")], str(tmp_path / "stars"))
    assert stars["_metrics"]["components_unconverged"] == 0
    # no step gathered more than its bound: the largest group per step is reported
    assert 0 < stars["_metrics"]["group_size_star_max"] < len(recs) and "group_size_union_find_edges_max" not in stars["_metrics"]
    assert 0 < index["_metrics"]["group_size_union_find_edges_max"] <= cfg.components.max_local_edges
    assert {k: v for k, v in outputs(tmp_path / "stars").items() if k != "_index.json"} == \
           {k: v for k, v in reference.items() if k != "_index.json"}
    # the same records in another order, split into other input shards, in two input folders
    rows = {r.uid: i for i, r in enumerate(recs)}
    shuffled = list(recs)
    random.Random(3).shuffle(shuffled)
    half = len(shuffled) // 2
    write_pair_folder(tmp_path / "a", shuffled[:half], samples_per_shard=97, scores=scores, prefix="a",
                      source_rows=rows)
    write_pair_folder(tmp_path / "b", shuffled[half:], samples_per_shard=211, scores=scores, prefix="b",
                      source_rows=rows)
    relaid_index = run_dedup(cfg, [str(tmp_path / "b"), str(tmp_path / "a")], str(tmp_path / "relaid"))
    # one output shard per input shard: the layout follows the input, the decisions do not
    layout = [json.loads((tmp_path / f / "_index.json").read_text())["num_shards"] for f in ("b", "a")]
    assert relaid_index["num_shards"] == sum(layout) and min(layout) > 1 and relaid_index["totals"] == index["totals"]
    assert _decisions(tmp_path / "relaid") == _decisions(base / "mem")
    assert _kept_members(tmp_path / "relaid") == _kept_members(base / "mem")


def _decisions(folder: Path) -> dict[str, tuple]:
    """uid -> (status, reason, detail) of every manifest row."""
    rows = manifest(folder)
    out = {r["uid"]: (r["status"], r["reason"], r["detail"]) for r in rows}
    assert len(out) == len(rows)
    return out


def _kept_members(folder: Path) -> dict[str, dict[str, bytes]]:
    return {k: g for p in sorted(folder.glob("*.tar")) for k, g in iter_tar_groups(str(p))}


def _near_blank_family(n: int, groups: int, seed: int) -> list[Planted]:
    """`n` distinct near-blank pHashes (1-3 bits from zero: one hot bucket in every table) and
    `groups` random pHashes with a variant 1-6 bits away, as records without an image."""
    rng = random.Random(seed)
    blank: set[int] = set()
    while len(blank) < n:
        blank.add(sum(1 << b for b in rng.sample(range(64), rng.randint(1, 3))))
    recs = [Planted(f"b{i:04d}", f"blank {i}", -1, phash=f"{h:016x}") for i, h in enumerate(sorted(blank))]
    for g in range(groups):
        base = rng.getrandbits(64)
        variant = base ^ sum(1 << b for b in rng.sample(range(64), rng.randint(1, 6)))
        recs += [Planted(f"g{g:03d}-0", f"group {g} a", g, phash=f"{base:016x}"),
                 Planted(f"g{g:03d}-1", f"group {g} b", g, phash=f"{variant:016x}")]
    return recs


def test_hot_image_buckets_are_split_or_searched_by_the_forest_and_counted(tmp_path):
    """Packed image table partitions through the Beam stage: a near-blank family makes a hot bucket
    in every table; split into tiles it gives byte-identical output to buckets never hot; too hot
    for tiles it goes to the LSH forest, never sampled: the same duplicates, the planted pairs
    outside it all still found."""
    recs = _near_blank_family(120, 30, seed=5)
    write_pair_folder(tmp_path / "in", recs, samples_per_shard=100)
    only_images = {"exact": {"caption": False, "image": False}, "near_caption": {"enabled": False},
                   "near_image": {"hamming": 8}}
    runs = {}
    for name, extra in (("whole", {}), ("split", {"max_bucket": 20}), ("forest", {"max_bucket": 20, "max_split_chunks": 2})):
        runs[name] = run_dedup(config(**only_images, **extra), [str(tmp_path / "in")], str(tmp_path / name), MULTI)
    whole, split, forest = (runs[k]["_metrics"] for k in ("whole", "split", "forest"))
    assert "image_hot_buckets" not in whole and whole["group_size_image_bucket_max"] > 40  # the family shares key 0
    assert split["image_hot_buckets"] >= 100 and split["image_split_tiles"] > split["image_hot_buckets"]
    assert split["group_size_image_verify_max"] <= 20 < split["group_size_image_bucket_max"]
    assert split.get("image_hot_bucket_skipped", 0) == 0
    assert split["group_size_image_partition_max"] == len(recs)  # a whole table per partition at this size
    assert {k: v for k, v in outputs(tmp_path / "split").items() if k != "_index.json"} == \
           {k: v for k, v in outputs(tmp_path / "whole").items() if k != "_index.json"}
    assert forest["image_forest_buckets"] > 0 and forest["image_forest_pieces"] > forest["image_forest_buckets"]
    assert forest["group_size_image_verify_max"] <= 20 and "image_hot_bucket_skipped" not in forest
    groups = {u: rep for u, rep in representatives(tmp_path / "forest").items() if u.startswith("g")}
    assert groups == {u: rep for u, rep in representatives(tmp_path / "whole").items() if u.startswith("g")}
    assert all(groups[f"g{g:03d}-0"] == groups[f"g{g:03d}-1"] for g in range(30))  # every planted pair found
    # the family: every member that is a duplicate when all its pairs are checked is one in the forest too
    kept = {name: {r["uid"] for r in manifest(tmp_path / name) if r["status"] == "kept"} for name in ("whole", "forest")}
    assert kept["forest"] == kept["whole"]
    for index in runs.values():
        assert index["totals"]["inputs"] == len(recs) == index["totals"]["kept"] + sum(index["reasons"].values())


def test_images_under_reencode_resize_and_crop(tmp_path):
    recs = planted_images(150, seed=4)
    write_pair_folder(tmp_path / "in", recs, samples_per_shard=200)
    index = run_dedup(config(), [str(tmp_path / "in")], str(tmp_path / "out"))
    truth = group_truth(recs)
    result = score(components_to_pairs(representatives(tmp_path / "out")), truth, closure(truth))
    assert result["true_pairs"] > 200
    assert result["recall"] >= 0.95 and result["precision"] >= 0.95, result
    assert index["reasons"]["near_dup_image"] > 100 and "near_dup_caption" not in index["reasons"]
    # bit-sampling LSH with exact verification: the components are those of the brute-force pHash graph
    # (the planted variants sit a few bits apart, where the recall model is 1 - 1e-9)
    rows = {r["uid"]: r for r in manifest(tmp_path / "in")}
    k = config().near_image.hamming
    brute = closure({(a, b) for a, b in combinations(sorted(rows), 2)
                     if bin(int(rows[a]["phash"], 16) ^ int(rows[b]["phash"], 16)).count("1") <= k})
    exact_dups = {u for u, r in ((r["uid"], r) for r in manifest(tmp_path / "out")) if r["reason"] == "dup_image"}
    found = components_to_pairs({u: rep for u, rep in representatives(tmp_path / "out").items() if u not in exact_dups})
    assert found == components_to_pairs({u: brute.get(u, u) for u in rows if u not in exact_dups})


def test_hot_caption_buckets_are_pivot_verified_and_counted_never_exact_grouped(tmp_path):
    recs = [Planted(f"h{i:04d}", f"stock photo {i % 7} by agency", i % 7) for i in range(300)]  # boilerplate
    recs += planted_captions(30, seed=2)
    write_pair_folder(tmp_path / "in", recs)
    cfg = config(exact={"caption": False, "image": False}, near_image={"enabled": False}, max_bucket=20)
    index = run_dedup(cfg, [str(tmp_path / "in")], str(tmp_path / "out"))
    m = index["_metrics"]
    assert m["caption_hot_buckets"] >= 1 and m["caption_hot_bucket_members"] >= 300 and m["caption_pivot_buckets"] >= 1
    assert m["group_size_caption_bucket_max"] >= 300 // 7 > cfg.max_bucket  # a hot bucket is walked, never listed
    assert m["group_size_caption_verify_max"] <= cfg.max_bucket  # what is compared pairwise stays bounded
    assert m.get("caption_hot_bucket_skipped", 0) == 0
    assert len(recs) / m["shards_written"] <= m["group_size_write_shard_max"] <= len(recs)  # >= the mean shard
    rows = {r["uid"]: r for r in manifest(tmp_path / "out")}
    # the 300 boilerplate rows collapse onto one representative per caption, verified against pivots
    kept_boiler = [u for u, r in rows.items() if u.startswith("h") and r["status"] == "kept"]
    assert len(kept_boiler) == 7
    assert {r["reason"] for u, r in rows.items() if u.startswith("h") and r["status"] != "kept"} == {"near_dup_caption"}
    assert index["totals"]["inputs"] == len(recs) == index["totals"]["kept"] + sum(index["reasons"].values())

    # pivots lose nothing here: with buckets big enough never to be hot, the output is byte-identical
    whole = run_dedup(config(exact={"caption": False, "image": False}, near_image={"enabled": False}),
                      [str(tmp_path / "in")], str(tmp_path / "whole"))
    assert "caption_hot_buckets" not in whole["_metrics"] and whole["totals"] == index["totals"]
    assert {k: v for k, v in outputs(tmp_path / "whole").items() if k != "_index.json"} == \
           {k: v for k, v in outputs(tmp_path / "out").items() if k != "_index.json"}


def test_cli_dedup_and_a_rerun_does_nothing(captions, tmp_path, capsys):
    from curation.cli.main import main

    base, *_ = captions
    recipe = tmp_path / "captions-only.yaml"  # the corpus shares one blank image: image dedup off
    recipe.write_text("exact: {image: false}\nnear_image: {enabled: false}\n")
    args = ["dedup", "--config", str(recipe), "--input", str(base / "in"), "--output",
            str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "accounting" in out and "OK" in out and "duplicates removed" in out and "near_dup_caption" in out
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == stamp
    assert main(["dedup", "--config", str(CONFIGS / "dedup.yaml"), "--input", str(tmp_path / "nothing"),
                 "--output", str(tmp_path / "o2")]) == 2
    assert "no _index.json" in capsys.readouterr().err


def test_ingest_dedups_captions_before_download(sample, tmp_path):
    """Near-duplicate captions on metadata alone: rejected at the dedup stage, never downloaded."""
    from pipelines.ingest import run_ingest

    table = pq.read_table(sample["laion"])
    rows = table.to_pylist()
    first = next(r for r in rows if r["TEXT"] and len(r["TEXT"]) > 20 and r["URL"] and "/img/" in r["URL"])
    extra = dict(first, URL=first["URL"] + "?copy=1", TEXT=first["TEXT"].upper() + "!!", similarity=0.2999)
    near = dict(first, URL=first["URL"] + "?copy=2", TEXT=first["TEXT"] + " ok", similarity=0.2998)
    path = tmp_path / "meta.parquet"
    pq.write_table(table.from_pylist(rows + [extra, near], schema=table.schema), path)
    cfg = local_config("laion.yaml", dedup={"exact": {"image": False}, "near_caption": {"threshold": 0.75}})
    index = run_ingest(cfg, [str(path)], str(tmp_path / "out"))
    got = {(r["url"], r["reason"]) for r in manifest(tmp_path / "out") if r["stage"] == "dedup"}
    assert (extra["URL"], "dup_caption") in got and (near["URL"], "near_dup_caption") in got
    m = index["_metrics"]
    after_dedup = [r for r in manifest(tmp_path / "out") if r["stage"] not in ("read", "metadata", "dedup")]
    assert m["downloaded"] + m.get("download_failed", 0) == len(after_dedup)


def test_an_input_index_promising_more_rows_than_its_shard_holds_fails_without_an_index(tmp_path):
    """The rows read must be the rows the input index lists: one more promised than the shard holds
    fails the read, naming the shard (a runner that really loses rows: tests/test_accounting.py)."""
    import json

    write_pair_folder(tmp_path / "in", planted_captions(20, seed=3), samples_per_shard=30)
    index_path = tmp_path / "in" / "_index.json"
    index = json.loads(index_path.read_text())
    index["shards"][0]["rows"] += 1
    index_path.write_text(json.dumps(index))
    with pytest.raises(Exception, match=r"planted-00000-of-\d{5}.parquet: \d+ rows, the index lists \d+"):
        run_dedup(config(**NO_IMAGES), [str(tmp_path / "in")], str(tmp_path / "out"))
    assert not (tmp_path / "out" / "_index.json").exists()
