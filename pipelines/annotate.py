"""Annotate: pair shards -> heuristic rules -> OCR -> LLM quality scoring -> annotated pair shards
+ InternVL conversation jsonl (with the images) ready for `curate pack`.

Only wiring: rules, engines, the scorer and the record logic live in filters/ and curation/. The
two model steps are RunInference ModelHandlers (model loaded once per worker, batched, metrics
in their own namespaces) carrying the config's accelerator hint, so on Dataflow only they need GPU
workers. OCR runs where the shard is read (behind a Reshuffle only when it has an accelerator);
the LLM, which reads text only, behind a Reshuffle. Past OCR no record carries its image: each
output shard's writer re-reads its input shard for the bytes (one output shard per input shard).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from curation.annotate.config import AnnotateConfig, LanguageConfig, LlmConfig, OcrConfig, QualityConfig
from curation.core.records import Rejection, Sample
from pipelines import fsio
from pipelines.model_handlers import BatchedHandler, record_load
from pipelines.annotate_calibration import PROBE, calibration_doc, probe_inputs, saved_figures, split_probes, state_path
from pipelines.sharded_output import WriteShards, not_done, run_pair_shard_job
from pipelines.sharded_input import InputShard, ReadInputShards, ReadShard, opened_shard

NS = "curate.annotate"


class OcrHandler(BatchedHandler):
    """(row key, Sample) -> PredictionResult((row key, sample), OcrResult | OcrError), one engine per worker."""

    def __init__(self, cfg: OcrConfig, language: LanguageConfig | None = None) -> None:
        super().__init__(cfg.batch_size, cfg.accelerator, f"{NS}.ocr", cfg.share_across_processes)
        self.cfg = cfg
        self.language = language

    def load_model(self):
        from curation.annotate.ocr.routed import build_ocr_engine

        record_load("ocr")
        return self.served(build_ocr_engine(self.cfg))

    def run_inference(self, batch: Sequence[tuple[Any, Sample]], model, inference_args=None) -> Iterable[PredictionResult]:
        from curation.annotate.steps import expected_script

        # the script language ID expects picks the engine (Tesseract for what PP-OCR cannot read)
        scripts = [expected_script(s, self.language) if self.language and self.language.enabled else None
                   for _, s in batch]
        results = model.recognize([s.image.data for _, s in batch], scripts)
        Metrics.counter(NS, "ocr_images").inc(len(batch))  # in the index's _metrics: what a resume re-ran
        name = model.info()["name"]
        return [PredictionResult(e, r, name) for e, r in zip(batch, results)]


class QualityHandler(BatchedHandler):
    """(key, Sample or probe ScoreInput) -> PredictionResult((key, item), QualityResult): the LLM's
    scores only, one backend per worker. Rows and calibration probes share the model load and the
    batches; the verdicts are judged after (`QualityVerdict`), once the gates are decided."""

    def __init__(self, cfg: QualityConfig, llm: LlmConfig) -> None:
        super().__init__(llm.batch_size, llm.accelerator, f"{NS}.llm", llm.share_across_processes)
        self.cfg = cfg
        self.llm = llm

    def load_model(self):
        from curation.annotate.llm import build_backend
        from curation.annotate.quality import QualityScorer

        record_load("llm")
        return self.served(QualityScorer(self.cfg, build_backend(self.llm), self.llm.sampling))

    def run_inference(self, batch: Sequence[tuple[Any, Any]], model, inference_args=None) -> Iterable[PredictionResult]:
        from curation.annotate.quality import ScoreInput
        from curation.annotate.steps import score_input

        results = model.measure([s if isinstance(s, ScoreInput) else score_input(s) for _, s in batch])
        probes = sum(1 for key, _ in batch if key[0] == PROBE)  # calibration probes ride with the rows
        Metrics.counter(NS, "llm_samples").inc(len(batch) - probes)
        if probes:
            Metrics.counter(NS, "llm_probes").inc(probes)
        backend = model.info()["backend"]
        return [PredictionResult(e, r, backend) for e, r in zip(batch, results)]


def _route(key, rec, counter: str):
    """(row key, Sample) on the main output; (row key, Rejection) to `rejected`, counted per reason."""
    if isinstance(rec, Rejection):
        Metrics.counter(NS, f"{counter}_{rec.reason}").inc()
        yield beam.pvalue.TaggedOutput("rejected", (key, rec))
    else:
        yield key, rec


def _rules(element, cfg: AnnotateConfig):
    from curation.annotate.steps import apply_decontam, apply_language, apply_rules
    from filters.quality.text import TextRules

    key, sample = element
    ruled = apply_rules(sample, TextRules(cfg.heuristics))
    if isinstance(ruled, Sample) and cfg.decontamination.enabled:
        from curation.mmpr.eval_sets import eval_index

        ruled = apply_decontam(ruled, eval_index(cfg.decontamination))  # built once per worker process
    if isinstance(ruled, Sample) and cfg.language.enabled:
        ruled = apply_language(ruled, cfg.language)
    yield from _route(key, ruled, "rules")


def _after_ocr(pred: PredictionResult, language: LanguageConfig):
    from curation.annotate.steps import apply_ocr

    key, sample = pred.example
    yield from _route(key, apply_ocr(sample, pred.inference, pred.model_id, language), "ocr")


def _without_image(element):
    """(row key, Sample) -> the same with its image bytes dropped: past OCR nothing reads the pixels,
    and the shard writer reads them back from its input shard."""
    import dataclasses

    key, sample = element
    stored = None if sample.stored is None else {k: (b"" if k == sample.image.ext else v) for k, v in sample.stored.items()}
    return key, Sample(sample.pair, dataclasses.replace(sample.image, data=b""), stored=stored)


def _after_quality(element, cfg: AnnotateConfig, calibration: dict[str, Any] | None = None):
    """A row's scores judged by the gates `calibration` decided (None: every score may reject at
    the recipe's thresholds), then the row kept with its conversation or rejected."""
    from curation.annotate.calibration import enforced, thresholds
    from curation.annotate.quality import judge
    from curation.annotate.steps import apply_quality

    if isinstance(element, PredictionResult):
        key, sample = element.example
        (result,) = judge([element.inference], cfg.quality, enforced(calibration), thresholds(calibration))
        yield from _route(key, apply_quality(sample, result, cfg), "quality")
    else:
        key, sample = element
        yield from _route(key, apply_quality(sample, None, cfg), "quality")


