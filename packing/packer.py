"""Greedy packing of samples into sequences under two limits: l_max tokens and t_max tiles.

InternVL 2.5's packing idea, done with a bounded buffer kept sorted by token count: once the buffer
holds `buffer` items, one pack is built from it - the largest item first, then repeatedly the
largest item that still fits both the remaining tokens and the remaining tiles (binary search, then
a short walk down for the tile limit) - and emitted. Only small item records move, never payloads.
`buffer=None` packs a whole in-memory partition this way (a best-fit-decreasing offline mode).
Deterministic: ties break on the item key, so the same input gives the same packs.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, Iterator, TypeVar

K = TypeVar("K", bound=Hashable)

_SEQ_BITS = 32


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

    def __init__(self, l_max: int, t_max: int, buffer: int | None = 512, tile_walk: int = 64) -> None:
        if l_max < 1 or t_max < 0 or (buffer is not None and buffer < 1):
            raise ValueError("l_max >= 1, t_max >= 0, buffer >= 1 or None")
        self.l_max = l_max
        self.t_max = t_max
        self.buffer = buffer
        self.tile_walk = tile_walk
        self._keys: list[int] = []  # tokens << 32 | arrival sequence, ascending
        self._items: dict[int, Item[K]] = {}
        self._seq = 0

    def add(self, item: Item[K]) -> Iterator[Pack[K] | Oversized[K]]:
        """Take one item; yields a pack when the buffer is full (or the item itself if oversized)."""
        if item.tokens > self.l_max:
            yield Oversized(item, "too_long")
            return
        if item.tiles > self.t_max:
            yield Oversized(item, "too_many_tiles")
            return
        key = (item.tokens << _SEQ_BITS) | self._seq
        self._seq += 1
        insort(self._keys, key)
        self._items[key] = item
        if self.buffer is not None and len(self._keys) >= self.buffer:
            yield self._build()

    def flush(self) -> Iterator[Pack[K]]:
        """Pack everything still buffered."""
        while self._keys:
            yield self._build()

    def _take(self, index: int) -> Item[K]:
        return self._items.pop(self._keys.pop(index))

    def _build(self) -> Pack[K]:
        first = self._take(len(self._keys) - 1)  # the largest item anchors the pack
        chosen = [first]
        tokens, tiles = first.tokens, first.tiles
        keys = self._keys
        while keys:
            room = self.l_max - tokens
            pos = bisect_right(keys, (room << _SEQ_BITS) | ((1 << _SEQ_BITS) - 1)) - 1
            if pos < 0:
                break  # nothing left is small enough
            tile_room = self.t_max - tiles
            stop = max(-1, pos - self.tile_walk)
            while pos > stop and self._items[keys[pos]].tiles > tile_room:
                pos -= 1
            if pos == stop:
                break
            item = self._take(pos)
            chosen.append(item)
            tokens += item.tokens
            tiles += item.tiles
        return Pack(tuple(chosen), tokens, tiles)


def pack_stream(items: Iterable[Item[K]], l_max: int, t_max: int, buffer: int | None = 512) -> Iterator[Pack[K] | Oversized[K]]:
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
