"""`curate train`: AdamW on packed rows (NTP or MPO), grad accumulation, bf16 autocast on CUDA,
several processes under `torchrun` (DDP: gloo on CPU, NCCL on GPU), InternVL's stages (frozen
parts), gradient checkpointing, held-out evaluation, safetensors checkpoints that `from_pretrained`
loads, and exact resume.

Ranks read disjoint packs of one global order (model.batches.epoch_items): rank r takes items
r, r + W, ... so W ranks with grad_accum a see, step by step, the very packs one process sees
with grad_accum W x a (given the same `distributed.streams`); the loss normalisers are sums over that whole global batch (model.losses),
so both give the same gradients. A checkpoint folder holds the model (config, safetensors,
tokenizer), `optimizer.pt` (tensors only: read back with `weights_only=True`) and
`trainer_state.json` (step, data position, MPO reward shift) written last, by rank 0; it appears
under its final name by one rename. Resuming restores all three and continues the same data order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from model import distributed
from model.batches import PackedBatch, PackedDataset, Position, loader
from model.build import Loaded, load_model, save_checkpoint
from model.config import TrainConfig
from model.distributed import Dist, Forward
from model.forward import forward_logps
from model.losses import (GEN_ROLES, MpoState, StepNorm, is_finite, mpo_loss, ntp_loss, preference_pairs,
                          reduction_weight, segment_mask, weight_total)
from model.reference import ReferenceLogps

log = logging.getLogger(__name__)

STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
PARTS = {"vision": "vision_tower", "projector": "multi_modal_projector", "llm": "language_model"}


class TrainError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable data); names the step and pack."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    consumed: int = 0  # packs of this epoch's global order consumed, all ranks together
    streams: int = 0  # the epoch order's shard streams, fixed at the first start (0: not yet)
    mpo: MpoState = field(default_factory=MpoState)
    tokens: int = 0
    rows: int = 0


@dataclass
class TrainResult:
    steps: int
    history: list[dict[str, Any]]
    checkpoint: str | None
    resumed_from: int
    seconds: float
    tokens: int
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 10% of the peak over the run."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, cfg.steps - o.warmup_steps)
    return o.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - o.warmup_steps) / span))))


def checkpoints(output: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first (a folder counts once its trainer_state.json is in)."""
    found = [p for p in output.glob("checkpoint-*") if p.is_dir() and (p / STATE).exists()]
    return sorted(found, key=lambda p: p.name)


def set_trainable(loaded: Loaded, cfg: TrainConfig) -> dict[str, int]:
    """Freeze the parts the recipe does not train (InternVL's stages); parameter counts per part."""
    inner = loaded.model.model
    counts = {}
    for part, attr in PARTS.items():
        module = getattr(inner, attr)
        module.requires_grad_(getattr(cfg.trainable, part))
        counts[part] = sum(p.numel() for p in module.parameters())
    loaded.model.get_output_embeddings().requires_grad_(cfg.trainable.llm)  # tied to the embeddings
    if cfg.gradient_checkpointing:
        # non-reentrant: the only kind that works with DDP's unused-parameter search and frozen inputs
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return counts


def step_norm(cfg: TrainConfig, rows: list[PackedBatch], dist: Dist) -> StepNorm:
    """The optimizer step's global normalisers, from the rows' targets alone (before any forward)."""
    tokens = sum(weight_total(b.targets, b.segment_ids, b.segments, cfg.ntp.reduction, GEN_ROLES) for b in rows)
    pairs = sum(len(preference_pairs(b.segments)) for b in rows) if cfg.loss == "mpo" else 0
    tokens, pairs = dist.all_sum([tokens, pairs])
    return StepNorm(tokens, pairs)


