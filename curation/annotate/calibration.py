"""A rater earns the right to reject: before `curate annotate` lets an LLM score drop rows, the
scorer rates the labelled probe set (probes.py) and, per score (quality, repetition), we measure
ROC-AUC (clean above degraded) and the share of clean probes it would reject at the configured
threshold. A gate is enforced only at `min_auc` or above and `max_clean_reject` or below; an
open gate records the scores and rejects nothing for them. Figures are cached on disk, keyed by
the backend, model, prompts, thresholds and probe set, so a recipe is measured once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from curation.annotate.config import AnnotateConfig, QualityConfig
from curation.annotate.probes import PROBE_VERSION, Probe, probe_set
from curation.annotate.quality import SCORES, QualityScorer

log = logging.getLogger(__name__)
REPETITION_KINDS = frozenset({"repeated_ngrams"})  # what the repetition prompt is asked to find


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U); None if a side is empty."""
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def calibration_key(cfg: AnnotateConfig) -> str:
    """What the figures depend on: backend, model, prompts, thresholds, the probe set."""
    q, llm = cfg.quality, cfg.llm
    doc = {"figures_version": 2, "probe_version": PROBE_VERSION, "probes": q.calibration.probes, "seed": q.calibration.seed,
           "backend": llm.backend, "model": llm.model, "dtype": llm.dtype, "base_url": llm.base_url,
           "top_logprobs": llm.top_logprobs, "system": q.system_prompt, "prompts": dataclasses.asdict(q)["prompts"],
           "repetition": dataclasses.asdict(q)["repetition"], "domain": dataclasses.asdict(q.domain),
           "threshold": q.threshold, "repetition_threshold": q.repetition_threshold,
           "on_unparseable": q.on_unparseable, "min_score_mass": q.min_score_mass,
           "sampling": dataclasses.asdict(llm.sampling)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure(scorer: QualityScorer, probes: Sequence[Probe], batch_size: int) -> dict[str, Any]:
    """Rate every probe; per gate: AUC, the clean and the degraded probes' reject rates at the
    threshold (what it would throw away, what it would catch), counts, mean score per kind."""
    results = []
    for i in range(0, len(probes), batch_size):
        results += scorer.score([p.score_input() for p in probes[i:i + batch_size]])
    gates: dict[str, Any] = {}
    for kind, gate, _, threshold_field in SCORES:
        threshold = getattr(scorer.cfg, threshold_field)
        if gate == "repetition" and scorer.cfg.repetition is None:
            continue
        if gate == "repetition":  # the repetition prompt reads the caption only
            pairs = [(p, r) for p, r in zip(probes, results) if p.domain == "caption" and (p.clean or p.kind in REPETITION_KINDS)]
        else:
            pairs = list(zip(probes, results))
        values = [(p, getattr(r, kind)) for p, r in pairs]
        clean = [v for p, v in values if p.clean]
        scored_clean = [v for v in clean if v is not None]
        degraded = [v for p, v in values if not p.clean and v is not None]
        by_kind: dict[str, list[float]] = {}
        for p, v in values:
            if v is not None:
                by_kind.setdefault(p.kind, []).append(v)
        rejected = sum(v is None if scorer.cfg.on_unparseable == "reject" else False for v in clean) + sum(
            v < threshold for v in scored_clean)
        auc = roc_auc(scored_clean, degraded)
        gates[gate] = {
            "score": kind, "threshold": threshold, "auc": None if auc is None else round(auc, 4),
            "clean_reject": round(rejected / len(clean), 4) if clean else None,
            "degraded_reject": round(sum(v < threshold for v in degraded) / len(degraded), 4) if degraded else None,
            "clean": len(clean), "degraded": sum(not p.clean for p, _ in values),
            "unparseable": sum(v is None for _, v in values),
            "mean_by_kind": {k: round(sum(vs) / len(vs), 3) for k, vs in sorted(by_kind.items())}}
    return {"gates": gates}


def decide(figures: dict[str, Any], q: QualityConfig) -> dict[str, Any]:
    """The figures with each gate's state: enforced, or why not."""
    out = json.loads(json.dumps(figures))
    for name, g in out["gates"].items():
        why = []
        if g["auc"] is None or g["auc"] < q.min_auc:
            why.append(f"AUC {g['auc'] if g['auc'] is None else format(g['auc'], '.3f')} < min_auc {q.min_auc:g}")
        if g["clean_reject"] is None or g["clean_reject"] > q.max_clean_reject:
            rate = "?" if g["clean_reject"] is None else f"{g['clean_reject']:.1%}"
            why.append(f"clean reject {rate} > max_clean_reject {q.max_clean_reject:.1%}")
        g.update(enforced=not why, why="; ".join(why) or "separates clean from degraded probes",
                 min_auc=q.min_auc, max_clean_reject=q.max_clean_reject)
    return out


def _cache_path(cfg: AnnotateConfig, key: str) -> Path:
    from packing.tokens import cache_root

    folder = Path(cfg.quality.calibration.cache_dir) if cfg.quality.calibration.cache_dir else cache_root() / "calibration"
    return folder / f"{key}.json"


def calibrate(cfg: AnnotateConfig, backend_factory: Callable | None = None) -> dict[str, Any]:
    """The calibration document for this recipe (from the cache, else measured and cached), with
    each gate decided; one warning line names the gates that are not enforced."""
    from curation.annotate.llm import build_backend

    key = calibration_key(cfg)
    path = _cache_path(cfg, key)
    if path.exists():
        figures = json.loads(path.read_text())
        log.info("rater calibration %s read from %s", key, path)
    else:
        probes = probe_set(cfg.quality.calibration.probes, cfg.quality.calibration.seed)
        scorer = QualityScorer(cfg.quality, (backend_factory or build_backend)(cfg.llm), cfg.llm.sampling)
        figures = {"key": key, "backend": cfg.llm.backend, "model": cfg.llm.model, "probes": len(probes),
                   "seed": cfg.quality.calibration.seed, "probe_version": PROBE_VERSION,
                   **measure(scorer, probes, cfg.llm.batch_size)}
        del scorer
        _release_model()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(figures, indent=1, sort_keys=True))
        os.replace(tmp, path)
    doc = decide(figures, cfg.quality)
    open_gates = [f"{name} ({g['why']})" for name, g in doc["gates"].items() if not g["enforced"]]
    if open_gates:
        log.warning("annotate: rater %s on %d probes cannot reject on %s: its scores are recorded, nothing is rejected "
                    "for them", cfg.llm.model, doc["probes"], ", ".join(open_gates))
    return doc


def _release_model() -> None:
    """Free the calibration model before the stage's own workers load theirs (one GPU, one process)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def enforced(doc: dict[str, Any] | None) -> dict[str, bool] | None:
    """Gate name -> may this score reject (None: no calibration ran, every score may)."""
    return None if doc is None else {name: bool(g["enforced"]) for name, g in doc["gates"].items()}
