"""`curate ingest | dedup | annotate | mmpr | translate | pack | plan`: load and check the recipe (before Beam
is imported), run the stage's pipeline, print its report; exit 1 when the accounting does not add up.
Everything after `--` is a Beam pipeline option, passed untouched."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from curation.cli.common import accounted, find_config, unusable_files
from curation.cli.reports import (print_annotate_report, print_dedup_report, print_ingest_report, print_mmpr_report,
                                  print_pack_report, print_plan_report)
from curation.core.config import load_config
from curation.ingest.config import IngestConfig
from filters.dedup.config import DedupConfig
from packing.config import PackConfig


def _run_stage(args: argparse.Namespace, beam_args: list[str], cfg_cls: type, runner: str, report,
               image_root: tuple[str, ...] = (), row_files: bool = False, extra: dict | None = None) -> int:
    """Load and validate the recipe (before importing Beam; `--image-root` overrides the recipe key
    `image_root` names), run `pipelines.<module>.<function>`, print its report; exit 1 if the
    accounting does not add up, or (`row_files`) an input file had no readable row at all."""
    import importlib

    overrides: dict = {"progress": False} if args.no_progress else {}
    if getattr(args, "image_root", None):
        if not image_root:
            raise SystemExit(f"error: --image-root: curate {args.command} reads no local images")
        node = overrides
        for key in image_root[:-1]:
            node = node.setdefault(key, {})
        node[image_root[-1]] = args.image_root
    overrides.update(extra or {})
    cfg = load_config(find_config(args.config), cfg_cls, overrides or None)
    module, function = runner.rsplit(".", 1)
    index = getattr(importlib.import_module(module), function)(cfg, args.input, args.output, beam_args)
    report(index, args.output)
    unusable = unusable_files(index, args.output) if row_files else []
    for line in unusable:
        print(f"error: {line}", file=sys.stderr)
    return 0 if accounted(index) and not unusable else 1


def cmd_ingest(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_stage(args, beam_args, IngestConfig, "pipelines.ingest.run_ingest", print_ingest_report,
                      ("source", "image_root"))


def cmd_dedup(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_stage(args, beam_args, DedupConfig, "pipelines.dedup.stage.run_dedup", print_dedup_report)


def cmd_annotate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.annotate.config import AnnotateConfig

    return _run_stage(args, beam_args, AnnotateConfig, "pipelines.annotate.run_annotate", print_annotate_report)


def cmd_mmpr(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.mmpr.config import MmprConfig

    return _run_stage(args, beam_args, MmprConfig, "pipelines.mmpr.run_mmpr", print_mmpr_report, ("images", "image_root"),
                      row_files=True)


def cmd_translate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.annotate.translate import TranslateConfig

    return _run_stage(args, beam_args, TranslateConfig, "pipelines.translate.run_translate", print_ingest_report,
                      row_files=True)


def cmd_pack(args: argparse.Namespace, beam_args: list[str]) -> int:
    if args.meta:  # an InternVL meta file: its datasets join the recipe (checked before Beam starts)
        from packing.meta import load_meta

        datasets = [dataclasses.asdict(d) for d in load_meta(args.meta)]
        args.input = args.input or []
        return _run_stage(args, beam_args, PackConfig, "pipelines.pack.run_pack", print_pack_report, ("image_root",),
                          row_files=True, extra={"datasets": datasets})
    if not args.input:
        raise SystemExit("error: curate pack needs --input or --meta")
    return _run_stage(args, beam_args, PackConfig, "pipelines.pack.run_pack", print_pack_report, ("image_root",),
                      row_files=True)


def cmd_plan(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.plan.config import load_plan_config
    from pipelines.plan import run_plan

    overrides = {"progress": False, "ingest": {"progress": False}, "pack": {"progress": False}} if args.no_progress else None
    cfg = load_plan_config(find_config(args.config), overrides)
    index = run_plan(cfg, args.input, args.output, beam_args)
    print_plan_report(index, args.output)
    return 0 if accounted(index) else 1


def add_stage_commands(sub: argparse._SubParsersAction) -> None:
    for name, func, help_text, recipe, inputs in (
        ("ingest", cmd_ingest, "metadata -> filtered, downloaded, img2dataset-compatible pair shards", "laion.yaml",
         "metadata glob"),
        ("dedup", cmd_dedup, "pair shards -> exact and near-duplicate removal (URL, caption, image)", "dedup.yaml",
         "a pair-shard folder (an ingest or dedup output)"),
        ("annotate", cmd_annotate, "pair shards -> OCR, LLM quality scoring, rules -> annotated shards + conversations",
         "annotate.yaml", "a pair-shard folder (an ingest or dedup output)"),
        ("mmpr", cmd_mmpr, "questions -> sampled answers -> MMPR preference pairs (correctness, Dropout NTP)",
         "mmpr.yaml", "question jsonl / parquet glob (ours, or ScienceQA, A-OKVQA, ChartQA, DocVQA, MathVista files)"),
        ("translate", cmd_translate, "conversation jsonl -> LLM translation (en <-> zh, any recipe pair), checked -> "
         "translated conversation shards", "translate.yaml", "conversation jsonl / json / parquet glob"),
        ("pack", cmd_pack, "conversation / preference jsonl -> InternVL 2.5 packed shards", "pack.yaml", "jsonl glob"),
        ("plan", cmd_plan, "metadata -> filters, dedup, tiles and tokens from declared sizes -> planned packs (no download)",
         "plan.yaml", "metadata glob"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help=f"YAML recipe, e.g. configs/{recipe}")
        p.add_argument("--input", required=name != "pack", action="append", help=f"{inputs} (repeatable)")
        p.add_argument("--output", required=True, help="output folder (any Beam filesystem)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name in ("ingest", "mmpr", "pack"):
            p.add_argument("--image-root", help="folder relative image paths resolve under (the recipe's image_root)")
        if name == "pack":
            p.add_argument("--meta", help="an InternVL meta file {name: {root, annotation, repeat_time, max_dynamic_patch, "
                                          "...}}: its datasets are packed with their own roots, budgets and repeats")
        p.set_defaults(func=func)
