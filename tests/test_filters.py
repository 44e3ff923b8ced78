"""Metadata and pixel filters: each verdict, built from YAML-like dicts as recipes do."""

import pytest

from curation.core.records import Pair
from filters.dedup.exact import normalize_url, pick_representative
from filters.registry import build_filters


def pair(**kw) -> Pair:
    base = dict(uid="u1", url="http://a.example/x.jpg", caption="a red circle on a blue gradient",
                source="t", source_file="f.parquet", source_row=0)
    base.update(kw)
    return Pair(**base)


def verdict(spec: dict, p: Pair):
    (f,) = build_filters([spec], "metadata_filters")
    return f(p)


@pytest.mark.parametrize("caption,reason", [
    ("", "empty_caption"), ("   \t", "empty_caption"), ("...", "empty_caption"),
    ("IMG_2041.JPG", "placeholder_caption"), ("DSC01234", "placeholder_caption"),
    ("untitled", "placeholder_caption"), ("Image", "placeholder_caption"), ("photo.png", "placeholder_caption"),
    ("Logo Final, v2 (1).SVG", "placeholder_caption"), ("banner_01.avif", "placeholder_caption"),
    ("my holiday photo.HEIC", "placeholder_caption"), ("icon-set.ico", "placeholder_caption"),
])
def test_placeholder_caption_rejects(caption, reason):
    v = verdict({"placeholder_caption": {}}, pair(caption=caption))
    assert not v.ok and v.reason == reason


def test_placeholder_caption_keeps_real_text():
    assert verdict({"placeholder_caption": {}}, pair(caption="Image of a cat on a sofa")).ok
    assert verdict({"placeholder_caption": {}}, pair(caption="Download the logo as SVG or PNG")).ok
    assert verdict({"placeholder_caption": {}}, pair(caption="The file.png format explained")).ok


def test_caption_length_bounds():
    spec = {"caption_length": {"min_chars": 5, "max_chars": 40, "min_words": 2, "max_words": 6}}
    assert verdict(spec, pair(caption="cat")).reason == "caption_too_short"
    assert verdict(spec, pair(caption="a" * 41 + " b")).reason == "caption_too_long"
    assert verdict(spec, pair(caption="one two three four five six seven")).reason == "caption_too_long"
    assert verdict(spec, pair(caption="a grey cat")).ok


def test_declared_size():
    spec = {"declared_size": {"min_side": 64, "max_aspect": 3.0, "max_area": 1_000_000}}
    assert verdict(spec, pair(declared_width=50, declared_height=400)).reason == "declared_too_small"
    assert verdict(spec, pair(declared_width=1000, declared_height=2000)).reason == "declared_too_large"
    assert verdict(spec, pair(declared_width=900, declared_height=200)).reason == "declared_bad_aspect"
    assert verdict(spec, pair(declared_width=640, declared_height=480)).ok
    assert verdict(spec, pair()).ok  # unknown size: left to the pixel filters


def test_nsfw_tag_score_and_gantman():
    spec = {"nsfw": {"max_score": 0.5, "max_gantman": 0.4}}
    assert verdict(spec, pair(nsfw_tag="NSFW")).reason == "nsfw"
    assert verdict(spec, pair(nsfw_tag="UNLIKELY")).ok
    assert verdict(spec, pair(nsfw_score=0.51)).reason == "nsfw"
    assert verdict(spec, pair(nsfw_score_gantman=0.6)).reason == "nsfw"
    assert verdict(spec, pair(nsfw_score=0.49)).ok
    assert verdict({"nsfw": {"reject_missing": True}}, pair()).reason == "nsfw"


def test_watermark_and_clip():
    assert verdict({"watermark": {"max_score": 0.8}}, pair(watermark_score=0.81)).reason == "watermark"
    assert verdict({"watermark": {"max_score": 0.8}}, pair(watermark_score=0.2)).ok
    spec = {"clip_similarity": {"min_b32": 0.28, "min_l14": 0.2}}
    assert verdict(spec, pair(clip_similarity=0.27)).reason == "low_clip_similarity"
    assert verdict(spec, pair(clip_similarity=0.3, clip_similarity_l14=0.1)).reason == "low_clip_similarity"
    assert verdict(spec, pair(clip_similarity=0.3, clip_similarity_l14=0.25)).ok


def test_pixel_filters():
    fs = build_filters([{"min_side": {"min": 64}}, {"aspect_ratio": {"max": 3.0}}, {"max_area": {"max": 10_000_000}}],
                       "pixel_filters")
    assert [f(32, 500).reason for f in fs][0] == "too_small"
    assert fs[1](1000, 100).reason == "bad_aspect_ratio"
    assert fs[2](5000, 5000).reason == "too_large"
    assert all(f(640, 480).ok for f in fs)


def test_normalize_url():
    a = normalize_url("HTTP://Example.COM:80/a.jpg?b=2&a=1&utm_source=x#frag")
    b = normalize_url("http://example.com/a.jpg?a=1&b=2")
    assert a == b
    assert normalize_url("https://example.com/a.jpg") != normalize_url("http://example.com/a.jpg")
    assert normalize_url("http://example.com:8080/a") == "http://example.com:8080/a"


def test_representative_independent_of_order():
    items = [("b", 2), ("a", 1), ("c", 3)]
    for perm in (items, items[::-1], items[1:] + items[:1]):
        keep, rest = pick_representative(perm, key=lambda x: x[1])
        assert keep == ("a", 1) and [r[0] for r in rest] == ["b", "c"]
