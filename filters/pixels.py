"""Pixel filters: decide on the decoded (original) image size, after download."""

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
