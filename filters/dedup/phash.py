"""Image pHashes as dedup keys: the 64-bit value parsed from its hex, and the identical-pHash collapse
(one member per pHash, the others starred onto it) before the LSH tables (filters/dedup/image_lsh.py)."""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

from filters.dedup.keys import DupKey, star

Edge = tuple[str, str]


class ImageMember(NamedTuple):
    node: str
    phash: int



def parse_phash(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None



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
