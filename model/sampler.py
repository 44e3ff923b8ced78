"""Batched, KV-cached sampling with one seeded random stream per request, so a request's text does
not depend on the batch around it.

Requests with the same prompt (a question's N samples) share one prefill: the prefix all distinct
prompts start with (system prompt, few-shot turns) is computed once, then the rest of every
distinct prompt (its image tiles and question) on a copy of it, and each prompt's KV cache is
copied into its sampling rows. All rows then decode together, left-padded, one token per step, into a cache
with room reserved (no per-step concatenation); finished rows leave the batch as it goes. Each row
draws from its own `torch.Generator` (temperature -> top-k -> top-p, transformers' order), so
running the requests one at a time gives the same tokens (up to float rounding across batch shapes,
which has not flipped a token in the bench).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from model.config import SamplingConfig


def reserved_cache(num_layers: int, reserve: int) -> Any:
    """A transformers Cache whose layers write new positions into `reserve` positions of spare room
    instead of concatenating (which copies the whole cache at every decoding step)."""
    from transformers.cache_utils import Cache, DynamicLayer

    class _Layer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self._k = self._v = None
            self._n = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            if self._k is None or self._n + new > self._k.shape[-2]:
                b, h, _, d = key_states.shape
                k = key_states.new_empty((b, h, self._n + new + reserve, d))
                v = value_states.new_empty((b, h, self._n + new + reserve, value_states.shape[-1]))
                if self._n:
                    k[:, :, :self._n], v[:, :, :self._n] = self._k[:, :, :self._n], self._v[:, :, :self._n]
                self._k, self._v = k, v
            self._k[:, :, self._n:self._n + new] = key_states
            self._v[:, :, self._n:self._n + new] = value_states
            self._n += new
            self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]
            return self.keys, self.values

        def adopt(self, keys: torch.Tensor, values: torch.Tensor, n: int) -> None:
            """Take ready buffers (positions [0, n) filled, the rest room) without copying them."""
            if not self.is_initialized:
                self.lazy_initialization(keys, values)
            self._k, self._v, self._n = keys, values, n
            self.keys, self.values = keys[:, :, :n], values[:, :, :n]

        def _select(self, pick) -> None:
            if self._n:
                self._k, self._v = pick(self._k), pick(self._v)
                self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._select(lambda t: t[indices])

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._select(lambda t: t.repeat_interleave(repeats, dim=0))

    return Cache(layers=[_Layer() for _ in range(num_layers)])


@dataclass(frozen=True)
class Prompt:
    """An encoded prompt: token ids and its images' tiles (one tensor, or None for text only)."""

    ids: list[int]
    pixels: torch.Tensor | None = None


@dataclass(frozen=True)
class Sampled:
    token_ids: list[int]  # without the stop token
    finish_reason: str  # stop | length


def next_tokens(logits: torch.Tensor, sampling: SamplingConfig, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of `logits` [B, V] (float32, CPU): argmax at temperature 0, else a draw
    from the temperature / top-k / top-p distribution with that row's generator."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    logits = logits / sampling.temperature
    k = sampling.top_k if sampling.top_k and sampling.top_k < logits.shape[-1] else logits.shape[-1]
    values, index = torch.topk(logits, k, dim=-1)  # sorted, highest first
    probs = torch.softmax(values, dim=-1)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        before = probs.cumsum(-1) - probs  # mass above each token
        probs = probs.masked_fill(before > sampling.top_p, 0.0)  # keeps the top token always
        probs = probs / probs.sum(-1, keepdim=True)
    cdf = probs.cumsum(-1)
    u = torch.stack([torch.rand((), generator=g) for g in generators]).unsqueeze(-1) * cdf[:, -1:]
    pick = torch.searchsorted(cdf, u).clamp_max(k - 1)
    return index.gather(-1, pick).squeeze(-1)


def shared_prefix(prompts: Sequence[Prompt], image_token_id: int) -> int:
    """Tokens every prompt starts with (the system prompt and few-shot turns), stopping before any
    image token (those become each prompt's own image features) and leaving each prompt one token."""
    first = prompts[0].ids
    n = min(len(p.ids) for p in prompts) - 1
    for p in prompts[1:]:
        n = min(n, next((i for i, (a, b) in enumerate(zip(first, p.ids)) if a != b), n))
    return max(0, min([n] + [p.ids.index(image_token_id) for p in prompts if image_token_id in p.ids]))


def _prefill(model: Any, prompts: Sequence[Prompt], device: torch.device) -> tuple[torch.Tensor, list[Any]]:
    """The distinct prompts' last logits [U, V] and each one's KV cache: the shared prefix computed
    once, then the rest of each prompt on a copy of it, unpadded (a padded batch of long multi-tile
    prompts costs more than it saves)."""
    num_layers = model.config.get_text_config().num_hidden_layers
    shared = shared_prefix(prompts, int(model.config.image_token_id)) if len(prompts) > 1 else 0
    prefix = None
    if shared:
        prefix = reserved_cache(num_layers, 0)
        ids = torch.tensor([prompts[0].ids[:shared]], device=device)
        model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=prefix, use_cache=True, logits_to_keep=1)
    logits, caches = [], []
    for p in prompts:
        cache = reserved_cache(num_layers, 0)
        if prefix is not None:
            for layer, src in zip(cache.layers, prefix.layers):
                layer.update(src.keys, src.values)
        ids = torch.tensor([p.ids[shared:]], device=device)
        kwargs = {} if p.pixels is None else {"pixel_values": p.pixels.to(device, model.dtype)}
        out = model(input_ids=ids, attention_mask=torch.ones((1, len(p.ids)), dtype=torch.long, device=device),
                    position_ids=torch.arange(shared, len(p.ids), device=device).unsqueeze(0), past_key_values=cache,
                    use_cache=True, logits_to_keep=1, **kwargs)
        logits.append(out.logits[0, -1].float().cpu())
        caches.append(cache)
    return torch.stack(logits), caches


