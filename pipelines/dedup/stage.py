"""Dedup: pair shards -> exact (URL, caption, image bytes, uid) and near-duplicate (MinHash LSH on
captions, bit-sampling LSH on image pHashes) decisions -> one output shard per input shard, its
duplicates rejected.

Only wiring (the logic: filters/dedup/). Keys and decisions cross the shuffles, never image bytes:
the first read takes only what dedup keys on (`ReadShard(lazy=True)`), and each output shard's
writer re-reads its own input shard and streams it out with that shard's decisions applied, as
TFDS and datatrove rewrite shards. No step holds all keys or signatures in one process: exact
groups (pipelines/dedup/exact.py), caption buckets and image table partitions (near.py) are
GroupByKeys, components (components.py) are one union-find only while the edge list fits a worker
(`components.max_local_edges`), else rounds of large-star / small-star. `DedupDecisions`
(decisions.py) is reused by ingest and plan to dedup metadata before download.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from filters.dedup import buckets
from filters.dedup.config import DedupConfig
from filters.dedup.keys import Decision, Row, apply_decisions, node_home, origin_row
from pipelines.dedup.decisions import DedupDecisions
from pipelines.sharded_input import InputShard, ReadInputShards, ReadShard, opened_shard, shard_rows
from pipelines.sharded_output import WriteShards, not_done, run_pair_shard_job

NS = "curate.dedup"

# ---------------------------------------------------------------------------------------------
# The dedup stage over pair shards


def dedup_shard_writer(score_field: str | None):
    """The shard writer: (its InputShard, the Decisions whose rows live there) -> the input shard
    re-read and written out in node order, each decided row a `dedup` Rejection naming the kept
    representative, images streamed from the spill one at a time."""
    from curation.core.records import record_pair
    from curation.core.shards import write_pair_shard
    from filters.dedup.keys import pair_node, record_score

    def write(shard: int, name: str, elements, tar_file, manifest_file):
        sources = [e for e in elements if isinstance(e, InputShard)]
        decisions = [e for e in elements if isinstance(e, Decision)]
        if len(sources) != 1 or sources[0].number != shard:
            raise ValueError(f"{name}: {len(sources)} input shards reached its writer, expected shard {shard}")
        with opened_shard(sources[0]) as (records, load):
            rows = [Row(pair_node(record_pair(rec), score_field, (shard, position), record_score(rec, score_field)), rec)
                    for position, rec in enumerate(records)]
            return write_pair_shard(shard, name, apply_decisions(rows + decisions), tar_file, manifest_file,
                                    load=load)

    return write


def build_dedup(p: beam.Pipeline, cfg: DedupConfig, shards: ReadInputShards, num_shards: int, output: str,
                fingerprint: str, previous: beam.PCollection, sources: list[str]) -> beam.PCollection:
    """Wire the dedup graph on `p`; returns the PCollection holding the written index."""
    prefix = cfg.shards.prefix
    inputs = p | "InputShards" >> shards
    # Each row tagged with where it was read (shard across all inputs, position): rows repeated
    # across inputs stay distinct nodes, and a Decision names the one shard that removes its row.
    rows = (
        inputs
        | "ReadShards" >> beam.ParDo(ReadShard(cfg.progress, NS, "dedup", origin=True, lazy=True))
        | "Rows" >> beam.Map(origin_row, cfg.score_field)
    )
    embeddings = None
    if cfg.semantic_image.enabled:  # the CLIP image embeddings ingest stored (pixels.clip.store_embedding)
        from filters.dedup.semantic import row_embedding

        embeddings = rows | "StoredEmbeddings" >> beam.FlatMap(row_embedding)
    decisions = (
        rows
        | "DupKeys" >> beam.FlatMap(buckets.sample_dup_keys, cfg.score_field)
        | "Dedup" >> DedupDecisions(cfg, NS, unique_uids=True, embeddings=embeddings)
    )
    count = p | "NumShards" >> beam.Create([num_shards])
    n = beam.pvalue.AsSingleton(count)
    todo, done = not_done(prefix), beam.pvalue.AsDict(previous)
    assigned = inputs | "OneShardEach" >> beam.Map(lambda s: (s.number, s))
    decided = decisions | "DecisionShard" >> beam.Map(lambda d: (node_home(d.node), d))
    keyed = (
        (assigned, decided)
        | "ShardsAndDecisions" >> beam.Flatten()
        | "SkipDoneShards" >> beam.Filter(todo, num_shards=n, done=done)
    )
    return keyed | "Write" >> WriteShards(output, prefix, "pairs", fingerprint, dedup_shard_writer(cfg.score_field),
                                          count, previous, NS,
                                          extra={"source": "+".join(sources), "dedup_of": sources},
                                          assigned=assigned, decisions=decided, rows_read=shards.rows,
                                          rows_of=shard_rows)


def run_dedup(cfg: DedupConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a dedup job over pair-shard folders; returns the index."""
    return run_pair_shard_job(
        cfg, inputs, output, beam_args, "dedup", NS,
        lambda p, shards, n, out, fp, prev, sources: build_dedup(p, cfg, shards, n, out, fp, prev, sources),
        one_to_one=True)
