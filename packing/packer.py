"""Greedy packing of samples into sequences under two limits: l_max tokens and t_max tiles.

InternVL 2.5's packing idea, done with a bounded buffer kept sorted by token count. Once the buffer
holds `buffer` items, one pack is built from it and emitted:

1. the largest item anchors the pack;
2. best fit: repeatedly the largest item that still fits both the remaining tokens and tiles
   (binary search, then a short walk down for the tile limit), preferring one that leaves tile
   room for the rest of the pack at the stream's own tile density (`tile_reserve` times it), so
   packs do not run out of tiles while tokens are left - the failure mode of a token-only fit;
3. completion: the last item is swapped for the pair of buffered items that fills the remaining
   gap best (a two-pointer walk over the sorted buffer), which closes most of best fit's gap.

Only small item records move, never payloads. `buffer=None` packs a whole in-memory partition
(offline mode). Deterministic: ties break on arrival order, so the same input gives the same packs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, Iterator, TypeVar

K = TypeVar("K", bound=Hashable)

_SEQ_BITS = 32
_PAIR_PROBES = 256  # bounds the completion's cost per pack in big (offline) buffers


@dataclass(frozen=True, slots=True)
class Item(Generic[K]):
    """What the packer needs to know of a sample (or of a preference pair, packed as one unit)."""

    key: K
    tokens: int
    tiles: int


@dataclass(frozen=True, slots=True)
class Pack(Generic[K]):
    items: tuple[Item[K], ...]
    tokens: int
    tiles: int


@dataclass(frozen=True, slots=True)
class Oversized(Generic[K]):
    """An item above l_max or t_max on its own: the caller truncates its text or rejects it."""

    item: Item[K]
    reason: str  # "too_long" | "too_many_tiles"


class GreedyPacker(Generic[K]):
    """Streaming packer: `add` items, get packs as they are emitted; `flush` at the end."""

    def __init__(
        self,
        l_max: int,
        t_max: int,
        buffer: int | None = 256,
        tile_walk: int = 64,
        tile_reserve: float = 0.88,
        complete: bool = True,
    ) -> None:
        if l_max < 1 or t_max < 0 or (buffer is not None and buffer < 1):
            raise ValueError("l_max >= 1, t_max >= 0, buffer >= 1 or None")
        self.l_max = l_max
        self.t_max = t_max
        self.buffer = buffer
        self.tile_walk = tile_walk
        self.tile_reserve = tile_reserve
        self.complete = complete
        self._keys: list[int] = []  # tokens << 32 | arrival sequence, ascending
        self._items: dict[int, Item[K]] = {}
        self._seq = 0
        self._seen_tokens = 0
        self._seen_tiles = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, item: Item[K]) -> Iterator[Pack[K] | Oversized[K]]:
        """Take one item; yields a pack when the buffer is full (or the item itself if oversized)."""
        if item.tokens > self.l_max:
            yield Oversized(item, "too_long")
            return
        if item.tiles > self.t_max:
            yield Oversized(item, "too_many_tiles")
            return
        if item.tokens < 1 or item.tiles < 0:
            raise ValueError(f"item {item.key!r}: tokens must be >= 1 and tiles >= 0")
        self._push(item)
        self._seen_tokens += item.tokens
        self._seen_tiles += item.tiles
        if self.buffer is not None and len(self._keys) >= self.buffer:
            yield self._build()

    def flush(self) -> Iterator[Pack[K]]:
        """Pack everything still buffered."""
        while self._keys:
            yield self._build()

    def _push(self, item: Item[K]) -> None:
        key = (item.tokens << _SEQ_BITS) | self._seq
        self._seq += 1
        insort(self._keys, key)
        self._items[key] = item

    def _take(self, index: int) -> tuple[int, Item[K]]:
        key = self._keys.pop(index)
        return key, self._items.pop(key)

    def _last_fitting(self, room: int) -> int:
        """Index of the largest buffered item with tokens <= room, or -1."""
        return bisect_right(self._keys, (room << _SEQ_BITS) | ((1 << _SEQ_BITS) - 1)) - 1

    def _build(self) -> Pack[K]:
        keys, items = self._keys, self._items
        density = self._seen_tiles / self._seen_tokens if self._seen_tokens else 0.0
        reserve = self.tile_reserve * min(density, self.t_max / self.l_max)
        first_key, first = self._take(len(keys) - 1)  # the largest item anchors the pack
        chosen = [(first_key, first)]
        room, tile_room = self.l_max - first.tokens, self.t_max - first.tiles
        while keys:
            pos = self._last_fitting(room)
            stop = max(-1, pos - self.tile_walk)
            pick = fallback = -1
            for p in range(pos, stop, -1):
                cand = items[keys[p]]
                if cand.tiles <= tile_room:
                    if fallback < 0:
                        fallback = p
                    if tile_room - cand.tiles >= reserve * (room - cand.tokens):
                        pick = p
                        break
            if pick < 0:
                pick = fallback
            if pick < 0:
                break
            key, item = self._take(pick)
            chosen.append((key, item))
            room -= item.tokens
            tile_room -= item.tiles
        if self.complete and room > 0 and len(chosen) > 1:
            self._swap_last_for_pair(chosen, room, tile_room)
        picked = tuple(item for _, item in chosen)
        return Pack(picked, sum(i.tokens for i in picked), sum(i.tiles for i in picked))

    def _swap_last_for_pair(self, chosen: list[tuple[int, Item[K]]], room: int, tile_room: int) -> None:
        """Replace the pack's last item by the two buffered items that fill its room plus the gap best."""
        keys, items = self._keys, self._items
        last_key, last = chosen[-1]
        room += last.tokens
        tile_room += last.tiles
        best, best_pair = last.tokens, None
        i, hi = 0, self._last_fitting(room)
        probes = 0
        while i < hi and best < room and probes < _PAIR_PROBES:
            probes += 1
            small = items[keys[i]]
            hi = min(hi, self._last_fitting(room - small.tokens))  # largest partner by tokens
            if hi <= i:
                break
            big_tokens = keys[hi] >> _SEQ_BITS
            if small.tokens + big_tokens <= best:
                # partners only shrink as `i` grows: skip every item too small to beat the best
                i = max(i + 1, bisect_left(keys, (best - big_tokens + 1) << _SEQ_BITS))
                continue
            for k in range(hi, max(i, hi - 8), -1):  # largest partner within the tile room
                big = items[keys[k]]
                if small.tiles + big.tiles <= tile_room:
                    total = small.tokens + big.tokens
                    if total > best:
                        best, best_pair = total, (i, k)
                    break
            i += 1
        if best_pair is None:
            return
        i, k = best_pair
        pair = [self._take(k), self._take(i)]  # k > i: pop the later index first
        chosen.pop()
        insort(keys, last_key)
        items[last_key] = last
        chosen.extend(reversed(pair))


def pack_stream(items: Iterable[Item[K]], l_max: int, t_max: int, buffer: int | None = 256) -> Iterator[Pack[K] | Oversized[K]]:
    """All packs (and oversized items) for a stream, buffer bounded; `buffer=None`: offline mode."""
    packer: GreedyPacker[K] = GreedyPacker(l_max, t_max, buffer)
    for item in items:
        yield from packer.add(item)
    yield from packer.flush()


def lower_bound(items: Iterable[Item], l_max: int, t_max: int) -> int:
    """No packing can use fewer packs than this: max(ceil(sum tokens / l_max), ceil(sum tiles / t_max))."""
    tokens = tiles = 0
    for it in items:
        tokens += it.tokens
        tiles += it.tiles
    return max(-(-tokens // l_max), -(-tiles // t_max) if t_max else 0)
