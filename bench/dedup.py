"""Dedup: MinHash signature speed against datasketch, and the Beam stage's recall, precision and speed.

1. Signatures: our batch MinHash vs datasketch's `MinHash.update_batch` one document at a time, on
   the same captions (seeded word salad in LAION caption lengths), shingles and num_perm, in one
   process (per core); the signatures are checked bit-identical before timing counts.
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

from filters.minhash import MinHasher, shingles  # noqa: E402

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
    args = ap.parse_args()
    from datasketch import MinHash

    docs = [sorted(shingles(c)) for c in corpus(args.docs)]
    hasher = MinHasher(args.num_perm)
    best_ours = best_ref = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ours = hasher.signatures(docs)
        best_ours = min(best_ours, time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = []
    for d in docs:
        m = MinHash(num_perm=args.num_perm)
        m.update_batch(d)
        ref.append(m.hashvalues)
    best_ref = time.perf_counter() - t0
    assert np.array_equal(ours, np.asarray(ref)), "signatures differ from datasketch"
    stage = beam_stage(args)
    print(json.dumps({
        "docs": args.docs, "num_perm": args.num_perm, "shingles": sum(map(len, docs)),
        "ours_sigs_per_s": round(args.docs / best_ours), "datasketch_sigs_per_s": round(args.docs / best_ref),
        "speedup": round(best_ref / best_ours, 2), "bit_identical": True, **stage,
    }))


def beam_stage(args) -> dict:
    """Recall / precision / pairs per second of `curate dedup` on the planted corpora."""
    import logging
    import tempfile

    from filters.dedup_config import DedupConfig
    from curation.core.config import deep_merge, load_config
    from curation.samples.dups import caption_truth, closure, components_to_pairs, group_truth, planted_captions, planted_images, representatives, score, write_pair_folder
    from pipelines.dedup import run_dedup

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
