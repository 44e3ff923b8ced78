"""Dedup logic without Beam: representative order, components (union-find and large/small-star agree),
bit-sampling LSH on pHashes (recall as modelled, buckets bounded far past the old 64-value bands,
packed partitions finding every reachable pair once),
hot-bucket splitting, bucket verification, shard round trip."""

import io
import random
from itertools import combinations

import numpy as np
import pytest

from curation.core.config import ConfigError, build
from filters.dedup.config import DedupConfig
from curation.ingest.config import IngestConfig
from curation.core.records import Rejection, Sample
from curation.samples.dups import Planted, caption_truth, planted_captions, write_pair_folder
from curation.core.shards import iter_tar_groups, read_pair_shard, write_pair_shard
from filters.dedup.caption_lsh import CaptionMember, caption_bucket_edges
from filters.dedup.keys import Decision, Row, apply_decisions, node_home, node_id, node_uid, pair_node, representative_of, star
from filters.dedup.phash import ImageMember
from filters.dedup.components import large_star, normalize_edge, small_star, union_find
from filters.dedup.config import NearImageConfig
from filters.dedup.image_lsh import ImageLsh, sampled_bits
from filters.dedup.minhash import jaccard, shingles


def test_node_order_is_highest_score_then_smallest_uid():
    nodes = {"best": node_id("zz", 0.91), "tie_a": node_id("a", 0.5), "tie_b": node_id("b", 0.5),
             "negative": node_id("a", -3.0), "none": node_id("0", None), "nan": node_id("00", float("nan"))}
    order = sorted(nodes, key=nodes.get)
    assert order == ["best", "tie_a", "tie_b", "negative", "none", "nan"]
    assert node_id("a", None) < node_id("a-b", None)  # a uid that is a prefix still sorts first
    assert node_uid(nodes["best"]) == "zz" and node_uid(node_id("x_1", 0.2, "tie")) == "x_1"
    assert representative_of(Decision(node_id("u", 1.0), "near_dup_image", node_id("rep-7", 2.0)).detail) == "rep-7"
    chained = Decision(node_id("u", 1.0), "dup_url", node_id("kept", 3.0), via=node_id("mid", 2.0))
    assert chained.detail == "same URL as mid, a duplicate of kept" and representative_of(chained.detail) == "kept"


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
    center, others = star(iter_list := ["c", "a", "b"])
    assert (center, list(others)) == ("a", ["c", "b"]) and iter_list == ["c", "a", "b"]
    assert union_find([]) == {}
    assert union_find([("b", "a"), ("c", "b"), ("e", "d")]) == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "d"}


def _flip(value: int, bits: list[int]) -> int:
    for b in bits:
        value ^= 1 << b
    return value


def _meet(a, b, cfg: NearImageConfig) -> np.ndarray:
    """Whether each pair (a[i], b[i]) shares the key of at least one of the recipe's tables."""
    masks = ImageLsh(cfg, 1000, 32).masks
    x = np.array(a, dtype=np.uint64) ^ np.array(b, dtype=np.uint64)
    return ((x[:, None] & masks[None, :]) == 0).any(axis=1)


@pytest.mark.parametrize("hamming", [4, 10])
def test_bit_sampling_meets_pairs_as_often_as_the_recall_model_says(hamming):
    cfg = NearImageConfig(hamming=hamming)
    assert cfg.expected_recall(hamming) >= cfg.recall > cfg.expected_recall(hamming) - 0.01  # L is the fewest tables
    rng = random.Random(hamming)
    a = [rng.getrandbits(64) for _ in range(600)]
    b = [_flip(x, rng.sample(range(64), hamming)) for x in a]  # every pair at the worst distance
    met = _meet(a, b, cfg).mean()
    assert met >= cfg.recall - 0.03, met
    # and a stranger almost never shares a key
    c = [rng.getrandbits(64) for _ in range(600)]
    assert _meet(a, c, cfg).mean() < 0.01


