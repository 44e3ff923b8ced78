"""MMPR: question jsonl -> load images -> sample N chain-of-thought responses (policy) -> check
answers -> correctness pairs -> Dropout NTP continuations (policy, no image) -> MPO jsonl shards.

Only wiring: parsing, judging, pairing and the shard format live in curation/mmpr*.py, the models
in curation/mmpr/policy.py. Both model steps are RunInference ModelHandlers (loaded once per worker,
batched, behind a Reshuffle, carrying the accelerator hint). Every input row ends in one manifest
row: kept with its pairs, or rejected with a reason.
"""

from __future__ import annotations

import posixpath
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from curation.mmpr.tasks import MmprTask
from curation.mmpr.config import MmprConfig, PolicyConfig
from pipelines import fsio
from pipelines.annotate import _decontam_summary
from pipelines.model_handlers import BatchedHandler, record_load
from pipelines.sharded_output import AssignShard, WriteShards, not_done, run_sharded_job
from pipelines.progress import worker_bar
from pipelines.sharded_input import ReadAndCount

NS = "curate.mmpr"


class ReadTasks(beam.DoFn):
    """jsonl path -> one MmprTask per row, its images read and header-checked (or rejected)."""

    def __init__(self, cfg: MmprConfig) -> None:
        self.cfg = cfg

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        from curation.mmpr.tasks import load_images
        from curation.mmpr.shards import read_tasks

        root = self.cfg.images.image_root or posixpath.dirname(path)
        inputs = Metrics.counter(NS, "inputs")
        decontam = self.cfg.decontamination
        with FileSystems.open(path) as f:
            for task in read_tasks(f, path, self.cfg.source):
                inputs.inc()
                held: list[bytes] | None = [] if decontam.enabled and decontam.phash_bits >= 0 else None
                task = load_images(task, root, self.cfg.images, fsio.read_image, held)
                yield decontaminate(task, decontam, held) if decontam.enabled and not task.reason else task


def decontaminate(task: MmprTask, cfg, images: list[bytes] | None = None) -> MmprTask:
    """A question, option or answer sharing a long n-gram with an eval set, or an image near an
    eval image, rejects the question `eval_contaminated` before any model runs. Texts first; the
    images (`images`: the bytes the read step holds, else read again) are hashed only when the
    texts are clean (one that does not decode is rejected `decode_error`)."""
    from curation.mmpr.eval_sets import DECODE_ERRORS, eval_index, image_phash, item_texts
    from curation.mmpr.tasks import reread_images

    index = eval_index(cfg)  # built once per worker process
    hit = index.hit(item_texts(task.item))
    if hit is None and cfg.phash_bits >= 0 and task.image_paths:
        if images is None or len(images) != len(task.image_paths):
            images = reread_images(task, fsio.read_image, "read")
            if images is None:
                return task
        try:
            hit = index.hit([], [image_phash(data) for data in images])
        except DECODE_ERRORS as err:
            return task.reject("read", "decode_error", f"{type(err).__name__}: {err}"[:300])
    return task if hit is None else task.reject("read", "eval_contaminated", hit)


class PolicyHandler(BatchedHandler):
    """Tasks -> PredictionResult(task, responses): `sample` asks each question N times (all its
    samples in one batch), `continue` continues each Dropout NTP prefix once."""

    def __init__(self, policy: PolicyConfig, cfg: MmprConfig, mode: str) -> None:
        super().__init__(policy.batch_size, policy.accelerator, f"{NS}.{mode}", policy.share_across_processes)
        self.policy = policy
        self.cfg = cfg
        self.mode = mode

    def load_model(self):
        from curation.mmpr.policy import build_policy

        self.bar = worker_bar(f"mmpr {self.mode}", "question") if self.cfg.progress else None
        self.cut_tokenizer = None
        if self.mode == "continue" and self.cfg.dropout_ntp.tokenizer:  # Dropout NTP cuts by the policy's tokens
            from packing.tokenizer import load_tokenizer

            self.cut_tokenizer = load_tokenizer(self.cfg.dropout_ntp.tokenizer)
        record_load(f"mmpr-{self.mode}")
        return self.served(build_policy(self.policy))

    def run_inference(self, batch: Sequence[MmprTask], model, inference_args=None) -> Iterable[PredictionResult]:
        from curation.mmpr.tasks import continuation_request, reread_images, sample_requests

        info = model.info()
        if self.mode == "sample":  # a question whose image cannot be read again is rejected, with no request
            requests = [sample_requests(t, self.cfg, info["per_request_seed"], images) if images is not None else []
                        for t, images in ((t, reread_images(t, fsio.read_image, "sample")) for t in batch)]
            sampling = self.cfg.sampling
        else:
            wants = self.cfg.dropout_ntp.with_image
            requests = [[continuation_request(t, self.cfg, info["per_request_seed"], getattr(self, "cut_tokenizer", None),
                                              images)] if images is not None else []
                        for t, images in ((t, reread_images(t, fsio.read_image, "continue") if wants else ())
                                          for t in batch)]
            sampling = self.cfg.continue_sampling
        flat = model.generate([r for rs in requests for r in rs], sampling)
        out, start = [], 0
        for task, rs in zip(batch, requests):
            out.append(PredictionResult(task, flat[start:start + len(rs)], info["label"]))
            start += len(rs)
        if getattr(self, "bar", None) is not None:
            self.bar.update(len(batch))
        return out


