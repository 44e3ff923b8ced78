"""Near duplicates: caption LSH buckets and image pHash tables as GroupByKeys, verified into star
edges (the logic: filters/dedup/caption_lsh.py, hot_captions.py, image_lsh.py)."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from filters.dedup import buckets, caption_lsh, hot_captions, image_lsh, phash
from filters.dedup.caption_lsh import member_id
from filters.dedup.config import DedupConfig
from pipelines.dedup.components import ConnectedComponents
from pipelines.progress import group_size


class _DedupFn(beam.DoFn):
    def __init__(self, cfg: DedupConfig, namespace: str) -> None:
        self.cfg = cfg
        self.namespace = namespace


class CaptionBands(_DedupFn):
    """Batches of DupKeys -> (LSH band key, member id), signatures computed per batch: 24 bytes per
    row and band through the biggest shuffle of dedup, not the caption."""

    def setup(self) -> None:
        self.bander = caption_lsh.CaptionBander(self.cfg.near_caption)
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
            key = caption_lsh.caption_pivot_key(band)
        for mid in members:
            yield mid, key


def _caption_memberships(item):
    """CoGroup per member id of its bucket memberships and its (node, caption) -> (bucket key,
    CaptionMember) per bucket or tile."""
    _, groups = item
    yield from caption_lsh.caption_memberships(groups["buckets"], groups["rows"])


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
    pivot verification (filters/dedup/hot_captions.py), counted as `caption_pivot_buckets`,
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
        if caption_lsh.is_pivot_key(key):
            yield from self._pivots(members)
            return
        members = _verify_size(self.namespace, "caption", list(members))
        edges = caption_lsh.verified_caption_edges(members, self.cfg.near_caption)
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
    member, edges = phash.same_phash(item)
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
            | "ByPhash" >> beam.FlatMap(phash.phash_key)
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
