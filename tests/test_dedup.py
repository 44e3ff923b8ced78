"""Dedup logic without Beam: representative order, components (union-find and large/small-star agree),
multi-index hashing finds every pHash pair within the radius, bucket verification, shard round trip."""

import io
import random
from itertools import combinations

import numpy as np
import pytest

from curation.core.config import ConfigError, build
from filters.dedup_config import DedupConfig
from curation.ingest.config import IngestConfig
from curation.core.records import Rejection, Sample
from curation.samples.dups import Planted, caption_truth, planted_captions, write_pair_folder
from curation.core.shards import iter_tar_groups, read_pair_shard, write_pair_shard
from filters.dedup import (CaptionMember, Decision, ImageMember, apply_decisions, caption_bucket_edges,
                           image_band_keys, image_bucket_edges, large_star, node_id, node_uid, normalize_edge,
                           representative_of, small_star, star, union_find)
from filters.minhash import jaccard, shingles


def test_node_order_is_highest_score_then_smallest_uid():
    nodes = {"best": node_id("zz", 0.91), "tie_a": node_id("a", 0.5), "tie_b": node_id("b", 0.5),
             "negative": node_id("a", -3.0), "none": node_id("0", None), "nan": node_id("00", float("nan"))}
    order = sorted(nodes, key=nodes.get)
    assert order == ["best", "tie_a", "tie_b", "negative", "none", "nan"]
    assert node_id("a", None) < node_id("a-b", None)  # a uid that is a prefix still sorts first
    assert node_uid(nodes["best"]) == "zz" and node_uid(node_id("x_1", 0.2, "tie")) == "x_1"
    assert representative_of(Decision(node_id("u", 1.0), "near_dup_image", "rep-7").detail) == "rep-7"


def _star_rounds(edges):
    """Large-star then small-star until nothing changes, as the Beam rounds do."""
    current = {normalize_edge(a, b) for a, b in edges}
    for _ in range(64):
        neighbours = {}
        for a, b in current:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
        large = {e for u, ns in neighbours.items() for e in large_star(u, ns)}
        smaller = {}
        for a, b in large:
            smaller.setdefault(a, set()).add(b)
        nxt = {e for u, ns in smaller.items() for e in small_star(u, ns)}
        if nxt == current:
            return dict(current)
        current = nxt
    raise AssertionError("large/small-star did not converge")


@pytest.mark.parametrize("seed", range(5))
def test_large_small_star_rounds_give_union_find_components(seed):
    rng = random.Random(seed)
    nodes = [f"n{i:03d}" for i in range(200)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(rng.choice([60, 150, 260]))]
    edges = [e for e in edges if e[0] != e[1]]
    edges += [(nodes[i], nodes[i + 1]) for i in range(150, 199)]  # one long path: the slow case
    labels = union_find(edges)
    stars = _star_rounds(edges)
    assert {n: r for n, r in labels.items() if n != r} == stars
    # every label is its component's minimum
    for a, b in edges:
        assert labels[a] == labels[b] <= min(a, b)


def test_star_and_union_find_edge_cases():
    assert star(iter_list := ["c", "a", "b"]) == ("a", ["c", "b"]) and iter_list == ["c", "a", "b"]
    assert union_find([]) == {}
    assert union_find([("b", "a"), ("c", "b"), ("e", "d")]) == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "d"}


def _flip(value: int, bits: list[int]) -> int:
    for b in bits:
        value ^= 1 << b
    return value


