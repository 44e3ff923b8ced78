"""Annotate throughput: OCR images/s through the Beam stage (the pipeline's ReadShard, then
RunInference with OcrHandler, on DirectRunner) vs the bare engine on the same images read from the
same pair shard; LLM-scored samples/s of one backend, scoring from the digits' probabilities (one
forward pass) vs parsing generated text (the old path), with their ratio; and the default rater's
calibration on the probe set (ROC-AUC and clean-reject rate per score, gate state).

    python bench/annotate.py [--images 96] [--engine paddleocr] [--llm-samples 32] [--backend transformers]
                             [--no-ocr] [--probes 300]

Prints one JSON line. Both OCR timings include loading the models once, as a worker does; runs
alternate and the best of each counts, so a noisy neighbour does not decide the overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_shard(images: list[bytes], folder: str) -> tuple[str, dict]:
    """The images as one pair shard, the way annotate reads them in production."""
    from curation.core.records import ImageInfo, Pair, Sample
    from curation.core.shards import build_index, write_pair_shard

    samples = [Sample(Pair(uid=f"u{i:05d}", url="", caption="", source="bench", source_file="", source_row=i),
                      ImageInfo(data, "jpg", 1, 1, 1, 1, "PNG", "", "")) for i, data in enumerate(images)]
    name = "bench-00000-of-00001"
    with open(os.path.join(folder, f"{name}.tar"), "wb") as t, open(os.path.join(folder, f"{name}.parquet"), "wb") as m:
        report = write_pair_shard(0, name, samples, t, m)
    index = build_index([report], kind="pairs", prefix="bench", num_shards=1, fingerprint="bench")
    return folder, index["shards"][0]


def bare_engine(cfg, shard: tuple[str, dict]) -> float:
    """Read the shard, then the engine in batches of `batch_size`: no Beam."""
    from curation.annotate.ocr.routed import build_ocr_engine
    from curation.core.shards import read_pair_shard

    t = time.perf_counter()
    folder, entry = shard
    with open(os.path.join(folder, entry["tar"]), "rb") as tf, open(os.path.join(folder, entry["manifest"]), "rb") as mf:
        images = [s.image.data for s in read_pair_shard(tf, mf)]
    engine = build_ocr_engine(cfg)
    for i in range(0, len(images), cfg.batch_size):
        engine.recognize(images[i:i + cfg.batch_size])
    return time.perf_counter() - t


def _count(pred) -> None:
    from apache_beam.metrics import Metrics

    Metrics.counter("bench", "bench_images").inc()


def through_beam(cfg, shard: tuple[str, dict], n: int) -> float:
    """The pipeline's own read (ReadShard) and OCR step (RunInference + OcrHandler) on DirectRunner."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.annotate import NS, OcrHandler
    from pipelines.sharded_input import InputShard, ReadShard

    t = time.perf_counter()
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    _ = (
        p
        | beam.Create([InputShard(0, *shard)])
        | beam.ParDo(ReadShard(False, NS, "bench", origin=True))  # ((shard, position), sample), as annotate keys them
        | RunInference(OcrHandler(cfg))
        | beam.Map(_count)
    )
    result = p.run()
    result.wait_until_finish()
    elapsed = time.perf_counter() - t
    counted = result.metrics().query(MetricsFilter().with_name("bench_images"))["counters"]
    assert sum(c.committed for c in counted) == n, counted
    return elapsed


class _TextOnly:
    """The same backend without `label_probs`: the scorer falls back to generating and parsing text."""

    def __init__(self, backend) -> None:
        self.name, self.model, self.chat = backend.name, backend.model, backend.chat


def _recipe(backend_name: str, probes: int):
    from curation.annotate.config import AnnotateConfig
    from curation.core.config import load_config

    root = os.path.join(os.path.dirname(__file__), "..", "configs", "annotate.yaml")
    over = {"llm": {"backend": backend_name, **({"vllm": {"enforce_eager": True, "max_model_len": 2048}}
                                                 if backend_name == "vllm" else {})},
            "quality": {"calibration": {"probes": probes}}}
    return load_config(root, AnnotateConfig, over)


