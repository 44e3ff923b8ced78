"""Pixel filters: decide on the decoded (original) image size, after download; a filter with
`needs_pixels` also looks at the decoded image (`pixels(img)`; the metadata-only plan cannot)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from curation.core.records import Verdict


@dataclass(frozen=True)
class MinSide:
    """Reject images whose shorter decoded side is below `min`."""

    min: int = 64
    stage: ClassVar[str] = "image"

    def __call__(self, width: int, height: int) -> Verdict:
        if min(width, height) < self.min:
            return Verdict.reject("too_small", f"{width}x{height} < {self.min}")
        return Verdict.keep()


@dataclass(frozen=True)
class AspectRatio:
    """Reject images whose long/short side ratio is above `max`."""

    max: float = 3.0
    stage: ClassVar[str] = "image"

    def __call__(self, width: int, height: int) -> Verdict:
        ratio = max(width, height) / max(1, min(width, height))
        if ratio > self.max:
            return Verdict.reject("bad_aspect_ratio", f"{width}x{height} ratio {ratio:.2f} > {self.max}")
        return Verdict.keep()


@dataclass(frozen=True)
class MaxArea:
    """Reject images with more than `max` pixels (after the bomb limit, a policy limit)."""

    max: int = 40_000_000
    stage: ClassVar[str] = "image"

    def __call__(self, width: int, height: int) -> Verdict:
        if width * height > self.max:
            return Verdict.reject("too_large", f"{width}x{height} > {self.max} px")
        return Verdict.keep()


@dataclass(frozen=True)
class BlankImage:
    """Reject uniform or near-uniform images (a blank, a solid colour, an empty transparent PNG):
    the largest per-channel standard deviation of a 64 px copy below `max_std` (0-255 scale)."""

    max_std: float = 3.0
    stage: ClassVar[str] = "image"
    needs_pixels: ClassVar[bool] = True

    def __call__(self, width: int, height: int) -> Verdict:
        return Verdict.keep()  # the size says nothing; `pixels` decides

    def pixels(self, img) -> Verdict:
        from PIL import ImageStat

        small = img.copy()
        small.thumbnail((64, 64))
        std = max(ImageStat.Stat(small).stddev)
        if std < self.max_std:
            return Verdict.reject("blank_image", f"pixel std {std:.2f} < {self.max_std}")
        return Verdict.keep()
