"""`curate train | generate | check`: the model core's commands (configs/train.yaml).

  curate check out/packed [--config configs/train.yaml] [--verify-every 10] [--json]
  curate train --config configs/train.yaml --data out/packed [--loss mpo] [--steps N] [--output DIR]
  torchrun --nproc_per_node 8 -m curation.cli train --config configs/train.yaml --data out/packed
  curate generate --config configs/train.yaml --image a.jpg --prompt "Describe the image."
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from curation.core.config import deep_merge, load_config


def _config(args: argparse.Namespace, overrides: dict[str, Any]):
    from curation.cli.common import find_config
    from model.config import TrainConfig

    over: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if getattr(args, "checkpoint", None):
        over = deep_merge(over, {"model": {"checkpoint": args.checkpoint}})
    if getattr(args, "no_progress", False):
        over["progress"] = False
    return load_config(find_config(args.config), TrainConfig, over)


def print_check_report(report, stream=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, width=110)
    console.print(f"check {report.folder}: {report.packs} packs, {report.segments} segments, "
                  f"{report.images} images / {report.tiles} tiles, {report.tokens} tokens", markup=False)
    table = Table()
    table.add_column("check")
    table.add_column("failures", justify="right")
    for check, n in report.counts().items():
        table.add_row(check, str(n))
    console.print(table)
    console.print(f"supervised tokens {report.supervised}; mean loss {report.mean_loss:.4f}; packed == unpacked on "
                  f"{report.verified} packs (max |diff| {report.max_isolation_error:.2e})")
    for f in report.failures[:20]:
        console.print(f"  FAIL {f['check']}: {f['pack']}: {f['detail']}", markup=False)
    if len(report.failures) > 20:
        console.print(f"  ... {len(report.failures) - 20} more")
    console.print("check: OK" if report.ok else "check: FAILED")


def cmd_check(args: argparse.Namespace, beam_args: list[str]) -> int:
    from model.build import load_model
    from model.check import check_packs

    cfg = _config(args, {})
    loaded = load_model(cfg.model)
    report = check_packs(args.folder, loaded, cfg.data, verify_every=args.verify_every, tolerance=args.tolerance,
                         limit=args.limit, progress=cfg.progress and not args.json)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print_check_report(report)
    return 0 if report.ok else 1


def cmd_train(args: argparse.Namespace, beam_args: list[str]) -> int:
    from model.train import train

    cfg = _config(args, {"loss": args.loss, "steps": args.steps, "output": args.output})
    result = train(cfg, args.data, resume=not args.no_resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for all
        return 0
    first = result.history[0]["loss"] if result.history else float("nan")
    last = result.history[-1]["loss"] if result.history else float("nan")
    print(f"trained {cfg.loss} to step {result.steps} (resumed from {result.resumed_from}): loss {first:.4f} -> {last:.4f}, "
          f"{result.tokens} tokens in {result.seconds:.1f} s; checkpoint {result.checkpoint}")
    return 0


def cmd_generate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from model.build import load_model
    from model.generate import GenerationRequest, Generator

    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed}
    cfg = _config(args, {"sampling": {k: v for k, v in sampling.items() if v is not None}})
    gen = Generator(load_model(cfg.model), cfg.prompt, cfg.data)
    requests = [GenerationRequest(p, args.image or ()) for p in args.prompt]
    for req, out in zip(requests, gen.generate(requests, cfg.sampling)):
        if args.json:
            print(json.dumps({"prompt": req.prompt, "images": list(req.images), "text": out.text,
                              "prompt_tokens": out.prompt_tokens, "new_tokens": len(out.token_ids),
                              "finish_reason": out.finish_reason}, ensure_ascii=False))
        else:
            print(out.text)
    return 0


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="stream packed shards through the model; non-zero exit on any inconsistency")
    p.add_argument("folder", help="a pack output folder")
    p.add_argument("--config", default="train.yaml", help="model recipe (default configs/train.yaml)")
    p.add_argument("--checkpoint", help="a model folder (overrides model.checkpoint)")
    p.add_argument("--verify-every", type=int, default=10, help="compare packed vs unpacked losses on every N-th pack (0: never)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |packed - unpacked| per-segment loss")
    p.add_argument("--limit", type=int, help="check only the first N packs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("train", help="train the model core on packed shards (NTP or MPO), with checkpoints and resume")
    p.add_argument("--config", default="train.yaml")
    p.add_argument("--data", required=True, help="a pack output folder")
    p.add_argument("--loss", choices=["ntp", "mpo"], help="overrides loss:")
    p.add_argument("--steps", type=int, help="overrides steps:")
    p.add_argument("--output", help="overrides output: (checkpoints and metrics.jsonl)")
    p.add_argument("--checkpoint", help="start from this model folder (overrides model.checkpoint)")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in the output folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate answers with the model core, with or without images")
    p.add_argument("--config", default="train.yaml")
    p.add_argument("--checkpoint", help="a model folder, e.g. a train checkpoint (overrides model.checkpoint)")
    p.add_argument("--prompt", required=True, action="append", help="a prompt (repeatable: one batch)")
    p.add_argument("--image", action="append", help="an image file for every prompt (repeatable)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generate)
