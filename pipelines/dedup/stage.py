"""Dedup: pair shards -> exact (URL, caption, image bytes) and near-duplicate (MinHash LSH on captions,
bit-sampling LSH on image pHashes) decisions -> the same records re-sharded, duplicates rejected.

Only wiring (the logic: filters/dedup/). No step holds all keys or signatures in one process: exact
groups (pipelines/dedup/exact.py), caption buckets and image table partitions (near.py) are
GroupByKeys, components (components.py) are one union-find only while the edge list fits a worker
(`components.max_local_edges`), else rounds of large-star / small-star. `DedupDecisions`
(decisions.py) is reused by ingest and plan to dedup metadata before download.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from curation.core.records import record_uid
from curation.core.shards import write_pair_shard
from filters.dedup import buckets
from filters.dedup.config import DedupConfig
from filters.dedup.keys import Row, apply_decisions, origin_row
from pipelines.dedup.decisions import DedupDecisions, decision_shard
from pipelines.sharded_output import AssignShard, WriteShards, not_done, run_pair_shard_job
from pipelines.sharded_input import ReadInputShards, ReadShard

NS = "curate.dedup"

# ---------------------------------------------------------------------------------------------
# The dedup stage over pair shards


def write_dedup_shard(shard: int, name: str, elements, tar_file, manifest_file):
    """Rows and the Decisions that hash to this shard -> a pair shard with duplicates rejected."""
    return write_pair_shard(shard, name, apply_decisions(elements), tar_file, manifest_file)


def _row_uid(row: Row) -> str:
    return record_uid(row.record)


def build_dedup(p: beam.Pipeline, cfg: DedupConfig, shards: ReadInputShards, num_shards: int, output: str,
                fingerprint: str, previous: beam.PCollection, sources: list[str]) -> beam.PCollection:
    """Wire the dedup graph on `p`; returns the PCollection holding the written index."""
    prefix = cfg.shards.prefix
    # Each row tagged with where it was read (input, shard, position): rows repeated across inputs
    # stay distinct nodes, and a Decision removes only the copy it names.
    rows = (
        p
        | "InputShards" >> shards
        | "ReadShards" >> beam.ParDo(ReadShard(cfg.progress, NS, "dedup", origin=True))
        | "Rows" >> beam.Map(origin_row, cfg.score_field)
    )
    decisions = (
        rows
        | "DupKeys" >> beam.FlatMap(buckets.sample_dup_keys, cfg.score_field)
        | "Dedup" >> DedupDecisions(cfg, NS)
    )
    count = p | "NumShards" >> beam.Create([num_shards])
    n = beam.pvalue.AsSingleton(count)
    todo, done = not_done(prefix), beam.pvalue.AsDict(previous)
    assigned = rows | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=_row_uid)
    decided = decisions | "DecisionShard" >> beam.Map(decision_shard, num_shards=n)
    keyed = (
        (assigned, decided)
        | "RowsAndDecisions" >> beam.Flatten()
        | "SkipDoneShards" >> beam.Filter(todo, num_shards=n, done=done)
    )
    return keyed | "Write" >> WriteShards(output, prefix, "pairs", fingerprint, write_dedup_shard, count, previous, NS,
                                          extra={"source": "+".join(sources), "dedup_of": sources},
                                          assigned=assigned, decisions=decided,
                                          rows_read=shards.rows)


def run_dedup(cfg: DedupConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a dedup job over pair-shard folders; returns the index."""
    return run_pair_shard_job(
        cfg, inputs, output, beam_args, "dedup", NS,
        lambda p, shards, n, out, fp, prev, sources: build_dedup(p, cfg, shards, n, out, fp, prev, sources))
