"""Near-duplicate images by bit-sampling LSH over 64-bit pHashes, in packed partitions.

A record is one membership in each of the L tables. Sending each membership as its own element
(key, node) made the table shuffle 307 elements of about 91 bytes per record at `hamming` 10.
Here a batch of members becomes packed uint64 arrays of bare pHashes keyed by partition. While
a whole table fits one partition (at most `partition_members` members), a partition serves a group
of tables (`table_groups` partitions in all) and gets each member once: 8 x table_groups bytes a
record. Past that, a partition is one table and the top `s` bits of its bucket key, 2^s chosen so
it holds about `partition_members` hashes: 8 bytes a membership. Each table of a partition group
is sorted by bucket key in numpy; every bucket of two or more is verified by exact Hamming distance, a hot one (over
`max_bucket`) tile by tile as `filters.dedup.buckets.split_plan` says. Past `max_split_chunks` chunks
(where tiles would cost size^2 / 2 checks) a bucket is never sampled: it goes to an LSH forest
(`forest`). After the identical-pHash collapse a pHash names one member, so pairs come out as
(pHash, pHash) and join back to nodes only for the found pairs.

The forest: `forest_trees` trees, each a seeded order of the bits the table does not key on; a
tree sorts the bucket by those bits and splits it, bit after bit, until every piece holds at most
`max_bucket` members (always reached: distinct pHashes differ somewhere), then verifies each piece
pairwise. The pairs found join the bucket's members into components, and each component goes out as
star edges onto its smallest pHash: at most size - 1 edges per bucket, however dense the family. A
forest bucket wholly inside one bucket of an earlier table is left to that table (its members
already meet there), so a family hot in every table is searched once, not L times.

A pair sharing keys in many tables is emitted once: by the first table it shares, tables whose
bucket went to the forest not counting (`forest_keys`, a first pass over the same groups: a forest
compares only pairs that share a piece). That holds for buckets of up to SMALL_RUN members. A
bigger bucket's verified pairs (whole, tile by tile, or piece by piece in the forest) leave as star
edges of its components onto their smallest pHash: at most size - 1 edges, however dense the
family (a 10^5-member near-blank family has 5 x 10^9 near pairs), emitted by every table whose
bucket it is - duplicates the components take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from filters.dedup.buckets import split_plan, too_hot
from filters.dedup.config import NearImageConfig

Edge = tuple[str, str]

U64 = np.uint64
ONE = U64(1)
SMALL_RUN = 32  # buckets up to this size are verified together by offset comparisons, bigger ones one by one
PAIR_CHUNK = 65_536  # rows of the first-table check at a time


def bit_samples(bits: int, tables: int, seed: int) -> np.ndarray:
    """(tables, bits) bit positions of the 64-bit pHash, each table's `bits` distinct ones drawn with
    a seeded generator: every worker derives the same tables from the recipe."""
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(64, bits, replace=False)) for _ in range(tables)]).astype(U64)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two uint64 arrays."""
    return np.bitwise_count(a[:, None] ^ b[None, :])


def table_masks(samples: np.ndarray) -> np.ndarray:
    """(tables,) uint64 masks of each table's sampled bits: two hashes share a table's key iff
    their XOR has none of its bits."""
    masks = np.zeros(len(samples), dtype=U64)
    for j in range(samples.shape[1]):
        masks |= ONE << samples[:, j]
    return masks


