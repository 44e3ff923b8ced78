"""Greedy packing of samples into sequences under two limits: l_max tokens and t_max tiles.

InternVL 2.5's packing idea, done with a bounded buffer kept sorted by token count (and bucketed by
tiles). Once the buffer holds `buffer` items, one pack is built from it and emitted (or parked):

1. the oldest buffered item anchors the pack (`anchor="largest"`: the largest, as InternVL's
   sorted buffer would): anchoring by arrival keeps the buffer a sample of the stream, where
   anchoring the largest drains the large items and leaves packs of mid-sized ones that fit two
   to a pack with a gap (+2.7% packs against +1.0% on the multi-image stream at 8192 / 40); it
   also bounds how long an item waits;
2. best fit: repeatedly the largest item that still fits both the remaining tokens and tiles
   (binary search, a short walk down, then one binary search per tile count in the buffer bucketed
   by tiles), preferring one that leaves tile room for the rest of the pack at the stream's own
   tile density (`tile_reserve` times it), so packs do not run out of tiles while tokens are left -
   the failure mode of a token-only fit; where both limits can bind, also one that leaves no more
   than `tile_ceiling` times that density (plus `ceiling_slack` of t_max), so the tile-light items
   are not all taken first, leaving the tile-heavy ones to fill packs short in tokens;
3. completion: the last item is swapped for the pair of buffered items that fills the remaining
   gap best (a two-pointer walk over the sorted buffer), which closes most of best fit's gap; in a
   tile-bound stream the gap is counted in tiles instead (per pair of tile counts in the buffer,
   their fewest-token items), and a pack with no tile room left is done;
4. parking: a pack that is still under `close_fill` in both limits is not emitted but parked (at
   most `park` of them, the fullest is emitted when one more comes); each arriving item first goes
   to the parked pack it fits best (least room left), and a parked pack is emitted once it reaches
   `close_fill` in either limit. The buffer runs out of small fillers before it runs out of large
   items, so a pack waits for the filler the stream brings next instead of leaving its gap empty.

Only small item records move, never payloads. Memory is bounded by `buffer` items plus `park`
packs. `buffer=None` packs a whole in-memory partition (offline mode: nothing is parked).
Deterministic: ties break on arrival order, so the same input gives the same packs.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Generic, Hashable, Iterable, Iterator, Literal, TypeVar

K = TypeVar("K", bound=Hashable)

_SEQ_BITS = 32
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_BALANCED = 0.8  # the tile ceiling applies where the stream's tiles are >= this share of what its tokens allow
_PAIR_PROBES = 48  # bounds the completion's cost per pack (more probes: < 0.1% fewer packs, half the speed)
_PARK_WALK = 8  # parked packs an arriving item is tried against, from the tightest token fit up


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
        tile_walk: int = 8,
        tile_reserve: float = 0.88,
        tile_ceiling: float = 1.3,
        ceiling_slack: float = 0.1,
        complete: bool = True,
        park: int = 32,
        close_fill: float = 0.98,
        anchor: Literal["oldest", "largest"] = "oldest",
    ) -> None:
        if (l_max < 1 or t_max < 0 or (buffer is not None and buffer < 1) or park < 0 or not 0 < close_fill <= 1
                or anchor not in ("oldest", "largest")):
            raise ValueError("l_max >= 1, t_max >= 0, buffer >= 1 or None, park >= 0, 0 < close_fill <= 1, "
                             "anchor 'oldest' or 'largest'")
        self.l_max = l_max
        self.t_max = t_max
        self.buffer = buffer
        self.tile_walk = tile_walk
        self.tile_reserve = tile_reserve
        self.tile_ceiling = tile_ceiling
        self.ceiling_slack = ceiling_slack
        self.complete = complete
        self.anchor = anchor
        self._arrivals: list[int] = []  # arrival sequence << 32 | tokens, a heap (anchor "oldest")
        self._keys: list[int] = []  # tokens << 32 | arrival sequence, ascending
        self._items: dict[int, Item[K]] = {}
        self._by_tiles: dict[int, list[int]] = {}  # tiles -> the buffered keys with that many, ascending
        self._seq = 0
        self._seen_tokens = 0
        self._seen_tiles = 0
        self.park = park if buffer is not None else 0
        self._close_tokens = l_max - int(close_fill * l_max)  # a pack with this little room left is full
        self._close_tiles = t_max - int(close_fill * t_max) if t_max else -1  # no tiles: tokens decide
        self._parked: list[int] = []  # token room << 32 | park sequence, ascending
        self._packs: dict[int, tuple[list[tuple[int, Item[K]]], int, int]] = {}  # -> (chosen, tokens, tiles)
        self._park_seq = 0

    def __len__(self) -> int:
        """Items held: buffered plus in parked packs."""
        return len(self._keys) + sum(len(chosen) for chosen, _, _ in self._packs.values())

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
        self._seen_tokens += item.tokens
        self._seen_tiles += item.tiles
        if self._parked:
            placed, done = self._to_parked(item)
            if done is not None:
                yield done
            if placed:
                return
        self._push(item)
        if self.buffer is not None and len(self._keys) >= self.buffer:
            chosen, tokens, tiles = self._build()
            if self._is_full(tokens, tiles) or not self.park:
                yield self._pack(chosen, tokens, tiles)
                return
            self._park(chosen, tokens, tiles)
            if len(self._parked) > self.park:  # the fullest in tokens goes
                yield self._pack(*self._packs.pop(self._parked.pop(0)))

    def flush(self) -> Iterator[Pack[K]]:
        """Pack everything still held: each parked pack (fullest first) is topped up from the buffer."""
        while self._parked:
            chosen, tokens, tiles = self._packs.pop(self._parked.pop(0))
            yield self._pack(*self._fill(chosen, self.l_max - tokens, self.t_max - tiles))
        while self._keys:
            yield self._pack(*self._build())

    def _is_full(self, tokens: int, tiles: int) -> bool:
        return self.l_max - tokens <= self._close_tokens or self.t_max - tiles <= self._close_tiles

    @staticmethod
    def _pack(chosen: list[tuple[int, Item[K]]], tokens: int, tiles: int) -> Pack[K]:
        return Pack(tuple(item for _, item in chosen), tokens, tiles)

    def _park(self, chosen: list[tuple[int, Item[K]]], tokens: int, tiles: int) -> None:
        key = ((self.l_max - tokens) << _SEQ_BITS) | self._park_seq
        self._park_seq += 1
        insort(self._parked, key)
        self._packs[key] = (chosen, tokens, tiles)

    def _to_parked(self, item: Item[K]) -> tuple[bool, Pack[K] | None]:
        """Put `item` into the parked pack it fits best: (whether it went in, that pack if now full)."""
        parked, packs = self._parked, self._packs
        start = bisect_left(parked, item.tokens << _SEQ_BITS)  # the tightest token room that fits
        best = -1
        best_left = 2.0
        for j in range(start, min(len(parked), start + _PARK_WALK)):
            _, tokens, tiles = packs[parked[j]]
            tile_left = self.t_max - tiles - item.tiles
            if tile_left >= 0:
                left = min((self.l_max - tokens - item.tokens) / self.l_max, tile_left / max(1, self.t_max))
                if left < best_left:
                    best, best_left = j, left
        if best < 0:
            return False, None
        chosen, tokens, tiles = packs.pop(parked.pop(best))
        chosen.append((-1, item))  # never returned to the buffer: no buffer key
        tokens, tiles = tokens + item.tokens, tiles + item.tiles
        if self._is_full(tokens, tiles):
            return True, self._pack(chosen, tokens, tiles)
        self._park(chosen, tokens, tiles)
        return True, None

    def _push(self, item: Item[K]) -> None:
        self._put((item.tokens << _SEQ_BITS) | self._seq, item)
        self._seq += 1

    def _put(self, key: int, item: Item[K]) -> None:
        insort(self._keys, key)
        self._items[key] = item
        if self.anchor == "oldest":  # arrival sequence << 32 | tokens: a min-heap by arrival
            heappush(self._arrivals, ((key & _SEQ_MASK) << _SEQ_BITS) | (key >> _SEQ_BITS))
        bucket = self._by_tiles.get(item.tiles)
        if bucket is None:
            self._by_tiles[item.tiles] = [key]
        else:
            insort(bucket, key)

    def _take(self, index: int) -> tuple[int, Item[K]]:
        key = self._keys.pop(index)
        item = self._items.pop(key)
        bucket = self._by_tiles[item.tiles]
        del bucket[bisect_left(bucket, key)]
        if not bucket:
            del self._by_tiles[item.tiles]
        return key, item

    def _best_by_tiles(self, room: int, tile_room: int, reserve: float, ceiling: float, slack: float) -> int:
        """Index of the largest item (by tokens) that fits both rooms, keeps the tile reserve and stays
        under the ceiling (0: none), else of the largest that fits both, else -1: per tile count, the
        largest that fits the token room (and the ceiling's token cap)."""
        limit = (room << _SEQ_BITS) | _SEQ_MASK
        best = fallback = -1
        for tiles, bucket in self._by_tiles.items():
            if tiles > tile_room or bucket[0] > limit:
                continue
            key = bucket[bisect_right(bucket, limit) - 1]
            if key > fallback:
                fallback = key
            if ceiling:  # tile_left <= ceiling * left + slack: at most this many tokens
                cap = room - math.ceil(max(0.0, tile_room - tiles - slack) / ceiling)
                j = bisect_right(bucket, (cap << _SEQ_BITS) | _SEQ_MASK) - 1 if cap >= 0 else -1
                if j < 0:
                    continue
                key = bucket[j]
            if key > best and tile_room - tiles >= reserve * (room - (key >> _SEQ_BITS)):
                best = key  # fewer tokens in the same bucket only leave less reserve: its largest decides
        key = best if best >= 0 else fallback
        return bisect_left(self._keys, key) if key >= 0 else -1

    def _last_fitting(self, room: int) -> int:
        """Index of the largest buffered item with tokens <= room, or -1."""
        return bisect_right(self._keys, (room << _SEQ_BITS) | _SEQ_MASK) - 1

    def _build(self) -> tuple[list[tuple[int, Item[K]]], int, int]:
        """One pack from the buffer, anchored by its oldest item (or its largest): (chosen, tokens, tiles)."""
        keys, arrivals = self._keys, self._arrivals
        index = len(keys) - 1
        if self.anchor == "oldest":
            while True:  # entries of items taken as partners are stale: skip them
                entry = heappop(arrivals)
                key = ((entry & _SEQ_MASK) << _SEQ_BITS) | (entry >> _SEQ_BITS)
                if key in self._items:
                    index = bisect_left(keys, key)
                    break
        first_key, first = self._take(index)
        return self._fill([(first_key, first)], self.l_max - first.tokens, self.t_max - first.tiles)

    def _fill(self, chosen: list[tuple[int, Item[K]]], room: int,
              tile_room: int) -> tuple[list[tuple[int, Item[K]]], int, int]:
        """Best fit from the buffer into a pack with `room` tokens and `tile_room` tiles left, then completion."""
        keys, items = self._keys, self._items
        density = self._seen_tiles / self._seen_tokens if self._seen_tokens else 0.0
        reserve = self.tile_reserve * min(density, self.t_max / self.l_max)
        # where both limits can bind, also a ceiling: taking the tile-light items first would leave
        # the tile-heavy ones to fill packs of their own, full in tiles and short in tokens
        balanced = self.tile_ceiling > 0 and density * self.l_max >= _BALANCED * self.t_max
        ceiling = self.tile_ceiling * density if balanced else 0.0
        slack = self.ceiling_slack * self.t_max
        while keys:
            pos = self._last_fitting(room)
            stop = max(-1, pos - self.tile_walk)
            pick = -1
            for p in range(pos, stop, -1):  # the largest few by tokens first: usually one of them
                cand = items[keys[p]]
                tile_left, left = tile_room - cand.tiles, room - cand.tokens
                if 0 <= tile_left and reserve * left <= tile_left and (
                        not ceiling or tile_left <= ceiling * left + slack):
                    pick = p
                    break
            if pick < 0 and stop >= 0:  # else search every tile count (the walk did not see them all)
                pick = self._best_by_tiles(room, tile_room, reserve, ceiling, slack)
            elif pick < 0:  # the walk saw every candidate: the largest that fits both
                pick = next((p for p in range(pos, -1, -1) if items[keys[p]].tiles <= tile_room), -1)
            if pick < 0:
                break
            key, item = self._take(pick)
            chosen.append((key, item))
            room -= item.tokens
            tile_room -= item.tiles
        tile_bound = self._seen_tiles * self.l_max > self._seen_tokens * self.t_max
        if (self.complete and room > 0 and (tile_room > 0 or not tile_bound) and len(chosen) > 1
                and chosen[-1][0] >= 0):
            room, tile_room = self._swap_last_for_pair(chosen, room, tile_room, tile_bound)
        return chosen, self.l_max - room, self.t_max - tile_room

    def _swap_last_for_pair(self, chosen: list[tuple[int, Item[K]]], room: int, tile_room: int,
                            tile_bound: bool) -> tuple[int, int]:
        """Replace the pack's last item by the two buffered items that fill its room plus the gap best
        (in tiles where tiles bind, else in tokens); returns the pack's (room, tile_room) after."""
        keys = self._keys
        last_key, last = chosen[-1]
        room += last.tokens
        tile_room += last.tiles
        if tile_bound:
            found = self._pair_by_tiles(room, tile_room, last.tiles)
        else:
            found = self._pair_by_tokens(room, tile_room, last.tokens)
        if found is None:
            return room - last.tokens, tile_room - last.tiles
        pair = [self._take(bisect_left(keys, k)) for k in sorted(found, reverse=True)]  # the later index first
        chosen.pop()
        self._put(last_key, last)
        chosen.extend(reversed(pair))
        return room - pair[0][1].tokens - pair[1][1].tokens, tile_room - pair[0][1].tiles - pair[1][1].tiles

    def _pair_by_tokens(self, room: int, tile_room: int, beat: int) -> tuple[int, int] | None:
        """Keys of the two buffered items with the most tokens together (more than `beat`, at most
        `room`) that fit `tile_room`: a two-pointer walk over the sorted buffer, `_PAIR_PROBES` steps."""
        keys, items = self._keys, self._items
        best, best_pair = beat, None
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
        return None if best_pair is None else (keys[best_pair[0]], keys[best_pair[1]])

    def _pair_by_tiles(self, room: int, tile_room: int, beat: int) -> tuple[int, int] | None:
        """Keys of the two buffered items with the most tiles together (more than `beat`, at most
        `tile_room`) whose tokens fit `room`: per tile count its fewest-token item, counts ascending."""
        by_tiles = self._by_tiles
        counts = sorted(by_tiles)
        best_tiles, best = beat, None
        for a, t1 in enumerate(counts):
            if 2 * t1 > tile_room or best_tiles == tile_room:
                break
            low = by_tiles[t1]
            for t2 in reversed(counts[a:]):
                if t1 + t2 <= best_tiles:
                    break
                if t1 + t2 > tile_room:
                    continue
                if t2 == t1 and len(low) < 2:
                    continue
                other = low[1] if t2 == t1 else by_tiles[t2][0]
                if (low[0] >> _SEQ_BITS) + (other >> _SEQ_BITS) <= room:
                    best_tiles, best = t1 + t2, (low[0], other)
                    break
        return best


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