def _annotate_rows(element) -> int:
    """Rows an element bound for an annotate writer stands for: the input shard it re-reads for the
    image bytes, none (its rows arrive annotated, one element each)."""
    return 0 if isinstance(element, InputShard) else 1


def write_annotated_shard(shard: int, name: str, elements, tar_file, manifest_file):
    """Its input shard and the annotated rows read from it -> a pair shard plus
    `{name}.conversations.jsonl`, whose rows name each image inside the shard's tar
    (`{name}.tar!/{uid}.jpg@offset:size`, curation/core/image_refs.py): pack reads it there by
    range, `curate export internvl` writes the loose files InternVL's own reader wants. The rows
    arrive without image bytes; each image streams from the re-read input shard into the tar. No
    image is stored twice."""
    from curation.annotate.steps import conversation_row
    from curation.core.image_refs import member_ref
    from curation.core.shards import ShardFormatError, write_pair_shard

    sources = [e for e in elements if isinstance(e, InputShard)]
    if len(sources) != 1 or sources[0].number != shard:
        raise ValueError(f"{name}: {len(sources)} input shards reached its writer, expected shard {shard}")
    records = [rec for (_, position), rec in sorted((e for e in elements if not isinstance(e, InputShard)),
                                                    key=lambda e: e[0][1])]
    members: dict[str, tuple[int, int]] = {}
    with opened_shard(sources[0]) as (_, load):
        report = write_pair_shard(shard, name, records, tar_file, manifest_file, load=load, members=members)
    kept = sorted((r for r in records if isinstance(r, Sample)), key=lambda s: s.pair.uid)
    lines, tasks = [], {}
    for sample in kept:
        member = f"{sample.pair.uid}.{sample.image.ext}"
        if member not in members:
            raise ShardFormatError(f"{name}: kept sample {sample.pair.uid} has no {member} in its tar")
        row = conversation_row(sample, member_ref(f"{name}.tar", member, *members[member]))
        if row is None:
            continue
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
        tasks[row["task"]] = tasks.get(row["task"], 0) + 1
        if row.get("ocr_task_skipped"):  # an ocr draw whose text an engine flagged or dropped
            key = f"ocr_skipped_{row['ocr_task_skipped']}"
            tasks[key] = tasks.get(key, 0) + 1
    report.stats = {"conversations": len(lines), **{f"task_{k}": v for k, v in sorted(tasks.items())}}
    return report, {f"{name}.conversations.jsonl": "".join(line + "\n" for line in lines).encode()}


