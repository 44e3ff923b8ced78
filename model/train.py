"""`curate train`: AdamW on packed rows (NTP or MPO), grad accumulation, bf16 autocast on CUDA,
safetensors checkpoints that `from_pretrained` loads, and exact resume.

A checkpoint folder holds the model (config, safetensors, tokenizer), `optimizer.pt` (tensors
only: read back with `weights_only=True`) and `trainer_state.json` (step, data position, MPO reward
shift) written last; it appears under its final name by one rename. Resuming restores all three
and continues the same data order, so an interrupted run ends with the weights of an uninterrupted
one (same worker count).
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

from model.batches import PackedBatch, PackedDataset, Position, loader
from model.build import Loaded, load_model, save_checkpoint
from model.config import TrainConfig
from model.forward import forward_logps
from model.losses import NTP_ROLES, MpoState, is_finite, mpo_loss, ntp_loss, segment_mask

log = logging.getLogger(__name__)

STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"


class TrainError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable data); names the step and pack."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    consumed: dict[str, int] = field(default_factory=dict)
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


def row_loss(cfg: TrainConfig, policy: Loaded, reference: Loaded | None, batch: PackedBatch, state: TrainState
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured loss of one packed row and what to log about it."""
    tl = forward_logps(policy, batch)
    if cfg.loss == "ntp":
        mask = segment_mask(batch.segments, NTP_ROLES + ("chosen",), tl.logps.device)
        loss = ntp_loss(tl, cfg.ntp.reduction, mask)
        return loss, {"loss": float(loss.detach())}
    assert reference is not None
    with torch.no_grad():
        ref = forward_logps(reference, batch)
    terms = mpo_loss(tl, ref, batch.segments, cfg.mpo, state.mpo, cfg.ntp.reduction)
    return terms.loss, {"loss": float(terms.loss.detach()), "dpo": terms.dpo, "bco": terms.bco, "sft": terms.sft,
                        "reward_margin": terms.reward_margin, "reward_accuracy": terms.accuracy, "pairs": terms.pairs}


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
    doc["mpo"] = MpoState(**doc["mpo"])
    return TrainState(**doc)


def train(cfg: TrainConfig, data: str, *, resume: bool = True, stop_after: int | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train on the packed shard folder `data` until `cfg.steps` (or `stop_after` more steps, for tests)."""
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    found = checkpoints(output) if resume else []
    # resuming: the policy is the checkpoint, loaded as `model.checkpoint:` would load it
    model_cfg = dataclasses.replace(cfg.model, checkpoint=str(found[-1]), tokenizer=str(found[-1])) if found else cfg.model
    policy = load_model(model_cfg)
    policy.model.train()
    reference = None
    if cfg.loss == "mpo":  # the frozen reference is the starting model, also when resuming
        reference = load_model(cfg.model, policy.device)
        reference.model.eval().requires_grad_(False)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    state = TrainState()
    if found:
        state = _restore(optimizer, found[-1], policy.device)
        log.info("resumed from %s (step %d)", found[-1], state.step)
    resumed_from = state.step
    metrics = output / "metrics.jsonl"
    history = [h for h in _read_jsonl(metrics) if h["step"] <= state.step] if found else []
    _write_jsonl(metrics, history)
    autocast = policy.device.type == "cuda" and cfg.model.dtype == "float32"
    workers = cfg.data.num_workers
    target = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)
    last_saved = str(found[-1]) if found else None
    started = time.perf_counter()
    bar = _progress(cfg, state.step)
    while state.step < target:
        dataset = PackedDataset(data, policy.token_ids, cfg.data, cfg.model.seed,
                                Position(state.epoch, dict(state.consumed)), workers)
        if not state.consumed and len(dataset) < cfg.optim.grad_accum:
            raise TrainError(f"{data}: {len(dataset)} packs, fewer than one optimizer step (grad_accum "
                             f"{cfg.optim.grad_accum})")
        accumulated: list[dict[str, float]] = []
        pending: dict[str, int] = {}
        for batch in loader(dataset, workers):
            batch = batch.to(policy.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss, info = row_loss(cfg, policy, reference, batch, state)
            if not is_finite(loss):
                raise TrainError(f"step {state.step + 1}: non-finite loss {float(loss)} on pack {batch.key}")
            (loss / cfg.optim.grad_accum).backward()
            accumulated.append(dict(info, tokens=batch.tokens))
            pending[batch.shard] = batch.index + 1
            if len(accumulated) < cfg.optim.grad_accum:
                continue
            lr = lr_at(state.step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.consumed.update(pending)
            state.tokens += sum(a["tokens"] for a in accumulated)
            state.rows += len(accumulated)
            record = {"step": state.step, "lr": lr, "grad_norm": float(grad_norm), "epoch": state.epoch,
                      **{k: sum(a[k] for a in accumulated) / len(accumulated) for k in accumulated[0] if k != "tokens"},
                      "tokens": sum(a["tokens"] for a in accumulated)}
            history.append(record)
            _append_jsonl(metrics, record)
            accumulated, pending = [], {}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            elif state.step % cfg.log_every == 0:
                log.info("step %d loss %.4f lr %.2e", state.step, record["loss"], lr)
            if on_step:
                on_step(record)
            if state.step % cfg.save_every == 0 or state.step == target:
                last_saved = str(_save(policy, optimizer, state, output, cfg.keep_checkpoints))
            if state.step >= target:
                break
        else:  # the epoch ran out: rows of a partial accumulation are dropped, the next epoch starts clean
            optimizer.zero_grad(set_to_none=True)
            state.epoch += 1
            state.consumed = {}
            continue
        break
    if bar is not None:
        bar.close()
    return TrainResult(state.step, history, last_saved, resumed_from, time.perf_counter() - started, state.tokens)


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
