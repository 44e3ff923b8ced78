"""Training at scale on CPU: two gloo ranks under torchrun equal one process with grad accumulation,
the loss is normalised over the global batch (packing does not change gradients), InternVL's stages
freeze what they should, gradient checkpointing changes nothing, held-out evaluation, and MPO from
stored reference log-probs. Real packed shards from the embedded conversation / preference sample."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from curation.core.config import build
from model.batches import build_batch, epoch_items, rank_plan, round_robin, unpack
from model.build import load_model
from model.config import ModelConfig, TrainConfig
from model.distributed import Dist, Forward
from model.train import row_loss, set_trainable, step_norm, train, TrainState
from tests.test_model import all_packs  # `packed`: conftest's small packs (one tile per image)

ROOT = Path(__file__).resolve().parent.parent




def recipe(tmp_path: Path, **over) -> dict:
    base = {"steps": 4, "save_every": 100, "output": str(tmp_path / "train"), "progress": False,
            "optim": {"lr": 0.003}, "data": {"shuffle_shards": True}, "distributed": {"streams": 2}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base



def test_ranks_split_one_global_order_into_whole_steps():
    shards = [{"name": f"s{k}", "count": n} for k, n in enumerate([5, 3, 4, 2])]
    items = epoch_items(shards, 4, 0, 0, shuffle=False)
    assert sorted(items) == sorted((f"s{k}", j) for k, n in enumerate([5, 3, 4, 2]) for j in range(n))
    # 2 ranks x accum 2: rank r takes global items r, r + 2, ... of whole 4-item steps only
    plans = [rank_plan(items, r, 2, workers=0, multiple=2) for r in (0, 1)]
    steps = len(items) // 4
    for r, plan in enumerate(plans):
        assert plan[0] == items[r:steps * 4:2]
    # one rank's DataLoader workers give its items back in order through the round robin
    dealt = rank_plan(items, 0, 1, workers=3, multiple=1)
    assert [(name, j) for _, name, j in round_robin(dealt)] == items
    # with streams = ranks x workers, each worker of each rank reads whole shards of its own
    plan = rank_plan(items[:8], 1, 2, workers=2, multiple=1)
    assert all(len({name for name, _ in worker}) == 1 for worker in plan)


def test_the_same_samples_packed_two_ways_give_the_same_gradient(packed):
    """InternVL's global reduction: the square-weighted loss of a step over packed rows and over the
    very same samples one per row give one gradient; a per-row mean would not."""
    loaded = load_model(ModelConfig())
    cfg = build(TrainConfig, recipe(Path("/tmp"), ntp={"reduction": "square"}), "")
    packs = [p for p in all_packs(packed) if len(p.meta["segments"]) >= 2
             and all(s["role"] in ("sft", "pretrain") for s in p.meta["segments"])][:2]
    assert packs, "the sample must give multi-sample NTP packs"
    tokens = loaded.token_ids
    ways = {"packed": [build_batch(p, tokens) for p in packs],
            "unpacked": [build_batch(u, tokens) for p in packs for u in unpack(p)]}
    forward = Forward(loaded, Dist())
    grads = {}
    for name, rows in ways.items():
        for global_norm in (True, False):
            loaded.model.zero_grad(set_to_none=True)
            norm = step_norm(cfg, rows, Dist()) if global_norm else None
            for row in rows:
                if norm is None:  # the old per-row mean, averaged over the rows
                    loss, _ = row_loss(cfg, forward, None, row, TrainState())
                    loss = loss / len(rows)
                else:
                    loss, _ = row_loss(cfg, forward, None, row, TrainState(), norm)
                loss.backward()
            grads[name, global_norm] = torch.cat([p.grad.flatten() for p in loaded.model.parameters() if p.grad is not None])
    assert torch.allclose(grads["packed", True], grads["unpacked", True], atol=1e-6, rtol=1e-4)
    assert not torch.allclose(grads["packed", False], grads["unpacked", False], atol=1e-6, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ntp", "mpo"])
def test_two_gloo_ranks_equal_one_process_with_grad_accum_2(packed, tmp_path, loss):
    one = train(build(TrainConfig, recipe(tmp_path / "one", steps=4, loss=loss, optim={"grad_accum": 2}), ""), str(packed))
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(recipe(tmp_path / "two", steps=4, loss=loss, optim={"grad_accum": 1})))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "curation.cli", "train", "--config", str(config), "--data", str(packed)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    two = [json.loads(line) for line in (tmp_path / "two" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in two] == [h["step"] for h in one.history] == [1, 2, 3, 4]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(one.history, two)) < 1e-5
    assert [a["tokens"] for a in one.history] == [b["tokens"] for b in two]
    assert len({h["loss"] for h in two}) > 1  # it trained
    if loss == "mpo":  # the BCO shift moved the same way under both layouts
        assert sum(h["pairs"] for h in two) >= 1
        assert max(abs(a["bco"] - b["bco"]) for a, b in zip(one.history, two)) < 1e-5


def test_stages_freeze_what_they_should(packed, tmp_path):
    """InternVL's MLP warm-up: only the projector moves; the vision tower and the LLM stay bit-identical."""
    cfg = build(TrainConfig, recipe(tmp_path, steps=2, trainable={"vision": False, "projector": True, "llm": False}), "")
    before = load_model(cfg.model).model.state_dict()
    result = train(cfg, str(packed))
    after = load_model(ModelConfig(checkpoint=result.checkpoint, tokenizer=result.checkpoint)).model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("multi_modal_projector" in k for k in moved), sorted(moved)[:5]
    assert any("multi_modal_projector" in k for k in moved)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(packed):
    cfg = build(TrainConfig, recipe(Path("/tmp")), "")
    pack = next(p for p in all_packs(packed) if p.meta["images"])
    out = {}
    for ckpt in (False, True):
        loaded = load_model(ModelConfig())
        set_trainable(loaded, build(TrainConfig, recipe(Path("/tmp"), gradient_checkpointing=ckpt), ""))
        loaded.model.train()
        loss, _ = row_loss(cfg, Forward(loaded, Dist()), None, build_batch(pack, loaded.token_ids), TrainState())
        loss.backward()
        out[ckpt] = (float(loss.detach()), torch.cat([p.grad.flatten() for p in loaded.model.parameters() if p.grad is not None]))
    assert loaded.model.model.language_model.is_gradient_checkpointing
    assert out[True][0] == pytest.approx(out[False][0], abs=1e-6)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-6, rtol=1e-5)