def sampled_bits(phashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each hash's bits at `positions` packed low to high: (n,) with positions (k,) -> (n,), or
    per row with positions (n, k)."""
    out = np.zeros(len(phashes), dtype=U64)
    for j in range(positions.shape[-1]):
        out |= ((phashes >> positions[..., j]) & ONE) << U64(j)
    return out


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of n nodes under edges (a, b): each node's label, the smallest node
    index of its component. In numpy: every edge hooks the larger of its two roots under the
    smaller, then pointer jumping sends every node to its root, until no edge joins two roots."""
    label = np.arange(n)
    while True:
        la, lb = label[a], label[b]
        apart = la != lb
        if not apart.any():
            return label
        np.minimum.at(label, np.maximum(la[apart], lb[apart]), np.minimum(la[apart], lb[apart]))
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped


def star_links(members: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verified pairs (members[i], members[j]) of one group -> the same components as star links
    (first member of its component, member): at most len(members) - 1 of them, however dense the
    group, so a near-identical family never turns into its size^2 / 2 pairs."""
    label = components(len(members), i, j)
    m = np.flatnonzero(label != np.arange(len(members)))
    return members[label[m]], members[m]


def forest_orders(samples: np.ndarray, trees: int, seed: int) -> list[list[np.ndarray]]:
    """Per table, `trees` seeded orders of the bit positions the table does not key on (the bits a
    forest tree splits a hot bucket by, first to last)."""
    out = []
    for t in range(len(samples)):
        free = np.setdiff1d(np.arange(64), samples[t].astype(np.int64))
        rng = np.random.default_rng([seed, t])
        out.append([rng.permutation(free).astype(U64) for _ in range(trees)])
    return out


@dataclass
class PartitionStats:
    """What one partition group did, for the stage's metrics."""

    members: int = 0
    max_bucket: int = 0  # the largest bucket seen (hot ones included)
    max_verified: int = 0  # the largest group compared pairwise (<= max_bucket of the recipe)
    candidate_pairs: int = 0  # pairs whose distance was computed
    pairs: int = 0  # pairs within `hamming` and star edges emitted
    hot: int = 0
    hot_members: int = 0
    tiles: int = 0
    forest: int = 0  # buckets searched by the forest
    forest_pieces: int = 0  # pieces its trees verified pairwise
    forest_edges: int = 0  # star edges the forest emitted


class ImageLsh:
    """The recipe's L bit-sampling tables, and the steps over their packed partitions."""

    def __init__(self, cfg: NearImageConfig, max_bucket: int, max_split_chunks: int) -> None:
        self.cfg = cfg
        self.max_bucket = max_bucket
        self.max_split_chunks = max_split_chunks
        self.tables = cfg.num_tables()
        self.bits = cfg.bits
        self.samples = bit_samples(cfg.bits, self.tables, cfg.seed)
        self.masks = table_masks(self.samples)
        self._orders: list[list[np.ndarray]] | None = None  # the forest's bit orders, built when first needed
        self.group = -(-self.tables // cfg.table_groups)  # tables per partition while a table fits one

    def prefix_bits(self, members: int) -> int:
        """s: each table splits into 2^s partitions by the top s bits of its bucket key, so one
        holds about members / 2^s <= `partition_members` hashes."""
        if members <= self.cfg.partition_members:
            return 0
        return min(self.bits, math.ceil(math.log2(members / self.cfg.partition_members)))

    def tables_of(self, part: int, s: int) -> range:
        """The tables one partition serves: a group of `group` whole tables at s = 0 (every member
        shipped once per group, not once per table), else the one table whose key prefix it holds."""
        if s == 0:
            return range(part * self.group, min((part + 1) * self.group, self.tables))
        return range(part >> s, (part >> s) + 1)

    def partitions(self, phashes: np.ndarray, s: int) -> Iterator[tuple[int, bytes]]:
        """A batch of distinct pHashes -> (partition, packed uint64 pHashes) for every partition the
        batch reaches: table group at s = 0, else table << s | key prefix."""
        phashes = np.sort(np.asarray(phashes, dtype=U64))
        if not len(phashes):
            return
        if s == 0:
            blob = phashes.tobytes()
            for g in range(-(-self.tables // self.group)):
                yield g, blob
            return
        top = self.samples[:, self.bits - s:]  # (L, s): a bucket key's top s bits
        prefix = np.stack([sampled_bits(phashes, top[t]) for t in range(self.tables)], axis=1)  # (n, L)
        part = ((np.arange(self.tables, dtype=U64) << U64(s))[None, :] | prefix).ravel()
        order = np.argsort(part, kind="stable")
        part, ph = part[order], np.repeat(phashes, self.tables)[order]
        starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(part)]):
            yield int(part[a]), ph[a:b].tobytes()

    # -- one partition group

    @staticmethod
    def _hashes(blobs: Iterable[bytes]) -> np.ndarray:
        return np.sort(np.concatenate([np.frombuffer(b, dtype=U64) for b in blobs]))

    def _buckets(self, ph: np.ndarray, t: int):
        """(pHashes sorted by (table t's bucket key, pHash), their keys, bucket starts, sizes)."""
        key = sampled_bits(ph, self.samples[t])
        order = np.argsort(key, kind="stable")
        key, ph = key[order], ph[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
        sizes = np.diff(np.r_[starts, len(key)])
        return ph, key, starts, sizes

    def _full_key(self, t: int, key) -> int:
        return (int(t) << self.bits) | int(key)

    def _to_forest(self, size: int) -> bool:
        """A bucket too hot for tiles (past `max_split_chunks` chunks) goes to the forest."""
        return too_hot(size, self.max_bucket, self.max_split_chunks)

    def forest_keys(self, part: int, blobs: Iterable[bytes], s: int) -> list[int]:
        """The first pass: full keys (table << bits | bucket) of this partition's forest buckets."""
        ph, out = self._hashes(blobs), []
        for t in self.tables_of(part, s):
            _, key, starts, sizes = self._buckets(ph, t)
            hot = np.flatnonzero(sizes > self.max_bucket)
            out += [self._full_key(t, key[starts[i]]) for i in hot.tolist() if self._to_forest(int(sizes[i]))]
        return out

    def pairs(self, part: int, blobs: Iterable[bytes], s: int,
              forest: np.ndarray) -> tuple[list[tuple[int, int]], PartitionStats]:
        """One partition -> ((low pHash, high pHash), stats): pairs within `hamming`, each once, by
        the first table it shares outside forest buckets (`forest`: sorted full keys), and the
        forest's star edges (chains of such pairs)."""
        hashes = self._hashes(blobs)
        st = PartitionStats(members=len(hashes))
        out: list[tuple[int, int]] = []
        for t in self.tables_of(part, s):
            out += self._table_pairs(hashes, t, forest, st)
        st.pairs = len(out)
        return out, st

    def _table_pairs(self, hashes: np.ndarray, t: int, forest: np.ndarray, st: PartitionStats) -> list[tuple[int, int]]:
        """Table t's buckets over one partition's hashes, verified; the pairs t is first to share,
        and the star edges of its forest buckets."""
        ph, key, starts, sizes = self._buckets(hashes, t)
        if len(sizes):
            st.max_bucket = max(st.max_bucket, int(sizes.max()))
        h = self.cfg.hamming
        found: list[tuple[np.ndarray, np.ndarray]] = []
        cut = min(SMALL_RUN, self.max_bucket)
        small = (sizes >= 2) & (sizes <= cut)
        if small.any():
            st.max_verified = max(st.max_verified, int(sizes[small].max()))
            idx = np.flatnonzero(np.repeat(small, sizes))
            k, v = key[idx], ph[idx]
            for d in range(1, int(sizes[small].max())):
                i = np.flatnonzero(k[:-d] == k[d:])  # runs are contiguous: same key d apart = same bucket
                if not len(i):
                    break
                st.candidate_pairs += len(i)
                a, b = v[i], v[i + d]
                near = np.bitwise_count(a ^ b) <= h
                found.append((a[near], b[near]))
        stars: list[tuple[int, int]] = []
        for i in np.flatnonzero(sizes > cut).tolist():
            run = ph[starts[i]:starts[i] + sizes[i]]
            if len(run) <= self.max_bucket:
                st.max_verified = max(st.max_verified, len(run))
                st.candidate_pairs += len(run) * (len(run) - 1) // 2
                a, b = np.nonzero(np.triu(hamming_matrix(run, run) <= h, k=1))
                stars += self._stars(run, a, b)
            elif self._to_forest(len(run)):
                stars += self.forest(run, t, st)
            else:
                stars += self._stars(run, *self._hot(run, st))
        return self._first_table(found, t, forest) + stars

    @staticmethod
    def _stars(run: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
        """Verified pairs (indices into `run`, a bucket's pHashes in ascending order) -> star edges
        (smallest pHash of the component, member): the bucket's components in at most len(run) - 1
        edges, instead of every pair."""
        root, member = star_links(np.arange(len(run)), a, b)
        return list(zip(run[root].tolist(), run[member].tolist()))

    def forest(self, run: np.ndarray, t: int, st: PartitionStats) -> list[tuple[int, int]]:
        """A bucket of table t too hot for tiles (`run`: its pHashes in ascending order, as
        `_buckets` leaves them) -> star edges (member, smallest pHash of its component) over the
        pairs within `hamming` that the trees' pieces verify; nothing if the bucket lies wholly in
        one bucket of an earlier table (searched there)."""
        spread = np.bitwise_or.reduce(run ^ run[0])  # the bits on which some members differ
        if t and ((spread & self.masks[:t]) == 0).any():
            return []
        if self._orders is None:
            self._orders = forest_orders(self.samples, self.cfg.forest_trees, self.cfg.seed)
        st.hot += 1
        st.hot_members += len(run)
        st.forest += 1
        h = self.cfg.hamming
        links_a, links_b = [], []
        for order in self._orders[t]:
            key = sampled_bits(run, order[::-1])  # the order's first bit is the key's highest
            idx = np.argsort(key, kind="stable")
            key = key[idx]
            todo = [(0, len(run), len(order) - 1)]
            while todo:
                lo, hi, bit = todo.pop()
                if hi - lo <= self.max_bucket:
                    if hi - lo >= 2:
                        members = idx[lo:hi]
                        st.forest_pieces += 1
                        st.candidate_pairs += (hi - lo) * (hi - lo - 1) // 2
                        st.max_verified = max(st.max_verified, hi - lo)
                        i, j = np.nonzero(np.triu(hamming_matrix(run[members], run[members]) <= h, k=1))
                        a, b = star_links(members, i, j)  # a dense piece: at most its size in links
                        links_a.append(a)
                        links_b.append(b)
                    continue
                # keys[lo:hi] share every bit above `bit`, so those with it clear come first
                mid = lo + int(np.searchsorted((key[lo:hi] >> U64(bit)) & ONE, ONE))
                todo += [(lo, mid, bit - 1), (mid, hi, bit - 1)] if lo < mid < hi else [(lo, hi, bit - 1)]
        a = np.concatenate(links_a) if links_a else np.zeros(0, dtype=np.int64)
        b = np.concatenate(links_b) if links_b else np.zeros(0, dtype=np.int64)
        label = components(len(run), a, b)  # the smallest index of a component: its smallest pHash
        member = np.flatnonzero(label != np.arange(len(run)))
        st.forest_edges += len(member)
        return list(zip(run[label[member]].tolist(), run[member].tolist()))

    def _hot(self, run: np.ndarray, st: PartitionStats) -> tuple[np.ndarray, np.ndarray]:
        """A hot bucket verified tile by tile (every pair of chunks of max_bucket // 2): every pair
        of the bucket checked, up to `max_split_chunks` chunks (past them: `forest`); each tile's
        verified pairs leave as star links (indices into `run`), at most a tile's size each."""
        plan = split_plan(len(run), self.max_bucket)
        st.hot += 1
        st.hot_members += len(run)
        st.tiles += plan.tiles
        idx = np.arange(len(run))
        chunks = [idx[c * plan.chunk:(c + 1) * plan.chunk] for c in range(plan.chunks)]
        st.max_verified = max(st.max_verified, min(len(run), 2 * plan.chunk))
        out_a, out_b = [], []
        for x in range(plan.chunks):
            for y in range(x, plan.chunks):
                if not len(chunks[x]) or not len(chunks[y]):
                    continue
                members = chunks[x] if x == y else np.concatenate([chunks[x], chunks[y]])
                n = len(chunks[x])
                st.candidate_pairs += n * (n - 1) // 2 if x == y else n * len(chunks[y])
                near = hamming_matrix(run[chunks[x]], run[chunks[y]]) <= self.cfg.hamming
                if x == y:
                    near = np.triu(near, k=1)
                i, j = np.nonzero(near)
                a, b = star_links(members, i, j if x == y else j + n)
                out_a.append(a)
                out_b.append(b)
        empty = np.zeros(0, dtype=np.int64)
        return np.concatenate(out_a) if out_a else empty, np.concatenate(out_b) if out_b else empty

    def _first_table(self, found: list[tuple[np.ndarray, np.ndarray]], t: int,
                     forest: np.ndarray) -> list[tuple[int, int]]:
        """Verified pairs of table t -> those for which t is the first table they share, tables where
        their bucket went to the forest not counting."""
        if not found:
            return []
        lo, hi = _ordered(np.concatenate([a for a, _ in found]), np.concatenate([b for _, b in found]))
        if not len(lo) or t == 0:
            return list(zip(lo.tolist(), hi.tolist()))
        keep = np.ones(len(lo), dtype=bool)
        masks = self.masks[:t]
        for c in range(0, len(lo), PAIR_CHUNK):
            x = (lo[c:c + PAIR_CHUNK] ^ hi[c:c + PAIR_CHUNK])[:, None]
            earlier = (x & masks[None, :]) == 0  # (rows, t): shares that earlier table's key
            if len(forest):
                e, tt = np.nonzero(earlier)
                if len(e):
                    full = (tt.astype(U64) << U64(self.bits)) | sampled_bits(lo[c + e], self.samples[tt])
                    skip = np.isin(full, forest)
                    earlier[e[skip], tt[skip]] = False
            keep[c:c + PAIR_CHUNK] = ~earlier.any(axis=1)
        return list(zip(lo[keep].tolist(), hi[keep].tolist()))


def _ordered(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(a, b), np.maximum(a, b)


# ---------------------------------------------------------------------------------------------
# Found pairs back to nodes: a pHash names one member after the identical-pHash collapse


def low_node(item: tuple[int, dict]) -> Iterator[tuple[int, str]]:
    """CoGroup by the low pHash of its member node and the high pHashes paired with it -> (high
    pHash, low node) per pair."""
    _, groups = item
    for node in groups["node"]:
        for high in groups["pairs"]:
            yield high, node


def node_edges(item: tuple[int, dict]) -> Iterator[tuple[str, str]]:
    """CoGroup by the high pHash of its member node and the low nodes paired with it -> node edges."""
    _, groups = item
    for node in groups["node"]:
        for low in groups["low"]:
            yield low, node


