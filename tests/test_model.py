"""The model core on CPU with the tiny InternVL-architecture preset and real packed shards:
attention isolation (and that it matters), losses, training that learns and resumes exactly,
generation consistent with the packed forward, and `curate check` catching broken packs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from curation.core.config import build
from model import attention
from model.batches import build_batch, unpack
from model.build import load_model
from model.check import check_packs
from model.config import ModelConfig, MpoConfig, SamplingConfig, TrainConfig
from model.forward import TokenLogps, forward_logps, packed_hidden
from model.generate import GenerationRequest, Generator
from model.losses import MpoState, mpo_loss, ntp_loss
from model.train import train
from packing.format import iter_packs
from packing.tokens import IGNORE_INDEX

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded():
    return load_model(ModelConfig())


def all_packs(folder: Path):
    return [s for tar in sorted(folder.glob("*.tar")) for s in iter_packs(str(tar))]


def per_segment_loss(loaded, sample) -> torch.Tensor:
    sums, counts = forward_logps(loaded, build_batch(sample, loaded.token_ids)).per_segment()
    return -sums / counts


def multi_segment_packs(folder: Path):
    packs = [s for s in all_packs(folder) if len(s.meta["segments"]) >= 3 and s.meta["images"]]
    assert packs, "the sample must give packs with several samples and images"
    return packs


@torch.no_grad()
def test_packed_per_sample_losses_equal_unpacked(loaded, packed):
    for sample in multi_segment_packs(packed)[:3]:
        packed_loss = per_segment_loss(loaded, sample)
        alone = torch.cat([per_segment_loss(loaded, sub) for sub in unpack(sample)])
        assert torch.allclose(packed_loss, alone, atol=1e-5, rtol=0), (sample.key, packed_loss, alone)


@torch.no_grad()
def test_without_isolation_the_same_comparison_fails(loaded, packed):
    sample = multi_segment_packs(packed)[0]
    alone = torch.cat([per_segment_loss(loaded, sub) for sub in unpack(sample)])
    with attention.text_attention(loaded.language_model, attention.DENSE):
        dense = per_segment_loss(loaded, sample)
    assert torch.allclose(dense[0], alone[0], atol=1e-5)  # the first sample sees nothing before it
    assert (dense[1:] - alone[1:]).abs().max() > 1e-3  # later ones attend across the boundary


def test_batch_layout_restarts_positions_and_never_predicts_across_segments(loaded, packed):
    sample = multi_segment_packs(packed)[0]
    b = build_batch(sample, loaded.token_ids)
    cu = b.cu_seqlens.tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        assert b.position_ids[s] == 0 and b.position_ids[e - 1] == e - 1 - s
        assert b.targets[e - 1] == IGNORE_INDEX  # the last token of a segment predicts nothing
    supervised = b.targets != IGNORE_INDEX
    assert torch.equal(b.targets[supervised], b.labels[1:][supervised[:-1]])
    tiles = [im["tiles"] for im in sample.meta["images"]]
    assert len(b.image_positions) == sum(256 * tiles[i] for seg in b.segments for _, _, i in seg["image_spans"])
    assert b.pixel_values.shape[0] == sum(tiles)  # each stored image runs through vision once
    assert torch.all(b.input_ids[b.image_positions] == loaded.image_token_id)


def test_ntp_reductions_weight_samples_as_internvl():
    # segment 0: 1 token with ce 4; segment 1: 4 tokens with ce 1
    tl = TokenLogps(torch.tensor([-4.0, -1, -1, -1, -1]), torch.arange(5), torch.tensor([0, 1, 1, 1, 1]), 2)
    assert ntp_loss(tl, "token").item() == pytest.approx(8 / 5)
    assert ntp_loss(tl, "sample").item() == pytest.approx((4 + 1) / 2)
    w0, w1 = 1.0, 1 / 2  # 1/sqrt(1), 1/sqrt(4)
    assert ntp_loss(tl, "square").item() == pytest.approx((4 * w0 + 4 * 1 * w1) / (w0 + 4 * w1))


def test_mpo_loss_prefers_the_chosen_answer():
    segs = [{"id": "p", "role": "chosen"}, {"id": "p", "role": "rejected"}]
    ref = TokenLogps(torch.tensor([-2.0, -2.0]), torch.arange(2), torch.tensor([0, 1]), 2)
    cfg = MpoConfig(beta=1.0)
    good = TokenLogps(torch.tensor([-1.0, -3.0]), torch.arange(2), torch.tensor([0, 1]), 2)
    bad = TokenLogps(torch.tensor([-3.0, -1.0]), torch.arange(2), torch.tensor([0, 1]), 2)
    g, b = mpo_loss(good, ref, segs, cfg, MpoState()), mpo_loss(bad, ref, segs, cfg, MpoState())
    assert g.reward_count == 2 and g.reward_sum == pytest.approx(0.0)  # rewards +1 and -1, for the step's shift
    assert g.accuracy == 1.0 and b.accuracy == 0.0 and g.reward_margin == pytest.approx(2.0)
    assert g.dpo == pytest.approx(-np.log(1 / (1 + np.exp(-2.0))), rel=1e-5)
    assert g.loss < b.loss and g.sft == pytest.approx(1.0)
    state = MpoState()
    mpo_loss(good, ref, segs, cfg, state)
    assert state.seen == 0  # the loss reads the shift; the trainer moves it once per optimizer step
    state.update(1.0)
    state.update(3.0)
    assert state.seen == 2 and state.delta == pytest.approx(2.0)  # the running mean of the steps' means
    shifted = mpo_loss(good, ref, segs, cfg, state)
    assert shifted.bco != g.bco


def cfg_for(tmp_path: Path, **over) -> TrainConfig:
    base = {"steps": 30, "save_every": 100, "output": str(tmp_path / "train"), "progress": False,
            "optim": {"lr": 0.003}, "data": {"shuffle_shards": True}}
    return build(TrainConfig, {**base, **over}, "")


def test_tiny_model_overfits_a_packed_shard(packed, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(packed, one)
    index = json.loads((one / "_index.json").read_text())
    index["shards"] = index["shards"][:1]  # train on one shard only
    (one / "_index.json").write_text(json.dumps(index))
    result = train(cfg_for(tmp_path, steps=40), str(one))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.5 * losses[0], losses
    ckpt = Path(result.checkpoint)
    assert (ckpt / "model.safetensors").exists() and (ckpt / "config.json").exists()
    # the checkpoint is a model folder: it loads back as the trained model
    trained = load_model(ModelConfig(checkpoint=str(ckpt), tokenizer=str(ckpt)))
    first = all_packs(one)[0]
    with torch.no_grad():
        assert per_segment_loss(trained, first).mean() < 0.6 * per_segment_loss(load_model(ModelConfig()), first).mean()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_identical_to_an_uninterrupted_run(packed, tmp_path, workers):
    def run(name: str, **kw):
        return train(cfg_for(tmp_path / name, steps=7, data={"num_workers": workers}), str(packed), **kw)

    whole = run("whole")
    run("split", stop_after=3)  # an interruption after step 3 (its checkpoint is the last thing written)
    resumed = run("split")
    assert resumed.resumed_from == 3 and resumed.steps == whole.steps == 7
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    digest = [hashlib.sha256((Path(r.checkpoint) / "model.safetensors").read_bytes()).hexdigest() for r in (whole, resumed)]
    assert digest[0] == digest[1]
    done = run("split")  # a finished run does nothing more
    assert done.resumed_from == 7 and done.steps == 7


def test_mpo_training_on_preference_packs(packed, tmp_path):
    result = train(cfg_for(tmp_path, steps=6, loss="mpo"), str(packed))
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses)) and len(set(losses)) > 1
    assert sum(h["pairs"] for h in result.history) >= 1  # at least one step saw a chosen/rejected pair


@torch.no_grad()
def test_generation_matches_the_packed_forward(loaded, conv_sample):
    gen = Generator(loaded)
    image = str(conv_sample["images"] / "im000.jpg")
    req = GenerationRequest("Describe the image.", [image])
    out = gen.generate([req, GenerationRequest("Say hi.")], SamplingConfig(max_new_tokens=3))
    assert [o.finish_reason for o in out] and all(len(o.token_ids) >= 1 for o in out)
    # the same prompt as a one-segment packed row: its next-token argmax is generation's first token
    ids, pixels = gen._encode(req)
    from model.batches import PackedBatch

    n = len(ids)
    ids_t = torch.tensor(ids)
    img = torch.nonzero(ids_t == loaded.image_token_id).flatten()
    batch = PackedBatch("p", ids_t, ids_t, torch.full((n,), IGNORE_INDEX), torch.arange(n), torch.zeros(n, dtype=torch.long),
                        torch.tensor([0, n], dtype=torch.int32), n, torch.cat(pixels), img, torch.arange(len(img)))
    hidden = packed_hidden(loaded, batch)
    first = int(loaded.model.get_output_embeddings()(hidden[-1]).argmax())
    assert out[0].token_ids[0] == first
    # seeded sampling repeats
    hot = SamplingConfig(temperature=1.0, max_new_tokens=5, seed=7)
    assert [o.text for o in gen.generate([req], hot)] == [o.text for o in gen.generate([req], hot)]


@torch.no_grad()
def test_batched_sampling_gives_each_request_its_own_text(loaded, conv_sample):
    """One batch (shared prefills, left padding, rows leaving as they finish) gives every request the
    tokens it gets alone; greedy decoding matches transformers' own generate."""
    gen = Generator(loaded)
    images = [str(conv_sample["images"] / f"im00{k}.jpg") for k in (0, 1)]
    hot = SamplingConfig(temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=8, seed=3)
    reqs = [GenerationRequest("<image>\nDescribe the image.", [im], seed=s) for im in images for s in (1, 2, 3)]
    reqs += [GenerationRequest("Say hi.", seed=4), GenerationRequest("Count:", prefix="one two", seed=5)]
    batch = gen.generate(reqs, hot)
    alone = [gen.generate([r], hot)[0] for r in reqs]
    assert [b.token_ids for b in batch] == [a.token_ids for a in alone]
    assert [b.finish_reason for b in batch] == [a.finish_reason for a in alone]
    assert len({tuple(b.token_ids) for b in batch[:3]}) > 1  # the seed, not the prompt, picks a sample
    assert gen.generate([GenerationRequest("Say hi.")], hot)[0].token_ids == gen.generate(
        [GenerationRequest("Say hi.", seed=3)], hot)[0].token_ids  # no seed: the sampling config's
    greedy = SamplingConfig(max_new_tokens=6)
    ours = gen.generate([reqs[0], reqs[6]], greedy)
    model = loaded.model.eval()
    for req, mine in zip([reqs[0], reqs[6]], ours):
        ids, pixels = gen._encode(req)
        kwargs = {"pixel_values": torch.cat(pixels)} if pixels else {}
        with attention.text_attention(loaded.language_model, "sdpa"):
            ref = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=6, eos_token_id=gen.stop_ids, pad_token_id=gen.stop_ids[0],
                                 use_cache=True, **kwargs)[0, len(ids):].tolist()
        cut = next((k for k, t in enumerate(ref) if t in gen.stop_ids), len(ref))
        assert mine.token_ids == ref[:cut]
    loaded.model.train()


