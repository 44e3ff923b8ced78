"""Randomly initialised CLIP models saved to disk, for the tests and the bench: no CLIP weights ship
in any registry package, so the real loading and scoring code (transformers' AutoModel and
AutoProcessor, from a folder) runs on these. Their scores mean nothing; their shapes, tokenizer,
truncation and throughput are real. `vit_b16=True` gives ViT-B/16's architecture (86M vision
parameters at 224 px) for throughput figures.

The tokenizer is CLIP's byte-level BPE with no merges (one token per byte), so no vocabulary file
has to ship: every caption in every script tokenizes."""

from __future__ import annotations

from pathlib import Path


def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP's printable stand-in for each of the 256 byte values."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out, extra = dict.fromkeys(keep), 0
    for b in range(256):
        if b not in out:
            out[b] = 256 + extra
            extra += 1
    return [chr(out[b] if out[b] is not None else b) for b in sorted(out)]


def save_random_clip(folder: str | Path, seed: int = 0, vit_b16: bool = False) -> Path:
    """A random CLIPModel and its processor in `folder` (loadable offline by AutoModel /
    AutoProcessor); returns the folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    side = 224 if vit_b16 else 32
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    if vit_b16:
        text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=16)
        projection = 512
    else:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=32, patch_size=8)
        projection = 16
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=bos,
                                         eos_token_id=eos, pad_token_id=eos, **text),
                        vision_config=vision, projection_dim=projection)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_random_aesthetic(path: str | Path, dim: int, seed: int = 0) -> Path:
    """A random LAION aesthetic predictor v2 state dict (its `layers.N` names), saved with torch.save."""
    import torch

    from filters.quality.clip import aesthetic_mlp

    torch.manual_seed(seed)
    path = Path(path)
    torch.save({f"layers.{k}": v for k, v in aesthetic_mlp(dim).state_dict().items()}, path)
    return path
