"""The reported answer metrics, never the judge: ANLS (as defined: 1 - normalised edit distance,
kept when at least the threshold), the VQA score, ChartQA's relaxed accuracy."""

from __future__ import annotations

from typing import Sequence

from curation.mmpr.answer_values import normalize, parse_number


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]



def anls(prediction: str, truths: Sequence[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity for one question: the best over the ground truths
    of 1 - NL(pred, gt), counted only when NL < threshold (else 0)."""
    pred = " ".join(prediction.lower().split())
    best = 0.0
    for gt in truths:
        g = " ".join(gt.lower().split())
        if not g and not pred:
            return 1.0
        nl = levenshtein(pred, g) / max(len(pred), len(g))
        if nl < threshold:
            best = max(best, 1.0 - nl)
    return best



def vqa_score(prediction: str, truths: Sequence[str]) -> float:
    """VQA accuracy: min(1, matching annotator answers / 3) after normalisation."""
    pred = normalize(prediction)
    return min(1.0, sum(normalize(t) == pred for t in truths) / 3.0)



def relaxed_match(prediction: str, truth: str, tolerance: float = 0.05) -> bool:
    """ChartQA relaxed accuracy: numbers within 5% relative, anything else exact after normalisation."""
    p, t = parse_number(prediction), parse_number(truth)
    if p is not None and t is not None:
        return p == t if t == 0 else abs(p - t) / abs(t) <= tolerance
    return normalize(prediction) == normalize(truth)