def _decontam_summary(cfg) -> dict[str, Any]:
    """The eval sets as the launcher reads them (a missing file fails here, before any row): the
    index's `decontamination` field; {} when off."""
    if not cfg.enabled:
        return {}
    from curation.mmpr.eval_sets import eval_index

    return {"decontamination": eval_index(cfg).summary()}


def build_annotate(p: beam.Pipeline, cfg: AnnotateConfig, shards: ReadInputShards, num_shards: int,
                   output: str, fingerprint: str, previous: beam.PCollection, sources: list[str],
                   calibration: dict[str, Any] | None = None, calibrate_on_workers: bool = False) -> beam.PCollection:
    """Wire the annotate graph on `p`; returns the PCollection holding the written index.
    `calibration` (calibration.calibrate) decides which scores may reject and goes into the index;
    `calibrate_on_workers`: the probes are scored in the job instead, beside the rows, and the
    rows are judged once the gates are decided.

    One output shard per input shard. Rows travel keyed by (shard, position); image bytes cross no
    shuffle past OCR (only where OCR needs GPU workers do they cross one, to reach them), and each
    writer re-reads its input shard for them."""
    count = p | "NumShards" >> beam.Create([num_shards])
    n = beam.pvalue.AsSingleton(count)
    todo, done = not_done(cfg.shards.prefix), beam.pvalue.AsDict(previous)
    inputs = p | "InputShards" >> shards
    # Output shards are decided first, so a resumed run sends no row of a finished shard to OCR or the LLM.
    assigned = (
        inputs
        | "ReadShards" >> beam.ParDo(ReadShard(cfg.progress, NS, "annotate", origin=True, lazy=not cfg.ocr.enabled))
        | "AssignShard" >> beam.Map(lambda e: (e[0][0], e))
    )
    records = (
        assigned
        | "SkipDoneShards" >> beam.Filter(todo, num_shards=n, done=done)
        | "Records" >> beam.Values()
    )
    upstream = records | "UpstreamRejections" >> beam.Filter(lambda e: isinstance(e[1], Rejection))
    samples = records | "Samples" >> beam.Filter(lambda e: isinstance(e[1], Sample))
    ruled = samples | "HeuristicRules" >> beam.FlatMap(_rules, cfg).with_outputs("rejected", main="kept")
    rejected = [upstream, ruled.rejected]
    kept = ruled.kept
    if cfg.ocr.enabled:
        if cfg.ocr.accelerator:  # the GPU workers are another stage: the images travel to them
            kept = kept | "BeforeOcr" >> beam.Reshuffle()
        ocr = (
            kept
            | "Ocr" >> RunInference(OcrHandler(cfg.ocr, cfg.language))
            | "OcrVerdict" >> beam.FlatMap(_after_ocr, cfg.language).with_outputs("rejected", main="kept")
        )
        rejected.append(ocr.rejected)
        kept = ocr.kept | "DropImages" >> beam.Map(_without_image)
    gates: Any = calibration
    extra_side = None
    if cfg.quality.enabled:
        if calibrate_on_workers:
            c = cfg.quality.calibration
            probes = p | "Calibration" >> beam.Create([None]) | "Probes" >> beam.FlatMap(probe_inputs, c.probes, c.seed)
            kept = (kept, probes) | "RowsAndProbes" >> beam.Flatten()
        kept = (
            kept
            | "BeforeLlm" >> beam.Reshuffle()
            | "QualityScore" >> RunInference(QualityHandler(cfg.quality, cfg.llm))
        )
        if calibrate_on_workers:
            split = kept | "SplitProbes" >> beam.FlatMap(split_probes).with_outputs("probes", main="rows")
            doc = (split.probes
                   | "ProbeResults" >> beam.combiners.ToList()
                   | "DecideGates" >> beam.Map(calibration_doc, cfg, output))
            kept, gates = split.rows, beam.pvalue.AsSingleton(doc)
            extra_side = doc | "CalibrationInIndex" >> beam.Map(lambda d: {"calibration": d})
    quality = kept | "QualityVerdict" >> beam.FlatMap(_after_quality, cfg, gates).with_outputs("rejected", main="kept")
    rejected.append(quality.rejected)
    annotated = (
        (quality.kept, *rejected)
        | "AllRecords" >> beam.Flatten()
        | "BackToShard" >> beam.Map(lambda e: (e[0][0], e))
    )
    reread = inputs | "OneShardEach" >> beam.Map(lambda s: (s.number, s)) | "SkipDoneInputs" >> beam.Filter(
        todo, num_shards=n, done=done)
    keyed = (annotated, reread) | "RowsAndShards" >> beam.Flatten()
    return keyed | "Write" >> WriteShards(output, cfg.shards.prefix, "pairs", fingerprint,
                                          write_annotated_shard, count, previous, NS,
                                          extra={"source": "+".join(sources), "annotate_of": sources,
                                                 **({"calibration": calibration} if calibration else {}),
                                                 **_decontam_summary(cfg.decontamination)},
                                          assigned=assigned, rows_read=shards.rows, rows_of=_annotate_rows,
                                          extra_side=extra_side)