def test_image_buckets_stay_bounded_on_100k_random_hashes():
    """The old 11 bands of 5-6 bits put 100k hashes in buckets of about 1,600 (over max_bucket);
    tables of 22 sampled bits keep them tiny, and at 10^9 hashes their mean is N / 2^22 = 238."""
    cfg = NearImageConfig(tables=40)  # every table samples alike: 40 of the 307 are enough to look at
    lsh = ImageLsh(cfg, 1000, 32)
    hashes = np.random.default_rng(0).integers(0, 2**64 - 1, 100_000, dtype=np.uint64, endpoint=True)
    sizes = [np.unique(sampled_bits(hashes, lsh.samples[t]), return_counts=True)[1].max() for t in range(40)]
    assert 100_000 / 2 ** (64 // 11) > DedupConfig().max_bucket  # what the old scheme did
    assert max(sizes) <= 8 and lsh.samples.shape == (40, 22) and len({tuple(r) for r in lsh.samples.tolist()}) == 40


def _partition_pairs(lsh: ImageLsh, hashes: list[int], s: int, batch: int = 50):
    """The Beam stage's three steps by hand: batches -> partitions -> group -> forest keys -> pairs."""
    parts: dict[int, list[bytes]] = {}
    for i in range(0, len(hashes), batch):
        for part, blob in lsh.partitions(np.array(hashes[i:i + batch], dtype=np.uint64), s):
            parts.setdefault(part, []).append(blob)
    forest = np.array(sorted(k for p, b in parts.items() for k in lsh.forest_keys(p, b, s)), dtype=np.uint64)
    pairs, stats = [], []
    for part, blobs in sorted(parts.items()):
        found, st = lsh.pairs(part, blobs, s, forest)
        pairs += found
        stats.append(st)
    return pairs, stats, parts


def _reachable(lsh: ImageLsh, hashes: list[int], hamming: int) -> set[tuple[int, int]]:
    """Brute force: every pair within `hamming` bits that shares some table's key."""
    a = np.array(sorted(hashes), dtype=np.uint64)
    out = set()
    for i in range(len(a)):
        x = a[i] ^ a[i + 1:]
        hit = (np.bitwise_count(x) <= hamming) & ((x[:, None] & lsh.masks[None, :]) == 0).any(axis=1)
        out |= {(int(a[i]), int(a[i + 1 + j])) for j in np.flatnonzero(hit)}
    return out


def _planted_hashes(groups: int, hamming: int, blank: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    hashes = set()
    for _ in range(groups):
        base = rng.getrandbits(64)
        hashes |= {base} | {_flip(base, rng.sample(range(64), rng.randint(1, hamming))) for _ in range(rng.randint(0, 4))}
    while len(hashes) < 4 * groups + blank:  # near-blank: distinct hashes 1-3 bits from zero, hot in every table
        hashes.add(_flip(0, rng.sample(range(64), rng.randint(1, 3))))
    return sorted(hashes)


def _labels(hashes: list[int], edges) -> np.ndarray:
    from filters.dedup.image_lsh import components

    index = {h: i for i, h in enumerate(sorted(hashes))}
    edges = list(edges)
    return components(len(hashes), np.array([index[x] for x, _ in edges], dtype=np.int64),
                      np.array([index[y] for _, y in edges], dtype=np.int64))


@pytest.mark.parametrize("max_bucket,prefix_bits,groups", [(10**6, 0, 32), (20, 0, 7), (20, 2, 32)])
def test_image_partitions_find_every_reachable_pair_in_any_layout(max_bucket, prefix_bits, groups):
    """Packed partitions (groups of whole tables, or one table split by key prefix), buckets
    verified whole or as tiles of a hot bucket: the components of the brute-force pairs within
    `hamming` that share a table, exactly; a small bucket's pairs each emitted by one table only,
    a big one's as star edges along true pairs (never its size^2 / 2 pairs); whatever the batch
    order."""
    cfg = NearImageConfig(hamming=8, tables=60, table_groups=groups)
    lsh = ImageLsh(cfg, max_bucket, 32)
    hashes = _planted_hashes(300, 8, 400, seed=0)
    pairs, stats, parts = _partition_pairs(lsh, hashes, prefix_bits)
    reachable = _reachable(lsh, hashes, 8)
    assert len(reachable) > 10_000 and (_labels(hashes, pairs) == _labels(hashes, reachable)).all()
    near = {(x, y) for x, y in combinations(sorted(hashes), 2) if bin(x ^ y).count("1") <= 8}
    truth = _labels(hashes, near)
    index = {h: i for i, h in enumerate(sorted(hashes))}
    assert all(truth[index[x]] == truth[index[y]] for x, y in pairs)  # only chains of true pairs
    if prefix_bits:  # one table per partition, split by key prefix: each membership shipped once
        assert len(parts) == 60 * 2 ** prefix_bits and sum(st.members for st in stats) == 60 * len(hashes)
    else:  # groups of ceil(60 / groups) tables: each member shipped once per group
        assert len(parts) == -(-60 // -(-60 // groups)) and all(st.members == len(hashes) for st in stats)
        assert sorted(t for p in parts for t in lsh.tables_of(p, 0)) == list(range(60))
    assert max(st.max_verified for st in stats) <= max_bucket and sum(st.forest for st in stats) == 0  # tiles only
    assert (sum(st.hot for st in stats) > 0) == (max_bucket == 20)  # the near-blank family is hot in every table
    assert sorted(_partition_pairs(lsh, hashes[::-1], prefix_bits, batch=37)[0]) == sorted(pairs)
    # verification is exact: strangers in one bucket link nothing
    far, _ = lsh.pairs(0, [np.array([0, 2**64 - 1], dtype=np.uint64).tobytes()], 0, np.zeros(0, dtype=np.uint64))
    assert far == []


def test_a_dense_hot_family_leaves_as_star_edges_not_its_pairs():
    """2,000 distinct hashes within 4 bits of zero (every pair within 8 bits: 2 x 10^6 near pairs),
    hot in every table and verified as tiles: one component, at most size - 1 edges per table."""
    rng = random.Random(5)
    family = set()
    while len(family) < 2000:
        family.add(_flip(0, rng.sample(range(64), rng.randint(1, 4))))
    hashes = sorted(family)
    lsh = ImageLsh(NearImageConfig(hamming=8, tables=8), 100, 64)
    pairs, stats, _ = _partition_pairs(lsh, hashes, 0, batch=500)
    assert sum(st.tiles for st in stats) > 0 and sum(st.forest for st in stats) == 0
    assert len(pairs) <= 8 * (len(hashes) - 1) < len(hashes) * (len(hashes) - 1) // 2
    labels = _labels(hashes, pairs)
    assert (labels == 0).all()  # one component: every member a duplicate of the smallest


def test_a_bucket_too_hot_for_tiles_goes_to_the_forest_and_loses_no_member():
    """Past max_split_chunks a hot bucket is never sampled: the forest's trees split it bit by bit
    into pieces of at most max_bucket, and its components go out as star edges along chains of true
    pairs. Every reachable pair of the near-blank family ends in one component (member and pair
    recall 1 here), the planted pairs outside it are all found as before, and the output is a
    function of the members, not of their order."""
    from filters.dedup.image_lsh import components

    cfg = NearImageConfig(hamming=8, tables=60)
    hashes = _planted_hashes(300, 8, 400, seed=0)
    lsh = ImageLsh(cfg, 20, 4)
    pairs, stats, _ = _partition_pairs(lsh, hashes, 0)
    reachable = _reachable(lsh, hashes, 8)
    forest = sum(st.forest for st in stats)
    assert forest > 0 and max(st.max_verified for st in stats) <= 20 and sum(st.forest_pieces for st in stats) > forest
    assert forest < 60 * len(stats)  # buckets inside an earlier table's bucket are left to that table
    groups = {p for p in reachable if max(bin(h).count("1") for h in p) > 3}  # pairs outside the blank family
    assert groups and groups <= set(pairs)
    index = {h: i for i, h in enumerate(sorted(hashes))}
    a = np.array([index[x] for x, _ in pairs])
    b = np.array([index[y] for _, y in pairs])
    label = components(len(hashes), a, b)
    assert all(label[index[x]] == label[index[y]] for x, y in reachable)  # nothing reachable left apart
    near = {(x, y) for x, y in combinations(sorted(hashes), 2) if bin(x ^ y).count("1") <= 8}
    true_label = components(len(hashes), *map(np.array, zip(*[(index[x], index[y]) for x, y in near])))
    assert all(true_label[index[x]] == true_label[index[y]] for x, y in pairs)  # only chains of true pairs
    assert sorted(_partition_pairs(lsh, hashes[::-1], 0, batch=37)[0]) == sorted(pairs)
    assert lsh.prefix_bits(4_000_000) == 0 and lsh.prefix_bits(10**9) == 8  # 2^8 partitions of a table at 10^9


def test_numpy_components_label_each_node_with_its_component_minimum():
    from filters.dedup.image_lsh import components

    rng = random.Random(4)
    n = 300
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(220)]
    roots = union_find((f"{a:04d}", f"{b:04d}") for a, b in edges)
    label = components(n, np.array([a for a, _ in edges]), np.array([b for _, b in edges]))
    assert all(label[i] == int(roots.get(f"{i:04d}", f"{i:04d}")) for i in range(n))
    assert components(3, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).tolist() == [0, 1, 2]


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
    rows = [Row(pair_node(r.pair, None), r) for r in records]
    decided = apply_decisions(rows + [Decision(rows[2].node, "dup_caption", rows[1].node)])
    rejected = [r for r in decided if isinstance(r, Rejection)]
    assert [(r.uid, r.reason, r.stage, representative_of(r.detail)) for r in rejected] == [("u2", "dup_caption", "dedup", "u1")]
    out_tar, out_man = io.BytesIO(), io.BytesIO()
    report = write_pair_shard(0, "x", decided, out_tar, out_man)
    again = list(read_pair_shard(io.BytesIO(out_tar.getvalue()), io.BytesIO(out_man.getvalue())))
    assert report.kept == 5 and [type(r).__name__ for r in again].count("Rejection") == 1
    assert [k for k, _ in iter_tar_groups(io.BytesIO(out_tar.getvalue()))] == ["u0", "u1", "u3", "u4", "u5"]


def test_a_shard_read_lazily_streams_back_byte_identical_one_image_at_a_time(tmp_path):
    """What dedup's writers do: records without image bytes, each image loaded from the tar just
    before it is written and dropped after; the shard comes back byte for byte, and no record
    holds an image once it is written."""
    from curation.core.shards import read_pair_shard_lazy

    recs = [Planted(f"u{i}", f"caption number {i} of a test", i) for i in range(6)]
    folder = write_pair_folder(tmp_path / "in", recs, samples_per_shard=100)
    tar, manifest = folder / "planted-00000-of-00001.tar", folder / "planted-00000-of-00001.parquet"
    with open(tar, "rb") as t, open(manifest, "rb") as m:
        records, load = read_pair_shard_lazy(t, m)
        assert all(r.image.data == b"" and r.stored[r.image.ext] == b"" for r in records)
        out_tar, out_man = io.BytesIO(), io.BytesIO()
        write_pair_shard(0, "x", records, out_tar, out_man, load=load)
    assert out_tar.getvalue() == tar.read_bytes() and out_man.getvalue() == manifest.read_bytes()
    assert all(r.image.data == b"" and r.stored[r.image.ext] == b"" for r in records)


def test_a_node_names_its_home_shard_and_a_misrouted_decision_fails():
    pair = Planted("u1", "a caption", 0)
    from curation.core.records import Pair

    p = Pair(uid=pair.uid, url="https://x/1.jpg", caption=pair.caption, source="t", source_file="f", source_row=3)
    node = pair_node(p, None, (41, 7))
    assert node_home(node) == 41 and node_uid(node) == "u1"
    assert pair_node(p, None, (41, 7)) < pair_node(p, None, (41, 8))  # one uid, two rows: two nodes
    with pytest.raises(ValueError, match="carries no home"):
        node_home(pair_node(p, None))
    with pytest.raises(ValueError, match="1 dedup decisions name no kept row of this shard, e.g. u1"):
        apply_decisions([Decision(node, "dup_caption", pair_node(p, None, (2, 0)))])


def test_dedup_config_errors_are_one_clear_line():
    assert build(DedupConfig, {}, "").near_caption.lsh() == (14, 9)
    with pytest.raises(ConfigError, match="give both bands and rows"):
        build(DedupConfig, {"near_caption": {"bands": 8}}, "")
    with pytest.raises(ConfigError, match="bands x rows"):
        build(DedupConfig, {"near_caption": {"bands": 20, "rows": 8}}, "")
    with pytest.raises(ConfigError, match="near_image.hamming"):
        build(DedupConfig, {"near_image": {"hamming": "ten"}}, "")
    with pytest.raises(ConfigError, match="bits in 1..54"):
        build(DedupConfig, {"near_image": {"bits": 60}}, "")
    with pytest.raises(ConfigError, match="do not fit 64-bit bucket keys"):
        build(DedupConfig, {"near_image": {"hamming": 4, "bits": 58, "tables": 200}}, "")
    with pytest.raises(ConfigError, match="table_groups"):
        build(DedupConfig, {"near_image": {"table_groups": 0}}, "")
    assert build(DedupConfig, {}, "").near_image.num_tables() == 307  # configs/dedup.yaml's figure
    with pytest.raises(ConfigError, match="shingle"):
        build(DedupConfig, {"near_caption": {"shingle": "token"}}, "")
    cfg = build(IngestConfig, {"source": {"name": "s", "columns": {"url": "u"}}, "dedup": {"score_field": None}}, "")
    assert cfg.metadata_dedup().near_caption.enabled and cfg.metadata_dedup().score_field is None
    urls_only = build(IngestConfig, {"source": {"name": "s", "columns": {"url": "u"}}}, "").metadata_dedup()
    assert urls_only.exact.url and not urls_only.exact.caption and not urls_only.near_caption.enabled


# ---------------------------------------------------------------------------------------------
# The pure steps the Beam graph wires (filters/dedup/buckets.py, filters/dedup/components.py)


class _Walked:
    """A re-iterable group that counts how many elements were walked."""

    def __init__(self, items):
        self.items, self.walked = list(items), 0

    def __iter__(self):
        for x in self.items:
            self.walked += 1
            yield x


def test_bucket_verdicts_walk_without_listing():
    from filters.dedup.buckets import bucket_size, bucket_verdict

    hot = _Walked(f"m{i}" for i in range(50))
    assert bucket_verdict(hot, 10) == (50, "split") and hot.walked == 50
    assert bucket_verdict(["a", "b"], 10) == (2, "compare") and bucket_verdict(["a"], 10) == (1, "single")
    assert bucket_verdict(["m"] * 10, 10) == (10, "compare") and bucket_size([]) == 0


def test_a_hot_bucket_splits_into_bounded_tiles():
    """The tiling image_lsh verifies (every pair of chunks, the chunk with itself included): tiles
    of at most max_bucket members, ceil(size / chunk) chunks."""
    from filters.dedup.buckets import split_plan, too_hot

    assert not too_hot(1234, max_bucket=100, max_chunks=32)
    plan = split_plan(1234, max_bucket=100)
    assert (plan.chunks, plan.chunk, plan.tiles) == (25, 50, 325) and 2 * plan.chunk <= 100
    assert (plan.chunks - 1) * plan.chunk < 1234 <= plan.chunks * plan.chunk


def test_past_max_chunks_a_bucket_is_too_hot_for_tiles():
    from filters.dedup.buckets import too_hot

    assert not too_hot(400, max_bucket=100, max_chunks=8)  # 8 chunks of 50: tiles
    assert too_hot(401, max_bucket=100, max_chunks=8)  # a ninth chunk: the forest (images) or pivots (captions)


def test_caption_memberships_of_buckets_and_pivot_groups():
    from filters.dedup.caption_lsh import caption_memberships, caption_pivot_key, is_pivot_key

    row = (node_id("a", None), "A red bicycle!")
    hot = caption_pivot_key(b"b" * 12)
    assert is_pivot_key(hot) and not is_pivot_key(b"b" * 12) and not is_pivot_key(b"b" * 12 + b"\x00\x00\x00\x03")
    out = list(caption_memberships([b"b2", hot, b"b1", b"b2"], [row]))
    assert out == [(b"b1", CaptionMember(*row)), (b"b2", CaptionMember(*row)), (hot, CaptionMember(*row))]
    assert list(caption_memberships([], [row])) == []  # in no bucket of two or more


def test_identical_phashes_collapse_onto_one_table_member():
    from filters.dedup.phash import phash_key, same_phash
    from filters.dedup.keys import DupKey

    nodes = [node_id(u, None) for u in ("c", "a", "b")]
    member, edges = same_phash((0xAB, nodes))
    assert (member, list(edges)) == (ImageMember(nodes[1], 0xAB), [(nodes[0], nodes[1]), (nodes[2], nodes[1])])
    assert list(phash_key(DupKey("n", None, "", None, "00000000000000ab"))) == [(0xAB, "n")]
    assert list(phash_key(DupKey("n", None, "", None, "not-hex"))) == []
    parts = list(ImageLsh(NearImageConfig(tables=12, table_groups=4), 1000, 32).partitions(
        np.array([0xCD, 0xAB], dtype=np.uint64), 0))
    assert [p for p, _ in parts] == list(range(4))  # one packed, sorted blob per group of 3 tables
    assert all(np.frombuffer(b, dtype=np.uint64).tolist() == [0xAB, 0xCD] for _, b in parts)


def test_exact_groups_keep_the_minimum_and_decide_the_rest():
    from filters.dedup.buckets import decide, exact_duplicates, exact_group
    from filters.dedup.keys import DupKey

    keys = [DupKey(node_id(u, s), None, "c", None, None) for u, s in (("b", 0.1), ("a", 0.9), ("c", None))]
    rep, size = exact_group(keys)
    assert rep == keys[1] and size == 3
    assert [(d.uid, d.reason, node_uid(d.rep)) for d in exact_duplicates(keys, rep, "dup_caption")] == \
           [("b", "dup_caption", "a"), ("c", "dup_caption", "a")]
    assert list(exact_duplicates([rep, rep], rep, "dup_url")) == []  # the same node twice is not a duplicate
    assert decide((node_id("b", None), node_id("a", None)), "near_dup_image") == \
           Decision(node_id("b", None), "near_dup_image", node_id("a", None))


def test_one_large_star_small_star_round_on_a_path_makes_a_star():
    from filters.dedup.components import both_directions, large_star_step, small_star_step

    def grouped(pairs):
        groups = {}
        for k, v in pairs:
            groups.setdefault(k, []).append(v)
        return sorted(groups.items())

    edges = [normalize_edge("a", "b"), normalize_edge("b", "c"), normalize_edge("c", "d")]  # a - b - c - d
    large = [step for item in grouped(e for edge in edges for e in both_directions(edge))
             for step in [large_star_step(item)]]
    assert [size for size, _ in large] == [1, 2, 2, 1]
    large_edges = sorted(e for _, out in large for e in out)
    assert large_edges == [("b", "a"), ("c", "a"), ("d", "b")]
    small = [small_star_step(item) for item in grouped(large_edges)]
    assert sorted(e for _, out in small for e in out) == [("b", "a"), ("c", "a"), ("d", "b")]
    # a second round finishes the star on the minimum
    again = sorted(e for item in grouped(e for edge in large_edges for e in both_directions(edge))
                   for e in large_star_step(item)[1])
    assert sorted(e for item in grouped(again) for e in small_star_step(item)[1]) == [("b", "a"), ("c", "a"), ("d", "a")]


def test_settle_and_local_labels():
    from filters.dedup.components import local_labels, settle

    assert settle("b", ["a"], []) == (True, ("b", "a"))  # a star leaf
    assert settle("a", [], ["b", "c"]) == (True, None)  # a star centre
    assert settle("b", ["a"], ["c"]) == (False, None) and settle("c", ["a", "b"], []) == (False, None)
    assert local_labels([("b", "a"), ("c", "b"), ("e", "d")]) == ([("b", "a"), ("c", "a"), ("e", "d")], 2)
    assert local_labels([]) == ([], 0)


def test_components_route_every_edge_down_exactly_one_path():
    from filters.dedup.components import converged, fits_a_worker, not_converged, too_big_for_a_worker

    assert fits_a_worker(None, count=5, limit=5) and not too_big_for_a_worker(None, count=5, limit=5)
    assert too_big_for_a_worker(None, count=6, limit=5) and not fits_a_worker(None, count=6, limit=5)
    assert too_big_for_a_worker(None, count=1, limit=0)  # max_local_edges 0: always the star rounds
    assert converged(None, unsettled=0) and not not_converged(None, unsettled=0)
    assert not_converged(None, unsettled=1) and not converged(None, unsettled=1)


def test_cascade_order_and_switches():
    from filters.dedup.buckets import cascade

    assert cascade(DedupConfig()) == (["url", "caption", "image"], ["caption", "image"])
    assert cascade(DedupConfig(), images=False) == (["url", "caption"], ["caption"])
    cfg = build(DedupConfig, {"exact": {"url": False}, "near_caption": {"enabled": False}}, "")
    assert cascade(cfg) == (["caption", "image"], ["image"])


def test_job_state_claims_resumes_and_refuses_a_foreign_folder():
    """JobState over an in-memory filesystem: no Beam needed."""
    import json

    from curation.core.jobstate import JOB_NAME, JobState, OutputConflict
    from curation.core.shards import INDEX_NAME, PROGRESS_DIR, ShardReport

    class Files:
        def __init__(self):
            self.data, self.dirs = {}, set()

        def join(self, base, *parts):
            return "/".join((base, *parts))

        def exists(self, path):
            return path in self.data or path in self.dirs

        def mkdirs(self, path):
            self.dirs.add(path)

        def read_bytes(self, path):
            return self.data[path]

        def write_json(self, path, doc):
            self.data[path] = json.dumps(doc).encode()

        def listdir(self, directory, suffix=""):
            return sorted(p for p in self.data if p.rsplit("/", 1)[0] == directory and p.endswith(suffix))

    files = Files()
    state = JobState("out", "fp1", files)
    assert state.finished() is None and state.done_reports() == {}
    state.claim()
    assert json.loads(files.data[f"out/{JOB_NAME}"]) == {"fingerprint": "fp1"}
    report = ShardReport(0, "s-00000-of-00002", 1, 1, "t", "m", 10)
    files.data[f"out/{PROGRESS_DIR}/s-00000-of-00002.json"] = report.to_json().encode()
    files.data[f"out/{PROGRESS_DIR}/s-00001-of-00002.json"] = b'{"shard": 1'  # torn: redo that shard
    assert state.done_reports() == {report.name: report}
    files.data[f"out/{INDEX_NAME}"] = json.dumps({"config_fingerprint": "fp1", "kind": "pairs"}).encode()
    assert state.finished() == {"config_fingerprint": "fp1", "kind": "pairs"}
    with pytest.raises(OutputConflict, match="another job"):
        JobState("out", "fp2", files).finished()
