"""Dedup groups and buckets, as steps a distributed runner can wire together: the cascade, exact-key
groups, the hot-bucket rule and split, bucket verdicts, and the decisions the components turn into
(caption memberships: filters/dedup/caption_lsh.py; image tables and the identical-pHash collapse:
filters/dedup/image_lsh.py).

The hot-bucket rule: a bucket (an LSH band of captions, a pHash table key of images) of two to
`max_bucket` members is verified pairwise in one group. A bigger one is hot, never turned into
exact-key grouping nor sampled. An image bucket is split: its members are dealt into
c = ceil(size / (max_bucket // 2)) chunks and every pair of chunks becomes one tile of at most
`max_bucket` members, so every pair of the bucket is still verified in some tile (cost size^2 / 2
checks, in numpy); past `max_split_chunks` chunks it goes to the LSH forest (filters/dedup/image_lsh.py).
A hot caption bucket goes to pivot verification (filters/dedup/hot_captions.py: one group walked in
passes, size x pivots true-Jaccard checks, held only as its pivots and what they leave), since
size^2 / 2 Jaccards in Python cost minutes a bucket at 10^4 members.

Plain functions over plain values, no Beam: they take what a group-by-key hands them (a key and a
re-iterable of values, walked without making a list where a group may be huge) and return what to
emit plus the sizes the caller records.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Literal, NamedTuple

from curation.core.records import Sample, is_frame_member
from filters.dedup.config import DedupConfig
from filters.dedup.keys import Decision, DupKey, Row, dup_key, resolve_chain

Edge = tuple[str, str]

# ---------------------------------------------------------------------------------------------
# The cascade and its exact keys


def cascade(cfg: DedupConfig, images: bool = True) -> tuple[list[str], list[str]]:
    """(exact kinds, near-duplicate kinds) that run, in cascade order: URL -> caption -> image
    bytes, then near caption -> near image -> semantic caption -> semantic image; image steps only
    when the records have `images`."""
    exact = [k for k in ("url", "caption", "image") if getattr(cfg.exact, k) and (k != "image" or images)]
    near = [k for k, on in (("caption", cfg.near_caption.enabled), ("image", cfg.near_image.enabled and images),
                            ("semantic_caption", cfg.semantic_caption.enabled),
                            ("semantic_image", cfg.semantic_image.enabled and images)) if on]
    return exact, near


# the DupKey field each step reads (the uid step reads the node, which every key keeps)
_STEP_FIELDS = {("exact", "url"): "url", ("exact", "caption"): "caption", ("exact", "image"): "sha256",
                ("exact", "uid"): None, ("near", "caption"): "caption", ("near", "image"): "phash",
                ("near", "semantic_caption"): "caption", ("near", "semantic_image"): None}


def fields_needed(steps: list[tuple[str, str]]) -> frozenset[str]:
    """The DupKey fields the given (exact | near, kind) steps read."""
    return frozenset(f for step in steps if (f := _STEP_FIELDS[step]))


def slim(key: DupKey, keep: frozenset[str]) -> DupKey:
    """The key without the fields no remaining step reads: what is left of the cascade shuffles
    only what it uses (a caption is not carried into the image steps, a URL past its own)."""
    return key._replace(url=key.url if "url" in keep else None, caption=key.caption if "caption" in keep else "",
                        sha256=key.sha256 if "sha256" in keep else None, phash=key.phash if "phash" in keep else None)


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
        video = rec.video is not None or any(is_frame_member(s) for s in rec.stored or ())
        # a video's exact key is its file's hash: two videos may share a poster frame (a title card)
        sha = rec.image.source_sha256 if video and rec.image.source_sha256 else rec.image.sha256
        yield dup_key(rec.pair, score_field, sha, rec.image.phash, node=row.node)


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
# Decisions


def decide(label: tuple[str, str], reason: str) -> Decision:
    """A component label (node, component minimum) -> the node is a `reason` duplicate of the minimum."""
    node, root = label
    return Decision(node, reason, root)