def run_annotate(cfg: AnnotateConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) an annotate job over pair-shard folders; returns the index.
    When there is work and the LLM scores, the rater is measured on the probe set (cached): in the
    job by default, before it with `quality.calibration.run_on: launcher`."""

    def build(p, shards, n, out, fp, prev, sources):
        from curation.annotate.calibration import cached_figures, decided, launcher_figures

        calibration, on_workers = None, False
        if cfg.quality.enabled and cfg.quality.calibration.enabled:
            figures = saved_figures(out, cfg) or cached_figures(cfg)
            if figures is None and cfg.quality.calibration.run_on == "launcher":
                figures = launcher_figures(cfg)
            if figures is None:
                on_workers = True
            else:
                fsio.write_json(state_path(out), figures)
                calibration = decided(figures, cfg)
        return build_annotate(p, cfg, shards, n, out, fp, prev, sources, calibration, on_workers)

    def semantic(c: AnnotateConfig) -> AnnotateConfig:  # where the probes are scored and cached: same output
        import dataclasses

        q = c.quality
        same = dataclasses.replace(q.calibration, run_on="workers", cache_dir=None)
        return dataclasses.replace(c, quality=dataclasses.replace(q, calibration=same))

    return run_pair_shard_job(cfg, inputs, output, beam_args, "annotate", NS, build, one_to_one=True,
                              semantic_of=semantic)
