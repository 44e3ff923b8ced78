"""`curate demo`: the offline end-to-end run on the embedded sample (configs/demo.yaml). Serves the
sample images from 127.0.0.1, then ingest -> plan -> dedup -> annotate -> pack -> check + train ->
MMPR -> pack -> MPO train, checking every row's outcome against what the sample planted."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.cli.common import accounted, find_config, unexpected
from curation.cli.reports import (print_annotate_report, print_dedup_report, print_ingest_report, print_mmpr_report,
                                  print_pack_report, print_plan_report)
from curation.core.config import build, deep_merge, load_config, load_yaml
from curation.ingest.config import IngestConfig
from filters.dedup.config import DedupConfig
from packing.config import PackConfig


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
class DemoVideo:
    recipe: str = "video.yaml"
    videos: int = 2  # short clips made with PyAV: one read from disk, one downloaded from 127.0.0.1
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
    overfit_steps: int = 30  # then the same recipe on the first pack alone: it must learn it
    overfit_lr: float = 0.003
    overfit_min_drop: float = 0.3  # the loss on that pack must fall by at least this share
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
    video: DemoVideo = field(default_factory=DemoVideo)
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
    from curation.samples.image_server import serve
    from curation.samples.data import check_outcomes, image_map, write_sample
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
            failures += unexpected(check_outcomes(target, paths["expected"]))
    failures += _demo_video(demo, out, args, beam_args)
    failures += _demo_plan(demo, out, paths, args, beam_args)
    failures += _demo_dedup(demo, out, args, beam_args)
    failures += _demo_annotate(demo, out, args, beam_args)
    failures += _demo_pack(demo, out, args, beam_args)
    failures += _demo_model(demo, out, args)
    failures += _demo_mmpr(demo, out, args, beam_args)
    print(f"\ndemo finished: outputs under {out}/ ({'all outcomes as expected' if not failures else f'{failures} unexpected outcomes'})")
    return 0 if failures == 0 else 1


def _demo_video(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """Short videos made with PyAV (half on disk, half served from 127.0.0.1) through the video
    ingest recipe, then into InternVL video conversations the pack step takes; returns the number
    of unexpected outcomes."""
    from curation.annotate.tasks import pairs_to_conversations
    from curation.samples.image_server import serve
    from curation.samples.videos import make_video
    from pipelines.ingest import run_ingest

    folder = out / "input" / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["mp4", "webm", "mkv", "flv", "avi"]
    clips = {f"clip{k}.{kinds[k % len(kinds)]}": make_video(kinds[k % len(kinds)], frames=30 + 10 * k)
             for k in range(demo.video.videos)}
    local = list(clips)[::2]
    for name in local:
        (folder / name).write_bytes(clips[name])
    with serve({n: d for n, d in clips.items() if n not in local}) as base:
        rows = [{"video": n if n in local else f"{base}/img/{n}",
                 "caption": f"A colour ramp from red to {'dark' if k % 2 else 'light'} green, {n.split('.')[1]} clip"}
                for k, n in enumerate(clips)]
        listing = folder / "videos.jsonl"
        listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
        overrides = {**demo.ingest.overrides, **demo.video.overrides, "source": {"image_root": str(folder)}}
        overrides.pop("pixels", None)  # the image models look at pictures, not at colour ramps
        recipe_path, cfg = _demo_recipe(demo.video.recipe, IngestConfig, overrides, args)
        target = out / "ingest" / "video"
        print(f"\n== ingest {len(rows)} videos ({recipe_path.name}: {cfg.video.sampling} "
              f"{cfg.video.num_segments} frames) -> {target}")
        index = run_ingest(cfg, [str(listing)], str(target), beam_args)
    print_ingest_report(index, str(target))
    conversations, n = pairs_to_conversations(target, out / "input" / "video_conversations")
    print(f"   {n} video conversations (Frame1: <image> ..., one tile per frame) -> {conversations}")
    return (0 if index["totals"]["kept"] == len(rows) == n else 1) + (0 if accounted(index) else 1)


def _demo_plan(demo: DemoConfig, out: Path, paths: dict[str, Path], args: argparse.Namespace,
               beam_args: list[str]) -> int:
    """`curate plan` on one source's metadata with that ingest's recipe and the pack limits: what a
    download + pack would give; returns the rows whose pre-download verdict differs from ingest's."""
    from curation.plan.config import load_plan_config
    from curation.plan.planner import check_plan_against_ingest
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
    return unexpected(check_plan_against_ingest(target, out / "ingest" / source)) + (0 if accounted(index) else 1)


