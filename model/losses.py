"""Training losses on one packed row: NTP with InternVL's reductions, and MPO (DPO + BCO + SFT).

NTP: loss = sum(ce * w) / sum(w) with w = 1 (token), 1/n (sample) or 1/sqrt(n) (square, InternVL
2.5), n the supervised tokens of the token's sample. MPO (InternVL's Mixed Preference
Optimization): w_pref * DPO(sigmoid) + w_quality * BCO(pair, reward shift delta = running mean of
the rewards) + w_gen * SFT on the chosen answers, with sequence log-probs per segment against a
frozen reference model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.config import MpoConfig
from model.forward import TokenLogps

NTP_ROLES = ("sft", "pretrain")


def ntp_loss(tl: TokenLogps, reduction: str, segment_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean cross-entropy over the supervised tokens (of the segments in `segment_mask`)."""
    ce = -tl.logps
    seg = tl.segments
    if segment_mask is not None:
        keep = segment_mask[seg]
        ce, seg = ce[keep], seg[keep]
    if ce.numel() == 0:
        return tl.logps.sum() * 0.0  # keeps the graph; a row with nothing to learn adds nothing
    counts = torch.zeros(tl.num_segments, dtype=ce.dtype, device=ce.device).index_add(0, seg, torch.ones_like(ce))
    if reduction == "token":
        w = torch.ones_like(ce)
    elif reduction == "sample":
        w = 1.0 / counts[seg]
    elif reduction == "square":
        w = 1.0 / counts[seg].sqrt()
    else:
        raise ValueError(f"unknown NTP reduction {reduction!r}")
    return (ce * w).sum() / w.sum()


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
    """The BCO reward shift: a running mean of the (chosen and rejected) rewards, saved with checkpoints."""

    delta: float = 0.0
    seen: int = 0

    def update(self, reward_mean: float, momentum: float) -> None:
        self.delta = reward_mean if self.seen == 0 else momentum * self.delta + (1 - momentum) * reward_mean
        self.seen += 1


@dataclass
class MpoTerms:
    loss: torch.Tensor
    dpo: float
    bco: float
    sft: float
    reward_margin: float
    accuracy: float
    pairs: int = 0
    extra: dict = field(default_factory=dict)


def mpo_loss(policy: TokenLogps, reference: TokenLogps, segments: list[dict], cfg: MpoConfig, state: MpoState,
             sft_reduction: str = "token") -> MpoTerms:
    """MPO on one packed row; segments with role sft/pretrain add to the generation (SFT) term."""
    pairs = preference_pairs(segments)
    pol_sum, _ = policy.per_segment()
    ref_sum, _ = reference.per_segment()
    device = pol_sum.device
    gen_mask = segment_mask(segments, ("chosen",) + NTP_ROLES, device)
    sft = ntp_loss(policy, sft_reduction, gen_mask)
    if not pairs:
        return MpoTerms(cfg.w_gen * sft, 0.0, 0.0, float(sft.detach()), 0.0, 0.0, 0)
    c = torch.tensor([p[0] for p in pairs], device=device)
    r = torch.tensor([p[1] for p in pairs], device=device)
    chosen_ratio = pol_sum[c] - ref_sum[c].detach()
    rejected_ratio = pol_sum[r] - ref_sum[r].detach()
    logits = cfg.beta * (chosen_ratio - rejected_ratio)
    dpo = -F.logsigmoid(logits).mean()
    chosen_reward, rejected_reward = cfg.beta * chosen_ratio, cfg.beta * rejected_ratio
    delta = state.delta
    bco = (-F.logsigmoid(chosen_reward - delta) - F.logsigmoid(-(rejected_reward - delta))).mean()
    state.update(float(torch.cat([chosen_reward, rejected_reward]).mean().detach()), cfg.shift_momentum)
    loss = cfg.w_pref * dpo + cfg.w_quality * bco + cfg.w_gen * sft
    margin = (chosen_reward - rejected_reward).detach()
    return MpoTerms(loss, float(dpo.detach()), float(bco.detach()), float(sft.detach()), float(margin.mean()), float((margin > 0).float().mean()), len(pairs))


def is_finite(x: torch.Tensor | float) -> bool:
    return math.isfinite(float(x.detach()) if isinstance(x, torch.Tensor) else float(x))
