"""MMPR sampling throughput on the same questions in one run: the naive loop (one request at a
time: every sample of every question generated alone), the batched policy (`policy.batch_size`
questions with all their samples in one KV-cached generation, one prefill per question), and
`curate mmpr` on DirectRunner (read, sample, judge, pair, write). Prints one JSON line with
`speedup` (naive / batched) and `same_outputs` (the share of texts the two give alike: a request's
text depends only on its seed).

    python bench/mmpr.py [--questions 16] [--samples 4] [--max-new-tokens 40] [--max-num 1] [--no-pipeline]

The model is loaded once before the naive and batched timings (as a worker does); the pipeline
timing includes its own load. On a GPU machine: `--backend vllm --model OpenGVLab/InternVL3-1B`
(the model folder must be local; no naive loop there: vLLM batches by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def questions(folder: Path, n: int) -> Path:
    """`n` questions with a ground truth, over the embedded VQA sample's images."""
    from curation.samples.vqa import QUESTIONS, write_vqa

    write_vqa(folder)
    rows = [json.loads(line) for line in (folder / "vqa.jsonl").read_text().splitlines()
            if line.startswith('{"id": "q')]
    out = folder / "bench.jsonl"
    with out.open("w") as f:
        for i in range(n):
            row = dict(rows[i % len(QUESTIONS)], id=f"b{i}")
            f.write(json.dumps(row) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--backend", default="model", choices=["model", "vllm", "openai"])
    ap.add_argument("--model", default=None, help="vllm / openai: the model; model: a checkpoint folder")
    ap.add_argument("--max-num", type=int, default=1, help="tiles per image (model backend)")
    ap.add_argument("--thumbnail", action="store_true", help="add InternVL's thumbnail tile (model backend)")
    ap.add_argument("--batch-size", type=int, default=None, help="questions per batched generation (default: the recipe's)")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the curate mmpr timing")
    args = ap.parse_args()

    from curation.core.config import deep_merge, load_config
    from curation.mmpr.tasks import load_images, parse_item, sample_requests, task_images
    from curation.mmpr.config import MmprConfig
    from curation.mmpr.policy import build_policy
    from pipelines.mmpr import run_mmpr

    root = Path(__file__).resolve().parent.parent
    policy = {"backend": args.backend, "prompt": {"max_num": args.max_num, "use_thumbnail": args.thumbnail}}
    if args.batch_size:
        policy["batch_size"] = args.batch_size
    if args.model and args.backend == "model":
        policy["model"] = {"checkpoint": args.model, "preset": None}
    elif args.model:
        policy["llm"] = {"model": args.model}
    over = {"correctness": {"samples": args.samples, "max_pairs": 2}, "dropout_ntp": {"enabled": False},
            "sampling": {"max_new_tokens": args.max_new_tokens, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "seed": 0},
            "policy": policy, "progress": False, "shards": {"samples_per_shard": 1000}}
    cfg = load_config(root / "configs" / "mmpr.yaml", MmprConfig, deep_merge({}, over))
    with tempfile.TemporaryDirectory() as tmp:
        path = questions(Path(tmp) / "in", args.questions)
        tasks = []
        for i, line in enumerate(path.read_text().splitlines()):
            task = parse_item(json.loads(line), path.name, i)
            tasks.append(load_images(task, str(path.parent), cfg.images, lambda p, n: Path(p).read_bytes()[:n]))
        model = build_policy(cfg.policy)
        batches = [tasks[i:i + cfg.policy.batch_size] for i in range(0, len(tasks), cfg.policy.batch_size)]
        read = lambda p: Path(p).read_bytes()  # noqa: E731 - the images read again, as the stage's policy step does
        requests = [[r for t in batch for r in sample_requests(t, cfg, model.per_request_seed, task_images(t, read))]
                    for batch in batches]
        naive_s = naive = None
        if args.backend == "model":
            t0 = time.time()
            naive = [model.generate([r], cfg.sampling)[0] for rs in requests for r in rs]
            naive_s = time.time() - t0
        t0 = time.time()
        batched = [out for rs in requests for out in model.generate(rs, cfg.sampling)]
        bare_s = time.time() - t0
        tokens = sum(r.meta.get("completion_tokens") or 0 for r in batched if hasattr(r, "meta"))
        del model
        pipe_s = stats = None
        if not args.no_pipeline:
            t0 = time.time()
            index = run_mmpr(cfg, [str(path)], str(Path(tmp) / "out"), ["--direct_running_mode=in_memory"])
            pipe_s = time.time() - t0
            stats = index.get("stats", {})
    line = {
        "backend": args.backend, "policy": cfg.policy.label, "questions": args.questions, "samples": args.samples,
        "max_new_tokens": args.max_new_tokens, "max_num": args.max_num, "thumbnail": args.thumbnail,
        "batch_questions": cfg.policy.batch_size, "responses": len(batched),
        "batched_s": round(bare_s, 1), "batched_responses_per_s": round(len(batched) / bare_s, 2),
        "batched_tokens_per_s": round(tokens / bare_s, 1), "mean_completion_tokens": round(tokens / max(1, len(batched)), 1),
    }
    if naive is not None:
        same = sum(1 for a, b in zip(naive, batched) if getattr(a, "text", a) == getattr(b, "text", b))
        line.update({"naive_s": round(naive_s, 1), "naive_responses_per_s": round(len(naive) / naive_s, 2),
                     "speedup": round(naive_s / bare_s, 2), "same_outputs": round(same / len(naive), 3)})
    if stats is not None:
        line.update({"pipeline_s": round(pipe_s, 1), "pipeline_responses_per_s": round(stats.get("responses", 0) / pipe_s, 2),
                     "pairs": stats.get("pairs", 0)})
    line["cores"] = os.cpu_count()
    print(json.dumps(line))


if __name__ == "__main__":
    main()