def row_loss(cfg: TrainConfig, forward: Callable, reference: ReferenceLogps | None, batch: PackedBatch,
             state: TrainState, norm: StepNorm = StepNorm()) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured loss of one packed row, as its share of the step's global loss, and what to log
    about it (shares too: summed over the step's rows and ranks they give the step's figures)."""
    tl = forward(batch)
    if cfg.loss == "ntp":
        loss = ntp_loss(tl, cfg.ntp.reduction, segment_mask(batch.segments, GEN_ROLES, tl.logps.device), norm.tokens)
        return loss, {"loss": float(loss.detach())}
    assert reference is not None
    terms = mpo_loss(tl, reference(batch), batch.segments, cfg.mpo, state.mpo, cfg.ntp.reduction, norm)
    return terms.loss, {"loss": float(terms.loss.detach()), "dpo": terms.dpo, "bco": terms.bco, "sft": terms.sft,
                        "reward_margin": terms.reward_margin, "reward_accuracy": terms.accuracy, "pairs": terms.pairs,
                        "_reward_sum": terms.reward_sum, "_reward_count": terms.reward_count}


def _save(loaded: Loaded, optimizer: torch.optim.Optimizer, state: TrainState, output: Path, keep: int) -> Path:
    final = output / f"checkpoint-{state.step:06d}"
    tmp = output / f".checkpoint-{state.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(loaded, tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    doc = dataclasses.asdict(state)
    (tmp / STATE).write_text(json.dumps(doc, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _restore(optimizer: torch.optim.Optimizer, folder: Path, device: torch.device) -> TrainState:
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER, map_location=device, weights_only=True))
    doc = json.loads((folder / STATE).read_text())
    if not isinstance(doc.get("consumed"), int):
        raise TrainError(f"{folder}: a checkpoint of an older trainer (per-shard data position); start a new output")
    doc["mpo"] = MpoState(**doc["mpo"])
    return TrainState(**doc)


@torch.no_grad()
def evaluate(cfg: TrainConfig, loaded: Loaded, dist: Dist) -> dict[str, float]:
    """Loss of the held-out packs (the recipe's NTP reduction over all of them, every rank scoring
    its share) and the same loss per source file of the segments."""
    dataset = PackedDataset(cfg.eval.data, loaded.token_ids, dataclasses.replace(cfg.data, shuffle_shards=False),
                            rank=dist.rank, world=dist.world, multiple=None, limit=cfg.eval.max_packs)
    was_training = loaded.model.training
    loaded.model.eval()
    sums: dict[str, list[float]] = {}
    for batch in loader(dataset, 0):
        batch = batch.to(loaded.device)
        ce, n = forward_logps(loaded, batch).per_segment()
        n = n.double()
        w = reduction_weight(n.clamp(min=1), cfg.ntp.reduction)
        for k, seg in enumerate(batch.segments):
            if seg["role"] in GEN_ROLES and n[k] > 0:
                for key in ("", seg.get("source") or "?"):
                    acc = sums.setdefault(key, [0.0, 0.0])
                    acc[0] -= float(ce[k]) * float(w[k])
                    acc[1] += float(n[k] * w[k])
    loaded.model.train(was_training)
    merged: dict[str, list[float]] = {}
    for part in dist.gather(sums):
        for key, (num, den) in part.items():
            acc = merged.setdefault(key, [0.0, 0.0])
            acc[0] += num
            acc[1] += den
    out = {"eval_loss": merged[""][0] / merged[""][1]} if "" in merged else {}
    out.update({f"eval_loss/{key}": num / den for key, (num, den) in sorted(merged.items()) if key})
    return out


def train(cfg: TrainConfig, data: str, *, resume: bool = True, stop_after: int | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train on the packed shard folder `data` until `cfg.steps` (or `stop_after` more steps, for
    tests); under torchrun every rank calls this with the same arguments."""
    from model.build import pick_device

    dist, device = distributed.setup(pick_device(cfg.model.device), cfg.distributed.timeout_s)
    try:
        return _train(cfg, data, dist, device, resume, stop_after, on_step)
    finally:
        distributed.teardown(dist)


