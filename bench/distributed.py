"""Distributed training on CPU: `torchrun` with N gloo ranks (grad_accum 1) against one process with
grad_accum N on the same packs, the same seed and the same global order. Prints one JSON line:
`ranks`, `steps`, `max_abs_loss_diff` (fp32; the gradients are the same, so only summation order
differs), and tokens/s of both runs (each run's training loop, model loading and process start
excluded; on one 2-core machine the ranks share the cores, so this shows overhead, not scaling).

    python bench/distributed.py --ranks 2 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.core.config import ShardConfig, build  # noqa: E402
from curation.samples.conversations import write_conversations  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.train import train  # noqa: E402
from packing.config import PackConfig, TilingConfig  # noqa: E402
from pipelines.pack import run_pack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--l-max", type=int, default=2048)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = write_conversations(tmp / "convs")
        packed = tmp / "packed"
        cfg = PackConfig(l_max=args.l_max, t_max=8, progress=False, tiling=TilingConfig(max_num=1),
                         shards=ShardConfig(prefix="packed", samples_per_shard=12))
        run_pack(cfg, [str(sample["conversations"])], str(packed))

        def recipe(name: str, accum: int) -> dict:
            return {"steps": args.steps, "save_every": 10_000, "output": str(tmp / name), "progress": False,
                    "optim": {"lr": 0.003, "grad_accum": accum}, "distributed": {"streams": args.ranks}}

        t0 = time.perf_counter()
        one = train(build(TrainConfig, recipe("one", args.ranks), ""), str(packed))
        one_s = time.perf_counter() - t0
        config = tmp / "ranks.yaml"
        config.write_text(yaml.safe_dump(recipe("ranks", 1)))
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.ranks)))
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                              str(args.ranks), "-m", "curation.cli", "train", "--config", str(config), "--data", str(packed)],
                             capture_output=True, text=True, env=env, cwd=ROOT)
        ranks_s = time.perf_counter() - t0
        if run.returncode:
            sys.exit(run.stderr[-4000:])
        many = [json.loads(x) for x in (tmp / "ranks" / "metrics.jsonl").read_text().splitlines()]
        loop_s = float(re.search(r"tokens in ([0-9.]+) s", run.stdout).group(1))  # rank 0's training loop
        tokens = sum(h["tokens"] for h in one.history)
        print(json.dumps({
            "bench": "distributed", "ranks": args.ranks, "steps": len(many), "backend": "gloo",
            "max_abs_loss_diff": max(abs(a["loss"] - b["loss"]) for a, b in zip(one.history, many)),
            "first_loss": one.history[0]["loss"], "last_loss": one.history[-1]["loss"],
            "tokens": tokens, "one_process_tokens_per_s": round(tokens / one.seconds, 1),
            "ranks_tokens_per_s": round(sum(h["tokens"] for h in many) / loop_s, 1),
            "ranks_train_s": round(loop_s, 1), "ranks_wall_s_incl_startup": round(ranks_s, 1),
            "one_process_train_s": round(one.seconds, 1), "one_process_wall_s_incl_load": round(one_s, 1),
            "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
