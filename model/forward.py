"""The packed forward: image features into `<IMG_CONTEXT>` positions, the text model under
per-segment attention, and log-probs of the supervised targets only.

Vision runs once per stored image (a preference pair's two segments share its features). The
loss never materialises L x V logits: hidden states at supervised positions go through the LM
head in chunks, which matters for real vocabularies (150k) at l_max 16k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.batches import PackedBatch
from model.build import Loaded

LOGIT_CHUNK = 2048


def packed_hidden(loaded: Loaded, batch: PackedBatch) -> torch.Tensor:
    """(L, hidden) last hidden states of a packed row (batch on the model's device)."""
    model = loaded.model
    lm = loaded.language_model
    embeds = lm.get_input_embeddings()(batch.input_ids[None])
    if batch.pixel_values.numel():
        feats = model.model.get_image_features(pixel_values=batch.pixel_values.to(embeds.dtype), return_dict=True).pooler_output
        flat = feats.reshape(-1, feats.shape[-1]).to(embeds.dtype)
        embeds = embeds.index_put((torch.zeros_like(batch.image_positions), batch.image_positions), flat[batch.feature_rows])
    # V2PE rows carry float32 position ids. Qwen2's (and Llama's) rotary embedding computes
    # position_ids[..., None].float() * inv_freq, so they rotate by their fractional value; they stay
    # float32 whatever the model dtype (bf16 would round positions above 256 to 2 or more). Segment
    # bounds come from cu_seqlens, never from the positions (which step by delta < 1 inside images).
    positions = batch.position_ids[None]
    if positions.is_floating_point():
        positions = positions.float()
    # use_cache=False always: with a cache, transformers would drop the packed-sequence isolation
    out = lm(inputs_embeds=embeds, position_ids=positions, use_cache=False,
             cu_seq_lens_q=batch.cu_seqlens, cu_seq_lens_k=batch.cu_seqlens,
             max_length_q=batch.max_seqlen, max_length_k=batch.max_seqlen)
    return out.last_hidden_state[0]


@dataclass
class TokenLogps:
    """Log-prob of each supervised target, with its position and segment."""

    logps: torch.Tensor  # (n,) float32
    positions: torch.Tensor  # (n,) long
    segments: torch.Tensor  # (n,) long
    num_segments: int

    def per_segment(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of logps, supervised count) per segment, each (S,)."""
        sums = torch.zeros(self.num_segments, dtype=self.logps.dtype, device=self.logps.device)
        counts = torch.zeros(self.num_segments, dtype=torch.long, device=self.logps.device)
        sums = sums.index_add(0, self.segments, self.logps)
        counts = counts.index_add(0, self.segments, torch.ones_like(self.segments))
        return sums, counts


def target_logps(loaded: Loaded, batch: PackedBatch, hidden: torch.Tensor) -> TokenLogps:
    """Log-softmax of every supervised target from `hidden`, in chunks of the LM head."""
    head = loaded.model.get_output_embeddings()
    positions = torch.nonzero(batch.targets != -100).flatten()
    targets = batch.targets[positions]
    parts = []
    for p, t in zip(positions.split(LOGIT_CHUNK), targets.split(LOGIT_CHUNK)):
        logits = head(hidden[p]).float()
        parts.append(-torch.nn.functional.cross_entropy(logits, t, reduction="none"))
    logps = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    return TokenLogps(logps, positions, batch.segment_ids[positions], len(batch.segments))


def forward_logps(loaded: Loaded, batch: PackedBatch) -> TokenLogps:
    return target_logps(loaded, batch, packed_hidden(loaded, batch))
