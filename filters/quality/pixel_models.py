"""The model looks at a downloaded image, in the order ingest applies them to the image it will
store: Open-NSFW's score (nsfw.py), then the faces (faces.py): detected, and named by the row's
metadata, counted against `max_faces`, then blurred. What they find goes into the sample's json
(`nsfw_pixels`, `faces`); a rejection names its reason (`nsfw_pixels`, `too_many_faces`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curation.core.records import Verdict
from filters.quality.clip import ClipConfig
from filters.quality.faces import FacesConfig, blur_boxes, detect_faces, merge_boxes, metadata_boxes
from filters.quality.nsfw import NsfwConfig, nsfw_score


@dataclass(frozen=True)
class PixelModelsConfig:
    """Models run on every downloaded image (all off by default): NSFW and faces in the download
    step, before the image is stored; CLIP (and the aesthetic predictor) after it, batched in a
    RunInference step of its own (pipelines/pixel_scores.py)."""

    nsfw: NsfwConfig = field(default_factory=NsfwConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)

    @property
    def active(self) -> bool:
        """Whether the download step runs a model (CLIP runs after it)."""
        return self.nsfw.enabled or self.faces.active


@dataclass(frozen=True)
class PixelLook:
    """What the models made of one image: the image to store (faces blurred), the findings, and
    a rejection or None."""

    image: Any
    nsfw: float | None = None
    faces: list[list[int]] | None = None
    verdict: Verdict | None = None


def look(img: Any, cfg: PixelModelsConfig, nsfw_enforced: bool, row_faces: Any = None,
         resized: tuple[int, int] | None = None, cut: tuple[int, int] = (0, 0)) -> PixelLook:
    """Run the configured models on `img` (the image as it will be stored, RGB). `row_faces`: the
    row's relative face boxes, mapped through the resize (`resized`: the size before a crop or
    border, default `img.size`) and the crop / border offset `cut`."""
    score = nsfw_score(img, cfg.nsfw.threads) if cfg.nsfw.enabled else None
    if score is not None and nsfw_enforced and score > cfg.nsfw.max_score:
        return PixelLook(img, score, None, Verdict.reject("nsfw_pixels", f"Open-NSFW {score:.3f} > {cfg.nsfw.max_score:g}"))
    f = cfg.faces
    if not f.active:
        return PixelLook(img, score)
    boxes = detect_faces(img, f) if f.detect else []
    if row_faces:
        w, h = resized or img.size
        boxes += metadata_boxes(row_faces, w, h, cut)
    boxes = merge_boxes(boxes, img.width, img.height)  # clipped to the stored image, one per face
    if f.max_faces is not None and len(boxes) > f.max_faces:
        return PixelLook(img, score, [list(b) for b in boxes],
                         Verdict.reject("too_many_faces", f"{len(boxes)} faces > max_faces {f.max_faces}"))
    stored = blur_boxes(img, boxes, f.margin) if f.blur and boxes else img
    return PixelLook(stored, score, [list(b) for b in boxes])
