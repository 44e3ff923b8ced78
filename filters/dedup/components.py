"""Connected components over dedup edges, as steps a distributed runner can wire together: the route
(one union-find when the edge list fits a worker, else large-star / small-star rounds), each round's
per-node step, the star check after the rounds, and the local union-find labels.

Plain functions over plain values, no Beam: the steps take what a group-by-key hands them (a key and
a re-iterable of values) and return what to emit plus the group sizes the caller records.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence


Edge = tuple[str, str]


# ---------------------------------------------------------------------------------------------
# Routing: which path the components take


def fits_a_worker(_, count: int, limit: int) -> bool:
    """Edges go to one union-find when all `count` distinct edges fit one worker (`limit`)."""
    return count <= limit


def too_big_for_a_worker(_, count: int, limit: int) -> bool:
    """Edges go through large-star / small-star rounds when there are more than `limit` of them."""
    return count > limit


def not_converged(_, unsettled: int) -> bool:
    """After the rounds, every edge goes to a finishing union-find if any node is still unsettled."""
    return unsettled > 0


def converged(_, unsettled: int) -> bool:
    """After the rounds, the star labels stand as they are if no node is unsettled."""
    return unsettled == 0


# ---------------------------------------------------------------------------------------------
# Large-star / small-star rounds


def both_directions(edge):
    """An edge (a, b) -> (a, b) and (b, a): each endpoint keyed by itself, valued by the other."""
    a, b = edge
    yield a, b
    yield b, a


def _size(group: Iterable[str]) -> int:
    return sum(1 for _ in group)


def large_star_step(item: tuple[str, Iterable[str]]) -> tuple[int, Iterator[Edge]]:
    """(node, all its neighbours: a re-iterable group, never listed) -> (group size, large-star edges)."""
    node, neighbours = item
    return _size(neighbours), large_star(node, neighbours)


def small_star_step(item: tuple[str, Iterable[str]]) -> tuple[int, Iterator[Edge]]:
    """(node, its smaller neighbours, never listed) -> (group size, small-star edges)."""
    node, smaller = item
    return _size(smaller), small_star(node, smaller)


def settle(node: str, parents: Sequence[str], children: Sequence[str]) -> tuple[bool, Edge | None]:
    """A node's parents and children after the rounds -> (settled, label).

    A star leaf has one parent and no child: settled, labelled (node, parent). A node without a
    parent is a star centre (a component minimum): settled, no label. Any other node (two parents,
    or a parent and a child) means the rounds did not turn its component into a star: unsettled."""
    if parents and (len(parents) > 1 or children):
        return False, None
    if parents:
        return True, (node, parents[0])
    return True, None


# ---------------------------------------------------------------------------------------------
# One union-find on one worker


def local_labels(edges: Iterable[Edge]) -> tuple[list[Edge], int]:
    """All edges (at most `max_local_edges`) -> ((node, component minimum) for every non-minimum
    node, sorted; the number of components)."""
    labels = union_find(edges)
    components = len(set(labels.values()))
    return [(node, root) for node, root in sorted(labels.items()) if node != root], components


def union_find(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """node -> component minimum, for every node on an edge (one worker, near-linear time)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            parent[hi] = lo
    return {x: find(x) for x in parent}


def large_star(u: str, neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Connect every neighbour larger than u to the minimum of u's closed neighbourhood. Two
    passes over a re-iterable group, no list or set of it (a hub's million neighbours stream); a
    neighbour listed twice gives its edge twice (the rounds drop repeats between steps)."""
    m = min(u, min(neighbours, default=u))
    for v in neighbours:
        if v > u:
            yield v, m


def small_star(u: str, smaller: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Connect u and its smaller neighbours to the minimum of them, in two passes as `large_star`."""
    m = min(u, min(smaller, default=u))
    if u != m:
        yield u, m
    for v in smaller:
        if v != m:
            yield v, m


def normalize_edge(a: str, b: str) -> tuple[str, str]:
    """Edges are stored (larger, smaller)."""
    return (a, b) if a > b else (b, a)
