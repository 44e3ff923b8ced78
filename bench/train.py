"""Training throughput: the same samples packed (one row, per-segment attention) vs padded into batches.

Writes a seeded conversation set (0-2 rendered images per sample, one tile each with max_num 1 by
default, answers of lognormal length), packs it with `curate pack`'s pipeline, then times full
training steps (forward, chunked loss, backward, AdamW) of the tiny preset over (a) the packed rows,
(b) the very same samples in padded batches of `--batch` in arrival order and (c) in length-grouped
padded batches, as HF Trainer's `group_by_length` builds them (transformers' own
get_length_grouped_indices: a seeded shuffle, megabatches of mega_batch_mult x batch sorted by
length, longest batch first; mult = min(samples // (4 x batch), 50) unless `--mega-batch-mult`).
Padded batches use right padding and a 2-D attention mask under sdpa. Tokens/s counts real tokens
only. Prints one JSON line: `packed_tokens_per_s`, `padded_tokens_per_s`, `grouped_tokens_per_s`,
`speedup` (packed vs arrival-order padded), `speedup_vs_grouped`, both pad fractions, `device`, `gpu`...

    python bench/train.py --samples 192 --l-max 4096
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from packing.config import PackConfig, TilingConfig
from curation.core.config import ShardConfig  # noqa: E402
from curation.samples.data import render  # noqa: E402
from model.batches import build_batch, unpack  # noqa: E402
from model.build import load_model  # noqa: E402
from model.config import ModelConfig, TinyConfig  # noqa: E402
from model.forward import forward_logps  # noqa: E402
from model.losses import ntp_loss  # noqa: E402
from packing.format import iter_packs  # noqa: E402
from packing.tiling import TOKENS_PER_TILE  # noqa: E402
from packing.tokens import IGNORE_INDEX  # noqa: E402

WORDS = "the a tile of image packed sample with token attention model red blue shape background light".split()


def write_dataset(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(16):
        img, _ = render(seed, i)
        img.save(folder / "images" / f"im{i}.jpg", quality=90)
    rows = []
    for k in range(n):
        n_img = int(rng.choice([0, 1, 1, 1, 2]))
        words = int(np.clip(rng.lognormal(4.0, 1.0), 3, 1500))
        answer = " ".join(rng.choice(WORDS, size=words))
        images = [f"images/im{int(rng.integers(16))}.jpg" for _ in range(n_img)]
        human = "".join("<image>\n" for _ in images) + "Describe it."
        row = {"id": f"s{k}", "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}
        if images:
            row["image"] = images
        rows.append(json.dumps(row))
    path = folder / "bench.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def padded_step_inputs(samples, loaded, size: int):
    """The unpacked samples in the order given, in batches of `size`, right-padded."""
    batches = []
    for i in range(0, len(samples), size):
        group = [build_batch(s, loaded.token_ids) for s in samples[i:i + size]]
        width = max(b.tokens for b in group)
        ids = torch.full((len(group), width), loaded.tokenizer.pad_token_id or 0, dtype=torch.long)
        targets = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for r, b in enumerate(group):
            ids[r, :b.tokens], targets[r, :b.tokens], mask[r, :b.tokens] = b.input_ids, b.targets, 1
        # HF's padded forward wants one tile set per image placeholder, in order (a sample naming an
        # image twice stores it once: its tiles repeat here, as the feature rows map them)
        pixels = torch.cat([b.pixel_values[b.feature_rows[::TOKENS_PER_TILE] // TOKENS_PER_TILE] for b in group])
        batches.append((ids, targets, mask, pixels, sum(b.tokens for b in group)))
    return batches


def padded_loss(loaded, ids, targets, mask, pixels):
    from model.attention import text_attention

    with text_attention(loaded.language_model, "sdpa"):
        out = loaded.model.model(input_ids=ids, attention_mask=mask, pixel_values=pixels if pixels.numel() else None,
                                 use_cache=False)
    hidden = out.last_hidden_state
    sel = targets != IGNORE_INDEX
    logits = loaded.model.get_output_embeddings()(hidden[sel]).float()
    return torch.nn.functional.cross_entropy(logits, targets[sel])


def length_grouped(samples, size: int, mult: int | None, seed: int):
    """`samples` in HF Trainer's group_by_length order (its LengthGroupedSampler's indices)."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = [len(s.input_ids) for s in samples]
    order = get_length_grouped_indices(lengths, size, mega_batch_mult=mult, generator=torch.Generator().manual_seed(seed))
    return [samples[i] for i in order]


