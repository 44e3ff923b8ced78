"""Dedup: pair shards -> exact (URL, caption, image bytes) and near-duplicate (MinHash LSH on captions,
multi-index pHash on images) decisions -> the same records re-sharded, duplicates rejected.

Only wiring: keys, bucket logic and components live in filters/dedup.py. No step holds all keys
or signatures in one process: exact groups and buckets are GroupByKeys, components are one
union-find only while the edge list fits a worker (`components.max_local_edges`), else rounds of
large-star / small-star. `DedupDecisions` is reused by ingest to dedup metadata before download.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from filters.dedup_config import ComponentsConfig, DedupConfig
from curation.core.records import record_uid
from filters.dedup import Decision, DupKey
from pipelines.sharded_output import AssignShard, ReadShard, WriteShards, group_size, not_done, run_pair_shard_job

NS = "curate.dedup"


# ---------------------------------------------------------------------------------------------
# Exact keys


def _key_or_pass(key: DupKey, kind: str):
    from filters.dedup import EXACT_KEYS

    value = EXACT_KEYS[kind][1](key)
    if value is None:
        yield beam.pvalue.TaggedOutput("unkeyed", key)
    else:
        yield value, key


def _split_exact(item, reason: str, namespace: str):
    """(exact key, DupKeys) -> the minimum node survives, every other one is a `reason` duplicate.

    Two passes over the group, never a list of it: a caption repeated a million times streams
    through (runners page big groups and let them be iterated again)."""
    from filters.dedup import node_uid

    _, group = item
    rep, size = None, 0
    for key in group:
        size += 1
        if rep is None or key < rep:
            rep = key
    group_size(namespace, reason, size)  # e.g. group_size_dup_url
    yield rep
    if size == 1:
        return
    rep_uid = node_uid(rep.node)
    groups_with_dups = 0
    for key in group:
        if key.node != rep.node:
            groups_with_dups = 1
            yield beam.pvalue.TaggedOutput("dup", Decision(key.node, reason, rep_uid))
    Metrics.counter(namespace, f"{reason}_groups").inc(groups_with_dups)


class ExactDedup(beam.PTransform):
    """DupKeys -> (survivors, decisions) on one exact key ("url", "caption" or "image")."""

    def __init__(self, kind: str, namespace: str) -> None:
        super().__init__()
        self.kind = kind
        self.namespace = namespace

    def expand(self, keys):
        from filters.dedup import EXACT_KEYS

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


def _both_directions(edge):
    a, b = edge
    yield a, b
    yield b, a


def _large_star(item, namespace: str):
    from filters.dedup import large_star

    node, neighbours = item[0], list(item[1])
    group_size(namespace, "star", len(neighbours))
    yield from large_star(node, neighbours)


def _small_star(item, namespace: str):
    from filters.dedup import small_star

    node, smaller = item[0], list(item[1])
    group_size(namespace, "star", len(smaller))
    yield from small_star(node, smaller)


def _local_labels(item, namespace: str):
    """All edges on one worker (at most `max_local_edges`) -> (node, component minimum) for every
    non-minimum node."""
    from filters.dedup import union_find

    edges = list(item[1])
    group_size(namespace, "union_find_edges", len(edges))
    labels = union_find(edges)
    roots = set(labels.values())
    Metrics.counter(namespace, "components").inc(len(roots))
    for node, root in sorted(labels.items()):
        if node != root:
            yield node, root


def _settled(item):
    """CoGroup per node of its parents and its children: a star leaf has one parent and no child."""
    node, groups = item
    parents, children = list(groups["parents"]), list(groups["children"])
    if parents and (len(parents) > 1 or children):
        yield beam.pvalue.TaggedOutput("unsettled", node)
    elif parents:
        yield node, parents[0]


def _over(_, count: int, limit: int) -> bool:
    return count > limit


def _within(_, count: int, limit: int) -> bool:
    return count <= limit


def _route_all(_, unsettled: int) -> bool:
    return unsettled > 0


def _route_none(_, unsettled: int) -> bool:
    return unsettled == 0


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
        from filters.dedup import normalize_edge

        limit = self.cfg.max_local_edges
        edges = (
            edges
            | "Normalize" >> beam.Map(lambda e: normalize_edge(*e))
            | "DistinctEdges" >> beam.Distinct()
        )
        count = beam.pvalue.AsSingleton(edges | "CountEdges" >> beam.combiners.Count.Globally())
        local = self._local(edges | "FitsAWorker" >> beam.Filter(_within, count=count, limit=limit), "Local")
        big = edges | "TooBigForAWorker" >> beam.Filter(_over, count=count, limit=limit)
        for i in range(self.cfg.rounds):
            big = (
                big
                | f"LargeStarBoth{i}" >> beam.FlatMap(_both_directions)
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.FlatMap(_large_star, self.namespace)
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.FlatMap(_small_star, self.namespace)
            )
        big = big | "DistinctFinal" >> beam.Distinct()
        settled = (
            {"parents": big, "children": big | "ByParent" >> beam.Map(lambda e: (e[1], e[0]))}
            | "PerNode" >> beam.CoGroupByKey()
            | "Settled" >> beam.FlatMap(_settled).with_outputs("unsettled", main="labels")
        )
        unsettled = beam.pvalue.AsSingleton(settled.unsettled | "CountUnsettled" >> beam.combiners.Count.Globally())
        converged = settled.labels | "Converged" >> beam.Filter(_route_none, unsettled=unsettled)
        leftover = big | "Unconverged" >> beam.Filter(_route_all, unsettled=unsettled)
        _ = (
            unsettled.pvalue
            | "CountUnconverged" >> beam.Map(lambda n, ns: Metrics.counter(ns, "components_unconverged").inc(int(n > 0)),
                                             self.namespace)
        )
        finished = self._local(leftover, "Finish")
        return (local, converged, finished) | "Labels" >> beam.Flatten()


# ---------------------------------------------------------------------------------------------
# Near-duplicate captions


class CaptionBands(beam.DoFn):
    """Batches of DupKeys -> (LSH band key, member id), signatures computed per batch: 24 bytes per
    row and band through the biggest shuffle of dedup, not the caption."""

    def __init__(self, cfg: DedupConfig, namespace: str) -> None:
        self.cfg = cfg.near_caption
        self.namespace = namespace

    def setup(self) -> None:
        from filters.minhash import MinHasher

        self.hasher = MinHasher(self.cfg.num_perm, self.cfg.seed)
        self.bands, self.rows = self.cfg.lsh()
        self.signed = Metrics.counter(self.namespace, "caption_signatures")

    def process(self, batch):
        from filters.dedup import member_id
        from filters.minhash import band_keys, shingles

        docs = [shingles(k.caption, self.cfg.shingle, self.cfg.ngram) for k in batch]
        sigs = self.hasher.signatures(docs)
        self.signed.inc(len(batch))
        for key, doc, sig in zip(batch, docs, sigs):
            if not doc:
                continue  # nothing to compare: an empty caption is left to the exact path
            mid = member_id(key.node)
            for band in band_keys(sig, self.bands, self.rows):
                yield band, mid


HOT_BUCKET = b""  # a membership that stands for "in a hot bucket": fall back to the exact caption key


def _bucket_size(members, limit: int) -> int:
    """Members counted up to limit + 1 (a hot bucket is never walked to its end here)."""
    size = 0
    for _ in members:
        size += 1
        if size > limit:
            break
    return size


class CaptionBucket(beam.DoFn):
    """(band key, member ids) -> (member id, band key) for each member of a bucket of 2..max_bucket,
    (member id, HOT_BUCKET) for each member of a hot one (counted); singletons end here."""

    def __init__(self, cfg: DedupConfig, namespace: str) -> None:
        self.cfg = cfg
        self.namespace = namespace

    def setup(self) -> None:
        self.hot = Metrics.counter(self.namespace, "caption_hot_buckets")
        self.hot_members = Metrics.counter(self.namespace, "caption_hot_bucket_members")

    def process(self, item):
        band, members = item
        size = _bucket_size(members, self.cfg.max_bucket)
        group_size(self.namespace, "caption_bucket", size)  # max_bucket + 1: hot, not compared pairwise
        if size < 2:
            return
        hot = size > self.cfg.max_bucket
        if hot:
            self.hot.inc()
        for mid in members:
            if hot:
                self.hot_members.inc()
            yield mid, HOT_BUCKET if hot else band


def _caption_memberships(item):
    """CoGroup per member id of its bucket memberships and its (node, caption) -> (band key,
    CaptionMember) per bucket, and (caption hash, node) once if it sat in a hot bucket."""
    from filters.dedup import CaptionMember, caption_hash

    _, groups = item
    buckets = set(groups["buckets"])
    if not buckets:
        return
    for node, caption in groups["rows"]:
        if HOT_BUCKET in buckets:
            yield beam.pvalue.TaggedOutput("hot", (caption_hash(caption), node))
        for band in sorted(buckets - {HOT_BUCKET}):
            yield band, CaptionMember(node, caption)


class VerifyBucket(beam.DoFn):
    """(band key, CaptionMembers) of a bucket of 2..max_bucket -> star edges over the pairs whose
    true Jaccard reaches the threshold."""

    def __init__(self, cfg: DedupConfig, namespace: str) -> None:
        self.cfg = cfg.near_caption
        self.namespace = namespace

    def setup(self) -> None:
        self.candidates = Metrics.counter(self.namespace, "caption_bucket_edges")

    def process(self, item):
        from filters.dedup import caption_bucket_edges

        c = self.cfg
        edges = caption_bucket_edges(list(item[1]), c.threshold if c.verify else None, c.shingle, c.ngram)
        self.candidates.inc(len(edges))
        yield from edges


class ImageBucket(beam.DoFn):
    """(bucket key, ImageMembers) -> star edges; a hot bucket (> max_bucket) sends its members to the
    exact path instead (keyed by the whole pHash) and is counted."""

    HOT = "hot"

    def __init__(self, cfg: DedupConfig, namespace: str) -> None:
        self.cfg = cfg
        self.namespace = namespace

    def setup(self) -> None:
        self.hot = Metrics.counter(self.namespace, "image_hot_buckets")
        self.hot_members = Metrics.counter(self.namespace, "image_hot_bucket_members")
        self.candidates = Metrics.counter(self.namespace, "image_bucket_edges")

    def process(self, item):
        from filters.dedup import image_bucket_edges

        _, members = item
        size = _bucket_size(members, self.cfg.max_bucket)
        group_size(self.namespace, "image_bucket", size)  # max_bucket + 1: hot, not compared pairwise
        if size < 2:
            return
        if size > self.cfg.max_bucket:
            self.hot.inc()
            for m in members:
                self.hot_members.inc()
                if not m.probe:
                    yield beam.pvalue.TaggedOutput(self.HOT, (f"{m.phash:016x}", m.node))
            return
        edges = image_bucket_edges(list(members), self.cfg.near_image.hamming)
        self.candidates.inc(len(edges))
        yield from edges


def _exact_stars(item):
    """Hot-bucket members grouped by their exact key -> star edges on the minimum."""
    from filters.dedup import star

    _, nodes = item
    center, others = star(nodes)
    for node in others:
        yield node, center


def _image_members(key: DupKey, cfg):
    from filters.dedup import ImageMember, image_band_keys, parse_phash

    value = parse_phash(key.phash)
    if value is None:
        return
    members, probes = image_band_keys(value, cfg.hamming, cfg.num_bands())
    for band in members:
        yield band, ImageMember(key.node, value, False)
    for band in probes:
        yield band, ImageMember(key.node, value, True)


class NearDuplicates(beam.PTransform):
    """DupKeys -> Decisions for one near-duplicate kind ("caption" or "image")."""

    def __init__(self, kind: str, cfg: DedupConfig, namespace: str) -> None:
        super().__init__()
        self.kind = kind
        self.cfg = cfg
        self.namespace = namespace

    def expand(self, keys):
        if self.kind == "caption":
            edges, hot = self._caption(keys)
            reason = "near_dup_caption"
        else:
            buckets = (
                keys
                | "Bands" >> beam.FlatMap(_image_members, self.cfg.near_image)
                | "GroupBuckets" >> beam.GroupByKey()
                | "Buckets" >> beam.ParDo(ImageBucket(self.cfg, self.namespace)).with_outputs(ImageBucket.HOT, main="edges")
            )
            edges, hot = buckets.edges, buckets.hot
            reason = "near_dup_image"
        hot_edges = (
            hot
            | "GroupHotByExactKey" >> beam.GroupByKey()
            | "HotStars" >> beam.FlatMap(_exact_stars)
        )
        labels = (
            (edges, hot_edges)
            | "AllEdges" >> beam.Flatten()
            | "Components" >> ConnectedComponents(self.cfg.components, self.namespace)
        )
        return labels | "Decide" >> beam.Map(_decide, reason)

    def _caption(self, keys):
        """Band keys and member ids only through the band shuffle; the captions of members of
        non-singleton buckets join back by id for verification."""
        from filters.dedup import member_id

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
                                                                    .with_outputs("hot", main="members")
        )
        edges = (
            members.members
            | "GroupCandidates" >> beam.GroupByKey()
            | "Verify" >> beam.ParDo(VerifyBucket(self.cfg, self.namespace))
        )
        return edges, members.hot


def _decide(label: tuple[str, str], reason: str) -> Decision:
    from filters.dedup import node_uid

    node, root = label
    return Decision(node, reason, node_uid(root))


def _without(item):
    """CoGroup by node of survivors and decisions -> the survivor if no decision removed it."""
    _, groups = item
    if not groups["decisions"]:
        yield from groups["keys"]


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
        exact = [k for k in ("url", "caption", "image") if getattr(cfg.exact, k) and (k != "image" or self.images)]
        for kind in exact:
            keys, dups = keys | f"Exact{kind.title()}" >> ExactDedup(kind, self.namespace)
            decisions.append(dups)
        near = [k for k, on in (("caption", cfg.near_caption.enabled), ("image", cfg.near_image.enabled and self.images)) if on]
        for i, kind in enumerate(near):
            found = keys | f"Near{kind.title()}" >> NearDuplicates(kind, cfg, self.namespace)
            decisions.append(found)
            if i + 1 < len(near):
                keys = (
                    {"keys": keys | f"KeyByNode{kind.title()}" >> beam.Map(lambda k: (k.node, k)),
                     "decisions": found | f"DecisionsByNode{kind.title()}" >> beam.Map(lambda d: (d.node, d))}
                    | f"Drop{kind.title()}Dups" >> beam.CoGroupByKey()
                    | f"Survivors{kind.title()}" >> beam.FlatMap(_without)
                )
        if not decisions:
            return keys.pipeline | "NoDecisions" >> beam.Create([])
        return decisions | "AllDecisions" >> beam.Flatten()


# ---------------------------------------------------------------------------------------------
# The dedup stage over pair shards


def _to_key(rec, score_field: str | None):
    from curation.core.records import Sample
    from filters.dedup import dup_key

    if isinstance(rec, Sample):
        yield dup_key(rec.pair, score_field, rec.image.sha256, rec.image.phash)


def write_dedup_shard(shard: int, name: str, elements, tar_file, manifest_file):
    """Records and the Decisions that hash to this shard -> a pair shard with duplicates rejected."""
    from curation.core.shards import write_pair_shard
    from filters.dedup import apply_decisions

    return write_pair_shard(shard, name, apply_decisions(elements), tar_file, manifest_file)


def decision_shard(d: Decision, num_shards: int):
    """A Decision keyed by the shard its record hashes to, so the shard writer applies it."""
    from curation.core.shards import shard_of

    return shard_of(d.uid, num_shards), d


def build_dedup(p: beam.Pipeline, cfg: DedupConfig, shards: list[tuple[str, dict]], num_shards: int, output: str,
                fingerprint: str, previous: dict[str, Any], sources: list[str]) -> beam.PCollection:
    """Wire the dedup graph on `p`; returns the PCollection holding the written index."""
    prefix = cfg.shards.prefix
    records = (
        p
        | "InputShards" >> beam.Create(shards)
        | "SpreadShards" >> beam.Reshuffle()
        | "ReadShards" >> beam.ParDo(ReadShard(cfg.progress, NS, "dedup"))
    )
    decisions = (
        records
        | "DupKeys" >> beam.FlatMap(_to_key, cfg.score_field)
        | "Dedup" >> DedupDecisions(cfg, NS)
    )
    count = p | "NumShards" >> beam.Create([num_shards])
    n = beam.pvalue.AsSingleton(count)
    todo = not_done(prefix, frozenset(previous))
    keyed = (
        (records | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=record_uid),
         decisions | "DecisionShard" >> beam.Map(decision_shard, num_shards=n))
        | "RecordsAndDecisions" >> beam.Flatten()
        | "SkipDoneShards" >> beam.Filter(todo, num_shards=n)
    )
    return keyed | "Write" >> WriteShards(output, prefix, "pairs", fingerprint, write_dedup_shard, count, previous, NS,
                                          extra={"source": "+".join(sources), "dedup_of": sources})


def run_dedup(cfg: DedupConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a dedup job over pair-shard folders; returns the index."""
    return run_pair_shard_job(
        cfg, inputs, output, beam_args, "dedup", NS,
        lambda p, shards, n, out, fp, prev, sources: build_dedup(p, cfg, shards, n, out, fp, prev, sources))
