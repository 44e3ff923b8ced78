"""The job graph a runner receives does not grow with the run: input shard lists and resume state
are read inside the pipeline (`ReadInputShards`, `DoneShards`), so a LAION-5B-sized dedup graph
is the size of a small one (bench/graph_size.py measures every stage)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_dedup_graph_is_the_same_size_at_ten_shards_and_at_585000():
    sys.path.insert(0, str(ROOT))
    from bench.graph_size import _graph_bytes, stages

    files = ["gs://bucket/part-0.parquet"]
    small, _ = _graph_bytes(stages(10, files, ROOT)["dedup"])
    large, _ = _graph_bytes(stages(585_000, files, ROOT)["dedup"])
    # a few bytes move with the run (the shard count's digits, pickler ids): nothing per shard, which
    # at 585,000 shards was 76 MB (bench/README.md)
    assert abs(large - small) < 1024 and large < 1_000_000


def test_done_shards_are_read_on_a_worker_and_skipped(tmp_path):
    """A previous run's markers, listed inside the pipeline: the skip filter sees them as a side
    input, the index writer gets their reports."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from curation.core.shards import write_pair_shard
    from pipelines.sharded_output import DoneShards, not_done, write_one_shard

    out = tmp_path / "out"
    report = write_one_shard(str(out), "x", 1, 3, [], write_pair_shard, "test")
    with beam.Pipeline() as p:
        done = p | DoneShards(str(out), "fp")
        kept = (p | beam.Create([(0, "a"), (1, "b"), (2, "c")])
                | beam.Filter(not_done("x"), num_shards=3, done=beam.pvalue.AsDict(done)))
        assert_that(kept, equal_to([(0, "a"), (2, "c")]), label="skips")
        assert_that(done | beam.MapTuple(lambda name, r: (name, r.rows)), equal_to([(report.name, 0)]), label="reports")
