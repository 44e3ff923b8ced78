"""A rater earns the right to reject: the seeded probe set, ROC-AUC, and the per-score gate with
the real offline SmolLM2 rater (transformers), measured once and then read from its cache."""

from __future__ import annotations

import json

import pytest

from curation.annotate.calibration import calibrate, calibration_key, decide, roc_auc, roc_threshold
from curation.annotate.config import AnnotateConfig
from curation.annotate.probes import DEGRADATIONS, probe_set
from curation.annotate.quality import QualityScorer
from curation.core.config import deep_merge, load_config
from tests.conftest import CONFIGS


def _cfg(cache_dir, **quality) -> AnnotateConfig:
    over = deep_merge({"calibration": {"probes": 24, "cache_dir": str(cache_dir)}}, quality)
    return load_config(CONFIGS / "annotate.yaml", AnnotateConfig, {"quality": over})


def test_probe_set_is_seeded_labelled_and_covers_every_degradation():
    probes = probe_set(300, seed=0)
    assert probes == probe_set(300, seed=0) and probes != probe_set(300, seed=1)
    assert len(probes) == 300 and len({p.id for p in probes}) == 300
    assert sum(p.clean for p in probes) == 150
    assert {p.kind for p in probes if not p.clean} == set(DEGRADATIONS)
    assert {p.lang for p in probes} >= {"en", "de", "fr", "es", "zh"}
    for domain in ("caption", "ocr"):
        assert {p.kind for p in probes if p.domain == domain} == {"clean", *DEGRADATIONS}
    assert probe_set(24) == probes[:24]  # a smaller set is a prefix: a test subset is the same probes
    ocr = next(p for p in probes if p.domain == "ocr")
    assert ocr.score_input().ocr_text == ocr.text and ocr.score_input().ocr_chars == len(ocr.text)
    rep = [p.text for p in probes if p.kind == "repeated_ngrams" and p.domain == "caption"]
    assert all(len(t.split()) >= 6 or len(set(t)) < len(t) / 3 for t in rep), rep


def test_roc_auc():
    assert roc_auc([3, 4], [1, 2]) == 1.0 and roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 2], [1, 2]) == 0.5 and roc_auc([], [1]) is None


def _rows(clean: list, degraded: list, kind: str = "truncated") -> list:
    return [["clean", True, v] for v in clean] + [[kind, False, v] for v in degraded]


def test_the_roc_chooses_the_threshold_that_catches_most_within_the_clean_budget():
    clean = [6.0] + [7.0, 7.5, 8.0, 8.0, 8.5, 9.0, 9.0, 9.0, 9.5] * 2 + [9.5]  # 20 clean probes: 5% is one
    degraded = [2.0, 3.0, 5.0, 6.2, 7.2, 8.8]
    t = roc_threshold(clean, degraded, 0.05, True)
    assert t == 7.0  # rejects the one clean 6.0 (5%) and the degraded 2, 3, 5 and 6.2
    assert roc_threshold(clean, degraded, 0.0, True) == 6.0  # no clean reject allowed: below the lowest clean
    assert roc_threshold([1.0, 2.0], [5.0, 6.0], 0.05, True) is None  # nothing degraded scores below a clean probe
    # an unparseable clean probe is rejected whatever the threshold: it spends the budget first
    assert roc_threshold([None, *clean], degraded, 0.05, True) == 6.0


def test_decide_enforces_only_a_rater_that_separates_and_catches_something(tmp_path):
    figures = {"gates": {"quality": {"score": "score", "probes": _rows([8.0] * 19 + [6.0], [2.0, 3.0, 5.0, 8.5])},
                         "repetition": {"score": "repetition_score", "probes": _rows([5.0, 6.0] * 5, [5.5, 6.5],
                                                                                     "repeated_ngrams")}}}
    gates = decide(figures, _cfg(tmp_path).quality)["gates"]
    q, r = gates["quality"], gates["repetition"]
    assert q["threshold_from"] == "roc" and q["threshold"] == 6.0 and q["clean_reject"] == 0.0
    assert q["degraded_reject"] == 0.75 and q["auc"] == 0.75 and not q["enforced"]
    assert decide(figures, _cfg(tmp_path, min_auc=0.7).quality)["gates"]["quality"]["enforced"]
    assert not r["enforced"] and "AUC 0.250 < min_auc 0.85" in r["why"]
    # a recipe's own threshold that rejects no degraded probe: reported, not enforced
    fixed = decide(figures, _cfg(tmp_path, threshold=1.0, min_auc=0.0).quality)["gates"]["quality"]
    assert fixed["threshold_from"] == "recipe" and fixed["degraded_reject"] == 0.0 and not fixed["enforced"]
    assert "rejects no degraded probe at threshold 1" in fixed["why"]
    recipe = decide(figures, _cfg(tmp_path, threshold=7.0, min_auc=0.0).quality)["gates"]["quality"]
    assert recipe["enforced"] and recipe["clean_reject"] == 0.05 and recipe["degraded_reject"] == 0.75
    stricter = decide(figures, _cfg(tmp_path, threshold=9.0, min_auc=0.0).quality)["gates"]["quality"]
    assert not stricter["enforced"] and "clean reject 100.0% > max_clean_reject 5.0%" in stricter["why"]


