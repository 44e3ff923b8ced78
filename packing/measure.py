"""Yardsticks for the packer: a stronger lower bound, a two-limit first-fit-decreasing baseline,
InternVL 2.5's own packing loop (the peer), and the seeded synthetic streams the bench and tests use.

None of this runs in a pipeline: it measures `packing.packer` (bench/packing.py, tests/test_packer.py).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

import numpy as np

from packing.packer import Item, Pack, lower_bound
from packing.tiling import TOKENS_PER_TILE, tile_sample

K = TypeVar("K", bound=Hashable)

_SHORTEST_LIMIT = 8192  # every stream's samples fit the bench's smallest l_max


# ---------------------------------------------------------------------------------------------- bounds


def _l2_bound(sizes: Sequence[int], cap: int) -> int:
    """Martello & Toth's L2 bound for one dimension: items over cap/2 each need their own pack, and
    the small items that cannot join them must fill further packs (max over the threshold K)."""
    if cap <= 0 or not sizes:
        return 0
    asc = sorted(sizes)
    prefix = [0, *accumulate(asc)]
    n, half = len(asc), cap / 2

    def total(lo: int, hi: int) -> int:  # sum of asc[lo:hi]
        return prefix[hi] - prefix[lo]

    big_from = bisect_right(asc, half)  # asc[big_from:] > cap/2
    best = 0
    for k in {0, *(w for w in asc[:big_from])}:
        n1_from = bisect_right(asc, cap - k)  # asc[n1_from:] > cap - k
        n2 = n1_from - big_from
        n3_from = bisect_left(asc, k)
        free = n2 * cap - total(big_from, n1_from)
        rest = total(n3_from, big_from) - free
        best = max(best, (n - big_from) + max(0, -(-rest // cap)))
    return best


def strong_lower_bound(items: Sequence[Item], l_max: int, t_max: int) -> int:
    """max(lower_bound, L2 on tokens, L2 on tiles): no packing can use fewer packs (tighter than the
    fractional bound where many items are over half a limit, e.g. long documents at 8192 tokens)."""
    return max(lower_bound(items, l_max, t_max), _l2_bound([it.tokens for it in items], l_max),
               _l2_bound([it.tiles for it in items], t_max))


# ---------------------------------------------------------------------------------------------- baselines


def ffd_key(item: Item, l_max: int, t_max: int) -> float:
    """FFD's size key: the larger of the item's two normalised sizes (tokens / l_max, tiles / t_max)."""
    return max(item.tokens / l_max, item.tiles / t_max if t_max else 0.0)


def first_fit_decreasing(items: Iterable[Item[K]], l_max: int, t_max: int,
                         key: Callable[[Item, int, int], float] = ffd_key) -> list[Pack[K]]:
    """Offline two-limit FFD: sort by `key` descending (stable: ties keep arrival order), put each item
    into the first open pack where both its tokens and tiles fit, else open a new pack.

    The first fit is exact and found in O(log n) per item on a segment tree over the packs that keeps
    each subtree's largest token room and largest tile room (a subtree is entered only when both can
    fit; an unopened pack has full room, so the first unopened leaf is where a new pack opens)."""
    order = sorted(items, key=lambda it: -key(it, l_max, t_max))
    for it in order:
        if it.tokens > l_max or it.tiles > t_max:
            raise ValueError(f"item {it.key!r} is over the limits")
    size = 1
    while size < max(1, len(order)):
        size *= 2
    tok = [l_max] * (2 * size)
    til = [t_max] * (2 * size)
    members: list[list[Item[K]]] = []
    for it in order:
        need_tok, need_til = it.tokens, it.tiles
        stack, leaf = [1], -1
        while stack:
            node = stack.pop()
            if tok[node] < need_tok or til[node] < need_til:
                continue
            if node >= size:
                leaf = node
                break
            stack.append(2 * node + 1)  # right pushed first: the left (earlier packs) is tried first
            stack.append(2 * node)
        b = leaf - size
        if b == len(members):
            members.append([])
        members[b].append(it)
        node = leaf
        tok[node] -= need_tok
        til[node] -= need_til
        node //= 2
        while node:
            tok[node] = max(tok[2 * node], tok[2 * node + 1])
            til[node] = max(til[2 * node], til[2 * node + 1])
            node //= 2
    return [Pack(tuple(m), sum(i.tokens for i in m), sum(i.tiles for i in m)) for m in members]


def internvl_reference(items: Iterable[Item[K]], l_max: int, t_max: int, max_buffer_size: int = 20) -> list[Pack[K]]:
    """InternVL 2.5's PackedDataset loop on item records (internvl/train/dataset_packed.py, no overflow):
    each sample joins the first buffer (kept sorted by tiles, most first) where both its tiles and
    tokens fit, else starts one; a buffer is emitted when exactly full in tokens or tiles, the most
    tiled one when more than `max_buffer_size` are open, and the rest in order at the end."""
    buffers: list[list] = []  # [tokens, tiles, members]
    out: list[Pack[K]] = []

    def emit(buf: list) -> None:
        out.append(Pack(tuple(buf[2]), buf[0], buf[1]))

    for it in items:
        if it.tokens > l_max or it.tiles > t_max:
            raise ValueError(f"item {it.key!r} is over the limits")
        found = next((i for i, b in enumerate(buffers) if b[1] + it.tiles <= t_max and b[0] + it.tokens <= l_max), -1)
        buf = buffers.pop(found) if found >= 0 else [0, 0, []]
        buf[0] += it.tokens
        buf[1] += it.tiles
        buf[2].append(it)
        if buf[0] >= l_max:
            emit(buf)
        else:
            at = next((i for i, b in enumerate(buffers) if b[1] < buf[1]), len(buffers))
            buffers.insert(at, buf)
        while buffers and buffers[0][1] == t_max:
            emit(buffers.pop(0))
        while len(buffers) > max_buffer_size:
            emit(buffers.pop(0))
    for buf in buffers:
        emit(buf)
    return out


# ---------------------------------------------------------------------------------------------- streams


def seeded_stream(n: int = 20000, seed: int = 1234) -> list[Item[int]]:
    """The issue's stream: text = rint(lognormal(log 600, 0.5)), min 8; tiles 1..13; tokens = text + 256 tiles + 2."""
    rng = np.random.default_rng(seed)
    text = np.maximum(np.rint(rng.lognormal(math.log(600), 0.5, n)), 8).astype(int)
    tiles = rng.integers(1, 14, n)
    tokens = text + TOKENS_PER_TILE * tiles + 2
    return [Item(i, int(t), int(k)) for i, (t, k) in enumerate(zip(tokens, tiles))]


