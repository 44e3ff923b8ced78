"""Pixel primitives every stage shares: Pillow's safety limits, any mode to 8-bit RGB, the 64-bit
DCT perceptual hash (imagehash's phash definition) and its Hamming distance."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, PngImagePlugin


# We check the pixel count ourselves before decoding; Pillow's own warning would only be noise.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# zlib text-chunk bombs in PNG: Pillow refuses chunks above these (ValueError), we classify it.
PngImagePlugin.MAX_TEXT_CHUNK = 1 << 20
PngImagePlugin.MAX_TEXT_MEMORY = 8 << 20

_DCT_N = 32
_DCT = np.cos(np.pi * np.outer(np.arange(_DCT_N), 2 * np.arange(_DCT_N) + 1) / (2 * _DCT_N))


def phash(img: Image.Image) -> str:
    """64-bit perceptual hash: 32x32 grey, 2-D DCT-II, 8x8 low frequencies > their median."""
    grey = img.convert("L").resize((_DCT_N, _DCT_N), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:8, :8]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex perceptual hashes."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def background_for(rgba: Image.Image) -> tuple[int, int, int, int]:
    """The background that keeps a transparent image's content readable: black behind bright
    content (white text on a transparent PNG), white otherwise, judged by the alpha-weighted mean
    luminance of a small copy."""
    small = rgba.copy()
    small.thumbnail((128, 128))
    arr = np.asarray(small, dtype=np.float32)
    alpha = arr[..., 3] / 255.0
    weight = float(alpha.sum())
    if weight <= 0:
        return (255, 255, 255, 255)
    lum = (0.299 * arr[..., 0] + 0.587 * arr[..., 1] + 0.114 * arr[..., 2]) * alpha
    return (0, 0, 0, 255) if float(lum.sum()) / weight > 160 else (255, 255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on the background that keeps the
    content's contrast (`background_for`)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0  # 16-bit full range onto 8-bit
        elif img.mode == "F" or (arr.size and arr.max() > 255):
            arr = arr * (255.0 / max(float(arr.max()), 1e-9))
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, background_for(rgba))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
