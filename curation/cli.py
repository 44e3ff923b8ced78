"""The `curate` command line. Everything after `--` is a Beam pipeline option, passed untouched.

  curate ingest --config configs/laion.yaml --input 'meta/*.parquet' --output out/laion -- --runner DirectRunner
  curate dedup --config configs/dedup.yaml --input out/laion --input out/coyo --output out/dedup -- --runner DirectRunner
  curate pack --config configs/pack.yaml --input 'convs/*.jsonl' --output out/packed -- --runner DirectRunner
  curate plan --config configs/plan.yaml --input 'meta/*.parquet' --output out/plan   (metadata-only dry run)
  curate inspect summary|show|validate|report FOLDER ...
  curate check out/packed ; curate train --data out/packed ; curate generate --prompt ... (curation/model_cli.py)
  curate demo --output demo-out
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config import ConfigError, DedupConfig, IngestConfig, PackConfig, build, deep_merge, load_config, load_yaml
from curation.model_cli import add_model_commands

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def split_beam_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split at the first `--`: ours before, Beam's after."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def find_config(name: str) -> Path:
    """A config path as given, else under the project's configs/ folder."""
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    candidate = CONFIG_DIR / name
    return candidate if candidate.exists() else path


def print_ingest_report(index: dict[str, Any], output: str, stream=None) -> None:
    """Kept/rejected per reason, the accounting check, and this run's Beam counters."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, width=100)
    totals = index["totals"]
    ok = totals["inputs"] == totals["kept"] + sum(index["reasons"].values())
    table = Table(title=f"{output}: {index['num_shards']} shards, {totals['inputs']} input rows")
    table.add_column("status / reason")
    table.add_column("rows", justify="right")
    table.add_row("kept", str(totals["kept"]))
    for reason, count in sorted(index["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"rejected: {reason}", str(count))
    console.print(table)
    console.print(f"accounting: inputs {totals['inputs']} == kept {totals['kept']} + rejected "
                  f"{sum(index['reasons'].values())}: {'OK' if ok else 'MISMATCH'}")
    metrics = index.get("_metrics")
    if metrics:
        console.print("beam counters (this run): " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def print_pack_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus packing quality: packs, fill, samples per pack, truncations."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats") or {}
    packs = stats.get("packs", 0)
    if packs:
        console = Console(file=stream or sys.stdout, width=100)
        console.print(
            f"packs: {packs} (l_max {index['l_max']}, t_max {index['t_max']}): token fill "
            f"{stats['tokens'] / (packs * index['l_max']):.1%}, tile fill {stats['tiles'] / (packs * index['t_max']):.1%}, "
            f"{stats['segments'] / packs:.2f} sequences per pack, {stats.get('truncated', 0)} truncated")


def _accounted(index: dict[str, Any]) -> bool:
    totals = index["totals"]
    return totals["inputs"] == totals["kept"] + sum(index["reasons"].values())


def _run_stage(args: argparse.Namespace, beam_args: list[str], cfg_cls: type, runner: str, report) -> int:
    """Load and validate the recipe (before importing Beam), run `pipelines.<module>.<function>`,
    print its report; exit 1 if the accounting does not add up."""
    import importlib

    overrides = {"progress": False} if args.no_progress else None
    cfg = load_config(find_config(args.config), cfg_cls, overrides)
    module, function = runner.rsplit(".", 1)
    index = getattr(importlib.import_module(module), function)(cfg, args.input, args.output, beam_args)
    report(index, args.output)
    return 0 if _accounted(index) else 1


def cmd_pack(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_stage(args, beam_args, PackConfig, "pipelines.pack.run_pack", print_pack_report)


def cmd_plan(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.config import load_plan_config
    from pipelines.plan import run_plan

    overrides = {"progress": False, "ingest": {"progress": False}, "pack": {"progress": False}} if args.no_progress else None
    cfg = load_plan_config(find_config(args.config), overrides)
    index = run_plan(cfg, args.input, args.output, beam_args)
    print_plan_report(index, args.output)
    return 0 if _accounted(index) else 1


def print_plan_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus what a download + pack of the kept rows would give."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats") or {}
    kept = index["totals"]["kept"]
    if kept:
        Console(file=stream or sys.stdout, width=100).print(
            f"planned: {kept} samples -> {stats.get('packs', 0)} packs (l_max {index['l_max']}, t_max {index['t_max']}), "
            f"{stats.get('tokens', 0):,} tokens, {stats.get('tiles', 0):,} tiles, {stats.get('tokens', 0) / kept:.0f} tokens "
            f"and {stats.get('tiles', 0) / kept:.2f} tiles per sample, {stats.get('truncated', 0)} truncated")


def cmd_ingest(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_stage(args, beam_args, IngestConfig, "pipelines.ingest.run_ingest", print_ingest_report)


def cmd_dedup(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_stage(args, beam_args, DedupConfig, "pipelines.dedup.run_dedup", print_dedup_report)


def cmd_annotate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.annotate_config import AnnotateConfig

    return _run_stage(args, beam_args, AnnotateConfig, "pipelines.annotate.run_annotate", print_annotate_report)


def cmd_mmpr(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.mmpr_config import MmprConfig

    return _run_stage(args, beam_args, MmprConfig, "pipelines.mmpr.run_mmpr", print_mmpr_report)


def print_mmpr_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table (one row per question) plus the pairs made, per method."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats", {})
    methods = ", ".join(f"{k[6:]}={v}" for k, v in sorted(stats.items()) if k.startswith("pairs_")) or "none"
    responses = stats.get("responses", 0)
    Console(file=stream or sys.stdout, width=100).print(
        f"pairs: {stats.get('pairs', 0)} ({methods}) in {output}/*.jsonl; responses sampled {responses}, "
        f"right {stats.get('correct_responses', 0)} (policy {index.get('policy')}, continuation {index.get('continuation')})")


def print_annotate_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus the conversations written, per task."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats", {})
    tasks = ", ".join(f"{k[5:]}={v}" for k, v in sorted(stats.items()) if k.startswith("task_")) or "none"
    Console(file=stream or sys.stdout, width=100).print(
        f"conversations: {stats.get('conversations', 0)} ({tasks}) in {output}/*.conversations.jsonl")


def print_dedup_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus what dedup itself found (counts per duplicate kind, hot buckets)."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    dups = {r: n for r, n in index["reasons"].items() if "dup_" in r and r != "dup_uid"}
    Console(file=stream or sys.stdout, width=100).print(
        "duplicates removed: " + (", ".join(f"{r}={n}" for r, n in sorted(dups.items())) or "none"))


def cmd_inspect(args: argparse.Namespace, beam_args: list[str]) -> int:
    """summary / show / validate / report over a pair or packed shard folder (local or fsspec URL)."""
    from rich.console import Console

    from curation.inspection.dataset import InspectError, ShardSet

    try:
        ss = ShardSet.open(args.folder)
        if args.verb == "summary":
            from curation.inspection.summary import render, summarize

            doc = summarize(ss)
            if args.json:
                print(json.dumps(doc, indent=1, sort_keys=True))
            else:
                render(doc, Console(width=110))
            return 0 if doc["accounting_ok"] else 1
        if args.verb == "show":
            from curation.inspection import show

            if ss.kind in ("pair", "preference"):
                found = show.find_pair(ss, uid=args.id, index=None if args.id else (args.index or 0))
                render = show.render_pair if ss.kind == "pair" else show.render_question
                print(render(found, args.save_images))
            elif ss.kind == "plan":
                from curation.plan import iter_plan_packs

                pack = show.find_pack(ss, index=None if args.id else (args.index or 0), key=args.id, read=iter_plan_packs)
                print(json.dumps(pack.meta, indent=1, ensure_ascii=False))
            else:
                pack = show.find_pack(ss, index=None if args.id else (args.index or 0), key=args.id)
                print(show.render_pack(ss, pack, args.save_images))
            return 0
        if args.verb == "validate":
            from curation.inspection.validate import validate

            problems = validate(ss)
            for line in problems:
                print(f"INVALID {line}")
            print(f"{args.folder}: {'OK' if not problems else f'{len(problems)} problems'} "
                  f"({len(ss.shards)} shards, {ss.index['totals']['inputs']} rows)")
            return 0 if not problems else 1
        from curation.inspection.report import render_report

        out = Path(args.output or "report.html")
        out.write_text(render_report(ss), encoding="utf-8")
        print(f"wrote {out} ({out.stat().st_size:,} bytes)")
        return 0
    except InspectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


@dataclass(frozen=True)
class ServerConfig:
    port: int = 8765
    slow_s: float = 3.0


@dataclass(frozen=True)
class DemoIngest:
    recipes: dict[str, str]
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoDedup:
    recipe: str = "dedup.yaml"
    sources: list[str] = field(default_factory=lambda: ["laion", "coyo"])  # ingest outputs deduplicated together
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoAnnotate:
    recipe: str = "annotate.yaml"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoPack:
    recipe: str = "pack.yaml"
    # "annotate": the annotate stage's conversations; "dedup" or an ingest output: its kept pairs
    # become plain captioning conversations
    caption_source: str = "annotate"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoPlan:
    recipe: str = "plan.yaml"
    source: str = "laion"  # the ingest source whose metadata is planned (with that ingest's overrides)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoMmpr:
    recipe: str = "mmpr.yaml"
    train_steps: int = 4  # `curate train --loss mpo` on the packed pairs: finite, moving loss
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoModel:
    recipe: str = "train.yaml"
    verify_every: int = 5  # `curate check`: packed == unpacked losses on every N-th pack
    train_steps: int = 8  # a short `curate train` on the packed output: the loss must stay finite and move
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoConfig:
    """configs/demo.yaml: which recipes the demo runs and the overrides that make them local."""

    ingest: DemoIngest
    plan: DemoPlan = field(default_factory=DemoPlan)
    dedup: DemoDedup = field(default_factory=DemoDedup)
    annotate: DemoAnnotate = field(default_factory=DemoAnnotate)
    pack: DemoPack = field(default_factory=DemoPack)
    model: DemoModel = field(default_factory=DemoModel)
    mmpr: DemoMmpr = field(default_factory=DemoMmpr)
    seed: int = 0
    images: int = 48
    server: ServerConfig = field(default_factory=ServerConfig)


def _free_port(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def cmd_demo(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.image_server import serve
    from curation.sample_data import check_outcomes, image_map, write_sample
    from pipelines.ingest import run_ingest

    demo_path = find_config(args.config)
    demo = build(DemoConfig, load_yaml(demo_path), "")
    out = Path(args.output)
    port = _free_port(demo.server.port)
    failures = 0
    with serve(image_map(demo.seed, demo.images), port=port, slow_s=demo.server.slow_s) as base_url:
        print(f"serving the embedded sample at {base_url}")
        paths = write_sample(out / "input", base_url, demo.seed, demo.images)
        for source, recipe in demo.ingest.recipes.items():
            recipe_path, cfg = _demo_recipe(recipe, IngestConfig, demo.ingest.overrides, args)
            target = str(out / "ingest" / source)
            print(f"\n== ingest {source} ({recipe_path.name}) -> {target}")
            index = run_ingest(cfg, [str(paths[source])], target, beam_args)
            print_ingest_report(index, target)
            failures += _unexpected(check_outcomes(target, paths["expected"]))
    failures += _demo_plan(demo, out, paths, args, beam_args)
    failures += _demo_dedup(demo, out, args, beam_args)
    failures += _demo_annotate(demo, out, args, beam_args)
    failures += _demo_pack(demo, out, args, beam_args)
    failures += _demo_model(demo, out, args)
    failures += _demo_mmpr(demo, out, args, beam_args)
    print(f"\ndemo finished: outputs under {out}/ ({'all outcomes as expected' if not failures else f'{failures} unexpected outcomes'})")
    return 0 if failures == 0 else 1


def _demo_plan(demo: DemoConfig, out: Path, paths: dict[str, Path], args: argparse.Namespace,
               beam_args: list[str]) -> int:
    """`curate plan` on one source's metadata with that ingest's recipe and the pack limits: what a
    download + pack would give; returns the rows whose pre-download verdict differs from ingest's."""
    from curation.config import load_plan_config
    from curation.plan import check_plan_against_ingest
    from pipelines.plan import run_plan

    source = demo.plan.source
    progress = {"progress": not args.no_progress}
    over = deep_merge({"ingest": {"recipe": demo.ingest.recipes[source], **demo.ingest.overrides, **progress},
                       "pack": {**demo.pack.overrides, **progress}, **progress}, demo.plan.overrides)
    recipe_path = find_config(demo.plan.recipe)
    cfg = load_plan_config(recipe_path, over)
    target = out / "plan"
    print(f"\n== plan {source} metadata ({recipe_path.name}: {demo.ingest.recipes[source]} filters and dedup, "
          f"l_max {cfg.pack.l_max}, t_max {cfg.pack.t_max}; no download) -> {target}")
    index = run_plan(cfg, [str(paths[source])], str(target), beam_args)
    print_plan_report(index, str(target))
    return _unexpected(check_plan_against_ingest(target, out / "ingest" / source)) + (0 if _accounted(index) else 1)


