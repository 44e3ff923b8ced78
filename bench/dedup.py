"""Dedup: MinHash signature speed against datasketch, and the Beam stage's recall, precision and speed.

1. Signatures: our batch MinHash vs datasketch used as its docs recommend for many documents -
   `MinHash.bulk` and `update_batch` with the permutations built once and shared (`permutations=`) -
   and, for reference, the naive per-document `MinHash(...)` that rebuilds its permutations each
   time; the same captions (seeded word salad in LAION caption lengths), shingles and num_perm, in
   one process (per core), every side best of 3; the signatures are checked bit-identical.
   `speedup` is against datasketch's fastest use. `hash_updates_per_s` (shingle x permutation
   updates) is printed beside `numpy_affine_per_s`, the machine's rate for the same uint32
   multiply-add over one array: the limit a numpy MinHash can reach.
2. The `curate dedup` stage (configs/dedup.yaml, DirectRunner) on a planted-duplicate caption corpus
   against the exhaustive Jaccard >= 0.8 ground truth, and on a planted image corpus (re-encodes,
   resizes, 1-5% crops) against the planted groups; pairs/s is input records through the whole
   stage, start-up included.

    python bench/dedup.py [--docs 20000] [--num-perm 128] [--groups 3000] [--image-groups 400]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from filters.dedup.minhash import MinHasher, shingles  # noqa: E402

WORDS = ("a photo of the red blue green yellow circle square triangle on white black background large small cat "
         "dog park street sign coffee shop open sale hotel market books stop exit view from above with people").split()


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(max(1, int(rng.lognormvariate(2.4, 0.6))))) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--groups", type=int, default=3000, help="planted caption groups (about 3 records each)")
    ap.add_argument("--image-groups", type=int, default=400, help="planted image groups (about 2.5 records each)")
    ap.add_argument("--runner-mode", default="in_memory", choices=["in_memory", "multi_processing"])
    ap.add_argument("--no-stage", action="store_true", help="signatures only, no Beam stage")
    args = ap.parse_args()
    from datasketch import MinHash

    docs = [sorted(shingles(c)) for c in corpus(args.docs)]
    hasher = MinHasher(args.num_perm)

    def best(fn) -> tuple[float, object]:
        times, out = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    def shared():
        first = MinHash(num_perm=args.num_perm)
        perm, scheme = first.permutations, first.scheme
        out = []
        for d in docs:
            m = MinHash(num_perm=args.num_perm, permutations=perm, scheme=scheme)
            m.update_batch(d)
            out.append(m.hashvalues)
        return out

    def rebuilt():
        out = []
        for d in docs:
            m = MinHash(num_perm=args.num_perm)
            m.update_batch(d)
            out.append(m.hashvalues)
        return out

    t_ours, ours = best(lambda: hasher.signatures(docs))
    t_bulk, bulk = best(lambda: [m.hashvalues for m in MinHash.bulk(docs, num_perm=args.num_perm)])
    t_shared, ref = best(shared)
    t_rebuilt, naive = best(rebuilt)
    for other in (bulk, ref, naive):
        assert np.array_equal(ours, np.asarray(other)), "signatures differ from datasketch"
    fastest = min(t_bulk, t_shared)
    updates = sum(map(len, docs)) * args.num_perm
    h = np.random.default_rng(0).integers(0, 1 << 32, 1 << 22, dtype=np.uint32)
    a, b = np.uint32(2654435761), np.uint32(40503)
    t_np, _ = best(lambda: [h * a + b for _ in range(8)])
    stage = {} if args.no_stage else beam_stage(args)
    print(json.dumps({
        "docs": args.docs, "num_perm": args.num_perm, "shingles": sum(map(len, docs)),
        "ours_s": round(t_ours, 3), "datasketch_bulk_s": round(t_bulk, 3), "datasketch_shared_perm_s": round(t_shared, 3),
        "datasketch_rebuilt_perm_s": round(t_rebuilt, 3),
        "ours_sigs_per_s": round(args.docs / t_ours), "datasketch_sigs_per_s": round(args.docs / fastest),
        "speedup": round(fastest / t_ours, 2), "speedup_vs_rebuilt_perm": round(t_rebuilt / t_ours, 2),
        "hash_updates_per_s": round(updates / t_ours), "numpy_affine_per_s": round(8 * h.size / t_np),
        "bit_identical": True, **stage,
    }))


def beam_stage(args) -> dict:
    """Recall / precision / pairs per second of `curate dedup` on the planted corpora."""
    import logging
    import tempfile

    from filters.dedup.config import DedupConfig
    from curation.core.config import deep_merge, load_config
    from curation.samples.dups import caption_truth, closure, components_to_pairs, group_truth, planted_captions, planted_images, representatives, score, write_pair_folder
    from pipelines.dedup.stage import run_dedup

    logging.getLogger().setLevel(logging.ERROR)
    recipe = Path(__file__).resolve().parent.parent / "configs" / "dedup.yaml"
    beam_args = [f"--direct_running_mode={args.runner_mode}"] + (
        ["--direct_num_workers=2"] if args.runner_mode == "multi_processing" else [])
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        recs = planted_captions(args.groups, seed=1)
        write_pair_folder(f"{tmp}/cap", recs, samples_per_shard=2000)
        cfg = load_config(recipe, DedupConfig, {"progress": False, "exact": {"image": False},
                                                "near_image": {"enabled": False}})
        t0 = time.perf_counter()
        index = run_dedup(cfg, [f"{tmp}/cap"], f"{tmp}/cap-out", beam_args)
        seconds = time.perf_counter() - t0
        truth = caption_truth({r.uid: r.caption for r in recs}, cfg.near_caption.threshold,
                              cfg.near_caption.shingle, cfg.near_caption.ngram)
        result = score(components_to_pairs(representatives(f"{tmp}/cap-out")), truth, closure(truth))
        out.update(recall=round(result["recall"], 4), precision=round(result["precision"], 4),
                   direct_precision=round(result["direct_precision"], 4), true_pairs=result["true_pairs"],
                   beam_pairs_per_s=round(len(recs) / seconds, 1), beam_records=len(recs),
                   beam_seconds=round(seconds, 2), beam_runner_mode=args.runner_mode,
                   removed=dict(sorted(index["reasons"].items())))
        # the same stage without verification: what LSH candidates alone would link
        raw = deep_merge({"progress": False, "exact": {"image": False}, "near_image": {"enabled": False}},
                         {"near_caption": {"verify": False}})
        run_dedup(load_config(recipe, DedupConfig, raw), [f"{tmp}/cap"], f"{tmp}/cap-raw", beam_args)
        unverified = score(components_to_pairs(representatives(f"{tmp}/cap-raw")), truth, closure(truth))
        out.update(unverified_recall=round(unverified["recall"], 4), unverified_precision=round(unverified["precision"], 4))
        images = planted_images(args.image_groups, seed=2)
        write_pair_folder(f"{tmp}/img", images, samples_per_shard=2000)
        t0 = time.perf_counter()
        run_dedup(load_config(recipe, DedupConfig, {"progress": False}), [f"{tmp}/img"], f"{tmp}/img-out", beam_args)
        image_seconds = time.perf_counter() - t0
        truth = group_truth(images)
        result = score(components_to_pairs(representatives(f"{tmp}/img-out")), truth, closure(truth))
        out.update(image_recall=round(result["recall"], 4), image_precision=round(result["precision"], 4),
                   image_true_pairs=result["true_pairs"], image_records=len(images),
                   image_pairs_per_s=round(len(images) / image_seconds, 1))
    return out


if __name__ == "__main__":
    main()
