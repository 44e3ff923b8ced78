"""The dedup cascade: exact keys, then near duplicates among the survivors, then components ->
one Decision per rejected node (reused by ingest and plan on metadata alone)."""

from __future__ import annotations

import apache_beam as beam

from curation.core.shards import shard_of
from filters.dedup import buckets
from filters.dedup.config import DedupConfig
from filters.dedup.keys import Decision
from pipelines.dedup.exact import ExactDedup
from pipelines.dedup.near import NearDuplicates


class DedupDecisions(beam.PTransform):
    """DupKeys -> Decisions for every duplicate, in the cascade URL -> caption -> image bytes ->
    near caption -> near image; each step sees only the previous steps' survivors."""

    def __init__(self, cfg: DedupConfig, namespace: str, images: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.namespace = namespace
        self.images = images

    def expand(self, keys):
        cfg = self.cfg
        decisions = []
        exact, near = buckets.cascade(cfg, self.images)
        for kind in exact:
            keys, dups = keys | f"Exact{kind.title()}" >> ExactDedup(kind, self.namespace)
            decisions.append(dups)
        for i, kind in enumerate(near):
            found = keys | f"Near{kind.title()}" >> NearDuplicates(kind, cfg, self.namespace)
            decisions.append(found)
            if i + 1 < len(near):
                keys = (
                    {"keys": keys | f"KeyByNode{kind.title()}" >> beam.Map(lambda k: (k.node, k)),
                     "decisions": found | f"DecisionsByNode{kind.title()}" >> beam.Map(lambda d: (d.node, d))}
                    | f"Drop{kind.title()}Dups" >> beam.CoGroupByKey()
                    | f"Survivors{kind.title()}" >> beam.FlatMap(buckets.undecided)
                )
        if not decisions:
            return keys.pipeline | "NoDecisions" >> beam.Create([])
        return self._resolve(decisions)

    @staticmethod
    def _resolve(steps: list) -> beam.PCollection:
        """Per-step decisions in cascade order -> all of them, each naming the record kept in the end:
        a step's representative survived that step but may be removed by a later one, so from the
        last step back each step's decisions join (by representative) the resolved later ones (by
        node)."""
        resolved = steps[-1]
        for i in range(len(steps) - 2, -1, -1):
            chained = (
                {"dups": steps[i] | f"ByRep{i}" >> beam.Map(lambda d: (d.rep, d)),
                 "later": resolved | f"ByNode{i}" >> beam.Map(lambda d: (d.node, d))}
                | f"JoinLater{i}" >> beam.CoGroupByKey()
                | f"ResolveChains{i}" >> beam.FlatMap(buckets.resolve_chains)
            )
            resolved = (chained, resolved) | f"Resolved{i}" >> beam.Flatten()
        return resolved


def decision_shard(d: Decision, num_shards: int):
    """A Decision keyed by the shard its record hashes to, so the shard writer applies it."""
    return shard_of(d.uid, num_shards), d