def test_sampling_rules_and_shared_prefix():
    from model.sampler import Prompt, next_tokens, shared_prefix

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gens = [torch.Generator().manual_seed(k) for k in range(2000)]
    nucleus = next_tokens(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=0.7), gens)
    assert set(nucleus.tolist()) == {0, 1}  # the smallest set holding 70% of the mass
    assert abs(float((nucleus == 0).float().mean()) - 0.5 / 0.8) < 0.05
    assert set(next_tokens(logits, SamplingConfig(temperature=1.0, top_k=3, top_p=1.0), gens).tolist()) == {0, 1, 2}
    assert set(next_tokens(logits, SamplingConfig(temperature=0.0), gens).tolist()) == {0}
    img = 99
    a, b = Prompt([1, 2, 3, img, img, 7]), Prompt([1, 2, 3, img, img, 8])
    assert shared_prefix([a, b], img) == 3  # image tokens are each prompt's own, even with equal ids
    assert shared_prefix([Prompt([1, 2, 3]), Prompt([1, 2, 3, 4])], img) == 2  # each keeps a token to prefill


def test_check_passes_sound_packs_and_names_each_broken_one(loaded, packed, tmp_path):
    report = check_packs(str(packed), loaded, verify_every=2, progress=False)
    assert report.ok and report.packs > 0 and report.verified >= 2 and report.max_isolation_error < 1e-5
    broken = tmp_path / "broken"
    shutil.copytree(packed, broken)
    tar_path = sorted(broken.glob("*.tar"))[0]
    members = []
    with tarfile.open(tar_path) as tf:
        for m in tf.getmembers():
            members.append((m, tf.extractfile(m).read()))
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    tamper = {keys[0]: "image", keys[1]: "label"} if len(keys) > 1 else {keys[0]: "image"}
    out = []
    for m, data in members:
        key = m.name.split(".")[0]
        if key in tamper and m.name.endswith(".input_ids.npy") and tamper[key] == "image":
            ids = np.load(io.BytesIO(data))
            ids[np.flatnonzero(ids == loaded.image_token_id)[0]] = 42  # one image token fewer
            data = _npy(ids)
        if key in tamper and m.name.endswith(".labels.npy") and tamper[key] == "label":
            labels = np.load(io.BytesIO(data))
            labels[0] = 7  # a label on an unsupervised (system prompt) position that differs from its id
            data = _npy(labels)
        m.size = len(data)
        out.append((m, data))
    with tarfile.open(tar_path, "w") as tf:
        for m, data in out:
            tf.addfile(m, io.BytesIO(data))
    report = check_packs(str(broken), loaded, verify_every=0, progress=False)
    assert not report.ok
    by_pack = {(f["pack"], f["check"]) for f in report.failures}
    assert (keys[0], "image_tokens") in by_pack
    if len(keys) > 1:
        assert (keys[1], "labels") in by_pack
    assert report.packs == sum(1 for _ in all_packs(packed))  # the run went on past the broken packs


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def test_train_generate_check_commands(packed, conv_sample, tmp_path):
    import subprocess
    import sys

    curate = [sys.executable, "-m", "curation.cli"]
    out = tmp_path / "run"
    res = subprocess.run(curate + ["train", "--data", str(packed), "--steps", "3", "--output", str(out), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "to step 3" in res.stdout and (out / "checkpoint-000003" / "model.safetensors").exists()
    res = subprocess.run(curate + ["generate", "--checkpoint", str(out / "checkpoint-000003"), "--prompt", "Describe the image.",
                                   "--image", str(conv_sample["images"] / "im001.jpg"), "--max-new-tokens", "4", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["new_tokens"] >= 1 and doc["prompt_tokens"] > 256  # the image's tokens are in the prompt
    res = subprocess.run(curate + ["check", str(packed), "--json", "--verify-every", "3"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["ok"] is True
    res = subprocess.run(curate + ["check", str(conv_sample["images"])], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "no _index.json" in res.stderr
