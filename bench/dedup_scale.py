"""Near-duplicate search at scale: planted pHash and caption corpora through the real `curate dedup`
stage (configs/dedup.yaml, DirectRunner), scored against the planted groups.

1. Images: `--images` records, random 64-bit pHashes, most of them in planted groups of 2-5 (a base
   and variants 1..`--hamming` random bit flips away), plus `--hot` distinct near-blank hashes
   (1-4 bits set, so within 8 bits of each other) that make a hot bucket in every table. Truth: every same-group pair within
   `hamming` bits. Only near-image dedup runs (exact URL too: uids differ).
2. Captions: `--captions` records: `--hot` captions of one boilerplate family (a number apart) and
   `curation.samples.dups.planted_captions` (originals and edited copies: case, punctuation, word
   edits, swaps, clause moves). Truth: every same-group pair at true shingle Jaccard >=
   `near_caption.threshold`. Exact URL + caption and near-caption run.

Both are written as pair shards by the project's writer (`write_pair_folder`: tar + manifest +
`_index.json`, records without an image carry a blank image with the planted pHash). Recall: share
of truth pairs outside the hot family in one output component (chains through exact duplicates
followed). Precision: share of same-component output pairs that are linked inside their component
by a chain of true pairs (within `hamming` bits, or Jaccard >= threshold) - stricter than the
global closure, and needing no all-pairs ground truth at 10^6 records. The hot family is scored
apart (`hot_family`): member recall, and pair recall over sampled pairs.

Prints one JSON line per kind: recall, precision, the hot family's hot_member_recall /
hot_pair_recall / hot_pair_density, max_bucket (the largest LSH bucket, walked and never listed),
max_verified (the largest group compared pairwise: <= max_bucket of the recipe), hot_buckets and
split_tiles (tiled), forest_buckets (images too hot for tiles), pivot_buckets (captions too hot for
tiles), hot_bucket_skipped (members left unverified: 0 unless a bucket defeats its pivots),
records_per_s (the stage, start-up included), peak_rss_mb (the largest process: the DirectRunner
process holds every shuffle), the LSH parameters and candidate pairs per record.

    python bench/dedup_scale.py --images 100000 --captions 100000 --hamming 10 --seed 0 [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale import PeakRss, _status_kb  # noqa: E402
from curation.core.config import load_config  # noqa: E402
from curation.samples.dups import Planted, components_to_pairs, planted_captions, representatives, write_pair_folder  # noqa: E402
from filters.dedup.components import union_find  # noqa: E402
from filters.dedup.config import DedupConfig  # noqa: E402
from filters.dedup.minhash import jaccard, shingles  # noqa: E402

RECIPE = ROOT / "configs" / "dedup.yaml"


def boilerplate(hot: int) -> list[Planted]:
    """`hot` captions of one template family, a number apart: hot LSH buckets after exact dedup."""
    return [Planted(f"stock{i:05d}", f"Stock photo of the day by our agency, all rights reserved, image {i}", -1)
            for i in range(hot)]


def planted_phashes(n: int, hamming: int, seed: int, hot: int) -> list[Planted]:
    """n records: `hot` distinct near-blank hashes (1-4 bits from all-zero: one hot bucket in every
    table), then random pHashes, most in planted groups of 2-5 within 1..hamming flips of a base."""
    rng = np.random.default_rng(seed)
    blank: set[int] = set()
    while len(blank) < hot:  # C(64, <= 4) = 679,121 hashes to draw from
        blank.add(int(np.bitwise_or.reduce(np.uint64(1) << rng.choice(64, int(rng.integers(1, 5)), replace=False)
                                           .astype(np.uint64))))
    blank = sorted(blank)
    out = [Planted(f"blank{i:05d}", f"blank {i}", -1, phash=f"{h:016x}") for i, h in enumerate(blank[:n])]
    g = 0
    while len(out) < n:
        base = int(rng.integers(0, 2**64, dtype=np.uint64, endpoint=False))
        size = 1 if rng.random() < 0.3 else int(rng.integers(2, 6))
        hashes = [base]
        for _ in range(size - 1):
            flips = rng.choice(64, int(rng.integers(1, hamming + 1)), replace=False)
            hashes.append(base ^ int(np.bitwise_or.reduce(np.uint64(1) << flips.astype(np.uint64))))
        for v, h in enumerate(hashes[: n - len(out)]):
            out.append(Planted(f"p{g:07d}-{v}", f"record {g} {v}", g, phash=f"{h:016x}"))
        g += 1
    return out


def _groups(records: list[Planted]) -> dict[int, list[Planted]]:
    by: dict[int, list[Planted]] = {}
    for r in records:
        by.setdefault(r.group, []).append(r)
    return by


def measure(records: list[Planted], related, found: set[tuple[str, str]]) -> dict[str, float]:
    """Recall against the same-group related pairs; precision inside each found component."""
    truth = {tuple(sorted((a.uid, b.uid))) for rs in _groups(records).values() for a, b in combinations(rs, 2)
             if related(a, b)}
    recall = len(found & truth) / len(truth) if truth else 1.0
    by_uid = {r.uid: r for r in records}
    comps: dict[str, set[str]] = {}
    for a, b in found:
        comp = comps.setdefault(a, {a})
        if b not in comp:
            comp |= comps.get(b, {b})
            for u in comp:
                comps[u] = comp
    ok = 0
    for comp in {id(c): c for c in comps.values()}.values():
        members = sorted(comp)
        roots = union_find((a, b) for a, b in combinations(members, 2) if related(by_uid[a], by_uid[b]))
        ok += sum(1 for a, b in combinations(members, 2) if a in roots and roots[a] == roots.get(b))
    precision = ok / len(found) if found else 1.0
    return {"recall": round(recall, 4), "precision": round(precision, 4), "true_pairs": len(truth),
            "found_pairs": len(found)}


def hot_family(records: list[Planted], rep_of: dict[str, str], related, seed: int, samples: int = 10_000) -> dict:
    """The hot family (group -1) scored from its output components, never from its all-pairs truth
    (5 x 10^9 pairs at 10^5 members): member recall (members that end in one component with another
    family member: as a duplicate of a kept member, or kept with duplicates of their own), and pair
    recall over `samples` random member pairs (the related ones among them, in one component),
    beside the family's density (the share of sampled pairs related)."""
    family = [r for r in records if r.group == -1]
    if len(family) < 2:
        return {}
    comp_size: dict[str, int] = {}
    for r in family:
        comp_size[rep_of.get(r.uid, r.uid)] = comp_size.get(rep_of.get(r.uid, r.uid), 0) + 1
    linked = sum(1 for r in family if comp_size[rep_of.get(r.uid, r.uid)] > 1)
    rng = np.random.default_rng(seed)
    related_pairs = together = 0
    for i, j in rng.integers(0, len(family), size=(samples, 2)):
        a, b = family[int(i)], family[int(j)]
        if i != j and related(a, b):
            related_pairs += 1
            together += rep_of.get(a.uid, a.uid) == rep_of.get(b.uid, b.uid)
    return {"hot_members": len(family), "hot_member_recall": round(linked / len(family), 4),
            "hot_pair_recall": round(together / related_pairs, 4) if related_pairs else None,
            "hot_pair_density": round(related_pairs / samples, 4), "hot_components": len(comp_size)}


