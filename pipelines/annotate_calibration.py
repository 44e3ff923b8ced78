"""Annotate's LLM calibration in the job (`quality.calibration.run_on: workers`): the probe set
enters the LLM step beside the rows, keyed (PROBE, i), and comes out to be measured and decided
once; the decision is the side input that judges every row. The probe scores are also kept in the
output's job state, so a resumed job judges its remaining rows by the same gates."""

from __future__ import annotations

import logging
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from curation.annotate.config import AnnotateConfig
from pipelines import fsio

PROBE = "probe"  # a calibration probe's key is (PROBE, i); a row's is (shard, position)
CALIBRATION_STATE = "calibration.json"  # under the output's _progress/: the probe scores this job judges by


def probe_inputs(_, n: int, seed: int):
    """The calibration probe set as scorer inputs keyed (PROBE, i), built where it runs."""
    from curation.annotate.probes import probe_set

    for i, probe in enumerate(probe_set(n, seed)):
        yield (PROBE, i), probe.score_input()


def split_probes(pred: PredictionResult):
    """Probe results to `probes` as (i, QualityResult); rows' results on the main output."""
    if pred.example[0][0] == PROBE:
        yield beam.pvalue.TaggedOutput("probes", (pred.example[0][1], pred.inference))
    else:
        yield pred


def state_path(output: str) -> str:
    from curation.core.shards import PROGRESS_DIR

    return fsio.join(output, PROGRESS_DIR, CALIBRATION_STATE)


def saved_figures(output: str, cfg: AnnotateConfig) -> dict[str, Any] | None:
    """The probe scores an earlier attempt of this job judged its rows by (same rater and probe
    set), so a resume judges the rest by the same gates; None if there are none."""
    from curation.annotate.calibration import calibration_key

    path = state_path(output)
    if not fsio.exists(path):
        return None
    figures = fsio.read_json(path)
    return figures if isinstance(figures, dict) and figures.get("key") == calibration_key(cfg) else None


def calibration_doc(results: list[tuple[int, Any]], cfg: AnnotateConfig, output: str) -> dict[str, Any]:
    """Every probe's result -> the calibration document: figures cached where this runs and kept in
    the output's job state (a resume judges by them), gates decided."""
    from curation.annotate.calibration import decided, figures_header, gates_of, store_figures
    from curation.annotate.probes import probe_set

    c = cfg.quality.calibration
    probes = probe_set(c.probes, c.seed)
    by_index = dict(results)
    if sorted(by_index) != list(range(len(probes))):
        raise RuntimeError(f"annotate calibration: {len(by_index)} of {len(probes)} probe results came back")
    figures = {**figures_header(cfg, len(probes)),
               **gates_of(probes, [by_index[i] for i in range(len(probes))], cfg.quality)}
    try:
        store_figures(cfg, figures)
    except OSError as err:  # a read-only worker disk: the output's job state and the index still have them
        logging.getLogger(__name__).warning("annotate: calibration figures not cached: %s", err)
    fsio.write_json(state_path(output), figures)
    return decided(figures, cfg)
