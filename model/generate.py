"""Batched generation with or without images: `curate generate` and the Python API the MMPR stage uses.

Prompts are built exactly as the packer builds training samples (same chat encoder, same InternVL
tiling and 256 tokens per tile), left-padded into one batch and decoded by transformers'
`generate` under plain sdpa with a KV cache (the packed-training attention is for packed rows only).
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
from packing.tokens import ChatEncoder, resolve_system_prompt
from packing.units import UnitLimits, tile_images


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: the user's text (with `<image>` placeholders, or none for a single image) and images
    as paths or bytes; `history` holds earlier turns of a multi-turn chat (or few-shot examples);
    `prefix` starts the answer: the model continues it and only the continuation is returned."""

    prompt: str
    images: Sequence[str | bytes] = ()
    history: Sequence[Turn] = ()
    prefix: str = ""


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
        self.encoder = ChatEncoder(tok, self.prompt.template, resolve_system_prompt(self.prompt.template, self.prompt.system_prompt))
        stops = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
        self.stop_ids = sorted(i for i in stops if isinstance(i, int) and i >= 0 and i != tok.unk_token_id)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]

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
        """One left-padded batch; seeded, so the same requests and seed give the same texts."""
        if not requests:
            return []
        encoded = [self._encode(r) for r in requests]
        width = max(len(ids) for ids, _ in encoded)
        device = self.loaded.device
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        pixels = [p for _, ps in encoded for p in ps]
        model = self.loaded.model
        kwargs = {}
        if pixels:
            kwargs["pixel_values"] = torch.cat(pixels).to(device, model.dtype)
        sample = sampling.temperature > 0
        if sample:
            kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        torch.manual_seed(sampling.seed)
        was_training = model.training
        model.eval()
        try:
            with attention.text_attention(self.loaded.language_model, "sdpa"):
                out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=sample,
                                     max_new_tokens=sampling.max_new_tokens, eos_token_id=self.stop_ids,
                                     pad_token_id=self.pad_id, use_cache=True, **kwargs)
        finally:
            model.train(was_training)
        results = []
        for row, (ids, _) in enumerate(encoded):
            new = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in self.stop_ids), None)
            body = new if cut is None else new[:cut]
            text = self.loaded.tokenizer.decode(body, skip_special_tokens=True)
            results.append(Generation(text, body, len(ids), "length" if cut is None else "stop"))
        return results

