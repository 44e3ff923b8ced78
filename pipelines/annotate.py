"""Annotate: pair shards -> heuristic rules -> OCR -> LLM quality scoring -> annotated pair shards
+ InternVL conversation jsonl (with the images) ready for `curate pack`.

Only wiring: rules, engines, the scorer and the record logic live in filters/ and curation/. The
two model steps are RunInference ModelHandlers (model loaded once per worker, batched, metrics
in their own namespaces), each behind a Reshuffle and carrying the config's accelerator hint,
so on Dataflow only they need GPU workers.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from curation.annotate.config import AnnotateConfig, LlmConfig, OcrConfig, QualityConfig
from curation.core.records import Rejection, Sample, record_uid
from pipelines.sharded_output import AssignShard, ReadShard, WriteShards, not_done, run_pair_shard_job

NS = "curate.annotate"


class _BatchedHandler(ModelHandler):
    """What both model steps share: fixed batches, a metrics namespace, the accelerator hint."""

    def __init__(self, batch_size: int, accelerator: str | None, namespace: str) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.accelerator = accelerator
        self.namespace = namespace

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def get_resource_hints(self) -> dict[str, Any]:
        return {"accelerator": self.accelerator} if self.accelerator else {}


class OcrHandler(_BatchedHandler):
    """Samples -> PredictionResult(sample, OcrResult | OcrError), one engine per worker."""

    def __init__(self, cfg: OcrConfig) -> None:
        super().__init__(cfg.batch_size, cfg.accelerator, f"{NS}.ocr")
        self.cfg = cfg

    def load_model(self):
        from curation.annotate.ocr import build_ocr_engine

        return build_ocr_engine(self.cfg)

    def run_inference(self, batch: Sequence[Sample], model, inference_args=None) -> Iterable[PredictionResult]:
        results = model.recognize([s.image.data for s in batch])
        Metrics.counter(NS, "ocr_images").inc(len(batch))  # in the index's _metrics: what a resume re-ran
        return [PredictionResult(s, r, model.name) for s, r in zip(batch, results)]


class QualityHandler(_BatchedHandler):
    """Samples -> PredictionResult(sample, QualityResult), one LLM backend per worker."""

    def __init__(self, cfg: QualityConfig, llm: LlmConfig) -> None:
        super().__init__(llm.batch_size, llm.accelerator, f"{NS}.llm")
        self.cfg = cfg
        self.llm = llm

    def load_model(self):
        from curation.annotate.llm import build_backend
        from curation.annotate.quality import QualityScorer

        return QualityScorer(self.cfg, build_backend(self.llm), self.llm.sampling)

    def run_inference(self, batch: Sequence[Sample], model, inference_args=None) -> Iterable[PredictionResult]:
        from curation.annotate.steps import score_input

        results = model.score([score_input(s) for s in batch])
        Metrics.counter(NS, "llm_samples").inc(len(batch))
        return [PredictionResult(s, r, model.backend.name) for s, r in zip(batch, results)]


def _route(rec, counter: str):
    """Samples on the main output; rejections to `rejected`, counted per reason."""
    if isinstance(rec, Rejection):
        Metrics.counter(NS, f"{counter}_{rec.reason}").inc()
        yield beam.pvalue.TaggedOutput("rejected", rec)
    else:
        yield rec


def _rules(sample, cfg):
    from curation.annotate.steps import apply_rules
    from filters.text_quality import TextRules

    yield from _route(apply_rules(sample, TextRules(cfg)), "rules")


def _after_ocr(pred: PredictionResult):
    from curation.annotate.steps import apply_ocr

    yield from _route(apply_ocr(pred.example, pred.inference, pred.model_id), "ocr")


def _after_quality(pred: PredictionResult | Sample, cfg: AnnotateConfig):
    from curation.annotate.steps import apply_quality

    if isinstance(pred, PredictionResult):
        yield from _route(apply_quality(pred.example, pred.inference, cfg), "quality")
    else:
        yield from _route(apply_quality(pred, None, cfg), "quality")


def write_annotated_shard(shard: int, name: str, records, tar_file, manifest_file, output: str):
    """A pair shard plus `{name}.conversations.jsonl`; each kept image is also written under
    `images/{name}/` so the jsonl's relative paths resolve from the output folder (pack's default
    image root)."""
    from curation.annotate.steps import conversation_row
    from curation.core.shards import write_pair_shard
    from pipelines import fsio

    records = list(records)
    report = write_pair_shard(shard, name, records, tar_file, manifest_file)
    kept = sorted((r for r in records if isinstance(r, Sample)), key=lambda s: s.pair.uid)
    lines, tasks = [], {}
    for sample in kept:
        rel = f"images/{name}/{sample.pair.uid}.{sample.image.ext}"
        row = conversation_row(sample, rel)
        if row is None:
            continue
        fsio.write_atomic(fsio.join(output, rel), lambda f, data=sample.image.data: f.write(data))
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
        tasks[row["task"]] = tasks.get(row["task"], 0) + 1
    report.stats = {"conversations": len(lines), **{f"task_{k}": v for k, v in sorted(tasks.items())}}
    return report, {f"{name}.conversations.jsonl": "".join(line + "\n" for line in lines).encode()}


def build_annotate(p: beam.Pipeline, cfg: AnnotateConfig, shards: list[tuple[str, dict]], num_shards: int,
                   output: str, fingerprint: str, previous: dict[str, Any], sources: list[str]) -> beam.PCollection:
    """Wire the annotate graph on `p`; returns the PCollection holding the written index."""
    from functools import partial

    count = p | "NumShards" >> beam.Create([num_shards])
    n = beam.pvalue.AsSingleton(count)
    # Output shards are decided first, so a resumed run sends no row of a finished shard to OCR or the LLM.
    records = (
        p
        | "InputShards" >> beam.Create(shards)
        | "SpreadShards" >> beam.Reshuffle()
        | "ReadShards" >> beam.ParDo(ReadShard(cfg.progress, NS, "annotate"))
        | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=record_uid)
        | "SkipDoneShards" >> beam.Filter(not_done(cfg.shards.prefix, frozenset(previous)), num_shards=n)
        | "Records" >> beam.Values()
    )
    upstream = records | "UpstreamRejections" >> beam.Filter(lambda r: isinstance(r, Rejection))
    samples = records | "Samples" >> beam.Filter(lambda r: isinstance(r, Sample))
    ruled = samples | "HeuristicRules" >> beam.FlatMap(_rules, cfg.heuristics).with_outputs("rejected", main="kept")
    rejected = [upstream, ruled.rejected]
    kept = ruled.kept
    if cfg.ocr.enabled:
        ocr = (
            kept
            | "BeforeOcr" >> beam.Reshuffle()
            | "Ocr" >> RunInference(OcrHandler(cfg.ocr))
            | "OcrVerdict" >> beam.FlatMap(_after_ocr).with_outputs("rejected", main="kept")
        )
        rejected.append(ocr.rejected)
        kept = ocr.kept
    if cfg.quality.enabled:
        kept = (
            kept
            | "BeforeLlm" >> beam.Reshuffle()
            | "QualityScore" >> RunInference(QualityHandler(cfg.quality, cfg.llm))
        )
    quality = kept | "QualityVerdict" >> beam.FlatMap(_after_quality, cfg).with_outputs("rejected", main="kept")
    rejected.append(quality.rejected)
    keyed = (
        (quality.kept, *rejected)
        | "AllRecords" >> beam.Flatten()
        | "ShardAgain" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=record_uid)
    )
    return keyed | "Write" >> WriteShards(output, cfg.shards.prefix, "pairs", fingerprint,
                                          partial(write_annotated_shard, output=output), count, previous, NS,
                                          extra={"source": "+".join(sources), "annotate_of": sources})


def run_annotate(cfg: AnnotateConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) an annotate job over pair-shard folders; returns the index."""
    return run_pair_shard_job(
        cfg, inputs, output, beam_args, "annotate", NS,
        lambda p, shards, n, out, fp, prev, sources: build_annotate(p, cfg, shards, n, out, fp, prev, sources))