def _route(task: MmprTask, step: str):
    """Finished tasks (kept or rejected) on `done`, counted; Dropout NTP ones waiting on the main output."""
    if task.chosen is not None and not task.reason:
        yield task
        return
    Metrics.counter(NS, f"{step}_{'kept' if task.pairs else task.reason}").inc()
    yield beam.pvalue.TaggedOutput("done", task)


def _needs_policy(task: MmprTask):
    yield from _route(task, "read") if task.reason else [task]


def _after_sampling(pred: PredictionResult, cfg: MmprConfig):
    from curation.mmpr.tasks import after_sampling, finish

    task, responses = pred.example, pred.inference
    task = after_sampling(task, responses, cfg, pred.model_id) if responses else finish(task)
    yield from _route(task, "sample")


def _after_continuation(pred: PredictionResult, cfg: MmprConfig):
    from curation.mmpr.tasks import after_continuation

    if not pred.inference:  # its image could not be read again: rejected, no request sent
        yield from _route(pred.example, "continue")
        return
    yield from _route(after_continuation(pred.example, pred.inference[0], cfg, pred.model_id), "continue")


def uid_of(task: MmprTask) -> str:
    return task.uid


def write_shard(shard: int, name: str, records, tar_file, manifest_file):
    """One shard; each kept question's images are read again (by path, or from its row) as they are
    streamed into the tar (one that cannot be is rejected there)."""
    from curation.mmpr.shards import write_mmpr_shard

    return write_mmpr_shard(shard, name, records, tar_file, manifest_file, fsio.read_image)


def build_mmpr(p: beam.Pipeline, cfg: MmprConfig, files: list[str], output: str, fingerprint: str,
               previous: beam.PCollection) -> beam.PCollection:
    """Wire the MMPR graph on `p`; returns the PCollection holding the written index."""
    prefix = cfg.shards.prefix
    tasks, num_shards, rows_read = p | "Read" >> ReadAndCount(files, ReadTasks(cfg), cfg.shards.samples_per_shard)
    n = beam.pvalue.AsSingleton(num_shards)
    # Shards are decided first, so a resumed run skips the questions of finished shards before any model runs.
    assigned = tasks | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=uid_of)
    keyed = assigned | "SkipDoneShards" >> beam.Filter(not_done(prefix), num_shards=n, done=beam.pvalue.AsDict(previous))
    read = (keyed
            | "Tasks" >> beam.Values()
            | "ReadVerdict" >> beam.FlatMap(_needs_policy).with_outputs("done", main="todo"))
    sampled = (read.todo
               | "BeforeSample" >> beam.Reshuffle()
               | "Sample" >> RunInference(PolicyHandler(cfg.policy, cfg, "sample"))
               | "JudgeAndPair" >> beam.FlatMap(_after_sampling, cfg).with_outputs("done", main="todo"))
    continued = (sampled.todo
                 | "BeforeContinue" >> beam.Reshuffle()
                 | "Continue" >> RunInference(PolicyHandler(cfg.continuation_policy, cfg, "continue"))
                 | "DropoutPair" >> beam.FlatMap(_after_continuation, cfg).with_outputs("done", main="todo"))
    return (
        (read.done, sampled.done, continued.done)
        | "AllTasks" >> beam.Flatten()
        | "ShardAgain" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=uid_of)
        | "Write" >> WriteShards(output, prefix, "mmpr", fingerprint, write_shard, num_shards, previous, NS,
                                 extra={"policy": cfg.policy.label, "continuation": cfg.continuation_policy.label,
                                        "style": cfg.prompt.style, **_decontam_summary(cfg.decontamination)},
                                 assigned=assigned, rows_read=rows_read)
    )


def run_mmpr(cfg: MmprConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) an MMPR job over question jsonl files; returns the index."""
    import dataclasses

    semantic = dataclasses.replace(cfg, progress=True)
    return run_sharded_job(inputs, output, semantic,
                           lambda p, files, out, fp, prev: build_mmpr(p, cfg, files, out, fp, prev), NS, beam_args)
