"""Image processing: every mode to RGB, EXIF orientation, resize modes, bombs, truncation, pHash."""

import io

import numpy as np
import pytest
from PIL import Image

from curation.ingest.config import ImageConfig
from curation.core.images import hamming, phash
from curation.ingest.images import process_image
from curation.core.records import ImageInfo
from curation.samples.data import render


def cfg(**kw) -> ImageConfig:
    return ImageConfig(**{"image_size": 256, **kw})


def decode(info: ImageInfo) -> Image.Image:
    return Image.open(io.BytesIO(info.data))


@pytest.mark.parametrize("name", ["cmyk.jpg", "palette.png", "rgba.png", "grey16.png", "animated.gif", "grey.webp"])
def test_awkward_modes_become_rgb_jpeg(images, name):
    info = process_image(images[name], cfg())
    assert isinstance(info, ImageInfo), info
    out = decode(info)
    smaller_side = min(info.original_width, info.original_height)
    assert out.format == "JPEG" and out.mode == "RGB" and min(out.size) == min(256, smaller_side)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    info = process_image(buf.getvalue(), cfg(resize_mode="no"))
    px = np.asarray(decode(info)).reshape(-1, 3).mean(axis=0)
    assert (px > 245).all()


def test_transparent_text_keeps_its_contrast(images):
    """White lettering on a transparent PNG lands on black, dark lettering on white: the background
    is chosen by the content's alpha-weighted luminance, so the text stays readable (and OCR-able)."""
    from PIL import ImageDraw

    from filters.registry import build_filters

    white = np.asarray(decode(process_image(images["white_text.png"], cfg(resize_mode="no"))), dtype=np.float64)
    assert white.mean() < 60 and white.max() > 200  # mostly black, white strokes
    dark = Image.new("RGBA", (320, 120), (0, 0, 0, 0))
    ImageDraw.Draw(dark).text((10, 40), "CLOSED ON SUNDAY", fill=(20, 20, 20, 255), font_size=28)
    buf = io.BytesIO()
    dark.save(buf, "PNG")
    out = np.asarray(decode(process_image(buf.getvalue(), cfg(resize_mode="no"))), dtype=np.float64)
    assert out.mean() > 200 and out.min() < 60  # white page, dark strokes
    blank = build_filters([{"blank_image": {"max_std": 3.0}}], "pixel_filters")
    assert process_image(images["blank.png"], cfg(), blank).reason == "blank_image"
    empty = io.BytesIO()
    Image.new("RGBA", (200, 200), (255, 255, 255, 0)).save(empty, "PNG")
    assert process_image(empty.getvalue(), cfg(), blank).reason == "blank_image"  # nothing but transparency
    for name in ("white_text.png", "rgba.png", "palette.png", "grey.webp"):
        assert not hasattr(process_image(images[name], cfg(), blank), "reason"), name


def test_sixteen_bit_keeps_its_range(images):
    src = np.asarray(Image.open(io.BytesIO(images["grey16.png"])), dtype=np.float64) / 257.0
    assert src.max() > 100  # a real 16-bit range, far above 255 before scaling
    out = np.asarray(decode(process_image(images["grey16.png"], cfg(resize_mode="no"))), dtype=np.float64)
    assert abs(out[..., 0].mean() - src.mean()) < 2.0  # scaled by 1/257, not clipped to white


def test_exif_rotation_applied(images):
    info = process_image(images["rotated.jpg"], cfg(resize_mode="no"))
    raw = Image.open(io.BytesIO(images["rotated.jpg"]))
    assert (info.original_width, info.original_height) == (raw.height, raw.width)
    assert (info.width, info.height) == (raw.height, raw.width)


@pytest.mark.parametrize("mode,expect", [
    ("keep_ratio", (341, 256)), ("keep_ratio_largest", (256, 192)), ("center_crop", (256, 256)),
    ("border", (256, 256)), ("no", (800, 600)),
])
def test_resize_modes(mode, expect):
    img = Image.new("RGB", (800, 600), (10, 120, 200))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    info = process_image(buf.getvalue(), cfg(resize_mode=mode))
    assert (info.width, info.height) == expect
    assert (info.original_width, info.original_height) == (800, 600)


def test_resize_only_if_bigger_and_webp():
    img = Image.new("RGB", (200, 100), (1, 2, 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    info = process_image(buf.getvalue(), cfg(encode_format="webp"))
    assert (info.width, info.height) == (200, 100) and info.ext == "webp" and decode(info).format == "WEBP"
    up = process_image(buf.getvalue(), cfg(resize_only_if_bigger=False))
    assert (up.width, up.height) == (512, 256)


@pytest.mark.parametrize("name,reason", [("bomb.png", "decompression_bomb"), ("textbomb.png", "decompression_bomb")])
def test_bombs(images, name, reason):
    v = process_image(images[name], cfg())
    assert not isinstance(v, ImageInfo) and v.reason == reason


def test_bomb_limit_is_configurable():
    img = Image.new("RGB", (400, 400))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert process_image(buf.getvalue(), cfg(max_pixels=100_000)).reason == "decompression_bomb"


def test_truncated_corrupt_empty(images):
    jpg = images["0000.jpg"]
    assert process_image(jpg[: len(jpg) // 2], cfg()).reason == "truncated_image"
    assert process_image(b"<html>nope</html>", cfg()).reason == "decode_error"
    assert process_image(b"", cfg()).reason == "empty_body"


def test_pixel_filters_see_original_size():
    from filters.quality.pixels import MinSide

    img = Image.new("RGB", (40, 900))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert process_image(buf.getvalue(), cfg(), [MinSide(64)]).reason == "too_small"


def test_phash_robust_to_reencode_and_resize_but_separates_images():
    a, _ = render(7, 1)
    b, _ = render(7, 2)

    def jpeg(img, q, size=None):
        buf = io.BytesIO()
        (img.resize(size) if size else img).save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue()))

    ha = phash(a)
    assert len(ha) == 16
    assert hamming(ha, phash(jpeg(a, 40))) <= 4
    assert hamming(ha, phash(jpeg(a, 85, (a.width // 3, a.height // 3)))) <= 6
    assert hamming(ha, phash(b)) > 12


def test_deterministic_bytes(images):
    one = process_image(images["0001.jpg"], cfg())
    two = process_image(images["0001.jpg"], cfg())
    assert one.data == two.data and one.sha256 == two.sha256 and one.phash == two.phash


def test_sha256_is_of_the_stored_bytes_and_source_sha256_of_the_downloaded_ones():
    import hashlib

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(buf, "PNG")
    source = buf.getvalue()
    info = process_image(source, ImageConfig(image_size=128, resize_mode="keep_ratio"))
    assert isinstance(info, ImageInfo) and info.data != source
    assert info.sha256 == hashlib.sha256(info.data).hexdigest()
    assert info.source_sha256 == hashlib.sha256(source).hexdigest() != info.sha256