@pytest.fixture(scope="module")
def backend():
    from curation.annotate.llm import build_backend

    return build_backend(_cfg("/nonexistent").llm)


@pytest.mark.slow
def test_the_offline_rater_is_gated_and_its_figures_are_cached(backend, tmp_path, caplog):
    built = []

    def factory(llm):
        built.append(llm.model)
        return backend

    cfg = _cfg(tmp_path)
    with caplog.at_level("WARNING"):
        doc = calibrate(cfg, factory)
    assert built == ["builtin:smollm2"]
    q, r = doc["gates"]["quality"], doc["gates"]["repetition"]
    assert q["clean"] == 12 and q["degraded"] == 12 and 0 <= q["auc"] <= 1 and 0 <= q["clean_reject"] <= 1
    assert 0 <= q["degraded_reject"] <= 1 and set(q["mean_by_kind"]) == {"clean", *DEGRADATIONS}
    assert r["clean"] == 6 and r["degraded"] == 1  # the caption-domain clean probes against repeated n-grams
    # thresholds from the ROC: within the clean budget by construction; enforced only if it also
    # separates (AUC) and catches a degraded probe
    for g in (q, r):
        assert g["threshold_from"] == "roc" and g["clean_reject"] <= 0.05
        assert g["enforced"] == (g["auc"] >= 0.85 and g["degraded_reject"] > 0)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    if not (q["enforced"] and r["enforced"]):
        assert len(warnings) == 1 and "cannot reject on" in warnings[0] and "nothing is rejected" in warnings[0]
    cached = json.loads((tmp_path / f"{calibration_key(cfg)}.json").read_text())
    assert len(cached["gates"]["quality"]["probes"]) == 24 and "threshold" not in json.dumps(cached)  # scores, not decisions

    # the same recipe again: read from the cache, no model is built
    assert calibrate(cfg, factory)["gates"] == doc["gates"] and built == ["builtin:smollm2"]
    # lower bars (the same cached figures): now both scores may reject
    lenient = calibrate(_cfg(tmp_path, min_auc=0.0, max_clean_reject=1.0), factory)
    assert lenient["gates"]["quality"]["enforced"] and lenient["gates"]["repetition"]["enforced"]
    assert built == ["builtin:smollm2"]
    # another threshold is decided again from the cached scores, no model built: SmolLM2-135M rates
    # nearly everything 5-6 of 9, so every clean probe falls below 9.5
    strict = calibrate(_cfg(tmp_path, threshold=9.5, min_auc=0.0), factory)
    assert built == ["builtin:smollm2"] and strict["gates"]["quality"]["clean_reject"] == 1.0
    assert not strict["gates"]["quality"]["enforced"] and "clean reject 100.0%" in strict["gates"]["quality"]["why"]
    assert strict["gates"]["quality"]["auc"] == q["auc"] and strict["gates"]["quality"]["threshold_from"] == "recipe"


@pytest.mark.slow
def test_an_open_gate_records_what_it_would_reject(backend, tmp_path):
    from curation.annotate.quality import ScoreInput

    cfg = _cfg(tmp_path, threshold=9.5, repetition_threshold=9.5)
    items = [ScoreInput("cheap shoes cheap shoes cheap shoes cheap shoes")]
    (gated,) = QualityScorer(cfg.quality, backend, cfg.llm.sampling, {"quality": False, "repetition": False}).score(items)
    (free,) = QualityScorer(cfg.quality, backend, cfg.llm.sampling).score(items)
    assert free.reason == "repetitive_text" and gated.reason is None
    assert gated.score == free.score and gated.repetition_score == free.repetition_score
    assert [u.split(":")[0] for u in gated.unenforced] == ["repetitive_text", "low_quality_score"]
    doc = gated.to_json()
    assert doc["verdict"] == "keep" and doc["unenforced"] == gated.unenforced
    for kind in ("score", "repetition_score"):
        dist = doc["distributions"][kind]
        assert dist["mean"] == doc[kind] and 0 < dist["entropy"] <= 2.3026 and 0 < dist["mass"] <= 1
        assert len(doc["raw"][kind]["probs"]) == 10
