"""The greedy packer: limits hold, nothing lost or duplicated, deterministic, close to the bound."""

import random

from packing.packer import GreedyPacker, Item, Oversized, lower_bound, pack_stream


def items(n=3000, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tiles = rng.randint(1, 13)
        out.append(Item(f"s{i}", int(rng.lognormvariate(6.4, 0.5)) + 256 * tiles + 2, tiles))
    return out


def test_limits_hold_and_every_item_lands_once():
    data = items()
    out = list(pack_stream(data, 8192, 40, buffer=256))
    packs = [p for p in out if not isinstance(p, Oversized)]
    assert all(p.tokens <= 8192 and p.tiles <= 40 for p in packs)
    assert all(p.tokens == sum(i.tokens for i in p.items) and p.tiles == sum(i.tiles for i in p.items) for p in packs)
    keys = [i.key for p in packs for i in p.items] + [o.item.key for o in out if isinstance(o, Oversized)]
    assert sorted(keys) == sorted(i.key for i in data)


def test_deterministic():
    data = items()
    a = [tuple(i.key for i in p.items) for p in pack_stream(data, 16384, 48, buffer=128)]
    b = [tuple(i.key for i in p.items) for p in pack_stream(data, 16384, 48, buffer=128)]
    assert a == b


def test_close_to_lower_bound_and_buffer_helps():
    data = items(6000)
    bound = lower_bound(data, 8192, 40)
    small = sum(1 for _ in pack_stream(data, 8192, 40, buffer=1))  # next-fit: one item per pack at a time
    big = sum(1 for _ in pack_stream(data, 8192, 40, buffer=1024))
    assert big <= bound * 1.03 and big < small


def test_oversized_items_are_returned_not_packed():
    packer = GreedyPacker(1000, 4, buffer=4)
    assert [o.reason for o in packer.add(Item("a", 1001, 1))] == ["too_long"]
    assert [o.reason for o in packer.add(Item("b", 10, 5))] == ["too_many_tiles"]
    assert list(packer.add(Item("c", 10, 1))) == []
    (pack,) = packer.flush()
    assert [i.key for i in pack.items] == ["c"]


def test_tile_limit_binds_when_tokens_do_not():
    data = [Item(i, 300, 10) for i in range(8)]
    packs = list(pack_stream(data, 100_000, 20, buffer=None))
    assert [len(p.items) for p in packs] == [2, 2, 2, 2]


def bench_stream(n=20000):
    """The issue's seeded synthetic stream (same as bench/packing.py)."""
    import math

    import numpy as np

    rng = np.random.default_rng(1234)
    text = np.maximum(np.rint(rng.lognormal(math.log(600), 0.5, n)), 8).astype(int)
    tiles = rng.integers(1, 14, n)
    return [Item(i, int(t) + 256 * int(k) + 2, int(k)) for i, (t, k) in enumerate(zip(text, tiles))]


def test_two_limit_stream_within_one_percent_of_the_bound():
    data = bench_stream()
    for l_max, t_max, floor in ((8192, 40, 0.02), (16384, 48, 0.01)):
        packs = list(pack_stream(data, l_max, t_max))
        assert len(packs) <= lower_bound(data, l_max, t_max) * (1 + floor)


def test_tile_reserve_and_pair_completion_each_help_where_tiles_bind():
    data = bench_stream(8000)

    def count(**kw):
        packer = GreedyPacker(16384, 48, buffer=256, **kw)
        n = sum(1 for it in data for _ in packer.add(it))
        return n + sum(1 for _ in packer.flush())

    plain = count(tile_reserve=0.0, complete=False)
    assert count(tile_reserve=0.88, complete=False) < plain
    assert count(tile_reserve=0.88, complete=True) < count(tile_reserve=0.88, complete=False)
