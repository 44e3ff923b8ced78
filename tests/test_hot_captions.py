"""Caption buckets too hot for tiles, verified against pivots (filters/dedup/hot_captions.py): nothing
sampled, only verified edges, the same edges whatever the arrival order, memory bounded by the cap.
Fixtures: template caption families written here (the boilerplate web captions that make hot
LSH buckets) and planted edited captions from curation/samples/dups.py."""

import random
from itertools import combinations

from curation.samples.dups import planted_captions
from filters.dedup.caption_lsh import CaptionMember
from filters.dedup.components import union_find
from filters.dedup.config import NearCaptionConfig
from filters.dedup.hot_captions import HotStats, PivotVerifier, Smallest
from filters.dedup.minhash import jaccard, shingles

CFG = NearCaptionConfig()
TEMPLATES = ["Stock photo of the day by our agency, all rights reserved, image {}",
             "Free shipping on orders over fifty dollars - item number {} in stock",
             "Wallpaper HD for desktop and mobile phone background download {}",
             "Click here to see more pictures from this gallery, photo {} of the set",
             "Product image {} - this picture may differ slightly from the real thing",
             "Vintage postcard from the collection of the city museum archive, card {}"]


class _Walked:
    """A re-iterable group counting its passes (how Beam hands a group: iterable again, not a list)."""

    def __init__(self, items):
        self.items, self.passes = list(items), 0

    def __iter__(self):
        self.passes += 1
        yield from self.items


def _similar(a: CaptionMember, b: CaptionMember) -> bool:
    return jaccard(shingles(a.caption, CFG.shingle, CFG.ngram), shingles(b.caption, CFG.shingle, CFG.ngram)) >= CFG.threshold


def _edges(members, **kw):
    st = HotStats()
    group = _Walked(members)
    edges = list(PivotVerifier(CFG, **kw).edges(group, st))
    return edges, st, group


def test_smallest_keeps_the_k_smallest_in_bounded_memory():
    s = Smallest(5)
    values = random.Random(0).sample(range(10_000), 10_000)
    for v in values:
        s.add(v)
        assert len(s._items) < 10
    assert s.items() == [0, 1, 2, 3, 4]


def test_a_template_family_is_reached_in_one_pass_every_member_linked():
    members = [CaptionMember(f"n{i:05d}", TEMPLATES[0].format(i)) for i in range(5000)]
    edges, st, group = _edges(members, max_bucket=100, cap=1000, rounds=32)
    assert st.members == 5000 and st.passes == 1 and st.skipped == 0
    assert group.passes == 2  # the pivot choice, then one pass of checks
    labels = union_find(edges)
    assert len(labels) == 5000 and len(set(labels.values())) == 1  # member recall 1.0: one component
    assert len(edges) == len(set(edges)) == 4999  # each member reached once
    assert st.candidate_pairs < 5000 * 16  # linear in the bucket, never size^2 / 2


def test_mixed_families_and_strangers_end_as_the_brute_force_components_in_any_order():
    """Six dense families and 150 unrelated planted captions in one bucket, four pivots a pass: the
    first pivots miss most families, so the passes repeat and the in-memory rounds finish; the
    components are those of checking every pair, and every edge is a verified pair."""
    members = [CaptionMember(f"t{t}-{i:03d}", tpl.format(1000 + i))
               for t, tpl in enumerate(TEMPLATES) for i in range(120)]
    members += [CaptionMember(f"p{i:04d}", p.caption) for i, p in enumerate(planted_captions(60, seed=7))]
    members = list({m.caption: m for m in members}.values())  # exact duplicates left to the exact step
    brute = union_find((a.node, b.node) for a, b in combinations(members, 2) if _similar(a, b))
    assert len({brute[f"t{t}-000"] for t in range(6)}) == 6  # six families, apart
    by_node = {m.node: m for m in members}
    results = []
    for seed in (0, 1):
        random.Random(seed).shuffle(members)
        edges, st, group = _edges(members, max_bucket=20, cap=300, rounds=32, pivots=4)
        assert all(_similar(by_node[a], by_node[b]) for a, b in edges)  # only verified pairs link
        assert st.skipped == 0 and st.passes > 1 and st.largest_verified <= 20
        found = union_find(edges)
        assert {n: found.get(n, n) for n in by_node} == {n: brute.get(n, n) for n in by_node}
        results.append(sorted(edges))
    assert results[0] == results[1]  # the arrival order changes nothing


def test_more_unrelated_members_than_the_cap_after_every_pass_are_counted_as_skipped():
    members = [CaptionMember(f"p{i:04d}", p.caption) for i, p in enumerate(planted_captions(200, seed=9))]
    members = list({m.caption: m for m in members}.values())
    edges, st, group = _edges(members, max_bucket=10, cap=50, rounds=2, pivots=4)
    assert st.passes == 3 and group.passes == 4  # the pivot choice, two passes of pivots, the rescue
    linked = {n for e in edges for n in e}
    assert 0 < st.skipped <= len(members) - len(linked)  # unverified with each other, and counted
    random.Random(0).shuffle(members)
    assert sorted(_edges(members, max_bucket=10, cap=50, rounds=2, pivots=4)[0]) == sorted(edges)


def test_without_verification_a_hot_bucket_is_a_star_on_its_minimum():
    members = [CaptionMember(f"n{i:03d}", f"anything {i}") for i in range(50)]
    st = HotStats()
    cfg = NearCaptionConfig(verify=False)
    edges = list(PivotVerifier(cfg, max_bucket=10, cap=20, rounds=2).edges(_Walked(members), st))
    assert sorted(edges) == [(f"n{i:03d}", "n000") for i in range(1, 50)] and st.edges == 49
