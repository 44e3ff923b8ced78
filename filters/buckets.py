"""Dedup groups and buckets, as steps a distributed runner can wire together: exact-key groups, the
hot-bucket split, caption LSH memberships, bucket verification, the identical-pHash collapse (the
image tables themselves: filters/image_lsh.py), and the decisions the components turn into.

The hot-bucket rule: a bucket (an LSH band of captions, a pHash table key of images) of two to
`max_bucket` members is verified pairwise in one group. A bigger one is hot, never turned into
exact-key grouping nor sampled. An image bucket is split: its members are dealt into
c = ceil(size / (max_bucket // 2)) chunks and every pair of chunks becomes one tile of at most
`max_bucket` members, so every pair of the bucket is still verified in some tile (cost size^2 / 2
checks, in numpy); past `max_split_chunks` chunks it goes to the LSH forest (filters/image_lsh.py).
A hot caption bucket goes to pivot verification (filters/hot_captions.py: one group walked in
passes, size x pivots true-Jaccard checks, held only as its pivots and what they leave), since
size^2 / 2 Jaccards in Python cost minutes a bucket at 10^4 members.

Plain functions over plain values, no Beam: they take what a group-by-key hands them (a key and a
re-iterable of values, walked without making a list where a group may be huge) and return what to
emit plus the sizes the caller records.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Literal, NamedTuple

from curation.core.records import Sample
from filters.dedup import (CaptionMember, Decision, DupKey, ImageMember, Row, caption_bucket_edges, dup_key, member_id,
                           parse_phash, resolve_chain, star)
from filters.dedup_config import DedupConfig, NearCaptionConfig
from filters.minhash import MinHasher, band_keys, shingles

Edge = tuple[str, str]

# ---------------------------------------------------------------------------------------------
# The cascade and its exact keys


def cascade(cfg: DedupConfig, images: bool = True) -> tuple[list[str], list[str]]:
    """(exact kinds, near-duplicate kinds) that run, in cascade order: URL -> caption -> image
    bytes, then near caption -> near image; image steps only when the records have `images`."""
    exact = [k for k in ("url", "caption", "image") if getattr(cfg.exact, k) and (k != "image" or images)]
    near = [k for k, on in (("caption", cfg.near_caption.enabled), ("image", cfg.near_image.enabled and images)) if on]
    return exact, near


def exact_group(group: Iterable[DupKey]) -> tuple[DupKey | None, int]:
    """(representative, size) of an exact-key group in one pass: the minimum node survives.

    Never a list of the group: a caption repeated a million times streams through (runners page
    big groups and let them be iterated again)."""
    rep, size = None, 0
    for key in group:
        size += 1
        if rep is None or key < rep:
            rep = key
    return rep, size


def exact_duplicates(group: Iterable[DupKey], rep: DupKey, reason: str) -> Iterator[Decision]:
    """A second pass over an exact-key group: a `reason` Decision for every node but `rep`'s."""
    for key in group:
        if key.node != rep.node:
            yield Decision(key.node, reason, rep.node)


def sample_dup_keys(row: Row, score_field: str | None):
    """A `Row` -> its DupKey (under the row's node) if it is a Sample (a rejection upstream takes
    no part in dedup)."""
    rec = row.record
    if isinstance(rec, Sample):
        yield dup_key(rec.pair, score_field, rec.image.sha256, rec.image.phash, node=row.node)


def resolve_chains(item):
    """CoGroup by representative node of the decisions naming it ("dups") and its own resolved
    decision from a later cascade step, if any ("later") -> the decisions onto the record kept in
    the end (streamed: a representative of a million duplicates holds no list)."""
    _, groups = item
    later = next(iter(groups["later"]), None)
    for decision in groups["dups"]:
        yield resolve_chain(decision, later)


def undecided(item):
    """CoGroup by node of survivors and decisions -> the survivor if no decision removed it."""
    _, groups = item
    if not groups["decisions"]:
        yield from groups["keys"]


# ---------------------------------------------------------------------------------------------
# The hot-bucket rule: verify, or split into tiles

Verdict = Literal["single", "compare", "split"]


def bucket_size(members: Iterable) -> int:
    """Members counted in one streaming pass (a hot bucket is walked, never listed)."""
    size = 0
    for _ in members:
        size += 1
    return size


def bucket_verdict(members: Iterable, max_bucket: int) -> tuple[int, Verdict]:
    """(size, verdict): "single" below two members (nothing to compare), "split" above
    `max_bucket` (verified as tiles), else "compare"."""
    size = bucket_size(members)
    if size < 2:
        return size, "single"
    return size, "split" if size > max_bucket else "compare"


class Split(NamedTuple):
    """How a hot bucket of `size` members is tiled: `chunks` chunks of at most `chunk` members."""

    size: int
    chunks: int
    chunk: int

    @property
    def tiles(self) -> int:
        return self.chunks * (self.chunks + 1) // 2


def too_hot(size: int, max_bucket: int, max_chunks: int) -> bool:
    """Past `max_chunks` chunks of max_bucket // 2: too many tiles (size^2 / 2 checks); such a
    bucket goes to the image forest or to caption pivots instead."""
    return -(-size // (max_bucket // 2)) > max_chunks


def split_plan(size: int, max_bucket: int) -> Split:
    """The tiling of a hot bucket: chunks of max_bucket // 2, so a tile (two chunks) stays within
    `max_bucket`."""
    chunk = max_bucket // 2
    return Split(size, -(-size // chunk), chunk)


# ---------------------------------------------------------------------------------------------
# Near-duplicate captions


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


# ---------------------------------------------------------------------------------------------
# Near-duplicate images


def phash_key(key: DupKey):
    """A DupKey -> (its pHash, node) for the identical-pHash step; nothing for a missing or
    malformed pHash."""
    value = parse_phash(key.phash)
    if value is not None:
        yield value, key.node


def same_phash(item: tuple[int, Iterable[str]]) -> tuple[ImageMember, Iterator[Edge]]:
    """Nodes sharing one whole pHash (distance 0: near-duplicates by definition) -> (the minimum as
    the one member that enters the LSH tables, star edges of the others onto it, streamed in a
    second pass over the group). A million blank images become one member, not a million-member
    bucket in every table, and no list of them."""
    phash, nodes = item
    center, others = star(nodes)
    return ImageMember(center, phash), ((node, center) for node in others)


# ---------------------------------------------------------------------------------------------
# Decisions


def decide(label: tuple[str, str], reason: str) -> Decision:
    """A component label (node, component minimum) -> the node is a `reason` duplicate of the minimum."""
    node, root = label
    return Decision(node, reason, root)
