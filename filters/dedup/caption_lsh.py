"""Near-duplicate captions: MinHash-LSH bands -> bucket memberships -> verified star edges.

A caption is shingled and MinHashed (filters/dedup/minhash.py), its bands key its buckets; a bucket
of two to `max_bucket` members is verified pairwise (true Jaccard) and leaves as star edges
`(node, bucket component minimum)`, never all pairs. A hotter one is a pivot bucket
(filters/dedup/hot_captions.py)."""

from __future__ import annotations

import hashlib
from itertools import combinations
from typing import Iterable, Iterator, NamedTuple, Sequence

from filters.dedup.components import union_find
from filters.dedup.config import NearCaptionConfig
from filters.dedup.keys import DupKey
from filters.dedup.minhash import MinHasher, band_keys, jaccard, shingles

Edge = tuple[str, str]


class CaptionMember(NamedTuple):
    node: str
    caption: str


def member_id(node: str) -> bytes:
    """A node's 12-byte stand-in in the LSH band shuffle, where every row appears once per band:
    captions and nodes join back only for the rare rows in a bucket of two or more (collision odds
    about 1e-10 at LAION-5B's 5.85B rows)."""
    return hashlib.blake2b(node.encode("utf-8", "surrogatepass"), digest_size=12).digest()


def _stars(labels: dict[str, str]) -> list[tuple[str, str]]:
    return sorted((node, root) for node, root in labels.items() if node != root)


def caption_bucket_edges(members: Sequence[CaptionMember], threshold: float | None, kind: str,
                         n: int) -> list[tuple[str, str]]:
    """Star edges inside one LSH bucket. With `threshold`, only pairs whose true Jaccard reaches it
    link (verification stops a chain of lucky band collisions); the bucket's verified components
    become stars on their minimum."""
    members = sorted({m.node: m for m in members}.values())
    if len(members) < 2:
        return []
    if threshold is None:
        center = members[0].node
        return [(m.node, center) for m in members[1:]]
    sets = [shingles(m.caption, kind, n) for m in members]  # type: ignore[arg-type]
    pairs = ((members[i].node, members[j].node) for i, j in combinations(range(len(members)), 2)
             if jaccard(sets[i], sets[j]) >= threshold)
    return _stars(union_find(pairs))


class CaptionBander:
    """DupKeys -> (LSH band key, member id) per band of each non-empty caption's MinHash signature:
    24 bytes per row and band through the band shuffle, not the caption."""

    def __init__(self, cfg: NearCaptionConfig) -> None:
        self.cfg = cfg
        self.hasher = MinHasher(cfg.num_perm, cfg.seed)
        self.bands, self.rows = cfg.lsh()

    def memberships(self, batch: list[DupKey]) -> Iterator[tuple[bytes, bytes]]:
        """Signatures computed for the whole batch at once; an empty caption (nothing to compare)
        gets no band and is left to the exact path."""
        docs = [shingles(k.caption, self.cfg.shingle, self.cfg.ngram) for k in batch]
        sigs = self.hasher.signatures(docs)
        for key, doc, sig in zip(batch, docs, sigs):
            if not doc:
                continue
            mid = member_id(key.node)
            for band in band_keys(sig, self.bands, self.rows):
                yield band, mid


PIVOT_SUFFIX = b"hot"  # band key (12 bytes) + this: a hot bucket, verified against pivots


def caption_pivot_key(band: bytes) -> bytes:
    """The key of a hot caption bucket: one group, verified against pivots."""
    return band + PIVOT_SUFFIX


def is_pivot_key(key: bytes) -> bool:
    return len(key) == 12 + len(PIVOT_SUFFIX) and key.endswith(PIVOT_SUFFIX)


def caption_memberships(buckets: Iterable[bytes], rows: Iterable[tuple[str, str]]) -> Iterator[tuple[bytes, CaptionMember]]:
    """One member id's bucket (or tile) memberships and its (node, caption) rows -> (bucket key,
    CaptionMember) per bucket it shares, in key order. A member of no bucket of two or more yields
    nothing."""
    buckets = sorted(set(buckets))
    for node, caption in rows:
        for band in buckets:
            yield band, CaptionMember(node, caption)


def verified_caption_edges(members: Iterable[CaptionMember], cfg: NearCaptionConfig) -> list[Edge]:
    """A caption bucket of 2..max_bucket -> star edges over the pairs whose true Jaccard reaches
    the threshold (every pair, when verification is off)."""
    return caption_bucket_edges(list(members), cfg.threshold if cfg.verify else None, cfg.shingle, cfg.ngram)
