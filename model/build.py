"""Build the InternVL-architecture model: the tiny random preset on CPU, or a local checkpoint.

transformers' own InternVL classes (InternViT, pixel shuffle 0.5, MLP projector, Qwen2/Llama text
model), so real `-hf` checkpoints load unchanged. The tokenizer is the one the shards were packed
with; its `<IMG_CONTEXT>` id is the model's image token.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model import attention
from packing.validate import TokenIds
from model.config import ModelConfig
from packing.tiling import TILE_SIZE, TOKENS_PER_TILE
from packing.tokenizer import BUILTIN, IMG_CONTEXT, load_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PATCH = 14


@dataclass
class Loaded:
    """A model ready to run: the module, its tokenizer, device, and the training attention it uses."""

    model: Any  # InternVLForConditionalGeneration
    tokenizer: Any
    device: torch.device
    attention: str

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @functools.cached_property
    def token_ids(self) -> TokenIds:
        return TokenIds.of(self.tokenizer, self.model.get_input_embeddings().num_embeddings)

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def tiny_config(cfg: ModelConfig, vocab_size: int, image_token_id: int, pad_token_id: int | None) -> Any:
    """InternVLConfig of the tiny preset: 448 px tiles / 14 px patches -> 1024 patches -> 256 tokens."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    t = cfg.tiny
    vision = InternVLVisionConfig(
        hidden_size=t.vision_hidden, num_hidden_layers=t.vision_layers, num_attention_heads=t.vision_heads,
        intermediate_size=t.vision_intermediate, image_size=TILE_SIZE, patch_size=PATCH)
    text = Qwen2Config(
        vocab_size=vocab_size, hidden_size=t.text_hidden, num_hidden_layers=t.text_layers,
        num_attention_heads=t.text_heads, num_key_value_heads=t.text_kv_heads, intermediate_size=t.text_intermediate,
        max_position_embeddings=t.max_positions, tie_word_embeddings=True, use_cache=False, pad_token_id=pad_token_id)
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                          image_seq_length=TOKENS_PER_TILE, downsample_ratio=0.5, tie_word_embeddings=True)


def smollm2_config(cfg: ModelConfig, vocab_size: int, image_token_id: int) -> Any:
    """InternVLConfig of the smollm2 preset: the tiny preset's vision tower, SmolLM2-135M's text config."""
    from transformers import AutoConfig

    from packing.tokenizer import builtin_model_dir

    config = tiny_config(cfg, vocab_size, image_token_id, None)
    text = AutoConfig.from_pretrained(builtin_model_dir())
    text.vocab_size = vocab_size
    text.use_cache = False
    config.text_config = text
    return config


def _load_smollm2_text(model: Any, vocab_size: int) -> None:
    """Copy SmolLM2-135M-Instruct's weights into the language model (embeddings grown to the
    tokenizer with InternVL's image tokens; the head is tied to them)."""
    from transformers import AutoModelForCausalLM

    from packing.tokenizer import builtin_model_dir

    lm = AutoModelForCausalLM.from_pretrained(builtin_model_dir(), dtype=torch.float32)
    lm.resize_token_embeddings(vocab_size, mean_resizing=False)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.tie_weights()


def load_model(cfg: ModelConfig, device: torch.device | None = None) -> Loaded:
    """The configured model and tokenizer on `device`, in train mode with isolation attention set."""
    from transformers import AutoModelForImageTextToText, InternVLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars are the ones to watch
    attention.register()
    device = device or pick_device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    if cfg.checkpoint:
        path = Path(cfg.checkpoint)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model.checkpoint {cfg.checkpoint!r} is not a transformers model folder (no config.json)")
        tok_path = str(path) if cfg.tokenizer == BUILTIN and (path / "tokenizer_config.json").exists() else cfg.tokenizer
        tokenizer = load_tokenizer(tok_path)
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    else:
        tokenizer = load_tokenizer(cfg.tokenizer)
        torch.manual_seed(cfg.seed)
        image_token = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        if cfg.preset == "smollm2":
            config = smollm2_config(cfg, len(tokenizer), image_token)
        else:
            config = tiny_config(cfg, len(tokenizer), image_token, tokenizer.pad_token_id)
        config._attn_implementation = "sdpa"
        model = InternVLForConditionalGeneration(config)
        if cfg.preset == "smollm2":
            _load_smollm2_text(model, len(tokenizer))
        model = model.to(dtype)
    if tokenizer.convert_tokens_to_ids(IMG_CONTEXT) != model.config.image_token_id:
        raise ValueError(f"tokenizer's {IMG_CONTEXT} id {tokenizer.convert_tokens_to_ids(IMG_CONTEXT)} != the model's "
                         f"image_token_id {model.config.image_token_id}: pack with the model's own tokenizer")
    model.to(device)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    impl = attention.choose(cfg.attention, device)
    model.model.language_model.config._attn_implementation = impl
    return Loaded(model, tokenizer, device, impl)


def save_checkpoint(loaded: Loaded, folder: str | Path) -> None:
    """A folder `from_pretrained` (and `model.checkpoint:`) loads: config, safetensors weights, tokenizer."""
    with attention.text_attention(loaded.language_model, "sdpa"):  # saved configs name a stock implementation
        loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)
