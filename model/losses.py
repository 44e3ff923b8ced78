"""Training losses on packed rows: NTP with InternVL's reductions, and MPO (DPO + BCO + SFT).

NTP: loss = sum(ce * w) / sum(w) with w = 1 (token), 1/n (sample) or 1/sqrt(n) (square, InternVL
2.5), n the supervised tokens of the token's sample. As in InternVL's all-gather reduction, the
sums run over the global batch (every row of every accumulation step on every rank): a sample's
weight does not depend on its pack-mates, on how the samples were packed, or on grad_accum.
MPO (InternVL's Mixed Preference Optimization): w_pref * DPO(sigmoid) + w_quality * BCO(pair, reward
shift delta = running mean of the rewards) + w_gen * SFT on the chosen answers, with sequence
log-probs per segment against a frozen reference model. TRL's `bco_pair` updates the running mean
with each micro-batch before using it, which makes the shift depend on how a step is cut into
micro-batches and ranks; here every row of an optimizer step uses the mean of the steps before it,
and the step's global mean is added after it, so any rank / grad_accum layout trains the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from model.config import MpoConfig
from model.forward import TokenLogps

NTP_ROLES = ("sft", "pretrain")
GEN_ROLES = ("chosen",) + NTP_ROLES  # MPO's generation (SFT) term
IGNORE = -100


def reduction_weight(counts: torch.Tensor, reduction: str) -> torch.Tensor:
    """Each token's weight from its sample's supervised token count n."""
    if reduction == "token":
        return torch.ones_like(counts)
    if reduction == "sample":
        return 1.0 / counts
    if reduction == "square":
        return 1.0 / counts.sqrt()
    raise ValueError(f"unknown NTP reduction {reduction!r}")


def weight_total(targets: torch.Tensor, segment_ids: torch.Tensor, segments: Sequence[dict], reduction: str,
                 roles: tuple[str, ...]) -> float:
    """sum(w) over a row's supervised tokens in segments of `roles`, from its targets alone (no
    forward): the row's share of the global normaliser."""
    seg = segment_ids[targets != IGNORE]
    counts = torch.bincount(seg, minlength=len(segments)).double()
    keep = torch.tensor([s["role"] in roles for s in segments], dtype=torch.bool)
    n = counts[keep.to(counts.device)]
    n = n[n > 0]
    return float((n * reduction_weight(n, reduction)).sum()) if n.numel() else 0.0


def ntp_loss(tl: TokenLogps, reduction: str, segment_mask: torch.Tensor | None = None,
             total: float | None = None) -> torch.Tensor:
    """sum(ce * w) / total over the supervised tokens (of the segments in `segment_mask`); `total`
    is the global sum(w) of the step, by default this row's own (a per-row mean)."""
    ce = -tl.logps
    seg = tl.segments
    if segment_mask is not None:
        keep = segment_mask[seg]
        ce, seg = ce[keep], seg[keep]
    if ce.numel() == 0:
        return tl.logps.sum() * 0.0  # keeps the graph; a row with nothing to learn adds nothing
    counts = torch.zeros(tl.num_segments, dtype=ce.dtype, device=ce.device).index_add(0, seg, torch.ones_like(ce))
    w = reduction_weight(counts[seg], reduction)
    return (ce * w).sum() / (w.sum() if total is None else total)


def segment_mask(segments: list[dict], roles: tuple[str, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor([s["role"] in roles for s in segments], dtype=torch.bool, device=device)


def preference_pairs(segments: list[dict]) -> list[tuple[int, int]]:
    """(chosen, rejected) segment indexes of the pack's preference units (they are never split)."""
    chosen: dict[str, int] = {}
    pairs = []
    for i, s in enumerate(segments):
        if s["role"] == "chosen":
            chosen[s["id"]] = i
        elif s["role"] == "rejected":
            if s["id"] not in chosen:
                raise ValueError(f"rejected segment of {s['id']} without its chosen segment in the same pack")
            pairs.append((chosen[s["id"]], i))
    return pairs


@dataclass
class MpoState:
    """The BCO reward shift: the running mean of the optimizer steps' global mean rewards, saved with
    checkpoints."""

    delta: float = 0.0
    seen: int = 0

    def update(self, reward_mean: float) -> None:
        self.seen += 1
        self.delta += (reward_mean - self.delta) / self.seen


@dataclass(frozen=True)
class StepNorm:
    """The global batch's normalisers of one optimizer step: sum(w) of the NTP (MPO: SFT) tokens and
    the preference pairs, summed over every row of the step on every rank; None: this row's own."""

    tokens: float | None = None
    pairs: float | None = None


@dataclass
class MpoTerms:
    loss: torch.Tensor
    dpo: float
    bco: float
    sft: float
    reward_margin: float
    accuracy: float
    pairs: int = 0
    reward_sum: float = 0.0  # this row's chosen + rejected rewards, for the step's shift update
    reward_count: int = 0
    extra: dict = field(default_factory=dict)


def mpo_loss(policy: TokenLogps, reference: TokenLogps | torch.Tensor, segments: list[dict], cfg: MpoConfig, state: MpoState,
             sft_reduction: str = "token", norm: StepNorm = StepNorm()) -> MpoTerms:
    """MPO on one packed row; segments with role sft/pretrain add to the generation (SFT) term.

    Terms are this row's share of the step's means: pair sums over `norm.pairs` (default: this row's
    pairs), SFT over `norm.tokens`. The BCO shift is `state.delta` as it stood before the step; the
    row's (reward sum, count) come back for the trainer's once-per-step update (`MpoState.update`)."""
    pairs = preference_pairs(segments)
    pol_sum, _ = policy.per_segment()
    ref_sum = reference.per_segment()[0] if isinstance(reference, TokenLogps) else reference  # per-segment sums
    device = pol_sum.device
    sft = ntp_loss(policy, sft_reduction, segment_mask(segments, GEN_ROLES, device), norm.tokens)
    if not pairs:
        return MpoTerms(cfg.w_gen * sft, 0.0, 0.0, float(sft.detach()), 0.0, 0.0, 0)
    c = torch.tensor([p[0] for p in pairs], device=device)
    r = torch.tensor([p[1] for p in pairs], device=device)
    chosen_ratio = pol_sum[c] - ref_sum[c].detach()
    rejected_ratio = pol_sum[r] - ref_sum[r].detach()
    logits = cfg.beta * (chosen_ratio - rejected_ratio)
    chosen_reward, rejected_reward = cfg.beta * chosen_ratio, cfg.beta * rejected_ratio
    rewards = torch.cat([chosen_reward, rejected_reward]).detach()
    delta = state.delta
    n_pairs = len(pairs) if norm.pairs is None else norm.pairs
    dpo = -F.logsigmoid(logits).sum() / n_pairs
    bco = (-F.logsigmoid(chosen_reward - delta) - F.logsigmoid(-(rejected_reward - delta))).sum() / n_pairs
    loss = cfg.w_pref * dpo + cfg.w_quality * bco + cfg.w_gen * sft
    margin = (chosen_reward - rejected_reward).detach()
    return MpoTerms(loss, float(dpo.detach()), float(bco.detach()), float(sft.detach()), float(margin.sum() / n_pairs),
                    float((margin > 0).float().sum() / n_pairs), len(pairs), float(rewards.sum()), int(rewards.numel()))


def is_finite(x: torch.Tensor | float) -> bool:
    return math.isfinite(float(x.detach()) if isinstance(x, torch.Tensor) else float(x))
