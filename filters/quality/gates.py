"""A model-based filter earns the right to reject: the figures that decide it, shared by every
scorer measured on a labelled probe set (annotate's LLM rater, the NSFW classifier)."""

from __future__ import annotations

from typing import Sequence


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U); None if a side is empty."""
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))
