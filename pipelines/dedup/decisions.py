"""The dedup cascade: exact keys, then near duplicates among the survivors, then components ->
one Decision per rejected node (reused by ingest and plan on metadata alone)."""

from __future__ import annotations

import apache_beam as beam

from curation.core.shards import shard_of
from filters.dedup import buckets
from filters.dedup.config import DedupConfig
from filters.dedup.keys import Decision, DupKey
from pipelines.dedup.exact import ExactDedup
from pipelines.dedup.near import NearDuplicates


class DedupDecisions(beam.PTransform):
    """DupKeys -> Decisions for every duplicate, in the cascade URL -> caption -> image bytes ->
    (uid, with `unique_uids`) -> near caption -> near image; each step sees only the previous
    steps' survivors."""

    def __init__(self, cfg: DedupConfig, namespace: str, images: bool = True, unique_uids: bool = False,
                 embeddings=None) -> None:
        super().__init__()
        self.cfg = cfg
        self.namespace = namespace
        self.images = images
        self.unique_uids = unique_uids
        self.embeddings = embeddings  # (node, stored CLIP embedding), for semantic_image

    def expand(self, keys):
        cfg = self.cfg
        decisions = []
        exact, near = buckets.cascade(cfg, self.images)
        near = [k for k in near if k != "semantic_image" or self.embeddings is not None]  # no embeddings given: no step
        if self.unique_uids:  # rows that share a uid and nothing else: their writers are apart
            exact = [*exact, "uid"]
        steps = [("exact", k) for k in exact] + [("near", k) for k in near]

        def slimmed(keys, at: int):  # only the fields the steps from `at` on read go further
            return keys | f"Slim{at}" >> beam.Map(buckets.slim, buckets.fields_needed(steps[at:]))

        keys = slimmed(keys, 0)
        for i, kind in enumerate(exact):
            keep = buckets.fields_needed(steps[i + 1:])
            keys, dups = keys | f"Exact{kind.title()}" >> ExactDedup(kind, self.namespace, keep)
            decisions.append(dups)
        for i, kind in enumerate(near):
            found = keys | f"Near{kind.title()}" >> self._near(kind)
            decisions.append(found)
            if i + 1 < len(near):
                keys = slimmed(keys, len(exact) + i + 1)
                keys = (
                    {"keys": keys | f"KeyByNode{kind.title()}" >> beam.Map(lambda k: (k.node, tuple(k))),
                     "decisions": found | f"DecisionsByNode{kind.title()}" >> beam.Map(lambda d: (d.node, d))}
                    | f"Drop{kind.title()}Dups" >> beam.CoGroupByKey()
                    | f"Survivors{kind.title()}" >> beam.FlatMap(buckets.undecided)
                    | f"Keys{kind.title()}" >> beam.Map(DupKey._make)  # tuples in the shuffle (exact.py)
                )
        if not decisions:
            return keys.pipeline | "NoDecisions" >> beam.Create([])
        return self._resolve(decisions)

    def _near(self, kind: str) -> beam.PTransform:
        """One near-duplicate step over the surviving DupKeys."""
        if not kind.startswith("semantic_"):
            return NearDuplicates(kind, self.cfg, self.namespace)
        from pipelines.dedup.semantic import CaptionVectors, ImageVectors, SemanticDuplicates

        what = kind.removeprefix("semantic_")
        vectors = (CaptionVectors(self.cfg.semantic_caption, self.namespace) if what == "caption"
                   else ImageVectors(self.embeddings, self.namespace))
        return _Then(vectors, SemanticDuplicates(what, self.cfg, self.namespace))

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


class _Then(beam.PTransform):
    """Two transforms in a row, as one step of the cascade."""

    def __init__(self, first: beam.PTransform, then: beam.PTransform) -> None:
        super().__init__()
        self.first = first
        self.then = then

    def expand(self, pcoll):
        return pcoll | "Vectors" >> self.first | "Semantic" >> self.then


def decision_shard(d: Decision, num_shards: int):
    """A Decision keyed by the shard its record's uid hashes to (plan), so that shard's writer applies it."""
    return shard_of(d.uid, num_shards), d
