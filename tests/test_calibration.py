"""A rater earns the right to reject: the seeded probe set, ROC-AUC, and the per-score gate with
the real offline SmolLM2 rater (transformers), measured once and then read from its cache."""

from __future__ import annotations

import json

import pytest

from curation.annotate.calibration import calibrate, calibration_key, decide, roc_auc
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


def test_decide_enforces_only_a_rater_that_separates(tmp_path):
    figures = {"gates": {"quality": {"score": "score", "threshold": 7, "auc": 0.95, "clean_reject": 0.02, "clean": 10,
                                     "degraded": 10},
                         "repetition": {"score": "repetition_score", "threshold": 3, "auc": 0.6, "clean_reject": 0.0,
                                        "clean": 10, "degraded": 2}}}
    gates = decide(figures, _cfg(tmp_path).quality)["gates"]
    assert gates["quality"]["enforced"] and not gates["repetition"]["enforced"]
    assert "AUC 0.600 < min_auc 0.85" in gates["repetition"]["why"]
    strict = decide(figures, _cfg(tmp_path, max_clean_reject=0.01).quality)["gates"]["quality"]
    assert not strict["enforced"] and "clean reject 2.0% > max_clean_reject 1.0%" in strict["why"]


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
    # SmolLM2-135M rates nearly everything 5-6 of 9: at the production threshold 7 it would reject
    # every clean probe, so its quality score may not reject
    assert q["clean_reject"] > 0.5 and not q["enforced"], doc
    assert r["enforced"] == (r["auc"] >= 0.85 and r["clean_reject"] <= 0.05)  # 1 degraded probe in this subset
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot reject on quality" in warnings[0] and "nothing is rejected" in warnings[0]
    cached = tmp_path / f"{calibration_key(cfg)}.json"
    assert json.loads(cached.read_text())["gates"]["quality"]["auc"] == q["auc"]

    # the same recipe again: read from the cache, no model is built
    assert calibrate(cfg, factory)["gates"] == doc["gates"] and built == ["builtin:smollm2"]
    # lower bars (the same cached figures): now both scores may reject
    lenient = calibrate(_cfg(tmp_path, min_auc=0.0, max_clean_reject=1.0), factory)
    assert lenient["gates"]["quality"]["enforced"] and lenient["gates"]["repetition"]["enforced"]
    assert built == ["builtin:smollm2"]
    # another threshold is another measurement: every clean probe falls below 9.5
    strict = calibrate(_cfg(tmp_path, threshold=9.5, min_auc=0.0), factory)
    assert built == ["builtin:smollm2"] * 2 and strict["gates"]["quality"]["clean_reject"] == 1.0
    assert not strict["gates"]["quality"]["enforced"] and "clean reject 100.0%" in strict["gates"]["quality"]["why"]


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