def caption_document_stream(n: int = 20000, seed: int = 1234) -> list[Item[int]]:
    """70% short captions (1-2 tiles, text lognormal(log 40, 0.5)) mixed with 30% long documents
    (6-12 tiles, text lognormal(log 1200, 0.6) cut at 4096, as units cut over-long text); tokens =
    text + 256 tiles + 2."""
    rng = np.random.default_rng(seed)
    doc = rng.random(n) < 0.3
    tiles = np.where(doc, rng.integers(6, 13, n), rng.integers(1, 3, n))
    text = np.where(doc, np.minimum(rng.lognormal(math.log(1200), 0.6, n), 4096), rng.lognormal(math.log(40), 0.5, n))
    tokens = np.maximum(np.rint(text), 4).astype(int) + TOKENS_PER_TILE * tiles + 2
    return [Item(i, int(t), int(k)) for i, (t, k) in enumerate(zip(tokens, tiles))]


def multi_image_stream(n: int = 20000, seed: int = 1234, max_num: int = 12) -> list[Item[int]]:
    """1 + Poisson(1.5) images per sample, each width lognormal(log 900, 0.5) with aspect ratio
    exp(normal(0, 0.6)), tiled by InternVL's rule under the shared budget max(1, max_num // images);
    tokens = text lognormal(log 300, 0.7) + per image 256 tiles + 2, text cut (as units cut it) so that
    a sample fits 8192 tokens."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(1.5, n)
    widths = np.maximum(np.rint(rng.lognormal(math.log(900), 0.5, counts.sum())), 28).astype(int)
    aspects = np.exp(rng.normal(0.0, 0.6, counts.sum()))
    heights = np.maximum(np.rint(widths / aspects), 28).astype(int)
    text = np.maximum(np.rint(rng.lognormal(math.log(300), 0.7, n)), 8).astype(int)
    out, at = [], 0
    for i, (c, t) in enumerate(zip(counts, text)):
        tilings = tile_sample([(int(w), int(h)) for w, h in zip(widths[at:at + c], heights[at:at + c])], max_num)
        at += c
        image_tokens = sum(x.tokens + 2 for x in tilings)
        out.append(Item(i, min(int(t), _SHORTEST_LIMIT - image_tokens) + image_tokens, sum(x.tiles for x in tilings)))
    return out


STREAMS: dict[str, Callable[..., list[Item[int]]]] = {
    "seeded": seeded_stream, "captions_documents": caption_document_stream, "multi_image": multi_image_stream,
}
