"""SemDeDup as Beam steps (the logic: filters/dedup/semantic.py): embeddings (captions through a
RunInference step; images as ingest's CLIP step stored them), a k-means fitted once on a bounded
deterministic sample, assignment on every worker, clusters grouped whole or as tiles, pairs
verified by matrix products, then the shared components step."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from filters.dedup import buckets, semantic
from filters.dedup.config import DedupConfig, SemanticConfig
from pipelines.dedup.components import ConnectedComponents
from pipelines.model_handlers import BatchedHandler, record_load
from pipelines.progress import group_size


class CaptionEmbedHandler(BatchedHandler):
    """(node, caption) -> PredictionResult((node, caption), packed float16 embedding, or None
    where the model failed on that caption: counted `semantic_caption_errors`, and kept)."""

    def __init__(self, cfg: SemanticConfig, namespace: str) -> None:
        super().__init__(cfg.batch_size, None, f"{namespace}.semantic")
        self.cfg = cfg

    def load_model(self):
        from filters.dedup.semantic import CaptionEmbedder

        record_load("caption_embedder")
        return CaptionEmbedder(self.cfg.model)

    def run_inference(self, batch: Sequence[tuple[str, str]], model, inference_args=None) -> Iterable[PredictionResult]:
        texts = [caption or "" for _, caption in batch]
        try:
            vecs = list(model.embed(texts))
        except Exception:  # noqa: BLE001 - narrowed to the element: one caption's failure is not the batch's
            vecs = []
            for text in texts:
                try:
                    vecs.append(model.embed([text])[0])
                except Exception:  # noqa: BLE001 - left out of semantic dedup (kept), counted
                    vecs.append(None)
        failed = sum(v is None for v in vecs)
        Metrics.counter(self.namespace, "semantic_caption_embedded").inc(len(batch) - failed)
        if failed:
            Metrics.counter(self.namespace, "semantic_caption_errors").inc(failed)
        return [PredictionResult(e, None if v is None else semantic.pack(v)) for e, v in zip(batch, vecs)]


def _sample_rank(item: tuple[str, bytes]) -> int:
    return -semantic.node_hash(item[0])  # Top.Largest of the negated hash: the smallest hashes


def _fit(sample: list[tuple[str, bytes]], count: int, cfg: SemanticConfig) -> np.ndarray:
    """The centroids, from the sample in node order (the same sample gives the same centroids), in
    the sample's commonest embedding size (records of another size, from another model, are left
    out by `Assign`)."""
    sample = sorted(sample)
    if not sample:
        return np.zeros((0, 1), dtype=np.float32)
    sizes = Counter(len(v) for _, v in sample)
    size = max(sizes, key=lambda n: (sizes[n], n))
    x = np.stack([semantic.unpack(v) for _, v in sample if len(v) == size])
    return semantic.fit_kmeans(x, cfg.num_clusters(count), cfg.iterations, cfg.seed)


class Assign(beam.DoFn):
    """Batches of (node, packed embedding) -> (cluster, (node, packed embedding)) per nearest
    centroid; an embedding of another size than the centroids' is counted
    `semantic_{kind}_other_size` and takes no part."""

    def __init__(self, cfg: SemanticConfig, kind: str, namespace: str) -> None:
        self.cfg = cfg
        self.kind = kind
        self.namespace = namespace

    def process(self, batch, centroids):
        if len(centroids) == 0:
            return
        fits = [(node, vec) for node, vec in batch if len(vec) == 2 * centroids.shape[1]]  # float16: 2 bytes a dim
        if len(fits) < len(batch):  # another model's embeddings: not comparable, left out (kept)
            Metrics.counter(self.namespace, f"semantic_{self.kind}_other_size").inc(len(batch) - len(fits))
        if not fits:
            return
        x = np.stack([semantic.unpack(v) for _, v in fits])
        for (node, vec), clusters in zip(fits, semantic.nearest_centroids(x, centroids, self.cfg.nearest)):
            for c in clusters.tolist():
                yield int(c), (node, vec)


def _tiled(item, sizes: dict[int, int], tile: int):
    """(cluster, (node, embedding)) -> (group key, (node, chunk, embedding)) per group it joins."""
    cluster, (node, vec) = item
    for key, chunk in semantic.tile_keys(cluster, node, sizes[cluster], tile):
        yield key, (node, chunk, vec)


class VerifyGroup(beam.DoFn):
    """(group key, members) -> (node, its first earlier node at cosine >= threshold) links;
    counted as `semantic_{kind}_candidate_pairs`, `_links`, `_tiles` (groups of split clusters)
    and the `group_size_semantic_{kind}_verify` distribution."""

    def __init__(self, cfg: SemanticConfig, kind: str, namespace: str) -> None:
        self.cfg = cfg
        self.kind = kind
        self.namespace = namespace

    def setup(self) -> None:
        self.pairs = Metrics.counter(self.namespace, f"semantic_{self.kind}_candidate_pairs")
        self.links = Metrics.counter(self.namespace, f"semantic_{self.kind}_links")
        self.tiles = Metrics.counter(self.namespace, f"semantic_{self.kind}_tiles")

    def process(self, item):
        key, members = item
        members = list(members)  # at most `tile` members (two chunks of tile // 2, up to hash imbalance)
        group_size(self.namespace, f"semantic_{self.kind}_verify", len(members))
        if key[1] != key[2] or key[1] != 0:
            self.tiles.inc()
        links, compared = semantic.group_links(key, members, self.cfg.threshold)
        self.pairs.inc(compared)
        self.links.inc(len(links))
        yield from links


class SemanticDuplicates(beam.PTransform):
    """(node, packed embedding) -> Decisions `semantic_dup_{kind}`: a record with an earlier
    neighbour at cosine >= threshold goes, naming the root of its links (a kept record)."""

    def __init__(self, kind: str, cfg: DedupConfig, namespace: str) -> None:
        super().__init__()
        self.kind = kind
        self.cfg = cfg
        self.sem = cfg.semantic_caption if kind == "caption" else cfg.semantic_image
        self.namespace = namespace

    def expand(self, vectors):
        sem = self.sem
        count = beam.pvalue.AsSingleton(vectors | "Count" >> beam.combiners.Count.Globally())
        centroids = beam.pvalue.AsSingleton(
            vectors
            | "Sample" >> beam.combiners.Top.Of(sem.sample, key=_sample_rank)
            | "FitKMeans" >> beam.Map(_fit, count, sem))
        assigned = (
            vectors
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
            | "Assign" >> beam.ParDo(Assign(sem, self.kind, self.namespace), centroids=centroids)
        )
        sizes = beam.pvalue.AsDict(assigned | "ClusterOf" >> beam.Map(lambda kv: (kv[0], 1))
                                   | "ClusterSizes" >> beam.CombinePerKey(sum))
        edges = (
            assigned
            | "Tiles" >> beam.FlatMap(_tiled, sizes=sizes, tile=sem.tile)
            | "GroupTiles" >> beam.GroupByKey()
            | "Verify" >> beam.ParDo(VerifyGroup(sem, self.kind, self.namespace))
            | "FirstLink" >> beam.CombinePerKey(min)  # a node's smallest earlier neighbour over its groups
        )
        labels = edges | "Components" >> ConnectedComponents(self.cfg.components, self.namespace)
        return labels | "Decide" >> beam.Map(buckets.decide, f"semantic_dup_{self.kind}")


def _embedded(result: PredictionResult):
    """(node, embedding); a caption the model failed on takes no part (it is kept)."""
    if result.inference is not None:
        yield result.example[0], result.inference


def _captioned(key):
    """(node, caption) of a key whose caption has words: empty captions would all embed alike (the
    exact step leaves them alone too)."""
    from filters.dedup.minhash import normalize_caption

    if normalize_caption(key.caption or ""):
        yield key.node, key.caption


class CaptionVectors(beam.PTransform):
    """DupKeys -> (node, packed caption embedding), batched through the embedding model."""

    def __init__(self, cfg: SemanticConfig, namespace: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.namespace = namespace

    def expand(self, keys):
        return (
            keys
            | "NodeCaption" >> beam.FlatMap(_captioned)
            | "Embed" >> RunInference(CaptionEmbedHandler(self.cfg, self.namespace))
            | "Vectors" >> beam.FlatMap(_embedded)
        )


def _joined(item, namespace: str):
    """CoGroup by node of a surviving key and the record's stored embedding -> (node, embedding)."""
    node, groups = item
    if groups["keys"]:
        for vec in groups["vectors"]:
            yield node, vec
            return
        Metrics.counter(namespace, "semantic_image_unembedded").inc()


class ImageVectors(beam.PTransform):
    """Surviving DupKeys + (node, stored CLIP embedding) -> (node, embedding) of the survivors
    that have one (ingest's `pixels.clip.store_embedding`); counted `semantic_image_unembedded`
    where a survivor has none."""

    def __init__(self, embeddings, namespace: str) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.namespace = namespace

    def expand(self, keys):
        return (
            {"keys": keys | "KeyNode" >> beam.Map(lambda k: (k.node, None)), "vectors": self.embeddings}
            | "JoinEmbeddings" >> beam.CoGroupByKey()
            | "Embedded" >> beam.FlatMap(_joined, self.namespace)
        )
