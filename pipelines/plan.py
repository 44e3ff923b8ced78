"""Plan: metadata files -> the ingest recipe's metadata filters and dedup decisions -> planned units
(declared size -> pixel filters, resize, tiles; caption -> tokens) -> shard by uid, decisions
applied -> pack -> plan shards.

Only wiring: planning lives in curation/plan/planner.py, the metadata steps are ingest's own. No download:
this is the dry run that says what a download + pack of these rows would give, and the graph the
scale simulation (bench/scale.py) drives at 1M rows. Every input row ends in one manifest row.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from curation.plan.config import PlanConfig
from curation.plan.planner import PlanRow
from curation.core.records import Rejection, record_uid
from pipelines.ingest import ReadFile, SplitFile
from pipelines.sharded_output import AssignShard, WriteShards, not_done, run_sharded_job
from pipelines.progress import worker_bar
from pipelines.sharded_input import ReadAndCount

NS = "curate.plan"


class PlanUnits(beam.DoFn):
    """(shard, Pair) -> (shard, PlannedUnit | Rejection); the tokenizer loads once per worker."""

    def __init__(self, cfg: PlanConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        from curation.plan.planner import UnitPlanner

        self.planner = UnitPlanner(self.cfg)
        self.planned = Metrics.counter(NS, "planned")
        self.rejected = Metrics.counter(NS, "plan_rejected")
        self.tokens = Metrics.distribution(NS, "unit_tokens")
        self.bar = worker_bar("plan", "row") if self.cfg.progress else None

    def process(self, element):
        shard, pair = element
        rec = self.planner(pair)
        if isinstance(rec, Rejection):
            self.rejected.inc()
        else:
            self.planned.inc()
            self.tokens.update(rec.tokens)
        if self.bar is not None:
            self.bar.update(1)
        yield shard, rec

    def teardown(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _slim(element):
    """(shard, Rejection) -> (shard, Rejection): only what its manifest row needs crosses the shuffle."""
    shard, rej = element
    return shard, Rejection(PlanRow.of(rej.row), rej.stage, rej.reason, rej.detail)


def build_plan(p: beam.Pipeline, cfg: PlanConfig, files: list[str], output: str, fingerprint: str,
               previous: beam.PCollection, root: str = "") -> beam.PCollection:
    """Wire the plan graph on `p`; returns the PCollection holding the written index.

    Unlike ingest (which must not download a duplicate), the dedup Decisions are not joined back
    onto the rows: they go to the shard writer with them, one shuffle fewer for every row."""
    from curation.plan.planner import write_plan_shard
    from pipelines.dedup.decisions import decision_shard
    from packing.tokens import ChatEncoder
    from pipelines.ingest import MetadataDecisions

    prefix = cfg.shards.prefix
    rows, num_shards, read = p | "Read" >> ReadAndCount(files, ReadFile(cfg.ingest, NS, root), cfg.shards.samples_per_shard,
                                                      SplitFile(cfg.ingest, NS))
    n = beam.pvalue.AsSingleton(num_shards)
    keyed = rows | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=record_uid)
    kept, rejected, decisions = keyed | "Metadata" >> MetadataDecisions(cfg.ingest, NS)
    todo, done = not_done(prefix), beam.pvalue.AsDict(previous)
    planned = kept | "SkipDoneShards" >> beam.Filter(todo, num_shards=n, done=done) | "Plan" >> beam.ParDo(PlanUnits(cfg))
    rejected = rejected | "SkipDoneRejected" >> beam.Filter(todo, num_shards=n, done=done) | "SlimRejected" >> beam.Map(_slim)
    decision_shards = decisions | "DecisionShard" >> beam.Map(decision_shard, num_shards=n)
    decided = decision_shards | "SkipDoneDecisions" >> beam.Filter(todo, num_shards=n, done=done)
    pack = cfg.pack
    write = functools.partial(write_plan_shard, l_max=pack.l_max, t_max=pack.t_max, buffer=pack.buffer)
    return (
        (planned, rejected, decided)
        | "Records" >> beam.Flatten()
        | "Write" >> WriteShards(output, prefix, "plan", fingerprint, write, num_shards, previous, NS,
                                 extra={"source": cfg.ingest.source.name, "l_max": pack.l_max, "t_max": pack.t_max,
                                        "tokenizer": pack.tokenizer, "template": ChatEncoder.resolve(pack.template, pack.tokenizer),
                                        "style": cfg.style,
                                        **({"missing_size": dataclasses.asdict(cfg.missing_size)}
                                           if cfg.missing_size.sizes else {})},
                                 assigned=keyed, decisions=decision_shards, rows_read=read)
    )


def run_plan(cfg: PlanConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a plan job; returns the index document."""
    from curation.core.rows import input_root
    from packing.tokenizer import load_tokenizer

    # Download knobs and progress bars do not change a plan: not in the fingerprint.
    ingest = dataclasses.replace(cfg.ingest, progress=True, stage_images=True, staging_bundle_mb=64.0, download=type(cfg.ingest.download)())
    semantic = dataclasses.replace(cfg, progress=True, ingest=ingest, pack=dataclasses.replace(cfg.pack, progress=True))
    return run_sharded_job(inputs, output, semantic,
                           lambda p, files, out, fp, prev: build_plan(p, cfg, files, out, fp, prev, input_root(inputs)), NS, beam_args,
                           preflight=lambda: load_tokenizer(cfg.pack.tokenizer))
