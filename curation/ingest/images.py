"""Decode, normalise, resize and re-encode one downloaded image; hash it.

Pillow decode with the decompression-bomb limit checked from the header before any pixel is
decoded, EXIF orientation applied, first frame only, every mode to 8-bit RGB (alpha composited on
white), img2dataset's resize modes, JPEG/WebP re-encode, sha256 of the stored bytes (and of the source bytes) and a 64-bit DCT
perceptual hash (imagehash's phash definition) for near-duplicate detection.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib
from typing import Any, Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

from curation.ingest.config import ImageConfig
from curation.core.images import phash, to_rgb
from curation.core.records import ImageInfo, Verdict


def _scale_for(mode: str, size: int, w: int, h: int, only_if_bigger: bool) -> float:
    """Resize factor for img2dataset's modes; 1.0 means untouched."""
    if mode == "no":
        return 1.0
    side = min(w, h) if mode in ("keep_ratio", "center_crop") else max(w, h)
    if only_if_bigger and side <= size:
        return 1.0
    return size / side


_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def _scaled(w: int, h: int, scale: float) -> tuple[int, int]:
    return (w, h) if scale == 1.0 else (max(1, round(w * scale)), max(1, round(h * scale)))


def stored_size(width: int, height: int, cfg: ImageConfig) -> tuple[int, int]:
    """The size ingest stores an image of this (display) size at: resize, then crop or border.
    `curate plan` tiles declared sizes with it; a JPEG's draft decode can shift it by a pixel."""
    w, h = _scaled(width, height, _scale_for(cfg.resize_mode, cfg.image_size, width, height, cfg.resize_only_if_bigger))
    size = cfg.image_size
    if cfg.resize_mode == "center_crop" and (w > size or h > size):
        return min(size, w), min(size, h)
    if cfg.resize_mode == "border" and (w, h) != (size, size) and max(w, h) <= size:
        return size, size
    return w, h


def _resize(img: Image.Image, scale: float, cfg: ImageConfig) -> Image.Image:
    if scale == 1.0:
        return img
    new = _scaled(img.width, img.height, scale)
    method = cfg.downscale_interpolation if scale < 1.0 else cfg.upscale_interpolation
    return img.resize(new, _RESAMPLE[method])


def _finish(img: Image.Image, cfg: ImageConfig) -> tuple[Image.Image, tuple[int, int]]:
    """center_crop and border steps after the keep-ratio resize; also what they cut from the left
    and the top (negative: the border added there), to map boxes onto the stored image."""
    size = cfg.image_size
    if cfg.resize_mode == "center_crop" and (img.width > size or img.height > size):
        left, top = max(0, (img.width - size) // 2), max(0, (img.height - size) // 2)
        return img.crop((left, top, left + min(size, img.width), top + min(size, img.height))), (left, top)
    if cfg.resize_mode == "border" and (img.width != size or img.height != size) and max(img.size) <= size:
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        left, top = (size - img.width) // 2, (size - img.height) // 2
        canvas.paste(img, (left, top))
        return canvas, (-left, -top)
    return img, (0, 0)


def process_image(data: bytes, cfg: ImageConfig, pixel_filters: Sequence = (), models: Any = None,
                  row_faces: Any = None) -> ImageInfo | Verdict:
    """Bytes -> ImageInfo, or a rejecting Verdict with a reason code. Never raises on bad data.
    `models` ((PixelModelsConfig, NSFW gate enforced)): the model looks at the image to be stored
    (filters/quality/pixel_models.py), `row_faces` the row's relative face boxes."""
    if not data:
        return Verdict.reject("empty_body", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
        raw_w, raw_h = img.size
        fmt = img.format or "unknown"
        orientation = img.getexif().get(0x0112, 1)
    except UnidentifiedImageError:
        return Verdict.reject("decode_error", f"not an image Pillow knows ({data[:8].hex()})")
    except Image.DecompressionBombError as err:
        return Verdict.reject("decompression_bomb", str(err)[:120])
    except (ValueError, OSError, SyntaxError, struct.error) as err:
        return _classify(err)
    if raw_w <= 0 or raw_h <= 0:
        return Verdict.reject("decode_error", f"{raw_w}x{raw_h} image")
    if raw_w * raw_h > cfg.max_pixels:
        return Verdict.reject("decompression_bomb", f"{raw_w}x{raw_h} = {raw_w * raw_h} px > {cfg.max_pixels}")
    try:
        scale = _scale_for(cfg.resize_mode, cfg.image_size, raw_w, raw_h, cfg.resize_only_if_bigger)
        if fmt == "JPEG" and scale < 1.0:
            # DCT-domain downscale during decode (up to 8x less work); we still resize exactly after.
            img.draft("RGB", (math.ceil(raw_w * scale), math.ceil(raw_h * scale)))
        img.seek(0)  # first frame of an animation
        img.load()
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        img = to_rgb(img)
    except Image.DecompressionBombError as err:
        return Verdict.reject("decompression_bomb", str(err)[:120])
    except (ValueError, OSError, SyntaxError, EOFError, struct.error, zlib.error) as err:
        return _classify(err)
    # original size in display orientation
    orig_w, orig_h = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else (raw_w, raw_h)
    for check in pixel_filters:
        verdict = check(orig_w, orig_h)
        if not verdict.ok:
            return verdict
    try:
        # draft may already have shrunk the decode; scale what is left relative to the target
        out = _resize(img, _scale_for(cfg.resize_mode, cfg.image_size, img.width, img.height, cfg.resize_only_if_bigger), cfg)
        for check in pixel_filters:
            verdict = check.pixels(out) if getattr(check, "needs_pixels", False) else None
            if verdict is not None and not verdict.ok:
                return verdict
        hashed = phash(out)
        resized = out.size
        out, cut = _finish(out, cfg)
        seen = None
        if models is not None and models[0].active:
            from filters.quality.pixel_models import look

            seen = look(out, models[0], models[1], row_faces, resized, cut)
            if seen.verdict is not None:
                return seen.verdict
            out = seen.image
        buf = io.BytesIO()
        if cfg.encode_format == "jpg":
            out.save(buf, "JPEG", quality=cfg.encode_quality)
        else:
            out.save(buf, "WEBP", quality=cfg.encode_quality, method=4)
    except (ValueError, OSError) as err:
        return Verdict.reject("encode_error", f"{type(err).__name__}: {err}"[:200])
    stored = buf.getvalue()
    return ImageInfo(
        data=stored, ext=cfg.encode_format, width=out.width, height=out.height,
        original_width=orig_w, original_height=orig_h, original_format=fmt,
        sha256=hashlib.sha256(stored).hexdigest(), phash=hashed, source_sha256=hashlib.sha256(data).hexdigest(),
        nsfw_pixels=None if seen is None else seen.nsfw, faces=None if seen is None else seen.faces,
    )


def _classify(err: BaseException) -> Verdict:
    msg = str(err)
    low = msg.lower()
    if "truncated" in low or "premature end" in low or isinstance(err, EOFError):
        return Verdict.reject("truncated_image", msg[:200] or type(err).__name__)
    if "decompressed data too large" in low or "too much memory" in low:
        return Verdict.reject("decompression_bomb", msg[:200])
    return Verdict.reject("decode_error", f"{type(err).__name__}: {msg}"[:200])
