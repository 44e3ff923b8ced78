"""Translate: conversation jsonl -> detect each row's language -> translate every turn into its
recipe pair's target (an LLM backend, RunInference) -> check -> translated conversation shards.

Only wiring: reading, detection, the prompt, the checks and the shard format live in
curation/annotate/translate.py, the backends in curation/annotate/llm.py (loaded once per worker,
batched, behind a Reshuffle, carrying the accelerator hint). Every input row ends in one manifest
row: kept with its translated row, or rejected with a reason.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from curation.annotate.translate import TranslateConfig, TranslationItem
from pipelines.model_handlers import BatchedHandler
from pipelines.sharded_output import AssignShard, WriteShards, not_done, run_sharded_job
from pipelines.progress import worker_bar
from pipelines.sharded_input import ReadAndCount

NS = "curate.translate"


class ReadRows(beam.DoFn):
    """jsonl / json / parquet path -> one TranslationItem per row (rows that cannot be used rejected)."""

    def __init__(self, cfg: TranslateConfig, root: str) -> None:
        self.cfg = cfg
        self.root = root  # input files are named relative to it (rows.input_root)

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        from curation.annotate.translate import item_of
        from curation.core.conversations import read_conversations
        from curation.core.rows import relative_name

        inputs = Metrics.counter(NS, "inputs")
        with FileSystems.open(path) as f:
            for rec in read_conversations(f, path, self.cfg.format, relative_name(path, self.root), self.cfg.uid):
                inputs.inc()
                yield item_of(rec)


class TranslateHandler(BatchedHandler):
    """Items -> PredictionResult(item, the same item translated and checked), one backend per worker."""

    def __init__(self, cfg: TranslateConfig) -> None:
        super().__init__(cfg.batch_size, cfg.llm.accelerator, f"{NS}.llm")
        self.cfg = cfg

    def load_model(self):
        from curation.annotate.llm import build_backend
        from curation.annotate.translate import Translator

        self.bar = worker_bar("translate", "row") if self.cfg.progress else None
        return Translator(self.cfg, build_backend(self.cfg.llm))

    def run_inference(self, batch: Sequence[TranslationItem], model, inference_args=None) -> Iterable[PredictionResult]:
        out = model.translate(batch)  # its LLM requests are counted per shard (the index's stats)
        if getattr(self, "bar", None) is not None:
            self.bar.update(len(batch))
        return [PredictionResult(x, y, model.label) for x, y in zip(batch, out)]


def _route(item: TranslationItem, step: str):
    """Finished items (rejected) on `done`, counted; planned ones on the main output."""
    if item.reason is None:
        yield item
        return
    Metrics.counter(NS, f"{step}_{item.reason}").inc()
    yield beam.pvalue.TaggedOutput("done", item)


def _plan(item: TranslationItem, cfg: TranslateConfig):
    from curation.annotate.translate import plan

    yield from _route(plan(item, cfg), "detect")


def _translated(pred: PredictionResult) -> TranslationItem:
    return pred.inference


def uid_of(item: TranslationItem) -> str:
    return item.uid


def build_translate(p: beam.Pipeline, cfg: TranslateConfig, files: list[str], root: str, output: str,
                    fingerprint: str, previous: beam.PCollection) -> beam.PCollection:
    """Wire the translate graph on `p`; returns the PCollection holding the written index."""
    from curation.annotate.translate import write_translate_shard

    prefix = cfg.shards.prefix
    items, num_shards, read = p | "Read" >> ReadAndCount(files, ReadRows(cfg, root), cfg.shards.samples_per_shard)
    n = beam.pvalue.AsSingleton(num_shards)
    # Shards are decided first, so a resumed run skips the rows of finished shards before any model runs.
    assigned = items | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=uid_of)
    planned = (assigned
               | "SkipDoneShards" >> beam.Filter(not_done(prefix), num_shards=n, done=beam.pvalue.AsDict(previous))
               | "Items" >> beam.Values()
               | "DetectLanguage" >> beam.FlatMap(_plan, cfg).with_outputs("done", main="todo"))
    translated = (planned.todo
                  | "BeforeTranslate" >> beam.Reshuffle()
                  | "Translate" >> RunInference(TranslateHandler(cfg))
                  | "Checked" >> beam.Map(_translated))
    return (
        (planned.done, translated)
        | "AllItems" >> beam.Flatten()
        | "ShardAgain" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=uid_of)
        | "Write" >> WriteShards(output, prefix, "translate", fingerprint, write_translate_shard, num_shards, previous,
                                 NS, extra={"llm": f"{cfg.llm.backend}:{cfg.llm.model}",
                                            "pairs": [list(pair) for pair in cfg.pairs]},
                                 assigned=assigned, rows_read=read)
    )


def run_translate(cfg: TranslateConfig, inputs: list[str], output: str,
                  beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a translate job over conversation files; returns the index."""
    import dataclasses

    from curation.core.rows import input_root

    semantic = dataclasses.replace(cfg, progress=True)
    build = functools.partial(build_translate, cfg=cfg, root=input_root(inputs))
    return run_sharded_job(inputs, output, semantic,
                           lambda p, files, out, fp, prev: build(p, files=files, output=out, fingerprint=fp,
                                                                 previous=prev), NS, beam_args)
