"""Dedup groups and buckets, as steps a distributed runner can wire together: exact-key groups, the
hot-bucket policy, caption LSH memberships, bucket verification, image band memberships, and the
decisions the components turn into.

The hot-bucket rule: a bucket (an LSH band of captions, a pHash band of images) is counted only up
to `max_bucket + 1` members. Fewer than two: nothing to compare. More than `max_bucket`: hot, never
compared pairwise; its members fall back to an exact key instead (the caption hash for captions, the
whole pHash for images), grouped by that key and joined as a star on the minimum (`exact_stars`).

Plain functions over plain values, no Beam: they take what a group-by-key hands them (a key and a
re-iterable of values, walked without making a list where a group may be huge) and return what to
emit plus the sizes the caller records.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Literal

from curation.core.records import Sample
from filters.dedup import (CaptionMember, Decision, DupKey, ImageMember, caption_bucket_edges, caption_hash, dup_key,
                           image_band_keys, member_id, node_uid, parse_phash, star)
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
    rep_uid = node_uid(rep.node)
    for key in group:
        if key.node != rep.node:
            yield Decision(key.node, reason, rep_uid)


def sample_dup_keys(rec, score_field: str | None):
    """A record -> its DupKey if it is a Sample (a rejection upstream takes no part in dedup)."""
    if isinstance(rec, Sample):
        yield dup_key(rec.pair, score_field, rec.image.sha256, rec.image.phash)


def undecided(item):
    """CoGroup by node of survivors and decisions -> the survivor if no decision removed it."""
    _, groups = item
    if not groups["decisions"]:
        yield from groups["keys"]


# ---------------------------------------------------------------------------------------------
# The hot-bucket rule

HOT_BUCKET = b""  # a membership that stands for "in a hot bucket": fall back to the exact caption key

Verdict = Literal["single", "compare", "hot"]


def bucket_size(members: Iterable, limit: int) -> int:
    """Members counted up to limit + 1 (a hot bucket is never walked to its end here)."""
    size = 0
    for _ in members:
        size += 1
        if size > limit:
            break
    return size


def bucket_verdict(members: Iterable, max_bucket: int) -> tuple[int, Verdict]:
    """(size counted up to max_bucket + 1, verdict): "single" below two members (nothing to
    compare), "hot" above `max_bucket` (members fall back to exact keys), else "compare"."""
    size = bucket_size(members, max_bucket)
    if size < 2:
        return size, "single"
    return size, "hot" if size > max_bucket else "compare"


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


def caption_bucket_memberships(band: bytes, members: Iterable[bytes], hot: bool) -> Iterator[tuple[bytes, bytes]]:
    """A caption bucket of two or more -> (member id, band key) per member, or (member id,
    HOT_BUCKET) per member of a hot bucket."""
    key = HOT_BUCKET if hot else band
    for mid in members:
        yield mid, key


def caption_memberships(buckets: Iterable[bytes], rows: Iterable[tuple[str, str]]) -> Iterator[tuple[str, Any]]:
    """One member id's bucket memberships and its (node, caption) rows -> ("members", (band key,
    CaptionMember)) per bucket it shares, in band order, and ("hot", (caption hash, node)) once if
    it sat in a hot bucket. A member of no bucket of two or more yields nothing."""
    buckets = set(buckets)
    if not buckets:
        return
    for node, caption in rows:
        if HOT_BUCKET in buckets:
            yield "hot", (caption_hash(caption), node)
        for band in sorted(buckets - {HOT_BUCKET}):
            yield "members", (band, CaptionMember(node, caption))


def verified_caption_edges(members: Iterable[CaptionMember], cfg: NearCaptionConfig) -> list[Edge]:
    """A caption bucket of 2..max_bucket -> star edges over the pairs whose true Jaccard reaches
    the threshold (every pair, when verification is off)."""
    return caption_bucket_edges(list(members), cfg.threshold if cfg.verify else None, cfg.shingle, cfg.ngram)


# ---------------------------------------------------------------------------------------------
# Near-duplicate images


def image_members(key: DupKey, cfg):
    """A DupKey -> (band key, ImageMember) for each pHash band it is a member of, and for each band
    value it probes (within `hamming // bands` bits); nothing for a missing or malformed pHash."""
    value = parse_phash(key.phash)
    if value is None:
        return
    members, probes = image_band_keys(value, cfg.hamming, cfg.num_bands())
    for band in members:
        yield band, ImageMember(key.node, value, False)
    for band in probes:
        yield band, ImageMember(key.node, value, True)


def hot_image_key(member: ImageMember) -> tuple[str, str] | None:
    """A member of a hot image bucket -> (its whole pHash, node), the exact key it falls back to;
    None for a probe (it is a member of its own buckets elsewhere)."""
    if member.probe:
        return None
    return f"{member.phash:016x}", member.node


# ---------------------------------------------------------------------------------------------
# Hot-bucket fallback and decisions


def exact_stars(item):
    """Hot-bucket members grouped by their exact key -> star edges on the minimum."""
    _, nodes = item
    center, others = star(nodes)
    for node in others:
        yield node, center


def decide(label: tuple[str, str], reason: str) -> Decision:
    """A component label (node, component minimum) -> the node is a `reason` duplicate of the minimum."""
    node, root = label
    return Decision(node, reason, node_uid(root))
