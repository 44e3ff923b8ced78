"""InternVL recipe options on the model inputs: seeded JPEG re-encoding of training tiles (off by
default, never in `curate check`) and V2PE position ids (visual tokens step by delta < 1), which
must keep packed == unpacked and reach the rotary embedding as floats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from curation.core.config import ConfigError
from model.batches import build_batch, jpeg_qualities, segment_positions
from model.build import load_model
from model.check import check_packs, position_problems
from model.config import DataConfig, ModelConfig
from model.forward import forward_logps
from tests.test_model import all_packs, multi_segment_packs  # `packed`: conftest's small packs

ROOT = Path(__file__).resolve().parent.parent
IMG = 7  # <IMG_CONTEXT> in the synthetic rows below


def row_with_image() -> tuple[np.ndarray, list[int]]:
    """Segment 0: text, <img>, 256 image tokens, </img>, two text tokens; segment 1: two text tokens."""
    seg0 = [1, 5] + [IMG] * 256 + [6, 2, 3]
    return np.asarray(seg0 + [1, 2]), [0, len(seg0), len(seg0) + 2]


# -- V2PE positions and their check ---------------------------------------------------------------

def test_v2pe_positions_step_delta_per_image_token_and_restart_per_segment():
    ids, bounds = row_with_image()
    pos = segment_positions(ids, bounds, IMG, 0.25)
    assert pos.dtype == np.float32
    assert pos[:3].tolist() == [0, 1, 1.25]  # text, <img>, first image token
    assert pos[257] == 1 + 256 * 0.25  # the last image token
    assert pos[258:261].tolist() == [66, 67, 68]  # </img> and the text after it step by 1 again
    assert pos[261:].tolist() == [0, 1]  # the next segment restarts
    assert position_problems(torch.from_numpy(pos), ids, bounds, IMG, 0.25) == []


def test_delta_one_is_todays_long_positions():
    ids, bounds = row_with_image()
    pos = segment_positions(ids, bounds, IMG, 1.0)
    assert pos.dtype == np.int64
    assert pos.tolist() == list(range(bounds[1])) + [0, 1]
    assert position_problems(torch.from_numpy(pos), ids, bounds, IMG, 1.0) == []


def test_the_position_check_names_each_violation():
    ids, bounds = row_with_image()
    plain = torch.from_numpy(segment_positions(ids, bounds, IMG, 1.0))
    (wrong_step,) = position_problems(plain, ids, bounds, IMG, 0.5)  # integer positions under V2PE
    assert "segment 0: token 2 advances the position by 1, expected 0.5 (256 such tokens)" == wrong_step
    no_restart = torch.arange(len(ids))
    assert any("segment 1 starts at position 261" in p for p in position_problems(no_restart, ids, bounds, IMG, 1.0))
    backwards = plain.clone()
    backwards[3] = 0
    assert any("decreases at token 3" in p for p in position_problems(backwards, ids, bounds, IMG, 1.0))


# -- JPEG qualities ---------------------------------------------------------------------------------

def test_jpeg_qualities_are_uniform_over_the_range_and_a_function_of_their_seed():
    draw = jpeg_qualities((75, 100), 0, 0, "pack-a", "img0.jpg", 5000)
    assert min(draw) == 75 and max(draw) == 100 and len(set(draw)) == 26
    assert draw == jpeg_qualities((75, 100), 0, 0, "pack-a", "img0.jpg", 5000)
    for other in [(1, 0, "pack-a", "img0.jpg"), (0, 1, "pack-a", "img0.jpg"), (0, 0, "pack-b", "img0.jpg"),
                  (0, 0, "pack-a", "img1.jpg")]:
        assert jpeg_qualities((75, 100), *other, 50) != draw[:50]


@pytest.mark.slow
def test_jpeg_qualities_do_not_depend_on_the_process():
    """A DataLoader worker is another process with its own hash salt; the draws must not change."""
    code = "from model.batches import jpeg_qualities; print(jpeg_qualities((75, 100), 3, 2, 'p', 'img0.jpg', 20))"
    env = dict(os.environ, PYTHONHASHSEED="12345", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == jpeg_qualities((75, 100), 3, 2, "p", "img0.jpg", 20)


def test_recipe_values_are_checked_when_the_config_loads():
    for bad in [{"v2pe_delta": 0.3}, {"v2pe_delta": 0.0}, {"jpeg_quality": (80, 70)}, {"jpeg_quality": (0, 100)},
                {"jpeg_quality": (75, 101)}]:
        with pytest.raises(ConfigError):
            DataConfig(**bad)
    assert DataConfig(v2pe_delta=1 / 256).v2pe_delta == 0.00390625


# -- on real packs through the tiny model -----------------------------------------------------------



@pytest.fixture(scope="module")
def loaded():
    return load_model(ModelConfig())


@pytest.mark.slow
def test_jpeg_augmentation_is_seeded_bounded_and_off_by_default(loaded, packed):
    sample, other = multi_segment_packs(packed)[:2]
    tok = loaded.token_ids
    stored = build_batch(sample, tok).pixel_values
    # off (the default) -> bit-identical to the stored pixels, whatever epoch the loader passes
    assert torch.equal(build_batch(sample, tok, DataConfig(), epoch=3, seed=1).pixel_values, stored)
    on = DataConfig(jpeg_augment=True)
    assert torch.equal(build_batch(sample, tok, on).pixel_values, stored)  # no epoch (check, generation): stored
    first = build_batch(sample, tok, on, epoch=0, seed=0)
    build_batch(other, tok, on, epoch=0, seed=0)  # other packs in between change nothing
    again = build_batch(sample, tok, on, epoch=0, seed=0)
    assert torch.equal(first.pixel_values, again.pixel_values)
    assert not torch.equal(build_batch(sample, tok, on, epoch=1, seed=0).pixel_values, first.pixel_values)
    assert not torch.equal(build_batch(sample, tok, on, epoch=0, seed=1).pixel_values, first.pixel_values)
    assert torch.equal(first.input_ids, build_batch(sample, tok).input_ids)  # only pixels change
    # bounded: quality >= 75 moves pixels by a couple of grey levels on average (PSNR well over 30 dB)
    diff = (first.pixel_values - stored) * torch.tensor(on.std).view(1, 3, 1, 1) * 255
    psnr = 10 * torch.log10(255 ** 2 / diff.pow(2).mean())
    assert 0 < diff.abs().mean() < 4 and psnr > 30, (diff.abs().mean(), psnr)


@pytest.mark.slow
def test_check_sees_the_stored_pixels_even_with_augmentation_on(loaded, packed):
    plain = check_packs(str(packed), loaded, DataConfig(), verify_every=0, limit=1, progress=False)
    augmented = check_packs(str(packed), loaded, DataConfig(jpeg_augment=True), verify_every=0, limit=1, progress=False)
    assert plain.ok and augmented.ok and augmented.images > 0
    assert augmented.mean_loss == plain.mean_loss


@pytest.mark.slow
def test_v2pe_keeps_packed_equal_to_unpacked_and_passes_check(loaded, packed):
    report = check_packs(str(packed), loaded, DataConfig(v2pe_delta=0.25), verify_every=1, limit=2, progress=False)
    assert report.ok, report.failures[:3]
    assert report.verified == report.packs == 2 and report.segments > 2 and report.max_isolation_error < 1e-4


@pytest.mark.slow
def test_float_positions_reach_the_rotary_embedding(loaded, packed):
    sample = multi_segment_packs(packed)[0]
    seen: list[torch.Tensor] = []
    logps = []
    hook = loaded.language_model.rotary_emb.register_forward_pre_hook(lambda _m, args: seen.append(args[1].clone()))
    try:
        for delta in (1.0, 1 / 256):
            batch = build_batch(sample, loaded.token_ids, DataConfig(v2pe_delta=delta))
            with torch.no_grad():
                logps.append(forward_logps(loaded, batch).logps)
            assert torch.equal(seen[-1][0], batch.position_ids)
    finally:
        hook.remove()
    assert seen[0].dtype == torch.long and seen[1].dtype == torch.float32
    assert seen[1].frac().abs().max() > 0  # fractional positions, not truncated on the way
    assert not torch.equal(logps[0], logps[1])  # and they change what the model computes


@pytest.mark.slow
def test_every_pack_of_the_sample_gets_exact_v2pe_positions(loaded, packed):
    tok = loaded.token_ids
    for sample in all_packs(packed):
        b = build_batch(sample, tok, DataConfig(v2pe_delta=1 / 256))
        assert position_problems(b.position_ids, sample.input_ids, b.cu_seqlens.tolist(), tok.img_context, 1 / 256) == []