def _rows_cache(caches: Sequence[Any], of_row: Sequence[int], lengths: Sequence[int], reserve: int) -> tuple[Any, torch.Tensor]:
    """One cache for the sampling rows, row r holding its prompt's cache `caches[of_row[r]]`
    right-aligned in `max(lengths)` positions plus `reserve` of room, and its attention mask."""
    width = max(lengths)
    rows = reserved_cache(len(caches[0].layers), reserve)
    for layer, target in enumerate(rows.layers):
        k0 = caches[0].layers[layer].keys
        keys = k0.new_zeros((len(of_row), k0.shape[1], width + reserve, k0.shape[3]))
        values = torch.zeros_like(keys)
        for row, (u, n) in enumerate(zip(of_row, lengths)):
            keys[row, :, width - n:width] = caches[u].layers[layer].keys[0]
            values[row, :, width - n:width] = caches[u].layers[layer].values[0]
        target.adopt(keys, values, width)
    mask = torch.zeros((len(of_row), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n:] = 1
    return rows, mask


@torch.no_grad()
def sample(model: Any, prompts: Sequence[Prompt], seeds: Sequence[int], sampling: SamplingConfig,
           stop_ids: Sequence[int], device: torch.device, groups: Sequence[int] | None = None) -> list[Sampled]:
    """Generate for every prompt (row r seeded with `seeds[r]`). Rows with the same `groups[r]`
    have the same prompt (ids and images): they share one prefill."""
    n = len(prompts)
    if n == 0 or sampling.max_new_tokens < 1:
        return [Sampled([], "length") for _ in prompts]
    first_row: dict[int, int] = {}  # group -> its first row, in order
    for row, g in enumerate(groups if groups is not None else range(n)):
        first_row.setdefault(g, row)
    slot = {g: k for k, g in enumerate(first_row)}
    of_row = [slot[g] for g in (groups if groups is not None else range(n))]  # row -> its distinct prompt
    logits, caches = _prefill(model, [prompts[row] for row in first_row.values()], device)
    cache, mask = _rows_cache(caches, of_row, [len(p.ids) for p in prompts], sampling.max_new_tokens)
    del caches
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    stop_set = set(stop_ids)
    tokens = next_tokens(logits[of_row], sampling, gens)
    out: list[list[int]] = [[] for _ in range(n)]
    finish = ["length"] * n
    positions = torch.tensor([len(p.ids) for p in prompts])
    live = list(range(n))  # batch slot -> request row
    left = 0  # rows finished since the batch was last compacted
    for step in range(sampling.max_new_tokens):
        for slot, row in enumerate(live):
            if finish[row] == "stop":
                continue
            if int(tokens[slot]) in stop_set:
                finish[row] = "stop"
                left += 1
            else:
                out[row].append(int(tokens[slot]))
        running = [slot for slot, row in enumerate(live) if finish[row] != "stop"]
        if step == sampling.max_new_tokens - 1 or not running:
            break
        if 4 * left >= len(live):  # finished rows leave the batch once they are a quarter of it
            keep = torch.tensor(running)
            cache.batch_select_indices(keep.to(device))
            live = [live[i] for i in running]
            tokens, mask, positions = tokens[keep], mask[keep], positions[keep]
            left = 0
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=torch.long)], dim=1)
        logits = model(input_ids=tokens.unsqueeze(-1).to(device), attention_mask=mask.to(device),
                       position_ids=positions.unsqueeze(-1).to(device), past_key_values=cache, use_cache=True).logits
        positions = positions + 1
        tokens = next_tokens(logits[:, -1].float().cpu(), sampling, [gens[r] for r in live])
    return [Sampled(o, f) for o, f in zip(out, finish)]
