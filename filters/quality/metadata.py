"""Metadata filters: decide on a Pair before any download (InternVL 2.5 / LAION style rules).

Each filter is a frozen dataclass called on a Pair and returning a Verdict. A score that the source
does not provide passes unless `reject_missing` is set, so one recipe works across sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from curation.core.records import Pair, Verdict


@dataclass(frozen=True)
class CaptionLength:
    """Reject captions outside [min_chars, max_chars] characters or [min_words, max_words] words."""

    min_chars: int = 5
    max_chars: int = 2000
    min_words: int = 2
    max_words: int = 500
    stage: ClassVar[str] = "metadata"

    def __call__(self, pair: Pair) -> Verdict:
        text = pair.caption.strip()
        n_chars, n_words = len(text), len(text.split())
        if n_chars < self.min_chars or n_words < self.min_words:
            return Verdict.reject("caption_too_short", f"{n_words} words, {n_chars} chars")
        if n_chars > self.max_chars or n_words > self.max_words:
            return Verdict.reject("caption_too_long", f"{n_words} words, {n_chars} chars")
        return Verdict.keep()


_DEFAULT_PLACEHOLDERS = (
    "image", "images", "photo", "picture", "img", "untitled", "no title", "null", "none", "n/a",
    "na", "nan", "undefined", "default", "placeholder", "thumbnail", "stock photo", "click to enlarge",
)
# A bare image file name, any common extension, with spaces, commas and the like in the name.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "jpe", "jfif", "pjpeg", "png", "apng", "gif", "webp", "bmp", "dib", "tif", "tiff",
                    "heic", "heif", "avif", "jxl", "svg", "svgz", "ico", "cur", "psd", "eps", "ai", "raw", "cr2", "nef",
                    "arw", "dng", "orf", "tga", "exr", "hdr", "jp2", "j2k", "pcx", "ppm", "pgm", "pbm", "xcf", "emf",
                    "wmf")
_FILENAME = re.compile(r"^[^\s/\\<>|][^/\\<>|]{0,240}\.(" + "|".join(IMAGE_EXTENSIONS) + r")\s*$", re.IGNORECASE)
_CAMERA_NAME = re.compile(r"^(img|dsc|dscn|dcim|pic|image|photo|p)[_\- ]?\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class PlaceholderCaption:
    """Reject empty captions, stock placeholders ("image", "untitled") and bare file names."""

    placeholders: list[str] = field(default_factory=lambda: list(_DEFAULT_PLACEHOLDERS))
    stage: ClassVar[str] = "metadata"

    def __call__(self, pair: Pair) -> Verdict:
        text = pair.caption.strip()
        if not text or not any(ch.isalnum() for ch in text):
            return Verdict.reject("empty_caption", repr(text[:40]))
        low = text.lower().strip(" .!:-_")
        if low in self.placeholders or _FILENAME.match(text) or _CAMERA_NAME.match(low):
            return Verdict.reject("placeholder_caption", repr(text[:80]))
        return Verdict.keep()


@dataclass(frozen=True)
class DeclaredSize:
    """Reject rows whose declared (metadata) size is too small, too large or too elongated."""

    min_side: int = 0
    max_area: int = 0  # 0: no limit
    max_aspect: float = 0.0  # 0: no limit
    stage: ClassVar[str] = "metadata"

    def __call__(self, pair: Pair) -> Verdict:
        w, h = pair.declared_width, pair.declared_height
        if not w or not h or w <= 0 or h <= 0:
            return Verdict.keep()  # unknown: the pixel filters decide after download
        if min(w, h) < self.min_side:
            return Verdict.reject("declared_too_small", f"{w}x{h} < {self.min_side}")
        if self.max_area and w * h > self.max_area:
            return Verdict.reject("declared_too_large", f"{w}x{h} > {self.max_area} px")
        if self.max_aspect and max(w, h) / min(w, h) > self.max_aspect:
            return Verdict.reject("declared_bad_aspect", f"{w}x{h} ratio {max(w, h) / min(w, h):.2f}")
        return Verdict.keep()


@dataclass(frozen=True)
class Nsfw:
    """Reject by LAION-400M's NSFW tag, LAION-5B punsafe / COYO opennsfw2, or COYO's gantman score."""

    max_score: float = 0.5
    max_gantman: float = 1.0
    drop_tags: list[str] = field(default_factory=lambda: ["NSFW"])
    reject_missing: bool = False
    stage: ClassVar[str] = "metadata"

    def __call__(self, pair: Pair) -> Verdict:
        if pair.nsfw_tag is not None and pair.nsfw_tag.strip().upper() in {t.upper() for t in self.drop_tags}:
            return Verdict.reject("nsfw", f"tag {pair.nsfw_tag}")
        if pair.nsfw_score is not None and pair.nsfw_score > self.max_score:
            return Verdict.reject("nsfw", f"score {pair.nsfw_score:.3f} > {self.max_score}")
        if pair.nsfw_score_gantman is not None and pair.nsfw_score_gantman > self.max_gantman:
            return Verdict.reject("nsfw", f"gantman {pair.nsfw_score_gantman:.3f} > {self.max_gantman}")
        if self.reject_missing and pair.nsfw_tag is None and pair.nsfw_score is None:
            return Verdict.reject("nsfw", "no NSFW signal and reject_missing is set")
        return Verdict.keep()


@dataclass(frozen=True)
class Watermark:
    """Reject rows whose watermark probability (pwatermark / watermark_score) is above max_score."""

    max_score: float = 0.8
    reject_missing: bool = False
    stage: ClassVar[str] = "metadata"

    def __call__(self, pair: Pair) -> Verdict:
        score = pair.watermark_score
        if score is None:
            return Verdict.reject("watermark", "no watermark score") if self.reject_missing else Verdict.keep()
        if score > self.max_score:
            return Verdict.reject("watermark", f"score {score:.3f} > {self.max_score}")
        return Verdict.keep()


@dataclass(frozen=True)
class ClipSimilarity:
    """Reject rows whose CLIP image-text similarity is below the ViT-B/32 or ViT-L/14 threshold."""

    min_b32: float = 0.0
    min_l14: float = 0.0
    reject_missing: bool = False
    stage: ClassVar[str] = "metadata"

    def __call__(self, pair: Pair) -> Verdict:
        b32, l14 = pair.clip_similarity, pair.clip_similarity_l14
        if b32 is not None and b32 < self.min_b32:
            return Verdict.reject("low_clip_similarity", f"b32 {b32:.3f} < {self.min_b32}")
        if l14 is not None and l14 < self.min_l14:
            return Verdict.reject("low_clip_similarity", f"l14 {l14:.3f} < {self.min_l14}")
        if self.reject_missing and b32 is None and l14 is None:
            return Verdict.reject("low_clip_similarity", "no CLIP similarity")
        return Verdict.keep()