def _demo_dedup(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The ingest outputs deduplicated together (the sample serves LAION and COYO the same URLs);
    returns the number of broken dedup invariants."""
    from curation.sample_dups import check_dedup
    from pipelines.dedup import run_dedup

    recipe_path, cfg = _demo_recipe(demo.dedup.recipe, DedupConfig, demo.dedup.overrides, args)
    inputs = [str(out / "ingest" / s) for s in demo.dedup.sources]
    target = out / "dedup"
    print(f"\n== dedup {' + '.join(demo.dedup.sources)} ({recipe_path.name}) -> {target}")
    index = run_dedup(cfg, inputs, str(target), beam_args)
    print_dedup_report(index, str(target))
    return _unexpected(check_dedup(target, inputs)) + (0 if _accounted(index) else 1)


def _demo_annotate(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The deduplicated pairs through OCR, the offline LLM rater and the rules; returns the number
    of broken invariants (accounting, one conversation per kept pair, OCR on the sample's signs)."""
    from curation.annotate_config import AnnotateConfig
    from curation.sample_data import check_annotate
    from pipelines.annotate import run_annotate

    recipe_path, cfg = _demo_recipe(demo.annotate.recipe, AnnotateConfig, demo.annotate.overrides, args)
    target = out / "annotate"
    print(f"\n== annotate {out / 'dedup'} ({recipe_path.name}: OCR {cfg.ocr.engine}, LLM {cfg.llm.backend} "
          f"{cfg.llm.model}) -> {target}")
    index = run_annotate(cfg, [str(out / "dedup")], str(target), beam_args)
    print_annotate_report(index, str(target))
    if cfg.llm.model == "builtin:smollm2":
        print("note: the offline rater is SmolLM2-135M-Instruct, far too small to judge quality; its scores show "
              "the machinery. Set llm.model to a 7B+ instruct model (vllm backend on GPU) for real filtering.")
    return _unexpected(check_annotate(target)) + (0 if _accounted(index) else 1)


def _demo_pack(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The annotated pairs' conversations (or an ingest / dedup output's pairs as plain captioning
    conversations), plus the embedded conversation / preference sample -> packed shards; returns
    the number of unexpected outcomes."""
    from curation.convert import pairs_to_conversations
    from curation.sample_conversations import check_pack_outcomes, write_conversations
    from pipelines.pack import run_pack

    sample = write_conversations(out / "input" / "conversations", demo.seed)
    if demo.pack.caption_source == "annotate":
        conversations = sorted((out / "annotate").glob("*.conversations.jsonl"))
    else:
        source = out / "dedup" if demo.pack.caption_source == "dedup" else out / "ingest" / demo.pack.caption_source
        conversations = [pairs_to_conversations(source, out / "input" / "captions")[0]]
    rows = {path: len(path.read_text().splitlines()) for path in conversations}
    recipe_path, cfg = _demo_recipe(demo.pack.recipe, PackConfig, demo.pack.overrides, args)
    target = out / "pack"
    print(f"\n== pack {sum(rows.values())} {demo.pack.caption_source} conversations + the conversation / preference "
          f"sample ({recipe_path.name}) -> {target}")
    inputs = [*map(str, conversations), str(sample["conversations"]), str(sample["preferences"])]
    index = run_pack(cfg, inputs, str(target), beam_args)
    print_pack_report(index, str(target))
    expected = json.loads(sample["expected"].read_text())
    expected.update({f"{path.name}:{i}": "kept" for path, n in rows.items() for i in range(n)})
    expected_path = target.parent / "pack-expected.json"
    expected_path.write_text(json.dumps(expected, indent=1, sort_keys=True))
    return _unexpected(check_pack_outcomes(target, expected_path)) + (0 if _accounted(index) else 1)


def _demo_model(demo: DemoConfig, out: Path, args: argparse.Namespace) -> int:
    """`curate check` on the packed output, then a few `curate train` steps; returns the problems found."""
    from curation.model_cli import print_check_report
    from model.build import load_model
    from model.check import check_packs
    from model.config import TrainConfig
    from model.train import train

    over = {"output": str(out / "train"), "steps": demo.model.train_steps}
    recipe_path, cfg = _demo_recipe(demo.model.recipe, TrainConfig, deep_merge(demo.model.overrides, over), args)
    packed = str(out / "pack")
    print(f"\n== check {packed} through the model core ({recipe_path.name}: {cfg.model.preset or cfg.model.checkpoint})")
    report = check_packs(packed, load_model(cfg.model), cfg.data, verify_every=demo.model.verify_every, progress=cfg.progress)
    print_check_report(report)
    print(f"\n== train {cfg.loss} for {cfg.steps} steps on {packed} -> {cfg.output}")
    result = train(cfg, packed)
    losses = [h["loss"] for h in result.history]
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over steps {result.history[0]['step']}..{result.steps}; "
          f"checkpoint {result.checkpoint}")
    problems = [f.get("check", "") + ": " + f["pack"] + ": " + f["detail"] for f in report.failures]
    if not report.ok and not problems:
        problems.append("check saw no packs")
    if not all(math.isfinite(x) for x in losses) or len(set(losses)) < 2:
        problems.append(f"train losses not finite or not moving: {losses}")
    return _unexpected(problems)


def _demo_mmpr(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The embedded VQA questions -> MMPR pairs (the smollm2 model core samples with the images,
    SmolLM2 continues without) -> pack -> a few MPO training steps; returns the problems found."""
    from curation.mmpr_config import MmprConfig
    from curation.sample_vqa import check_mmpr, write_vqa
    from model.config import TrainConfig
    from model.train import train
    from pipelines.mmpr import run_mmpr
    from pipelines.pack import run_pack

    sample = write_vqa(out / "input" / "vqa", demo.seed)
    recipe_path, cfg = _demo_recipe(demo.mmpr.recipe, MmprConfig, demo.mmpr.overrides, args)
    target = out / "mmpr"
    print(f"\n== mmpr {sample['questions']} ({recipe_path.name}: policy {cfg.policy.label}, "
          f"continuation {cfg.continuation_policy.label}) -> {target}")
    index = run_mmpr(cfg, [str(sample["questions"])], str(target), beam_args)
    print_mmpr_report(index, str(target))
    problems = check_mmpr(target, sample["expected"]) + ([] if _accounted(index) else ["mmpr accounting"])
    pack_path, pack_cfg = _demo_recipe(demo.pack.recipe, PackConfig, demo.pack.overrides, args)
    packed = out / "mmpr-pack"
    print(f"\n== pack {index.get('stats', {}).get('pairs', 0)} preference pairs ({pack_path.name}) -> {packed}")
    pack_index = run_pack(pack_cfg, [str(p) for p in sorted(target.glob("*.jsonl"))], str(packed), beam_args)
    print_pack_report(pack_index, str(packed))
    if pack_index["totals"]["kept"] != index.get("stats", {}).get("pairs", 0):
        problems.append(f"pack kept {pack_index['totals']['kept']} of {index.get('stats', {}).get('pairs', 0)} pairs")
    over = {"output": str(out / "train-mpo"), "steps": demo.mmpr.train_steps, "loss": "mpo"}
    _, train_cfg = _demo_recipe(demo.model.recipe, TrainConfig, deep_merge(demo.model.overrides, over), args)
    print(f"\n== train mpo for {train_cfg.steps} steps on {packed} -> {train_cfg.output}")
    result = train(train_cfg, str(packed))
    losses = [h["loss"] for h in result.history]
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} (dpo {result.history[0]['dpo']:.4f} -> {result.history[-1]['dpo']:.4f})")
    if not all(math.isfinite(x) for x in losses) or len(set(losses)) < 2:
        problems.append(f"mpo losses not finite or not moving: {losses}")
    return _unexpected(problems)