def _reset_peak_rss() -> None:
    """Restart this process's VmHWM (Linux clear_refs 5), so each kind reports its own runner peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run(kind: str, records: list[Planted], cfg: DedupConfig, related, work: Path, beam_args: list[str],
        samples_per_shard: int, seed: int) -> dict:
    """Write the corpus, run the stage under the RSS poller, score it; one result dict."""
    from pipelines.dedup.stage import run_dedup

    inp, out = work / f"{kind}-in", work / f"{kind}-out"
    t0 = time.perf_counter()
    write_pair_folder(inp, records, samples_per_shard=samples_per_shard)
    write_s = time.perf_counter() - t0
    _reset_peak_rss()
    t0 = time.perf_counter()
    with PeakRss() as rss:
        index = run_dedup(cfg, [str(inp)], str(out), beam_args)
    seconds = time.perf_counter() - t0
    m = index["_metrics"]
    workers = rss.workers_mb()
    runner = round(_status_kb(os.getpid(), "VmHWM") / 1024, 1)
    rep_of = representatives(out)
    hot = {r.uid for r in records if r.group == -1}
    result = measure([r for r in records if r.group != -1], related,
                     components_to_pairs({u: rep for u, rep in rep_of.items() if u not in hot and rep not in hot}))
    result.update(hot_family(records, rep_of, related, seed))
    n = len(records)
    return {"kind": kind, "records": n, **result,
            "max_bucket": m.get(f"group_size_{kind}_bucket_max", 0),
            "max_verified": m.get(f"group_size_{kind}_verify_max", 0), "bucket_bound": cfg.max_bucket,
            "hot_buckets": m.get(f"{kind}_hot_buckets", 0), "split_tiles": m.get(f"{kind}_split_tiles", 0),
            "hot_bucket_skipped": m.get(f"{kind}_hot_bucket_skipped", 0),
            "forest_buckets": m.get(f"{kind}_forest_buckets", 0), "pivot_buckets": m.get(f"{kind}_pivot_buckets", 0),
            "candidate_pairs_per_record": round(m.get(f"{kind}_candidate_pairs", 0) / n, 2),
            "records_per_s": round(n / seconds, 1), "seconds": round(seconds, 1), "write_s": round(write_s, 1),
            "peak_rss_mb": max([runner, *workers]), "runner_peak_rss_mb": runner, "worker_peak_rss_mb": workers,
            "accounted": index["totals"]["inputs"] == n == index["totals"]["kept"] + sum(index["reasons"].values()),
            "totals": index["totals"], "reasons": index["reasons"], "cores": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--captions", type=int, default=100_000)
    ap.add_argument("--hamming", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hot", type=int, default=2000, help="records of one hot family per kind (blank-like images, "
                                                        "boilerplate captions)")
    ap.add_argument("--workers", type=int, default=2, help="DirectRunner multi_processing workers (0: in_memory)")
    ap.add_argument("--samples-per-shard", type=int, default=10_000)
    ap.add_argument("--keep", help="write inputs and outputs here and keep them (default: a temp folder)")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    beam_args = (["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"] if args.workers
                 else ["--direct_running_mode=in_memory"])
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dedup-scale-"))
    try:
        if args.images:
            cfg = load_config(RECIPE, DedupConfig, {"progress": False, "near_image": {"hamming": args.hamming},
                                                    "exact": {"caption": False, "image": False},
                                                    "near_caption": {"enabled": False},
                                                    "shards": {"samples_per_shard": args.samples_per_shard}})
            h = args.hamming
            ni = cfg.near_image

            def near(a: Planted, b: Planted) -> bool:
                return bin(int(a.phash, 16) ^ int(b.phash, 16)).count("1") <= h

            out = run("image", planted_phashes(args.images, h, args.seed, args.hot), cfg, near, work, beam_args,
                      args.samples_per_shard, args.seed)
            out.update(hamming=h, bits=ni.bits, tables=ni.num_tables(), model_recall_at_hamming=round(ni.expected_recall(h), 4),
                       model_bucket_mean_at_1e9=round(1e9 / 2 ** ni.bits, 1))
            print(json.dumps(out), flush=True)
        if args.captions:
            cfg = load_config(RECIPE, DedupConfig, {"progress": False, "exact": {"image": False},
                                                    "near_image": {"enabled": False},
                                                    "shards": {"samples_per_shard": args.samples_per_shard}})
            nc = cfg.near_caption
            recs = (boilerplate(args.hot) + planted_captions(args.captions // 3 + 1, seed=args.seed))[: args.captions]
            @functools.lru_cache(maxsize=100_000)  # shingled on demand: 10^6 sets beside the runner crowd it
            def shingled(caption: str) -> frozenset:
                return frozenset(shingles(caption, nc.shingle, nc.ngram))

            def similar(a: Planted, b: Planted) -> bool:
                return jaccard(shingled(a.caption), shingled(b.caption)) >= nc.threshold

            out = run("caption", recs, cfg, similar, work, beam_args, args.samples_per_shard, args.seed)
            bands, rows = nc.lsh()
            out.update(threshold=nc.threshold, bands=bands, rows=rows)
            print(json.dumps(out), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
