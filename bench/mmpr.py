"""MMPR throughput: sampled responses/s of one policy, bare (the policy called in batches of
questions, no Beam) vs through `curate mmpr` on DirectRunner (read, sample, judge, pair, continue,
write), on the same questions. Prints one JSON line.

    python bench/mmpr.py [--questions 12] [--samples 4] [--max-new-tokens 40] [--backend model]

Both timings include loading the models once, as a worker does. On a GPU machine:
`--backend vllm --model OpenGVLab/InternVL3-1B` (the model folder must be local).
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
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--backend", default="model", choices=["model", "vllm", "openai"])
    ap.add_argument("--model", default=None, help="vllm / openai: the model; model: a checkpoint folder")
    ap.add_argument("--max-num", type=int, default=1, help="tiles per image (model backend)")
    args = ap.parse_args()

    from curation.core.config import deep_merge, load_config
    from curation.mmpr.pairs import MmprTask, load_images, parse_item, sample_requests
    from curation.mmpr.config import MmprConfig
    from curation.mmpr.policy import build_policy
    from pipelines.mmpr import run_mmpr

    root = Path(__file__).resolve().parent.parent
    policy = {"backend": args.backend, "prompt": {"max_num": args.max_num, "use_thumbnail": False}, "batch_size": 4}
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
        t0 = time.time()
        model = build_policy(cfg.policy)
        responses = tokens = 0
        for start in range(0, len(tasks), cfg.policy.batch_size):
            batch: list[MmprTask] = tasks[start:start + cfg.policy.batch_size]
            out = model.generate([r for t in batch for r in sample_requests(t, cfg, model.per_request_seed)], cfg.sampling)
            responses += len(out)
            tokens += sum(r.meta.get("completion_tokens") or 0 for r in out if hasattr(r, "meta"))
        bare_s = time.time() - t0
        del model
        t0 = time.time()
        index = run_mmpr(cfg, [str(path)], str(Path(tmp) / "out"), ["--direct_running_mode=in_memory"])
        pipe_s = time.time() - t0
    stats = index.get("stats", {})
    print(json.dumps({
        "backend": args.backend, "policy": cfg.policy.label, "questions": args.questions, "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "bare_responses_per_s": round(responses / bare_s, 2), "bare_tokens_per_s": round(tokens / bare_s, 1),
        "pipeline_responses_per_s": round(stats.get("responses", 0) / pipe_s, 2),
        "pipeline_overhead_pct": round(100 * (pipe_s / bare_s - 1), 1),
        "pairs": stats.get("pairs", 0), "bare_s": round(bare_s, 1), "pipeline_s": round(pipe_s, 1),
        "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
