"""Per-sample attention isolation for packed rows, registered in transformers' attention interface.

`cached_sdpa` is generation's attention over a KV cache (model/sampler.py).
`segment_sdpa` splits q/k/v at `cu_seq_lens_q` and runs causal sdpa per segment, so a packed row
costs sum(L_i^2) in attention, never the (sum L_i)^2 of a dense block mask. `dense` is one causal
sdpa over the whole row: no isolation, kept to show what isolation changes. On CUDA with flash-attn
installed, transformers' own `flash_attention_2` takes the same `cu_seq_lens_*` (varlen kernels).
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Iterator

import torch
import torch.nn.functional as F

SEGMENT_SDPA = "segment_sdpa"
DENSE = "dense_causal"
CACHED_SDPA = "cached_sdpa"


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float | None, causal: bool) -> torch.Tensor:
    if k.shape[1] != q.shape[1]:  # grouped-query attention: repeat kv heads
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scaling)


def segment_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                         **kwargs: Any) -> tuple[torch.Tensor, None]:
    """q, k, v: (1, heads, L, d) -> (1, L, heads, d), causal within each [cu[i], cu[i+1]) only."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[2] != key.shape[2]:
        raise RuntimeError("segment_sdpa needs cu_seq_lens_q and no KV cache (packed training forward only; "
                           "generation runs under plain sdpa)")
    if query.shape[0] != 1:
        raise RuntimeError(f"packed rows have batch size 1, got {query.shape[0]}")
    bounds = cu.tolist() if isinstance(cu, torch.Tensor) else list(cu)
    outs = [_sdpa(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], scaling, True) for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def dense_causal_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                         **kwargs: Any) -> tuple[torch.Tensor, None]:
    """One causal attention over the whole packed row: later samples see earlier ones (no isolation)."""
    return _sdpa(query, key, value, scaling, True).transpose(1, 2).contiguous(), None


def cached_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Generation's attention over a KV cache with padding masks: sdpa's own grouped-query path, so
    the kv heads are never copied out to every query head (transformers' sdpa does that whenever a
    mask is given: a copy of the whole cache per layer and step)."""
    causal = attention_mask is None and query.shape[2] > 1
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, is_causal=causal, scale=scaling,
                                         enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make the implementations selectable as `config._attn_implementation` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_forward)
    AttentionInterface.register(DENSE, dense_causal_forward)
    AttentionInterface.register(CACHED_SDPA, cached_sdpa_forward)
    AttentionMaskInterface.register(CACHED_SDPA, sdpa_mask)  # sdpa's masks: None where causal alone is exact


def choose(requested: str, device: torch.device) -> str:
    """The text model's training attention for `model.attention` (auto, segment_sdpa, flash_attention_2, dense)."""
    flash = device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if flash else SEGMENT_SDPA
    if requested == "flash_attention_2" and not flash:
        raise RuntimeError("attention: flash_attention_2 needs CUDA and the flash-attn package")
    return DENSE if requested == "dense" else requested


@contextlib.contextmanager
def text_attention(language_model: torch.nn.Module, impl: str) -> Iterator[None]:
    """Run the text model under `impl` for the duration (generation uses plain sdpa with masks and a cache)."""
    cfg = language_model.config
    before = cfg._attn_implementation
    cfg._attn_implementation = impl
    try:
        yield
    finally:
        cfg._attn_implementation = before
