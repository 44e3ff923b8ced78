"""Caption LSH buckets too hot for tiles, verified against pivots: never sampled, never listed.

A template filled with a number, a shop's boilerplate, a watermark line: a near-duplicate caption
family makes LSH buckets of any size. Tiles (filters/dedup/buckets.py) check every pair, size^2 / 2
checks; past `max_split_chunks` chunks that is too dear. Such a bucket is searched here instead:

1. the `PIVOTS` members with the smallest hash become pivots (the same whatever order the group
   arrives in);
2. a pass over the group checks every other member against the pivots by true shingle Jaccard, the
   first pivot reached wins (an edge member -> pivot), and counts the members no pivot reaches;
   while more than `cap` are unreached, the `PIVOTS` smallest-hash unreached ones become pivots
   too and the pass repeats (at most `rounds` passes; an edge is emitted by the pass whose new
   pivots reach it, so once);
3. the unreached (at most `cap`, held) are pivoted in memory the same way until at most
   `max_bucket` are left, which are verified pairwise;
4. held members still linked to nothing are checked against the members the pivots reached, in
   one more pass (as many as keep it within what the largest tiled bucket costs): a family member
   near its neighbours but near no pivot still joins them.

Memory: the pivots and at most `cap` unreached members, whatever the bucket's size. Work: size x
pivots per pass, so a family the first pivots cover (a template family: one pivot reaches all)
costs one pass. A member a pivot reaches is compared with the unreached ones only in step 4, so a
pair can stay apart where the components do not join it otherwise (pair recall, which
bench/dedup_scale.py reports beside member recall). Only if `rounds` passes leave more than `cap`
unreached are the excess (largest hashes) not verified with each other, counted as
`caption_hot_bucket_skipped`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

from filters.dedup.caption_lsh import CaptionMember
from filters.dedup.components import union_find
from filters.dedup.config import NearCaptionConfig
from filters.dedup.minhash import jaccard, shingles

PIVOTS = 16  # new pivots per pass (and per in-memory round)
Edge = tuple[str, str]


def rank(node: str) -> tuple[int, str]:
    """A member's place in pivot order: a keyed hash of its node, so pivots are spread over the
    family rather than its lowest uids."""
    digest = hashlib.blake2b(node.encode("utf-8", "surrogatepass"), digest_size=8, person=b"hot-pivot").digest()
    return int.from_bytes(digest, "big"), node


class Smallest:
    """The k smallest items added so far, in O(k) memory (pruned by sorting at 2k)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._items: list = []

    def add(self, item) -> None:
        self._items.append(item)
        if len(self._items) >= 2 * self.k:
            self._items = sorted(self._items)[: self.k]

    def items(self) -> list:
        self._items = sorted(self._items)[: self.k]
        return self._items


@dataclass
class HotStats:
    """What one pivot-verified bucket cost and left: `members`, `passes` over the group, `pivots`,
    `candidate_pairs` (Jaccard checks), `edges`, `largest_verified` (the pairwise group at the end,
    <= max_bucket) and `skipped` (unreached members past `cap` after `rounds` passes)."""

    members: int = 0
    passes: int = 0
    pivots: int = 0
    candidate_pairs: int = 0
    edges: int = 0
    largest_verified: int = 0
    skipped: int = 0


class _Pivot(NamedTuple):
    node: str
    shingles: set


