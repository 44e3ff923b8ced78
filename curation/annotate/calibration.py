"""A rater earns the right to reject: before `curate annotate` lets an LLM score drop rows, the
scorer rates the labelled probe set (probes.py). Those scores are cached on disk, keyed by the
backend, model, prompts and probe set - never by a threshold, so a recipe that only changes a
threshold or a bar is decided again without scoring again. Per score (quality, repetition) we then
take the threshold (the recipe's, or the one the ROC gives: the most degraded probes rejected with
at most `max_clean_reject` of the clean ones), and measure ROC-AUC (clean above degraded) and what
it rejects of each side. A gate is enforced only at `min_auc` or above, `max_clean_reject` or
below, and with at least one degraded probe rejected; an open gate records the scores and rejects
nothing for them."""

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
from filters.quality.gates import roc_auc

log = logging.getLogger(__name__)
REPETITION_KINDS = frozenset({"repeated_ngrams"})  # what the repetition prompt is asked to find
FIGURES_VERSION = 3  # per-probe scores, no thresholds


def calibration_key(cfg: AnnotateConfig) -> str:
    """What the probe scores depend on: backend, model, prompts, the probe set (not the thresholds
    or the bars: those only decide)."""
    q, llm = cfg.quality, cfg.llm
    doc = {"figures_version": FIGURES_VERSION, "probe_version": PROBE_VERSION, "probes": q.calibration.probes,
           "seed": q.calibration.seed, "backend": llm.backend, "model": llm.model, "dtype": llm.dtype,
           "base_url": llm.base_url, "top_logprobs": llm.top_logprobs, "system": q.system_prompt,
           "prompts": dataclasses.asdict(q)["prompts"], "repetition": dataclasses.asdict(q)["repetition"],
           "domain": dataclasses.asdict(q.domain), "min_score_mass": q.min_score_mass,
           "sampling": dataclasses.asdict(llm.sampling)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure(scorer: QualityScorer, probes: Sequence[Probe], batch_size: int) -> dict[str, Any]:
    """Rate every probe on this process (the launcher); `gates_of` the results."""
    results = []
    for i in range(0, len(probes), batch_size):
        results += scorer.measure([p.score_input() for p in probes[i:i + batch_size]])
    return gates_of(probes, results, scorer.cfg)


def gates_of(probes: Sequence[Probe], results: Sequence[Any], q: QualityConfig) -> dict[str, Any]:
    """Per gate the probes it is measured on as [kind, clean, score or None] (the repetition
    prompt reads captions: clean caption probes against repeated n-grams)."""
    gates: dict[str, Any] = {}
    for kind, gate, _, _ in SCORES:
        if gate == "repetition" and q.repetition is None:
            continue
        if gate == "repetition":
            pairs = [(p, r) for p, r in zip(probes, results) if p.domain == "caption" and (p.clean or p.kind in REPETITION_KINDS)]
        else:
            pairs = list(zip(probes, results))
        gates[gate] = {"score": kind, "probes": [[p.kind, p.clean, getattr(r, kind)] for p, r in pairs]}
    return {"gates": gates}


def _rejects(values: Sequence[float | None], threshold: float, unparseable_rejects: bool) -> int:
    return sum((v is None and unparseable_rejects) or (v is not None and v < threshold) for v in values)


def roc_threshold(clean: Sequence[float | None], degraded: Sequence[float], max_clean_reject: float,
                  unparseable_rejects: bool) -> float | None:
    """The threshold (reject below it) that rejects the most degraded probes while rejecting at
    most `max_clean_reject` of the clean ones (the lowest such); None when none rejects any."""
    best, best_caught = None, 0
    for t in sorted({v for v in [*clean, *degraded] if v is not None} | {max(degraded, default=0) + 1e-9}):
        if clean and _rejects(clean, t, unparseable_rejects) > max_clean_reject * len(clean):
            break  # higher thresholds only reject more clean probes
        caught = _rejects(degraded, t, False)
        if caught > best_caught:
            best, best_caught = t, caught
    return best


def decide(figures: dict[str, Any], q: QualityConfig) -> dict[str, Any]:
    """Each gate's threshold (the recipe's, or the ROC's), what it rejects of the clean and the
    degraded probes, its AUC, and its state: enforced, or why not."""
    from curation.annotate.quality import DEFAULT_THRESHOLDS, recipe_threshold

    out = {k: v for k, v in json.loads(json.dumps(figures)).items() if k != "gates"}
    out["gates"] = {}
    unparseable_rejects = q.on_unparseable == "reject"
    for name, g in figures["gates"].items():
        rows = g["probes"]
        clean = [v for _, is_clean, v in rows if is_clean]
        scored_clean = [v for v in clean if v is not None]
        degraded = [v for _, is_clean, v in rows if not is_clean and v is not None]
        fixed = recipe_threshold(q, name)
        chosen = roc_threshold(clean, degraded, q.max_clean_reject, unparseable_rejects) if fixed is None else None
        if fixed is None and chosen is None and (scored_clean or degraded):
            chosen = min([*scored_clean, *degraded])  # no threshold catches anything within the budget: reject nothing
        threshold = float(fixed) if fixed is not None else chosen if chosen is not None else DEFAULT_THRESHOLDS[name]
        by_kind: dict[str, list[float]] = {}
        for kind, _, v in rows:
            if v is not None:
                by_kind.setdefault(kind, []).append(v)
        auc = roc_auc(scored_clean, degraded)
        gate = {"score": g["score"], "threshold": threshold,
                "threshold_from": "recipe" if fixed is not None else "roc" if chosen is not None else "default",
                "auc": None if auc is None else round(auc, 4),
                "clean_reject": round(_rejects(clean, threshold, unparseable_rejects) / len(clean), 4) if clean else None,
                "degraded_reject": round(_rejects(degraded, threshold, False) / len(degraded), 4) if degraded else None,
                "clean": len(clean), "degraded": sum(not is_clean for _, is_clean, _ in rows),
                "unparseable": sum(v is None for _, _, v in rows),
                "mean_by_kind": {k: round(sum(vs) / len(vs), 3) for k, vs in sorted(by_kind.items())}}
        why = []
        if gate["auc"] is None or gate["auc"] < q.min_auc:
            why.append(f"AUC {gate['auc'] if gate['auc'] is None else format(gate['auc'], '.3f')} < min_auc {q.min_auc:g}")
        if gate["clean_reject"] is None or gate["clean_reject"] > q.max_clean_reject:
            rate = "?" if gate["clean_reject"] is None else f"{gate['clean_reject']:.1%}"
            why.append(f"clean reject {rate} > max_clean_reject {q.max_clean_reject:.1%}")
        if not gate["degraded_reject"]:
            why.append(f"rejects no degraded probe at threshold {threshold:.3g}")
        gate.update(enforced=not why, why="; ".join(why) or "separates clean from degraded probes",
                    min_auc=q.min_auc, max_clean_reject=q.max_clean_reject)
        out["gates"][name] = gate
    return out


def _cache_path(cfg: AnnotateConfig, key: str) -> Path:
    from curation.core.cache import cache_root

    folder = Path(cfg.quality.calibration.cache_dir) if cfg.quality.calibration.cache_dir else cache_root() / "calibration"
    return folder / f"{key}.json"


def figures_header(cfg: AnnotateConfig, probes: int) -> dict[str, Any]:
    """What a figures document says besides its gates: the key, the rater, the probe set."""
    return {"key": calibration_key(cfg), "backend": cfg.llm.backend, "model": cfg.llm.model, "probes": probes,
            "seed": cfg.quality.calibration.seed, "probe_version": PROBE_VERSION}


def cached_figures(cfg: AnnotateConfig) -> dict[str, Any] | None:
    """The probe scores of this rater and probe set from the cache, or None."""
    path = _cache_path(cfg, calibration_key(cfg))
    if not path.exists():
        return None
    log.info("rater calibration %s read from %s", path.stem, path)
    return json.loads(path.read_text())


def store_figures(cfg: AnnotateConfig, figures: dict[str, Any]) -> None:
    """Cache the probe scores (atomically: a reader sees the whole file or none)."""
    path = _cache_path(cfg, figures["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(figures, indent=1, sort_keys=True))
    os.replace(tmp, path)


def decided(figures: dict[str, Any], cfg: AnnotateConfig) -> dict[str, Any]:
    """`decide`, plus one warning line naming the gates that are not enforced."""
    doc = decide(figures, cfg.quality)
    open_gates = [f"{name} ({g['why']})" for name, g in doc["gates"].items() if not g["enforced"]]
    if open_gates:
        log.warning("annotate: rater %s on %d probes cannot reject on %s: its scores are recorded, nothing is rejected "
                    "for them", cfg.llm.model, doc["probes"], ", ".join(open_gates))
    return doc


def launcher_figures(cfg: AnnotateConfig, backend_factory: Callable | None = None) -> dict[str, Any]:
    """The probe scores for this recipe, on this process: from the cache, else measured here and
    cached. (`run_on: workers` scores the probes in the job instead: pipelines/annotate.py.)"""
    from curation.annotate.llm import build_backend

    figures = cached_figures(cfg)
    if figures is None:
        probes = probe_set(cfg.quality.calibration.probes, cfg.quality.calibration.seed)
        scorer = QualityScorer(cfg.quality, (backend_factory or build_backend)(cfg.llm), cfg.llm.sampling)
        figures = {**figures_header(cfg, len(probes)), **measure(scorer, probes, cfg.llm.batch_size)}
        del scorer
        _release_model()
        store_figures(cfg, figures)
    return figures


def calibrate(cfg: AnnotateConfig, backend_factory: Callable | None = None) -> dict[str, Any]:
    """The calibration document for this recipe: `launcher_figures` with each gate decided."""
    return decided(launcher_figures(cfg, backend_factory), cfg)


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


def thresholds(doc: dict[str, Any] | None) -> dict[str, float] | None:
    """Gate name -> the threshold decided for it (None: no calibration ran)."""
    return None if doc is None else {name: float(g["threshold"]) for name, g in doc["gates"].items()}