def _train(cfg: TrainConfig, data: str, dist: Dist, device: torch.device, resume: bool, stop_after: int | None,
           on_step: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    output = Path(cfg.output)
    if dist.main:
        output.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    found = checkpoints(output) if resume else []
    # resuming: the policy is the checkpoint, loaded as `model.checkpoint:` would load it
    model_cfg = dataclasses.replace(cfg.model, checkpoint=str(found[-1]), tokenizer=str(found[-1])) if found else cfg.model
    policy = load_model(model_cfg, device)
    set_trainable(policy, cfg)
    policy.model.train()
    reference = None
    if cfg.loss == "mpo":  # the frozen reference is the starting model, also when resuming
        reference = ReferenceLogps.prepare(cfg, data, dist, device)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    forward = Forward(policy, dist)
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    state = TrainState()
    if found:
        state = _restore(optimizer, found[-1], policy.device)
        log.info("resumed from %s (step %d)", found[-1], state.step)
    workers = cfg.data.num_workers
    accum = cfg.optim.grad_accum
    state.streams = state.streams or cfg.distributed.streams or dist.world * max(1, workers)
    resumed_from = state.step
    metrics = output / "metrics.jsonl"
    history = []
    if dist.main:  # rank 0 alone reads and rewrites the log; the others read it after the barrier
        history = [h for h in _read_jsonl(metrics) if h["step"] <= state.step] if found else []
        _write_jsonl(metrics, history)
    dist.barrier()
    if not dist.main and found:
        history = [h for h in _read_jsonl(metrics) if h["step"] <= state.step]
    target = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)
    last_saved = str(found[-1]) if found else None
    evaluations: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = _progress(cfg, state.step) if dist.main else None
    while state.step < target:
        dataset = PackedDataset(data, policy.token_ids, cfg.data, cfg.model.seed, Position(state.epoch, state.consumed),
                                workers, rank=dist.rank, world=dist.world, streams=state.streams, multiple=accum,
                                limit=cfg.max_packs, augment=True)
        if state.consumed == 0 and len(dataset) < accum:
            raise TrainError(f"{data}: {dataset.epoch_packs} packs, fewer than one optimizer step ({dist.world} ranks x "
                             f"grad_accum {accum})")
        rows: list[PackedBatch] = []
        for batch in loader(dataset, workers):
            rows.append(batch)
            if len(rows) < accum:
                continue
            record = _step(cfg, state, rows, forward, reference, optimizer, params, dist)
            rows = []
            history.append(record)
            if dist.main:
                _append_jsonl(metrics, record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            elif dist.main and state.step % cfg.log_every == 0:
                log.info("step %d loss %.4f lr %.2e", state.step, record["loss"], record["lr"])
            if on_step:
                on_step(record)
            if cfg.eval.every and (state.step % cfg.eval.every == 0 or state.step == target):
                ev = {"step": state.step, **evaluate(cfg, policy, dist)}
                evaluations.append(ev)
                if dist.main:
                    _append_jsonl(metrics, ev)
            if state.step % cfg.save_every == 0 or state.step == target:
                if dist.main:
                    last_saved = str(_save(policy, optimizer, state, output, cfg.keep_checkpoints))
                dist.barrier()
            if state.step >= target:
                break
        else:  # the epoch ran out (each rank read whole steps only): the next epoch starts clean
            optimizer.zero_grad(set_to_none=True)
            state.epoch += 1
            state.consumed = 0
            continue
        break
    if bar is not None:
        bar.close()
    if not dist.main:
        last_saved = str(checkpoints(output)[-1]) if checkpoints(output) else None
    return TrainResult(state.step, history, last_saved, resumed_from, time.perf_counter() - started, state.tokens,
                       evaluations)


def _step(cfg: TrainConfig, state: TrainState, rows: list[PackedBatch], forward: Forward,
          reference: ReferenceLogps | None, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
          dist: Dist) -> dict[str, Any]:
    """One optimizer step over this rank's `rows` (grad_accum of them) as part of the global batch."""
    device = forward.loaded.device
    autocast = device.type == "cuda" and cfg.model.dtype == "float32"
    norm = step_norm(cfg, rows, dist)
    shares: dict[str, float] = {}
    for i, batch in enumerate(rows):
        batch = batch.to(device)
        with forward.accumulating(last=i == len(rows) - 1):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss, info = row_loss(cfg, forward, reference, batch, state, norm)
            (loss * dist.world).backward()  # DDP averages gradients over ranks; the loss is already a global share
        for k, v in info.items():
            shares[k] = shares.get(k, 0.0) + v
    keys = sorted(shares)
    totals = dict(zip(keys + ["tokens"], dist.all_sum([shares[k] for k in keys] + [sum(b.tokens for b in rows)])))
    if not is_finite(totals["loss"]):
        raise TrainError(f"step {state.step + 1}: non-finite loss {totals['loss']} on packs "
                         f"{', '.join(b.key for b in rows)} (or another rank's)")
    lr = lr_at(state.step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.consumed += dist.world * len(rows)
    state.tokens += int(totals["tokens"])
    state.rows += dist.world * len(rows)
    if "pairs" in totals:
        totals["pairs"] = int(totals["pairs"])
    reward_sum, reward_count = totals.pop("_reward_sum", 0.0), totals.pop("_reward_count", 0)
    if reward_count:  # the BCO shift moves once per step, by the global batch's mean reward
        state.mpo.update(reward_sum / reward_count)
    return {"step": state.step, "lr": lr, "grad_norm": float(grad_norm), "epoch": state.epoch, **totals,
            "tokens": int(totals["tokens"])}


def _progress(cfg: TrainConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=start, desc="train", unit="step")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