class PivotVerifier:
    """One hot caption bucket -> edges between members whose true Jaccard reaches the threshold."""

    def __init__(self, cfg: NearCaptionConfig, max_bucket: int, cap: int, rounds: int, pivots: int = PIVOTS) -> None:
        self.cfg = cfg
        self.max_bucket = max_bucket
        self.cap = max(cap, max_bucket)
        self.rounds = max(rounds, 1)
        self.per_round = pivots

    def _shingles(self, caption: str) -> set:
        return shingles(caption, self.cfg.shingle, self.cfg.ngram)

    def _reach(self, sh: set, pivots: list[_Pivot], start: int, stop: int, st: HotStats) -> int:
        """Index of the first pivot in [start, stop) at Jaccard >= threshold, else -1."""
        for j in range(start, stop):
            st.candidate_pairs += 1
            if jaccard(sh, pivots[j].shingles) >= self.cfg.threshold:
                return j
        return -1

    def _among(self, new: list[_Pivot], pivots: list[_Pivot], st: HotStats) -> Iterator[Edge]:
        """New pivots checked against the ones before them in the same batch (an earlier batch
        reached none of them)."""
        base = len(pivots)
        pivots += new
        for i in range(base, len(pivots)):
            j = self._reach(pivots[i].shingles, pivots, base, i, st)
            if j >= 0:
                yield pivots[i].node, pivots[j].node

    def edges(self, group: Iterable[CaptionMember], st: HotStats) -> Iterator[Edge]:
        """The bucket (a re-iterable, walked once per pass) -> edges, each once; `st` filled in."""
        if not self.cfg.verify:  # every member of a bucket is a duplicate: a star on the minimum
            center = min(m.node for m in group)
            for m in group:
                st.members += 1
                if m.node != center:
                    st.edges += 1
                    yield m.node, center
            return
        first = Smallest(self.per_round)
        for m in group:
            st.members += 1
            first.add((rank(m.node), m.caption))
        pivots: list[_Pivot] = []
        new = [_Pivot(r[1], self._shingles(c)) for r, c in first.items()]
        unreached: list = []
        for rnd in range(self.rounds):
            start = len(pivots)
            for edge in self._among(new, pivots, st):
                st.edges += 1
                yield edge
            st.pivots = len(pivots)
            st.passes += 1
            is_pivot = {p.node for p in pivots}
            nxt, held, count = Smallest(self.per_round), Smallest(self.cap), 0
            for m in group:
                if m.node in is_pivot:
                    continue
                sh = self._shingles(m.caption)
                j = self._reach_from(sh, pivots, start, st)
                if j >= start:
                    st.edges += 1
                    yield m.node, pivots[j].node
                elif j == -1:
                    count += 1
                    item = (rank(m.node), m.caption)
                    nxt.add(item)
                    held.add(item)
            unreached = held.items()
            if count <= self.cap or rnd == self.rounds - 1:
                st.skipped = max(0, count - self.cap)
                break
            new = [_Pivot(r[1], self._shingles(c)) for r, c in nxt.items()]
        left = [_Pivot(r[1], self._shingles(c)) for r, c in unreached]
        linked: set[str] = set()
        for edge in self._in_memory(left, st):
            linked.update(edge)
            yield edge
        yield from self._rescue([m for m in left if m.node not in linked], group, pivots, st)

    def _rescue(self, alone: list[_Pivot], group: Iterable[CaptionMember], pivots: list[_Pivot],
                st: HotStats) -> Iterator[Edge]:
        """Held members linked to nothing (no pivot, no other held member reaches them) checked
        against the members the pivots reached, in one more pass: a family member that is near
        its neighbours but not near a pivot still joins them. As many (rank order) as keep the
        pass within what the largest tiled bucket costs (cap^2 / 2 checks), at least 2 x PIVOTS."""
        alone = alone[: max(2 * self.per_round, self.cap * self.cap // 2 // max(st.members, 1))]
        if not alone:
            return
        skip = {p.node for p in pivots} | {m.node for m in alone}
        st.passes += 1
        for m in group:
            if m.node in skip:
                continue
            sh = self._shingles(m.caption)
            for i in range(len(alone) - 1, -1, -1):
                st.candidate_pairs += 1
                if jaccard(sh, alone[i].shingles) >= self.cfg.threshold:
                    st.edges += 1
                    yield alone[i].node, m.node
                    del alone[i]
            if not alone:
                return

    def _reach_from(self, sh: set, pivots: list[_Pivot], start: int, st: HotStats) -> int:
        """A member an earlier pass's pivot reaches was emitted then (-2: done); else the first of
        this pass's new pivots (from `start`) reaching it, or -1."""
        if self._reach(sh, pivots, 0, start, st) >= 0:
            return -2
        return self._reach(sh, pivots, start, len(pivots), st)

    def _in_memory(self, left: list[_Pivot], st: HotStats) -> Iterator[Edge]:
        """The unreached members (rank order, at most `cap`): pivot rounds until <= max_bucket,
        then every pair verified."""
        while len(left) > self.max_bucket:
            pivots: list[_Pivot] = []
            for edge in self._among(left[: self.per_round], pivots, st):
                st.edges += 1
                yield edge
            st.pivots += len(pivots)
            rest = []
            for m in left[self.per_round:]:
                j = self._reach(m.shingles, pivots, 0, len(pivots), st)
                if j >= 0:
                    st.edges += 1
                    yield m.node, pivots[j].node
                else:
                    rest.append(m)
            left = rest
        st.largest_verified = max(st.largest_verified, len(left))
        st.candidate_pairs += len(left) * (len(left) - 1) // 2
        pairs = ((a.node, b.node) for i, a in enumerate(left) for b in left[:i]
                 if jaccard(a.shingles, b.shingles) >= self.cfg.threshold)
        for node, root in union_find(pairs).items():  # a star per verified component: < len(left) edges
            if node != root:
                st.edges += 1
                yield node, root
