"""Image bytes -> the RGB array an OCR engine reads: decoded under the pixel limit, EXIF-rotated,
scaled for detection."""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np

from curation.annotate.ocr.records import OcrError

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


def decode_for_ocr(data: bytes, max_pixels: int, max_side: int) -> tuple[np.ndarray, int, int] | OcrError:
    """Bytes -> (RGB uint8 array downscaled to `max_side`, display width, display height), EXIF-
    rotated, first frame; or an error with a reason. The decompression-bomb limit is checked from
    the header before any pixel is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from curation.core.images import to_rgb

    if not data:
        return OcrError("empty_body", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            return OcrError("decompression_bomb", f"{img.width}x{img.height} px > {max_pixels}")
        img.seek(0)
        img.load()
        img = to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        return OcrError("decode_error", f"not an image Pillow knows ({data[:8].hex()})")
    except Image.DecompressionBombError as err:
        return OcrError("decompression_bomb", str(err)[:160])
    except (ValueError, OSError, SyntaxError, EOFError, struct.error, zlib.error) as err:
        reason = "truncated_image" if "truncated" in str(err).lower() or isinstance(err, EOFError) else "decode_error"
        return OcrError(reason, f"{type(err).__name__}: {err}"[:200])
    w, h = img.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    return np.asarray(img), w, h


def sized_for_detection(arr: np.ndarray, cfg: "OcrConfig") -> np.ndarray:
    """`det_limit_type: auto`: an image whose long side is under `det_min_long` grows towards it, at
    most `det_max_upscale` times; larger ones go as they are (the engine caps the long side at
    `det_limit_side_len`). Boxes map back through the array's width, so they stay in original pixels."""
    if cfg.det_limit_type != "auto":
        return arr
    h, w = arr.shape[:2]
    factor = min(cfg.det_max_upscale, cfg.det_min_long / max(h, w))
    if factor <= 1.0:
        return arr
    from PIL import Image

    img = Image.fromarray(arr).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC)
    return np.asarray(img)


def det_limits(cfg: "OcrConfig") -> tuple[str, int]:
    """(limit type, side) the engine is built with: auto caps the long side (never upscales)."""
    return ("max" if cfg.det_limit_type == "auto" else cfg.det_limit_type), cfg.det_limit_side_len
