"""CLIP / SigLIP image-text similarity on the stored pixels, and LAION's aesthetic predictor on its
embeddings. No CLIP or aesthetic weights ship in any registry package, so these tests run the real
loading and scoring code (transformers' AutoModel / AutoProcessor from a folder, torch.load with
weights_only) on randomly initialised models the tests save to disk
(curation/samples/tiny_clip.py): the scores mean nothing, so the gate's enforcing side is decided
on given scores and says so. Photos: scikit-image's sample images."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
import torch
from PIL import Image

from curation.core.config import ConfigError
from curation.core.records import ImageInfo, Pair, Rejection, Sample
from curation.samples.tiny_clip import save_random_aesthetic, save_random_clip
from filters.quality.clip import (AestheticConfig, ClipConfig, ClipGateConfig, ClipScorer, PixelScore, clip_gate, judge,
                                  read_probes)
from filters.quality.gates import decide_gate

PHOTOS = {"astronaut": "an astronaut in a white space suit in front of a flag",
          "coffee": "a cup of coffee on a saucer", "chelsea": "a tabby cat looking to the side",
          "rocket": "a rocket on its launch pad", "horse": "a silhouette of a horse", "coins": "old coins in rows"}


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return str(save_random_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


def sample(caption: str, data: bytes = b"", uid: str = "u0", metadata_clip: float | None = None) -> Sample:
    pair = Pair(uid=uid, url=f"http://x/{uid}.jpg", caption=caption, source="t", source_file="f.parquet", source_row=0,
                clip_similarity=metadata_clip)
    return Sample(pair, ImageInfo(data=data, ext="jpg", width=8, height=8, original_width=8, original_height=8,
                                  original_format="JPEG", sha256="0" * 64, phash="0" * 16))


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_scorer_loads_from_a_folder_and_scores_each_image_against_its_caption(tiny_clip):
    scorer = ClipScorer(ClipConfig(model=tiny_clip))
    images = [photo(n) for n in PHOTOS]
    captions = list(PHOTOS.values())
    captions[1] = "一杯のコーヒー、ソーサーの上に " * 40  # far past CLIP's 77 tokens, and not Latin script
    got = scorer.score(images, captions)
    assert all(s.error is None and -1.0 <= s.similarity <= 1.0 for s in got)
    assert len({s.similarity for s in got}) == len(got)  # a real forward pass: every pair scores apart
    matrix = scorer.matrix(images, captions)
    assert [round(matrix[i][i], 4) for i in range(len(images))] == pytest.approx([s.similarity for s in got], abs=2e-4)
    alone = scorer.score(images[2:3], captions[2:3])[0].similarity  # batch composition does not change a score
    assert alone == pytest.approx(got[2].similarity, abs=2e-4)
    assert scorer.info()["name"] == "tiny-clip"


def test_a_bad_element_fails_alone(tiny_clip):
    scorer = ClipScorer(ClipConfig(model=tiny_clip))
    good = photo("coffee")
    got = scorer.score([good, "not an image", good], ["a", "b", "c"])
    assert got[0].similarity is not None and got[2].similarity is not None
    assert got[1].similarity is None and got[1].error
    alone = scorer.score(["not an image"], ["a"])  # a batch of one fails as an element, not the bundle
    assert alone[0].similarity is None and alone[0].error


def test_aesthetic_predictor_loads_tensors_only_and_checks_its_size(tiny_clip, tmp_path):
    weights = save_random_aesthetic(tmp_path / "sac+logos+ava1-l14-linearMSE.pth", dim=16)
    scorer = ClipScorer(ClipConfig(model=tiny_clip, aesthetic=AestheticConfig(weights=str(weights))))
    images = [photo("astronaut"), photo("chelsea")]
    got = scorer.score(images, ["x", "y"])
    img, _ = scorer._embed(images, ["x", "y"])
    from filters.quality.clip import aesthetic_mlp

    mlp = aesthetic_mlp(16)
    mlp.load_state_dict({k.removeprefix("layers."): v for k, v in torch.load(weights, weights_only=True).items()})
    want = mlp.eval()(img).squeeze(-1).tolist()
    assert [s.aesthetic for s in got] == pytest.approx(want, abs=1e-3)
    wrong = save_random_aesthetic(tmp_path / "l14.pth", dim=768)  # ViT-L/14's size, not this model's
    with pytest.raises(ConfigError, match="768-dim"):
        ClipScorer(ClipConfig(model=tiny_clip, aesthetic=AestheticConfig(weights=str(wrong))))
    pickled = tmp_path / "evil.pth"  # a pickle that is not tensors is refused, never run
    torch.save({"layers.0.weight": torch.zeros(1, 16), "hook": print}, pickled)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        ClipScorer(ClipConfig(model=tiny_clip, aesthetic=AestheticConfig(weights=str(pickled))))
    with pytest.raises(ConfigError, match="needs pixels.clip.model"):
        ClipConfig(aesthetic=AestheticConfig(weights=str(weights)))
    from filters.quality.clip import AestheticGateConfig, aesthetic_gate

    probes = tmp_path / "aesthetic"
    for side, names in (("good", ["astronaut", "coffee", "chelsea"]), ("bad", ["coins", "horse", "rocket"])):
        (probes / side).mkdir(parents=True)
        for name in names:
            photo(name).save(probes / side / f"{name}.png")
    gated = ClipConfig(model=tiny_clip, aesthetic=AestheticConfig(weights=str(weights), min_score=0.0,
                                                                  calibration=AestheticGateConfig(probes=str(probes))))
    gate = aesthetic_gate(gated)
    assert gate["good"] == 3 and gate["bad"] == 3 and 0.0 <= gate["auc"] <= 1.0 and isinstance(gate["enforced"], bool)
    assert "no min_score" in aesthetic_gate(ClipConfig(model=tiny_clip, aesthetic=AestheticConfig(weights=str(weights))))["why"]


def test_the_gate_measures_the_model_on_probe_pairs(tiny_clip, tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    for name, caption in PHOTOS.items():
        photo(name).save(probes / f"{name}.jpg")
        (probes / f"{name}.txt").write_text(caption)
    (probes / "uncaptioned.jpg").write_bytes(jpeg(photo("moon")))  # no .txt: not a probe
    assert len(read_probes(str(probes))) == len(PHOTOS)
    cfg = ClipConfig(model=tiny_clip, min_similarity=0.2, calibration=ClipGateConfig(probes=str(probes)))
    gate = clip_gate(cfg)
    assert gate["probes"] == 6 and gate["matched"] == 6 and gate["mismatched"] == 30
    assert 0.0 <= gate["auc"] <= 1.0
    assert gate["enforced"] is False and "AUC" in gate["why"]  # a random model does not earn the right to reject
    assert "no probe pairs" in clip_gate(ClipConfig(model=tiny_clip, min_similarity=0.2))["why"]
    assert "no min_similarity" in clip_gate(ClipConfig(model=tiny_clip))["why"]
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    photo("coffee").save(lonely / "coffee.png")
    (lonely / "coffee.txt").write_text("a cup")
    with pytest.raises(ConfigError, match="at least 2"):
        clip_gate(ClipConfig(model=tiny_clip, min_similarity=0.2, calibration=ClipGateConfig(probes=str(lonely))))


def test_the_gate_enforces_only_a_model_that_separates():
    """Given scores (no real CLIP can run here): matched pairs near 0.3, mismatched near 0.1."""
    matched, mismatched = [0.31, 0.29, 0.33, 0.30] * 5, [0.12, 0.08, 0.15, 0.2] * 25
    ok = decide_gate([-s for s in matched], [-s for s in mismatched], -0.25, 0.9, 0.1, "matched", "mismatched",
                     "below 0.25")
    assert ok["enforced"] and ok["auc"] == 1.0 and ok["mismatched_reject"] == 1.0
    harsh = decide_gate([-s for s in matched], [-s for s in mismatched], -0.32, 0.9, 0.1, "matched", "mismatched",
                        "below 0.32")
    assert not harsh["enforced"] and "matched probes rejected" in harsh["why"]


def test_judge_records_and_rejects_only_as_the_gate_allows():
    cfg = ClipConfig(model="m", min_similarity=0.25, aesthetic=AestheticConfig(min_score=5.0))
    kept = judge(sample("a cat"), PixelScore(0.1, 6.0), "m", cfg, enforced=False)  # open gate: recorded, kept
    assert isinstance(kept, Sample) and kept.image.clip_pixel_similarity == 0.1 and kept.image.clip_model == "m"
    meta = kept.metadata()
    assert meta["clip_pixel_similarity"] == 0.1 and meta["aesthetic_pixels"] == 6.0
    low = judge(sample("a cat"), PixelScore(0.1, 6.0), "m", cfg, enforced=True)
    assert isinstance(low, Rejection) and low.reason == "low_clip_pixel_similarity" and "0.1000 < 0.25" in low.detail
    assert isinstance(judge(sample("a cat"), PixelScore(0.3, 4.2), "m", cfg, enforced=True), Sample)  # no aesthetic gate
    ugly = judge(sample("a cat"), PixelScore(0.3, 4.2), "m", cfg, enforced=True, aesthetic_enforced=True)
    assert isinstance(ugly, Rejection) and ugly.reason == "low_aesthetic"
    broken = judge(sample("a cat"), PixelScore(error="RuntimeError: boom"), "m", cfg, enforced=True)
    assert broken.reason == "pixel_score_error" and "boom" in broken.detail
    assert "clip_pixel_similarity" not in sample("unscored").metadata()  # other shards keep their bytes


def test_handler_reads_staged_images_back_and_a_broken_one_fails_alone(tiny_clip, tmp_path):
    from pipelines.pixel_scores import ClipHandler

    bundle = tmp_path / "b.bundle"
    good = jpeg(photo("chelsea"))
    bundle.write_bytes(b"garbage!" + good)
    staged, broken, inline = sample("a cat", uid="a"), sample("junk", uid="b"), sample("a cup", jpeg(photo("coffee")), "c")
    staged.staged, broken.staged = (str(bundle), 8, len(good)), (str(bundle), 0, 8)
    handler = ClipHandler(ClipConfig(model=tiny_clip, batch_size=3))
    model = handler.load_model()
    results = list(handler.run_inference([(0, staged), (0, broken), (1, inline)], model))
    assert [r.example[1].pair.uid for r in results] == ["a", "b", "c"]
    assert results[0].inference.similarity is not None and results[2].inference.similarity is not None
    assert "stored image unreadable" in results[1].inference.error
    direct = ClipScorer(ClipConfig(model=tiny_clip)).score([photo("chelsea")], ["a cat"])[0]
    assert results[0].inference.similarity == pytest.approx(direct.similarity, abs=0.02)  # JPEG round trip
    assert results[0].model_id == "tiny-clip"


def test_pixel_score_ranks_dedup_representatives():
    from filters.dedup.keys import origin_row, record_score

    high_meta, high_pixels = sample("a", uid="a", metadata_clip=0.9), sample("b", uid="b", metadata_clip=0.1)
    high_meta.image.clip_pixel_similarity, high_pixels.image.clip_pixel_similarity = 0.2, 0.35
    assert record_score(high_pixels, "clip_similarity") == 0.35
    assert record_score(sample("c", metadata_clip=0.4), "clip_similarity") == 0.4  # unscored: the metadata's
    rows = sorted([origin_row(((0, 0), high_meta), "clip_similarity"), origin_row(((0, 1), high_pixels), "clip_similarity")])
    assert rows[0].record is high_pixels  # the representative order: the fresher pixel score first
    assert record_score(high_pixels, None) is None  # no score field: uid order, as before
    high_pixels.pair.aesthetic_score = 5.5
    assert record_score(high_pixels, "aesthetic_score") == 5.5  # the pixel cosine stands in for CLIP fields only


def test_ingest_scores_every_stored_image_and_accounts_for_every_row(tiny_clip, tmp_path):
    """The real ingest stage on the LAION recipe with the CLIP step on: photos from a local server,
    one broken link, probes for the gate; every kept json carries its score, the manifest and the
    summary show them, and the index holds the gate's figures."""
    from curation.core.shards import iter_tar_groups
    from curation.core.shardset import ShardSet
    from curation.inspection.summary import summarize
    from curation.samples.image_server import serve
    from pipelines.ingest import run_ingest
    from tests.conftest import local_config

    probes = tmp_path / "probes"
    probes.mkdir()
    for name, caption in PHOTOS.items():
        photo(name).save(probes / f"{name}.png")
        (probes / f"{name}.txt").write_text(caption)
    with serve({f"{n}.jpg": jpeg(photo(n)) for n in PHOTOS}) as base:
        rows = [{"URL": f"{base}/img/{n}.jpg", "TEXT": c, "WIDTH": 512, "HEIGHT": 512, "similarity": 0.3,
                 "punsafe": 0.01, "pwatermark": 0.1} for n, c in PHOTOS.items()]
        rows.append({**rows[0], "URL": f"{base}/img/missing.jpg", "TEXT": "a missing photo of a thing"})
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part.parquet")
        cfg = local_config("laion.yaml", pixels={"clip": {"model": tiny_clip, "batch_size": 4, "min_similarity": 0.99,
                                                          "calibration": {"probes": str(probes)}}})
        index = run_ingest(cfg, [str(tmp_path / "part.parquet")], str(tmp_path / "out"))
    assert index["totals"] == {"inputs": 7, "kept": 6, "rejected": 1}  # min_similarity 0.99, but the gate is shut
    gate = index["clip_gate"]
    assert gate["enforced"] is False and gate["probes"] == 6 and gate["model"] == tiny_clip
    metas = [json.loads(g["json"]) for s in index["shards"] for _, g in iter_tar_groups(str(tmp_path / "out" / s["tar"]))]
    assert len(metas) == 6 and all(-1 <= m["clip_pixel_similarity"] <= 1 and m["clip_model"] == "tiny-clip" for m in metas)
    summary = summarize(ShardSet.open(str(tmp_path / "out")))
    assert summary["distributions"]["clip_pixel_similarity"]["count"] == 6 and summary["accounting_ok"]
    assert summary["pixel_gates"]["clip"]["enforced"] is False
    from rich.console import Console

    from curation.inspection.report import render_report
    from curation.inspection.summary import render

    console = Console(record=True, width=200)
    render(summary, console)
    text = console.export_text()
    assert "clip_pixel_similarity" in text and "NOT enforced" in text
    page = render_report(ShardSet.open(str(tmp_path / "out")))
    assert "id='pixel-gates'" in page and "alt='clip_pixel_similarity'" in page