def timed(fn, items, loaded, warmup: int = 1) -> float:
    opt = torch.optim.AdamW(loaded.model.parameters(), lr=1e-4)
    for it in items[:warmup]:
        fn(it).backward()
        opt.zero_grad()
    start = time.perf_counter()
    for it in items:
        fn(it).backward()
        opt.step()
        opt.zero_grad()
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=192)
    ap.add_argument("--l-max", type=int, default=4096)
    ap.add_argument("--t-max", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mega-batch-mult", type=int, default=None,
                    help="length-grouped megabatch = this x batch (default HF's min(samples // (4 x batch), 50))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--text-hidden", type=int, default=256, help="the bench model's text width (the tiny preset's is 64)")
    ap.add_argument("--text-layers", type=int, default=6)
    args = ap.parse_args()
    from pipelines.pack import run_pack

    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "data", args.samples, args.seed)
        cfg = PackConfig(l_max=args.l_max, t_max=args.t_max, progress=False, tiling=TilingConfig(max_num=1),
                         shards=ShardConfig(prefix="packed", samples_per_shard=args.samples))
        run_pack(cfg, [str(data)], str(Path(tmp) / "packed"))
        packs = [s for tar in sorted((Path(tmp) / "packed").glob("*.tar")) for s in iter_packs(str(tar))]
        tiny = TinyConfig(text_hidden=args.text_hidden, text_layers=args.text_layers, text_heads=args.text_hidden // 32,
                          text_kv_heads=max(1, args.text_hidden // 64), text_intermediate=4 * args.text_hidden)
        loaded = load_model(ModelConfig(dtype=args.dtype, tiny=tiny))
        dev = loaded.device
        rows = [build_batch(p, loaded.token_ids).to(dev) for p in packs]
        singles = [u for p in packs for u in unpack(p)]
        singles.sort(key=lambda s: (s.meta["segments"][0]["source"], s.meta["segments"][0]["row"]))  # arrival order
        def on_device(order):
            return [tuple(x.to(dev) if isinstance(x, torch.Tensor) else x for x in b) for b in padded_step_inputs(order, loaded, args.batch)]

        mult = args.mega_batch_mult or max(1, min(len(singles) // (args.batch * 4), 50))  # HF's default rule
        padded = on_device(singles)
        grouped = on_device(length_grouped(singles, args.batch, mult, args.seed))
        real = sum(r.tokens for r in rows)
        assert real == sum(b[4] for b in padded) == sum(b[4] for b in grouped)
        t_packed = timed(lambda r: ntp_loss(forward_logps(loaded, r), "token"), rows, loaded)
        t_padded = timed(lambda b: padded_loss(loaded, *b[:4]), padded, loaded)
        t_grouped = timed(lambda b: padded_loss(loaded, *b[:4]), grouped, loaded)
    packed_tps, padded_tps, grouped_tps = real / t_packed, real / t_padded, real / t_grouped
    pad_fraction = 1 - real / sum(b[0].numel() for b in padded)
    grouped_pad_fraction = 1 - real / sum(b[0].numel() for b in grouped)
    print(json.dumps({
        "packed_tokens_per_s": round(packed_tps, 1), "padded_tokens_per_s": round(padded_tps, 1),
        "grouped_tokens_per_s": round(grouped_tps, 1),
        "speedup": round(packed_tps / padded_tps, 3), "speedup_vs_grouped": round(packed_tps / grouped_tps, 3),
        "pad_fraction": round(pad_fraction, 4), "grouped_pad_fraction": round(grouped_pad_fraction, 4),
        "padding_bound_speedup": round(1 / (1 - pad_fraction), 3),
        "grouped_padding_bound_speedup": round(1 / (1 - grouped_pad_fraction), 3),
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "gpu": "used" if dev.type == "cuda" else "not lent: CPU only, no flash-attn varlen or MFU measurement",
        "attention": loaded.attention, "samples": len(singles), "packs": len(rows), "padded_batches": len(padded),
        "batch": args.batch, "mega_batch_mult": mult, "l_max": args.l_max, "text_hidden": args.text_hidden,
        "text_layers": args.text_layers, "tokens": real, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
