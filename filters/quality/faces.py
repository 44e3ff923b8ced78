"""Faces in the stored image, blurred as DataComp ships its pools: detected with OpenCV's Haar
cascade (haarcascade_frontalface_default.xml, shipped in the opencv wheel's cv2.data), plus the
boxes a row's metadata names (DataComp's `face_bboxes`, relative [x0, y0, x1, y1] of the original
image). The boxes stay in the sample's json, in stored-image pixels; `max_faces` rejects a crowd.
DataComp's recipe maps `face_bboxes` in `source.columns`; with `blur` alone the cascade does not
run and only those boxes are blurred."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from curation.core.config import ConfigError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 / y1 exclusive


@dataclass(frozen=True)
class FacesConfig:
    """Face detection, blurring and the max-faces filter on every downloaded image."""

    detect: bool = False  # run the cascade on every stored image (about 20-100 ms per image)
    # blur the detected faces and the row's own boxes (source column mapped to `face_bboxes`) in the stored image
    blur: bool = False
    max_faces: int | None = None  # reject `too_many_faces` above it (detected + metadata boxes); null: no limit
    min_size: int = 24  # smallest face side the cascade looks for, in stored pixels
    # the cascade sees a copy whose longer side is at most this (boxes scaled back): 71 ms instead of 96 per
    # 512 px photo here (bench/pixel_scores.py), the same faces found on the test photos
    detect_side: int = 384
    scale_factor: float = 1.1  # the cascade's pyramid step
    min_neighbors: int = 5  # the cascade's overlap votes a face needs (higher: fewer false faces)
    margin: float = 0.15  # each box grown by this share of its size before blurring (hair, chin)

    def __post_init__(self) -> None:
        if self.scale_factor <= 1.0:
            raise ConfigError("pixels.faces.scale_factor: above 1")
        if self.max_faces is not None and self.max_faces < 0:
            raise ConfigError("pixels.faces.max_faces: 0 or more, or null")
        if self.detect_side < 64 or self.min_size < 8:
            raise ConfigError("pixels.faces: detect_side >= 64 and min_size >= 8")

    @property
    def active(self) -> bool:
        return self.detect or self.blur or self.max_faces is not None


_LOCAL = threading.local()  # one cascade per thread: OpenCV's CascadeClassifier is not thread-safe


def face_cascade() -> Any:
    """This thread's frontal face cascade (loaded on first use); RuntimeError if OpenCV has none."""
    if getattr(_LOCAL, "cascade", None) is None:
        import cv2

        cv2.setNumThreads(1)  # the download threads are the parallelism; no OpenCV pool under each of them
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if cascade.empty():
            raise RuntimeError("OpenCV's frontal face cascade did not load (opencv without cv2.data?)")
        _LOCAL.cascade = cascade
    return _LOCAL.cascade


def detect_faces(img: Any, cfg: FacesConfig) -> list[Box]:
    """Frontal faces in a decoded RGB PIL image, as boxes in its pixels sorted top-left first; the
    cascade runs on a copy at most `detect_side` on its longer side."""
    import numpy as np

    gray = img.convert("L")
    scale = min(1.0, cfg.detect_side / max(gray.size))
    if scale < 1.0:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))))
    least = max(8, round(cfg.min_size * scale))
    found = face_cascade().detectMultiScale(np.asarray(gray), scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
                                        minSize=(least, least))
    back = 1.0 / scale
    return sorted((min(img.width, round(x * back)), min(img.height, round(y * back)),
                   min(img.width, round((x + w) * back)), min(img.height, round((y + h) * back))) for x, y, w, h in found)


def metadata_boxes(value: Any, width: int, height: int, crop: tuple[int, int] = (0, 0)) -> list[Box]:
    """A row's relative face boxes ([[x0, y0, x1, y1], ...] in [0, 1] of the original image) in the
    stored image's pixels: scaled to the resized image (`width` x `height`, same aspect), then
    shifted by the crop / border offset (`crop`: what was cut from the left and top, negative for a
    border). Malformed entries are skipped: a bad column never fails the row."""
    out = []
    for box in value if isinstance(value, (list, tuple)) else []:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            continue
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            continue
        out.append((round(x0 * width) - crop[0], round(y0 * height) - crop[1],
                    round(x1 * width) - crop[0], round(y1 * height) - crop[1]))
    return out


def merge_boxes(boxes: Sequence[Box], width: int, height: int, same_iou: float = 0.3) -> list[Box]:
    """Boxes clipped to the image (empty ones dropped), and one kept of each pair that overlaps at
    IoU >= `same_iou`: the cascade and the row's metadata name the same face in slightly
    different boxes, and a face must count once against `max_faces`."""
    clipped = sorted({(max(0, x0), max(0, y0), min(width, x1), min(height, y1)) for x0, y0, x1, y1 in boxes})
    out: list[Box] = []
    for box in (b for b in clipped if b[2] > b[0] and b[3] > b[1]):
        if all(_iou(box, kept) < same_iou for kept in out):
            out.append(box)
    return out


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def blur_boxes(img: Any, boxes: Sequence[Box], margin: float) -> Any:
    """The image with each box (grown by `margin`, clipped to the image) replaced by a strong
    Gaussian blur of itself: radius a quarter of the box's shorter side, at least 4 pixels."""
    from PIL import ImageFilter

    out = img.copy()
    for x0, y0, x1, y1 in boxes:
        dx, dy = round((x1 - x0) * margin), round((y1 - y0) * margin)
        box = (max(0, x0 - dx), max(0, y0 - dy), min(img.width, x1 + dx), min(img.height, y1 + dy))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        region = out.crop(box)
        radius = max(4.0, min(region.width, region.height) / 4)
        out.paste(region.filter(ImageFilter.GaussianBlur(radius)), box[:2])
    return out
