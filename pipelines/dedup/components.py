"""Connected components over dedup edges: one union-find where the edges fit a worker, else
large-star / small-star rounds (the steps: filters/dedup/components.py)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from filters.dedup import components
from filters.dedup.components import normalize_edge
from filters.dedup.config import ComponentsConfig
from pipelines.progress import group_size


def _star_step(item, namespace: str, step):
    """One large-star or small-star step on a node's group, its size recorded."""
    size, edges = step(item)
    group_size(namespace, "star", size)
    yield from edges


def _local_labels(item, namespace: str):
    """All edges on one worker (at most `max_local_edges`) -> (node, component minimum) for every
    non-minimum node."""
    edges = list(item[1])
    group_size(namespace, "union_find_edges", len(edges))
    labels, count = components.local_labels(edges)
    Metrics.counter(namespace, "components").inc(count)
    yield from labels


def _settled(item):
    """CoGroup per node of its parents and its children -> its label, or the node if unsettled."""
    node, groups = item
    settled, label = components.settle(node, list(groups["parents"]), list(groups["children"]))
    if not settled:
        yield beam.pvalue.TaggedOutput("unsettled", node)
    elif label is not None:
        yield label


class ConnectedComponents(beam.PTransform):
    """Edges (any direction, duplicates allowed) -> (node, component minimum) for non-minimum nodes.

    Small edge lists: one union-find. Large ones: `rounds` rounds of large-star then small-star,
    after which every component should be a star on its minimum; if one is not, the remaining
    (contracted) edges finish in one union-find and `components_unconverged` counts it."""

    def __init__(self, cfg: ComponentsConfig, namespace: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.namespace = namespace

    def _local(self, edges, label: str):
        return (
            edges
            | f"{label}KeyAll" >> beam.Map(lambda e: (None, e))
            | f"{label}GatherAll" >> beam.GroupByKey()
            | f"{label}UnionFind" >> beam.FlatMap(_local_labels, self.namespace)
        )

    def expand(self, edges):
        limit = self.cfg.max_local_edges
        edges = (
            edges
            | "Normalize" >> beam.Map(lambda e: normalize_edge(*e))
            | "DistinctEdges" >> beam.Distinct()
        )
        count = beam.pvalue.AsSingleton(edges | "CountEdges" >> beam.combiners.Count.Globally())
        local = self._local(edges | "FitsAWorker" >> beam.Filter(components.fits_a_worker, count=count, limit=limit), "Local")
        big = edges | "TooBigForAWorker" >> beam.Filter(components.too_big_for_a_worker, count=count, limit=limit)
        for i in range(self.cfg.rounds):
            big = (
                big
                | f"LargeStarBoth{i}" >> beam.FlatMap(components.both_directions)
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.FlatMap(_star_step, self.namespace, components.large_star_step)
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.FlatMap(_star_step, self.namespace, components.small_star_step)
                | f"DistinctRound{i}" >> beam.Distinct()  # the steps stream their groups, repeats and all
            )
        settled = (
            {"parents": big, "children": big | "ByParent" >> beam.Map(lambda e: (e[1], e[0]))}
            | "PerNode" >> beam.CoGroupByKey()
            | "Settled" >> beam.FlatMap(_settled).with_outputs("unsettled", main="labels")
        )
        unsettled = beam.pvalue.AsSingleton(settled.unsettled | "CountUnsettled" >> beam.combiners.Count.Globally())
        converged = settled.labels | "Converged" >> beam.Filter(components.converged, unsettled=unsettled)
        leftover = big | "Unconverged" >> beam.Filter(components.not_converged, unsettled=unsettled)
        unsettled.pvalue | "CountUnconverged" >> beam.Map(
            lambda n, ns: Metrics.counter(ns, "components_unconverged").inc(int(n > 0)), self.namespace)
        finished = self._local(leftover, "Finish")
        return (local, converged, finished) | "Labels" >> beam.Flatten()