def _demo_dedup(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The ingest outputs deduplicated together (the sample serves LAION and COYO the same URLs);
    returns the number of broken dedup invariants."""
    from curation.samples.dups import check_dedup
    from pipelines.dedup.stage import run_dedup

    recipe_path, cfg = _demo_recipe(demo.dedup.recipe, DedupConfig, demo.dedup.overrides, args)
    inputs = [str(out / "ingest" / s) for s in demo.dedup.sources]
    target = out / "dedup"
    print(f"\n== dedup {' + '.join(demo.dedup.sources)} ({recipe_path.name}) -> {target}")
    index = run_dedup(cfg, inputs, str(target), beam_args)
    print_dedup_report(index, str(target))
    return unexpected(check_dedup(target, inputs)) + (0 if accounted(index) else 1)


def _demo_annotate(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The deduplicated pairs through OCR, the offline LLM rater and the rules; returns the number
    of broken invariants (accounting, one conversation per kept pair, OCR on the sample's signs)."""
    from curation.annotate.config import AnnotateConfig
    from curation.samples.data import check_annotate
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
    return unexpected(check_annotate(target)) + (0 if accounted(index) else 1)


def _demo_pack(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The annotated pairs' conversations (or an ingest / dedup output's pairs as plain captioning
    conversations), plus the embedded conversation / preference sample -> packed shards; returns
    the number of unexpected outcomes."""
    from curation.annotate.tasks import pairs_to_conversations
    from curation.samples.conversations import check_pack_outcomes, write_conversations
    from pipelines.pack import run_pack

    sample = write_conversations(out / "input" / "conversations", demo.seed)
    if demo.pack.caption_source == "annotate":
        conversations = sorted((out / "annotate").glob("*.conversations.jsonl"))
    else:
        source = out / "dedup" if demo.pack.caption_source == "dedup" else out / "ingest" / demo.pack.caption_source
        conversations = [pairs_to_conversations(source, out / "input" / "captions")[0]]
    conversations += sorted((out / "input" / "video_conversations").glob("*.jsonl"))  # the demo's videos
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
    return unexpected(check_pack_outcomes(target, expected_path)) + (0 if accounted(index) else 1)


def _demo_model(demo: DemoConfig, out: Path, args: argparse.Namespace) -> int:
    """`curate check` on the packed output, then a few `curate train` steps; returns the problems found."""
    from curation.cli.model import print_check_report
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
    m = demo.model
    over = {"output": str(out / "train-overfit"), "steps": m.overfit_steps, "max_packs": 1, "save_every": m.overfit_steps,
            "data": {"shuffle_shards": False}, "optim": {"lr": m.overfit_lr, "grad_accum": 1}}
    _, fit_cfg = _demo_recipe(m.recipe, TrainConfig, deep_merge(m.overrides, over), args)
    print(f"\n== overfit check: {fit_cfg.steps} steps on the first pack of {packed} (lr {m.overfit_lr}) -> {fit_cfg.output}")
    fit = [h["loss"] for h in train(fit_cfg, packed, resume=False).history]
    drop = 1 - min(fit[-3:]) / fit[0]
    print(f"loss {fit[0]:.4f} -> {fit[-1]:.4f}: {drop:.0%} lower (must be at least {m.overfit_min_drop:.0%})")
    if not drop >= m.overfit_min_drop:
        problems.append(f"the model core did not learn one pack: loss {fit[0]:.4f} -> {fit[-1]:.4f} ({drop:.0%} lower)")
    return unexpected(problems)


def _demo_mmpr(demo: DemoConfig, out: Path, args: argparse.Namespace, beam_args: list[str]) -> int:
    """The embedded VQA questions and two benchmark-format files (ScienceQA parquet with image
    structs, MathVista jsonl) -> MMPR pairs (the smollm2 model core samples with the images,
    SmolLM2 continues without) -> pack -> a few MPO training steps; returns the problems found."""
    from curation.mmpr.config import MmprConfig
    from curation.samples.vqa import check_mmpr, write_vqa
    from curation.samples.vqa_formats import check_formats, write_vqa_formats
    from model.config import TrainConfig
    from model.train import train
    from pipelines.mmpr import run_mmpr
    from pipelines.pack import run_pack

    sample = write_vqa(out / "input" / "vqa", demo.seed)
    formats = {k: v for k, v in write_vqa_formats(out / "input" / "vqa-formats", demo.seed).items()
               if k in ("scienceqa.parquet", "mathvista.jsonl")}
    recipe_path, cfg = _demo_recipe(demo.mmpr.recipe, MmprConfig, demo.mmpr.overrides, args)
    target = out / "mmpr"
    print(f"\n== mmpr {sample['questions']} + {', '.join(formats)} ({recipe_path.name}: policy {cfg.policy.label}, "
          f"continuation {cfg.continuation_policy.label}) -> {target}")
    index = run_mmpr(cfg, [str(sample["questions"]), *map(str, formats.values())], str(target), beam_args)
    print_mmpr_report(index, str(target))
    problems = check_mmpr(target, sample["expected"]) + check_formats(target, formats)
    problems += [] if accounted(index) else ["mmpr accounting"]
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
    return unexpected(problems)


def _demo_recipe(recipe: str, cls: type, overrides: dict[str, Any], args: argparse.Namespace):
    """(path, config) of a production recipe with the demo's overrides applied."""
    path = find_config(recipe)
    return path, load_config(path, cls, deep_merge(overrides, {"progress": not args.no_progress}))


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the offline end-to-end run on the embedded sample")
    p.add_argument("--output", default="demo-out")
    p.add_argument("--config", default="demo.yaml")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