def test_held_out_evaluation_per_source(packed, tmp_path):
    cfg = build(TrainConfig, recipe(tmp_path, steps=4, eval={"data": str(packed), "every": 2, "max_packs": 3}), "")
    result = train(cfg, str(packed))
    lines = [json.loads(x) for x in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_loss" in x]
    assert [e["step"] for e in evals] == [2, 4] == [e["step"] for e in result.evaluations]
    per_source = [k for k in evals[0] if k.startswith("eval_loss/")]
    assert per_source and all(evals[0][k] > 0 for k in per_source)
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]  # training on the same packs lowers their loss


def test_mpo_from_stored_reference_logps_equals_a_live_reference(packed, tmp_path):
    live = train(build(TrainConfig, recipe(tmp_path / "live", steps=2, loss="mpo"), ""), str(packed))
    cfg = build(TrainConfig, recipe(tmp_path / "stored", steps=2, loss="mpo", mpo={"reference_logps": True}), "")
    stored = train(cfg, str(packed))
    assert [h["loss"] for h in stored.history] == pytest.approx([h["loss"] for h in live.history], abs=1e-6)
    assert sum(h["pairs"] for h in stored.history) >= 1
    path = tmp_path / "stored" / "train" / "reference_logps.json"
    digest = (tmp_path / "stored" / "train" / "reference_logps.json.sha256").read_text().strip()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # an edited file fails its sha256 and is scored again, not trusted
    path.write_text(path.read_text().replace('"logps": {', '"logps": {"x/0": [0.0], ', 1))
    shutil.rmtree(tmp_path / "stored" / "train" / "checkpoint-000002")
    train(cfg, str(packed), resume=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_training_reads_jpeg_augmented_pixels_and_evaluation_the_stored_ones(packed):
    from model.batches import PackedDataset, Position
    from model.config import DataConfig

    loaded = load_model(ModelConfig())
    data = DataConfig(jpeg_augment=True, shuffle_shards=False)

    def first_with_images(**kw):
        ds = PackedDataset(str(packed), loaded.token_ids, data, 0, Position(kw.pop("epoch", 0)), **kw)
        return next(b for b in ds if b.pixel_values.numel())

    stored, train0 = first_with_images(), first_with_images(augment=True)
    assert train0.key == stored.key and not torch.equal(train0.pixel_values, stored.pixel_values)
    assert torch.equal(first_with_images(augment=True).pixel_values, train0.pixel_values)  # seeded
    assert not torch.equal(first_with_images(augment=True, epoch=1).pixel_values, train0.pixel_values)
    assert (train0.pixel_values - stored.pixel_values).abs().mean() < 0.1  # a JPEG round trip, not noise
