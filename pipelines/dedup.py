"""Dedup: pair shards -> exact (URL, caption, image bytes) and near-duplicate (MinHash LSH on captions,
bit-sampling LSH on image pHashes) decisions -> the same records re-sharded, duplicates rejected.

Only wiring: keys and edges live in filters/dedup.py, exact groups, the hot-bucket rule and caption
bucket memberships in filters/buckets.py, the packed image table partitions in filters/image_lsh.py,
component steps and their routing in filters/components.py. No step holds all keys or signatures in
one process: exact groups, caption buckets and image table partitions are GroupByKeys,
components are one union-find only while the edge list fits a worker (`components.max_local_edges`),
else rounds of large-star / small-star. `DedupDecisions` is reused by ingest to dedup metadata before download.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from filters.dedup_config import ComponentsConfig, DedupConfig
from curation.core.records import record_uid
from curation.core.shards import shard_of, write_pair_shard
from filters import buckets, components, hot_captions, image_lsh
from filters.dedup import EXACT_KEYS, Decision, DupKey, Row, apply_decisions, member_id, normalize_edge, origin_row
from pipelines.sharded_output import (AssignShard, ReadInputShards, ReadShard, WriteShards, group_size, not_done,
                                      run_pair_shard_job)

NS = "curate.dedup"


# ---------------------------------------------------------------------------------------------
# Exact keys


def _key_or_pass(key: DupKey, kind: str):
    value = EXACT_KEYS[kind][1](key)
    yield beam.pvalue.TaggedOutput("unkeyed", key) if value is None else (value, key)


def _split_exact(item, reason: str, namespace: str):
    """(exact key, DupKeys) -> the minimum node survives, every other one is a `reason` duplicate
    (two passes over the group, never a list of it)."""
    _, group = item
    rep, size = buckets.exact_group(group)
    group_size(namespace, reason, size)  # e.g. group_size_dup_url
    yield rep
    if size == 1:
        return
    groups_with_dups = 0
    for decision in buckets.exact_duplicates(group, rep, reason):
        groups_with_dups = 1
        yield beam.pvalue.TaggedOutput("dup", decision)
    Metrics.counter(namespace, f"{reason}_groups").inc(groups_with_dups)


class ExactDedup(beam.PTransform):
    """DupKeys -> (survivors, decisions) on one exact key ("url", "caption" or "image")."""

    def __init__(self, kind: str, namespace: str) -> None:
        super().__init__()
        self.kind = kind
        self.namespace = namespace

    def expand(self, keys):
        reason = EXACT_KEYS[self.kind][0]
        keyed = keys | "Key" >> beam.FlatMap(_key_or_pass, self.kind).with_outputs("unkeyed", main="keyed")
        split = (
            keyed.keyed
            | "Group" >> beam.GroupByKey()
            | "Split" >> beam.FlatMap(_split_exact, reason, self.namespace).with_outputs("dup", main="kept")
        )
        survivors = (split.kept, keyed.unkeyed) | "Survivors" >> beam.Flatten()
        return survivors, split.dup


# ---------------------------------------------------------------------------------------------
# Connected components


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


# ---------------------------------------------------------------------------------------------
# Near-duplicate captions


class _DedupFn(beam.DoFn):
    def __init__(self, cfg: DedupConfig, namespace: str) -> None:
        self.cfg = cfg
        self.namespace = namespace


class CaptionBands(_DedupFn):
    """Batches of DupKeys -> (LSH band key, member id), signatures computed per batch: 24 bytes per
    row and band through the biggest shuffle of dedup, not the caption."""

    def setup(self) -> None:
        self.bander = buckets.CaptionBander(self.cfg.near_caption)
        self.signed = Metrics.counter(self.namespace, "caption_signatures")

    def process(self, batch):
        self.signed.inc(len(batch))
        yield from self.bander.memberships(batch)


class CaptionBucket(_DedupFn):
    """(band key, member ids) -> (member id, band key) for each member of a bucket of 2..max_bucket,
    (member id, pivot key) for each member of a hot one (verified against pivots: a caption
    bucket is never tiled - Jaccard in Python at size^2 / 2 pairs took minutes a bucket - nor
    sampled); singletons end here. Counted as `caption_hot_buckets`, `caption_hot_bucket_members`
    and the `group_size_caption_bucket` distribution (sizes of two or more: most buckets are
    singletons, and one metric update each would cost more than the bucket)."""

    def setup(self) -> None:
        self.hot = Metrics.counter(self.namespace, "caption_hot_buckets")
        self.hot_members = Metrics.counter(self.namespace, "caption_hot_bucket_members")

    def process(self, item):
        band, members = item
        size, verdict = buckets.bucket_verdict(members, self.cfg.max_bucket)
        if verdict == "single":
            return
        group_size(self.namespace, "caption_bucket", size)
        key = band
        if verdict == "split":
            self.hot.inc()
            self.hot_members.inc(size)
            key = buckets.caption_pivot_key(band)
        for mid in members:
            yield mid, key


def _caption_memberships(item):
    """CoGroup per member id of its bucket memberships and its (node, caption) -> (bucket key,
    CaptionMember) per bucket or tile."""
    _, groups = item
    yield from buckets.caption_memberships(groups["buckets"], groups["rows"])


def _verify_size(namespace: str, kind: str, members: list) -> list:
    """A group about to be verified pairwise, its size recorded (at most max_bucket) and its pairs
    counted as `{kind}_candidate_pairs` (the verification cost)."""
    n = len(members)
    group_size(namespace, f"{kind}_verify", n)
    Metrics.counter(namespace, f"{kind}_candidate_pairs").inc(n * (n - 1) // 2)
    return members


class VerifyBucket(_DedupFn):
    """(bucket key, CaptionMembers) of a bucket of 2..max_bucket or a tile -> star edges over the
    pairs whose true Jaccard reaches the threshold; of a bucket too hot for tiles -> edges from
    pivot verification (filters/hot_captions.py), counted as `caption_pivot_buckets`,
    `caption_pivots`, `caption_pivot_passes` and `caption_hot_bucket_skipped` (members past its
    cap left unverified with each other: 0 unless a bucket holds more unrelated captions than
    `max_split_chunks` passes of pivots can sort out)."""

    def setup(self) -> None:
        self.candidates = Metrics.counter(self.namespace, "caption_bucket_edges")
        self.pivots = hot_captions.PivotVerifier(self.cfg.near_caption, self.cfg.max_bucket,
                                                 self.cfg.max_bucket // 2 * self.cfg.max_split_chunks,
                                                 self.cfg.max_split_chunks)
        self.hot = {name: Metrics.counter(self.namespace, f"caption_{name}")
                    for name in ("pivot_buckets", "pivots", "pivot_passes", "candidate_pairs", "hot_bucket_skipped")}

    def process(self, item):
        key, members = item
        if buckets.is_pivot_key(key):
            yield from self._pivots(members)
            return
        members = _verify_size(self.namespace, "caption", list(members))
        edges = buckets.verified_caption_edges(members, self.cfg.near_caption)
        self.candidates.inc(len(edges))
        yield from edges

    def _pivots(self, members):
        st = hot_captions.HotStats()
        yield from self.pivots.edges(members, st)
        self.candidates.inc(st.edges)
        if st.largest_verified:
            group_size(self.namespace, "caption_verify", st.largest_verified)
        for name, value in (("pivot_buckets", 1), ("pivots", st.pivots), ("pivot_passes", st.passes),
                            ("candidate_pairs", st.candidate_pairs), ("hot_bucket_skipped", st.skipped)):
            if value:
                self.hot[name].inc(value)


def _same_phash(item):
    """(pHash, nodes) -> the member entering the tables; identical-pHash star edges tagged "edges"."""
    member, edges = buckets.same_phash(item)
    yield member
    for edge in edges:
        yield beam.pvalue.TaggedOutput("edges", edge)


class ImageTableParts(_DedupFn):
    """Batches of ImageMembers -> (partition, packed pHashes): per group of tables while a table fits
    one partition, else per table and bucket-key prefix (its width from the member count)."""

    def setup(self) -> None:
        self.lsh = image_lsh.ImageLsh(self.cfg.near_image, self.cfg.max_bucket, self.cfg.max_split_chunks)

    def process(self, batch, members: int):
        phashes = np.array([m.phash for m in batch], dtype=np.uint64)
        yield from self.lsh.partitions(phashes, self.lsh.prefix_bits(members))


class ForestImageBuckets(ImageTableParts):
    """(partition, packed pHashes) -> full keys of its buckets so hot they go to the LSH forest
    (rare: past max_bucket x max_split_chunks / 2 members), for the first-table rule of the verify
    pass."""

    def process(self, item, members: int):
        part, blobs = item
        yield from self.lsh.forest_keys(part, blobs, self.lsh.prefix_bits(members))


class VerifyImagePartition(ImageTableParts):
    """(partition, packed pHashes) -> (low pHash, high pHash) of every pair within `hamming` bits
    that one of its tables is the first to find, and the star edges of its forest buckets, counted
    as `image_candidate_pairs` (pairs compared), `image_bucket_edges` (pairs and star edges emitted),
    `image_hot_buckets` / `_hot_bucket_members` / `_split_tiles` (tiled and forest buckets),
    `image_forest_buckets` / `_forest_pieces` / `_forest_edges`; `group_size_image_bucket` (largest
    bucket), `group_size_image_verify` (largest group compared pairwise, at most max_bucket) and
    `group_size_image_partition` (hashes one group held)."""

    COUNTED = ("candidate_pairs", "bucket_edges", "hot_buckets", "hot_bucket_members", "split_tiles", "forest_buckets",
               "forest_pieces", "forest_edges")

    def setup(self) -> None:
        super().setup()
        self.counters = {name: Metrics.counter(self.namespace, f"image_{name}") for name in self.COUNTED}

    def process(self, item, members: int, forest: list[int]):
        part, blobs = item
        pairs, st = self.lsh.pairs(part, blobs, self.lsh.prefix_bits(members), np.array(sorted(forest), dtype=np.uint64))
        group_size(self.namespace, "image_partition", st.members)
        if st.max_bucket >= 2:
            group_size(self.namespace, "image_bucket", st.max_bucket)
            group_size(self.namespace, "image_verify", st.max_verified)
        for name, value in zip(self.COUNTED, (st.candidate_pairs, st.pairs, st.hot, st.hot_members, st.tiles, st.forest,
                                              st.forest_pieces, st.forest_edges)):
            if value:
                self.counters[name].inc(value)
        yield from pairs


class NearDuplicates(beam.PTransform):
    """DupKeys -> Decisions for one near-duplicate kind ("caption" or "image")."""

    def __init__(self, kind: str, cfg: DedupConfig, namespace: str) -> None:
        super().__init__()
        self.kind = kind
        self.cfg = cfg
        self.namespace = namespace

    def expand(self, keys):
        if self.kind == "caption":
            edges = self._caption(keys)
            reason = "near_dup_caption"
        else:
            edges = self._image(keys)
            reason = "near_dup_image"
        labels = edges | "Components" >> ConnectedComponents(self.cfg.components, self.namespace)
        return labels | "Decide" >> beam.Map(buckets.decide, reason)

    def _image(self, keys):
        """Identical pHashes collapse onto one member first; members go through the L tables as
        packed partitions, each verified in numpy; found (pHash, pHash) pairs join back to nodes."""
        same = (
            keys
            | "ByPhash" >> beam.FlatMap(buckets.phash_key)
            | "GroupPhash" >> beam.GroupByKey()
            | "SamePhash" >> beam.FlatMap(_same_phash).with_outputs("edges", main="members")
        )
        members = beam.pvalue.AsSingleton(same.members | "CountMembers" >> beam.combiners.Count.Globally())
        parts = (
            same.members
            | "BatchMembers" >> beam.BatchElements(min_batch_size=1024, max_batch_size=8192)
            | "TableParts" >> beam.ParDo(ImageTableParts(self.cfg, self.namespace), members=members)
            | "GroupParts" >> beam.GroupByKey()
        )
        forest = beam.pvalue.AsList(
            parts | "ForestBuckets" >> beam.ParDo(ForestImageBuckets(self.cfg, self.namespace), members=members))
        pairs = parts | "VerifyParts" >> beam.ParDo(VerifyImagePartition(self.cfg, self.namespace), members=members,
                                                    forest=forest)
        nodes = same.members | "NodeByPhash" >> beam.Map(lambda m: (m.phash, m.node))
        low = (
            {"node": nodes, "pairs": pairs}
            | "JoinLowNode" >> beam.CoGroupByKey()
            | "LowNode" >> beam.FlatMap(image_lsh.low_node)
        )
        edges = (
            {"node": nodes, "low": low}
            | "JoinHighNode" >> beam.CoGroupByKey()
            | "NodeEdges" >> beam.FlatMap(image_lsh.node_edges)
        )
        return (same.edges, edges) | "AllEdges" >> beam.Flatten()

    def _caption(self, keys):
        """Band keys and member ids only through the band shuffle; the captions of members of
        non-singleton buckets (and tiles of hot ones) join back by id for verification."""
        memberships = (
            keys
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
            | "Signatures" >> beam.ParDo(CaptionBands(self.cfg, self.namespace))
            | "GroupBuckets" >> beam.GroupByKey()
            | "Buckets" >> beam.ParDo(CaptionBucket(self.cfg, self.namespace))
        )
        members = (
            {"buckets": memberships,
             "rows": keys | "CaptionById" >> beam.Map(lambda k: (member_id(k.node), (k.node, k.caption)))}
            | "JoinCaptions" >> beam.CoGroupByKey()
            | "Members" >> beam.FlatMap(_caption_memberships).with_output_types(tuple[bytes, Any])
        )
        return (
            members
            | "GroupCandidates" >> beam.GroupByKey()
            | "Verify" >> beam.ParDo(VerifyBucket(self.cfg, self.namespace))
        )


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


# ---------------------------------------------------------------------------------------------
# The dedup stage over pair shards


def write_dedup_shard(shard: int, name: str, elements, tar_file, manifest_file):
    """Rows and the Decisions that hash to this shard -> a pair shard with duplicates rejected."""
    return write_pair_shard(shard, name, apply_decisions(elements), tar_file, manifest_file)


def decision_shard(d: Decision, num_shards: int):
    """A Decision keyed by the shard its record hashes to, so the shard writer applies it."""
    return shard_of(d.uid, num_shards), d


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
