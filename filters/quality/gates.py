"""A model-based filter earns the right to reject: the figures that decide it, shared by every
scorer measured on a labelled probe set (annotate's LLM rater, the NSFW classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")  # what a probe folder's images are named


def probe_paths(folder: str | Path) -> list[Path]:
    """The image files under a probe folder, in name order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: str | Path) -> Any:
    """One probe image, decoded as RGB (PIL)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U); None if a side is empty."""
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def decide_gate(clean: Sequence[float], dirty: Sequence[float], threshold: float, min_auc: float,
                max_clean_reject: float, clean_name: str, dirty_name: str, rule: str) -> dict[str, Any]:
    """Whether a scorer may reject, from its badness scores (higher: worse; a row is rejected
    above `threshold`) on labelled clean and dirty probes: ROC-AUC >= `min_auc`, at most
    `max_clean_reject` of the clean probes rejected, and at least one dirty probe caught. `rule`
    says the threshold in the scorer's own terms ("above 0.8") for the reasons."""
    auc = roc_auc(dirty, clean)
    clean_reject = sum(s > threshold for s in clean) / len(clean) if clean else None
    caught = sum(s > threshold for s in dirty)
    why = []
    if auc is None or auc < min_auc:
        why.append(f"AUC {'?' if auc is None else format(auc, '.3f')} < min_auc {min_auc:g}")
    if clean_reject is None or clean_reject > max_clean_reject:
        why.append(f"{clean_name} probes rejected {'?' if clean_reject is None else format(clean_reject, '.1%')} > "
                   f"max_clean_reject {max_clean_reject:.1%}")
    if not caught:
        why.append(f"rejects no {dirty_name} probe {rule}")
    return {clean_name: len(clean), dirty_name: len(dirty), "auc": None if auc is None else round(auc, 4),
            "clean_reject": None if clean_reject is None else round(clean_reject, 4),
            f"{dirty_name}_reject": round(caught / len(dirty), 4) if dirty else None,
            "enforced": not why, "why": "; ".join(why) or f"separates {clean_name} from {dirty_name} probes"}