def llm_rates(backend_name: str, n: int, probes: int) -> dict:
    """Samples/s scoring by probabilities and by generated text (same backend, same captions), and
    the default rater's calibration figures (cached like a real run's)."""
    from curation.annotate.calibration import calibrate
    from curation.annotate.llm import build_backend
    from curation.annotate.quality import QualityScorer, ScoreInput
    from curation.samples.data import make_images

    cfg = _recipe(backend_name, probes)
    captions = [im.caption for im in make_images(0, max(n, 48))][:n]
    backend = build_backend(cfg.llm)

    def rate(b) -> float:
        scorer = QualityScorer(cfg.quality, b, cfg.llm.sampling)
        scorer.score([ScoreInput(captions[0])])  # warm (and, for probabilities, the few-shot history cache)
        t = time.perf_counter()
        for i in range(0, n, cfg.llm.batch_size):
            scorer.score([ScoreInput(c) for c in captions[i:i + cfg.llm.batch_size]])
        return n / (time.perf_counter() - t)

    probs, text = rate(backend), rate(_TextOnly(backend))
    t = time.perf_counter()
    cal = calibrate(cfg, lambda llm: backend)
    gates = {name: {k: g[k] for k in ("threshold", "auc", "clean_reject", "degraded_reject", "enforced")} for name, g in cal["gates"].items()}
    return {"llm_backend": backend_name, "llm_samples": n, "llm_samples_per_s_probs": round(probs, 3),
            "llm_samples_per_s_generate": round(text, 3), "probs_vs_generate": round(probs / text, 2),
            "calibration_model": cal["model"], "calibration_probes": cal["probes"],
            "calibration_s": round(time.perf_counter() - t, 1), "calibration": gates}


def text_rates(repeats: int) -> dict:
    """Samples/s of the caption steps before any model: the heuristic rules (the recipe's) and
    language ID (lingua, all 75 languages, its load timed apart) on the 128 short alt texts of
    curation/samples/languages.py; the best of `repeats`."""
    from curation.annotate.config import AnnotateConfig
    from curation.core.config import load_config
    from curation.samples.languages import labelled
    from filters.quality.language import detect
    from filters.quality.text import TextRules

    texts = [t for t, _ in labelled()]
    recipe = os.path.join(os.path.dirname(__file__), "..", "configs", "annotate.yaml")
    rules = TextRules(load_config(recipe, AnnotateConfig).heuristics)
    t0 = time.perf_counter()
    detect("warm up: load every language model")
    load_s = time.perf_counter() - t0

    def best(fn) -> float:
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            for text in texts:
                fn(text)
            runs.append(time.perf_counter() - t)
        return len(texts) / min(runs)

    right = sum(detect(t).lang == lang for t, lang in labelled())
    return {"rules_samples_per_s": round(best(rules), 1), "langid_samples_per_s": round(best(detect), 1),
            "langid_load_s": round(load_s, 1), "langid_accuracy_alt_texts": round(right / len(texts), 4),
            "text_samples": len(texts)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--engine", default="paddleocr", choices=["paddleocr", "rapidocr"])
    ap.add_argument("--llm-samples", type=int, default=32)
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each; the best counts (noisy 2-core boxes)")
    ap.add_argument("--no-ocr", action="store_true", help="only the LLM figures")
    ap.add_argument("--probes", type=int, default=300, help="calibration probe set size (the recipe's default: 300)")
    ap.add_argument("--text-only", action="store_true", help="only the rules and language-ID figures")
    args = ap.parse_args()
    if args.text_only:
        print(json.dumps(text_rates(args.repeats)))
        return
    if args.no_ocr:
        print(json.dumps({**text_rates(args.repeats), **llm_rates(args.backend, args.llm_samples, args.probes)}))
        return

    from curation.annotate.config import OcrConfig
    from curation.samples.text_images import text_images

    import tempfile

    images = [im.data for im in text_images(args.images, seed=1)]
    cfg = OcrConfig(engine=args.engine)
    with tempfile.TemporaryDirectory() as tmp:
        shard = write_shard(images, tmp)
        bare_engine(cfg, shard)  # warm caches (model folders, onnxruntime, page cache) outside both timings
        engine_runs, beam_runs = [], []
        for _ in range(args.repeats):
            engine_runs.append(bare_engine(cfg, shard))
            beam_runs.append(through_beam(cfg, shard, len(images)))
    engine_s, beam_s = min(engine_runs), min(beam_runs)
    print(json.dumps({
        "ocr_engine": args.engine, "images": args.images,
        "ocr_engine_images_per_s": round(args.images / engine_s, 3),
        "ocr_pipeline_images_per_s": round(args.images / beam_s, 3),
        "overhead_pct": round(100.0 * (beam_s - engine_s) / engine_s, 2),
        "engine_runs_s": [round(x, 2) for x in engine_runs], "pipeline_runs_s": [round(x, 2) for x in beam_runs],
        **text_rates(args.repeats), **llm_rates(args.backend, args.llm_samples, args.probes),
    }))


if __name__ == "__main__":
    main()