def _demo_recipe(recipe: str, cls: type, overrides: dict[str, Any], args: argparse.Namespace):
    """(path, config) of a production recipe with the demo's overrides applied."""
    path = find_config(recipe)
    return path, load_config(path, cls, deep_merge(overrides, {"progress": not args.no_progress}))


def _unexpected(problems: list[str]) -> int:
    """Print each problem a demo check found; returns how many."""
    for line in problems:
        print(f"  UNEXPECTED: {line}")
    return len(problems)


def main(argv: list[str] | None = None) -> int:
    ours, beam_args = split_beam_args(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(prog="curate", description="Multimodal training-data curation on Apache Beam.")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, help_text, recipe, inputs in (
        ("ingest", cmd_ingest, "metadata -> filtered, downloaded, img2dataset-compatible pair shards", "laion.yaml",
         "metadata glob"),
        ("dedup", cmd_dedup, "pair shards -> exact and near-duplicate removal (URL, caption, image)", "dedup.yaml",
         "a pair-shard folder (an ingest or dedup output)"),
        ("annotate", cmd_annotate, "pair shards -> OCR, LLM quality scoring, rules -> annotated shards + conversations",
         "annotate.yaml", "a pair-shard folder (an ingest or dedup output)"),
        ("mmpr", cmd_mmpr, "question jsonl -> sampled answers -> MMPR preference pairs (correctness, Dropout NTP)",
         "mmpr.yaml", "question jsonl glob"),
        ("pack", cmd_pack, "conversation / preference jsonl -> InternVL 2.5 packed shards", "pack.yaml", "jsonl glob"),
        ("plan", cmd_plan, "metadata -> filters, dedup, tiles and tokens from declared sizes -> planned packs (no download)",
         "plan.yaml", "metadata glob"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help=f"YAML recipe, e.g. configs/{recipe}")
        p.add_argument("--input", required=True, action="append", help=f"{inputs} (repeatable)")
        p.add_argument("--output", required=True, help="output folder (any Beam filesystem)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(func=func)

    p = sub.add_parser("inspect", help="look at a shard folder: summary, show, validate, report")
    p.add_argument("verb", choices=["summary", "show", "validate", "report"])
    p.add_argument("folder", help="an ingest, dedup or pack output folder (local path or fsspec URL)")
    p.add_argument("--json", action="store_true", help="summary: machine-readable")
    p.add_argument("--id", help="show: a sample uid (pairs), a pack key or a packed sample's uid (packs)")
    p.add_argument("--index", type=int, help="show: the N-th kept sample or pack (0-based)")
    p.add_argument("--save-images", metavar="DIR", help="show: write the sample's images into DIR")
    p.add_argument("-o", "--output", help="report: the HTML file to write (default report.html)")
    p.set_defaults(func=cmd_inspect)

    add_model_commands(sub)

    p = sub.add_parser("demo", help="the offline end-to-end run on the embedded sample")
    p.add_argument("--output", default="demo-out")
    p.add_argument("--config", default="demo.yaml")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(ours)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # Beam warns at import about optional GCP client libraries we do not use locally.
    logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())
    try:
        return args.func(args, beam_args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as err:
        if type(err).__name__ not in ("OutputConflict", "TokenizerUnavailable", "TrainError", "PackError", "InspectError"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