@pytest.mark.parametrize("hamming,bands", [(10, None), (10, 4), (6, 3), (3, 4)])
def test_multi_index_hashing_meets_every_pair_within_the_radius(hamming, bands):
    rng = random.Random(hamming * 100 + (bands or 0))
    m = bands or hamming + 1
    for _ in range(300):
        a = rng.getrandbits(64)
        d = rng.randint(0, hamming)
        b = _flip(a, rng.sample(range(64), d))
        ma, pa = image_band_keys(a, hamming, m)
        mb, pb = image_band_keys(b, hamming, m)
        assert set(ma) & (set(mb) | set(pb)) or set(mb) & set(pa), (hex(a), hex(b), d)
    # and the radius is not wider than needed: probes cover exactly hamming // bands bits per band
    _, probes = image_band_keys(0, hamming, m)
    assert len(probes) == sum(sum(len(list(combinations(range(w), r))) for r in range(1, hamming // m + 1))
                              for w in [64 // m + (1 if i < 64 % m else 0) for i in range(m)])


def test_image_buckets_give_the_brute_force_threshold_components():
    rng = np.random.default_rng(5)
    bases = [int(x) for x in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes = {}
    for g, base in enumerate(bases):
        hashes[f"g{g}-0"] = base
        for v in range(int(rng.integers(0, 4))):
            hashes[f"g{g}-{v + 1}"] = _flip(base, [int(b) for b in rng.choice(64, int(rng.integers(0, 14)), replace=False)])
    k = 8
    for bands in (None, 3):
        m = bands or k + 1
        buckets = {}
        for uid, h in hashes.items():
            members, probes = image_band_keys(h, k, m)
            for key in members:
                buckets.setdefault(key, []).append(ImageMember(node_id(uid, None), h, False))
            for key in probes:
                buckets.setdefault(key, []).append(ImageMember(node_id(uid, None), h, True))
        edges = [e for ms in buckets.values() for e in image_bucket_edges(ms, k)]
        found = union_find(edges)
        brute = union_find((node_id(a, None), node_id(b, None)) for a, b in combinations(sorted(hashes), 2)
                           if bin(hashes[a] ^ hashes[b]).count("1") <= k)
        assert found == brute


def test_caption_bucket_verification_stops_lucky_collisions():
    a = CaptionMember(node_id("a", None), "a red bicycle leaning on a blue wall at dawn")
    b = CaptionMember(node_id("b", None), "A red bicycle, leaning on a blue wall at dawn!")
    c = CaptionMember(node_id("c", None), "a green tram crossing an old stone bridge")
    assert caption_bucket_edges([c, b, a], None, "char", 5) == [(b.node, a.node), (c.node, a.node)]
    assert caption_bucket_edges([c, b, a], 0.8, "char", 5) == [(b.node, a.node)]
    assert caption_bucket_edges([a, a], 0.8, "char", 5) == []


def test_caption_truth_is_the_exhaustive_answer():
    recs = planted_captions(120, seed=9)
    caps = {r.uid: r.caption for r in recs}
    sets = {u: shingles(c, "char", 5) for u, c in caps.items()}
    brute = {(a, b) for a, b in combinations(sorted(caps), 2) if jaccard(sets[a], sets[b]) >= 0.8}
    assert caption_truth(caps, 0.8) == brute and len(brute) > 50


def test_pair_shards_read_back_byte_identical_and_decisions_apply(tmp_path):
    recs = [Planted(f"u{i}", f"caption number {i} of a test", i) for i in range(6)]
    folder = write_pair_folder(tmp_path / "in", recs, samples_per_shard=100)
    tar, manifest = folder / "planted-00000-of-00001.tar", folder / "planted-00000-of-00001.parquet"
    with open(tar, "rb") as t, open(manifest, "rb") as m:
        records = list(read_pair_shard(t, m))
    assert [r.pair.uid for r in records] == [f"u{i}" for i in range(6)] and all(isinstance(r, Sample) for r in records)
    out_tar, out_man = io.BytesIO(), io.BytesIO()
    write_pair_shard(0, "x", records, out_tar, out_man)
    assert out_tar.getvalue() == tar.read_bytes()  # kept samples are written back unchanged
    decided = apply_decisions(records + [Decision(node_id("u2", None), "dup_caption", "u1")])
    rejected = [r for r in decided if isinstance(r, Rejection)]
    assert [(r.pair.uid, r.reason, r.stage, representative_of(r.detail)) for r in rejected] == [("u2", "dup_caption", "dedup", "u1")]
    out_tar, out_man = io.BytesIO(), io.BytesIO()
    report = write_pair_shard(0, "x", decided, out_tar, out_man)
    again = list(read_pair_shard(io.BytesIO(out_tar.getvalue()), io.BytesIO(out_man.getvalue())))
    assert report.kept == 5 and [type(r).__name__ for r in again].count("Rejection") == 1
    assert [k for k, _ in iter_tar_groups(io.BytesIO(out_tar.getvalue()))] == ["u0", "u1", "u3", "u4", "u5"]


def test_dedup_config_errors_are_one_clear_line():
    assert build(DedupConfig, {}, "").near_caption.lsh() == (14, 9)
    with pytest.raises(ConfigError, match="give both bands and rows"):
        build(DedupConfig, {"near_caption": {"bands": 8}}, "")
    with pytest.raises(ConfigError, match="bands x rows"):
        build(DedupConfig, {"near_caption": {"bands": 20, "rows": 8}}, "")
    with pytest.raises(ConfigError, match="near_image.hamming"):
        build(DedupConfig, {"near_image": {"hamming": "ten"}}, "")
    with pytest.raises(ConfigError, match="shingle"):
        build(DedupConfig, {"near_caption": {"shingle": "token"}}, "")
    cfg = build(IngestConfig, {"source": {"name": "s", "columns": {"url": "u"}}, "dedup": {"score_field": None}}, "")
    assert cfg.metadata_dedup().near_caption.enabled and cfg.metadata_dedup().score_field is None
    urls_only = build(IngestConfig, {"source": {"name": "s", "columns": {"url": "u"}}}, "").metadata_dedup()
    assert urls_only.exact.url and not urls_only.exact.caption and not urls_only.near_caption.enabled
