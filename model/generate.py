"""Batched generation with or without images: `curate generate` and the Python API the MMPR stage uses.

Prompts are built exactly as the packer builds training samples (same chat encoder, same InternVL
tiling and 256 tokens per tile) and decoded by model/sampler.py under `cached_sdpa` (the packed-training
attention is for packed rows only): one batch, KV-cached, a prefill shared by requests with the same
prompt, one seeded random stream per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from curation.core.conversations import Turn
from model import attention
from model.batches import decode_image, tiles_tensor
from model.build import Loaded
from model.config import DataConfig, PromptConfig, SamplingConfig
from packing.tokens import ChatEncoder
from packing.units import UnitLimits, tile_images


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: the user's text (with `<image>` placeholders, or none for a single image) and images
    as paths or bytes; `history` holds earlier turns of a multi-turn chat (or few-shot examples);
    `prefix` starts the answer: the model continues it and only the continuation is returned.
    `seed`: this request's random stream (None: the sampling config's seed)."""

    prompt: str
    images: Sequence[str | bytes] = ()
    history: Sequence[Turn] = ()
    prefix: str = ""
    seed: int | None = None

    def key(self) -> tuple:
        """Requests with the same key encode to the same prompt: they share a prefill."""
        import hashlib

        images = tuple(x if isinstance(x, str) else hashlib.blake2b(bytes(x), digest_size=16).digest() for x in self.images)
        return self.prompt, tuple(self.history), self.prefix, images


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # stop | length


@dataclass
class Generator:
    """Loaded once (per worker), called with batches of requests."""

    loaded: Loaded
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        tok = self.loaded.tokenizer
        self.encoder = ChatEncoder.from_recipe(tok, self.prompt.template, self.prompt.system_prompt)
        stops = {tok.eos_token_id, tok.convert_tokens_to_ids(self.encoder.end_of_turn or "<|im_end|>")}
        self.stop_ids = sorted(i for i in stops if isinstance(i, int) and i >= 0 and i != tok.unk_token_id)

    def _encode(self, req: GenerationRequest) -> tuple[list[int], list[torch.Tensor]]:
        images = [decode_image(Path(x).read_bytes() if isinstance(x, str) else bytes(x), self.data.max_pixels)
                  for x in req.images]
        limits = UnitLimits(l_max=1 << 30, t_max=1 << 30, max_num=self.prompt.max_num, use_thumbnail=self.prompt.use_thumbnail)
        tilings = tile_images([im.size for im in images], limits)
        turns = list(req.history) + [Turn("user", req.prompt)]
        enc = self.encoder.encode(turns, [t.tiles for t in tilings], generation=True)
        pixels = [tiles_tensor(im, t, self.data.mean, self.data.std) for im, t in zip(images, tilings)]
        ids = enc.input_ids.tolist()
        if req.prefix:
            ids += self.loaded.tokenizer.encode(req.prefix, add_special_tokens=False)
        return ids, pixels

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig = SamplingConfig()) -> list[Generation]:
        """All requests in one batch; a request's text depends only on it and its seed, never on the
        batch around it."""
        from model.sampler import Prompt, sample

        if not requests:
            return []
        groups: dict[tuple, int] = {}
        keys = [groups.setdefault(r.key(), len(groups)) for r in requests]
        encoded: dict[int, Prompt] = {}
        for r, g in zip(requests, keys):
            if g not in encoded:
                ids, pixels = self._encode(r)
                encoded[g] = Prompt(ids, torch.cat(pixels) if pixels else None)
        prompts = [encoded[g] for g in keys]
        seeds = [sampling.seed if r.seed is None else r.seed for r in requests]
        model = self.loaded.model
        was_training = model.training
        model.eval()
        try:
            with attention.text_attention(self.loaded.language_model, attention.CACHED_SDPA):
                out = sample(model, prompts, seeds, sampling, self.stop_ids, self.loaded.device, keys)
        finally:
            model.train(was_training)
        return [Generation(self.loaded.tokenizer.decode(o.token_ids, skip_special_tokens=True), o.token_ids,
                           len(p.ids), o.finish_reason) for p, o in zip(prompts, out)]
