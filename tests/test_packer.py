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
