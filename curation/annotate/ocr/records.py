"""OCR records: lines (box, text, confidence), a result per image, an error with a reason code, the
engine interface, and the reading order of lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One recognised text line: its quadrilateral (4 x [x, y] pixels, clockwise from top-left)."""

    text: str
    confidence: float
    box: tuple[tuple[int, int], ...]
    flag: str | None = None  # script_not_covered | script_mismatch | not_text: never the target of an OCR task

    def to_json(self) -> dict:
        out = {"text": self.text, "confidence": round(self.confidence, 4), "box": [list(p) for p in self.box]}
        if self.flag:
            out["flag"] = self.flag
        return out


@dataclass(frozen=True, slots=True)
class OcrResult:
    """All lines of one image, in reading order (top to bottom, then left to right)."""

    lines: tuple[OcrLine, ...]
    width: int
    height: int
    low_confidence: int = 0  # lines read below ocr.min_confidence and dropped
    engine: str = ""  # which engine read it (tesseract:rus+ukr for a routed image)

    def features(self) -> dict[str, float | int]:
        """Image-level text features: characters, lines, text area fraction, mean confidence."""
        chars = sum(len(line.text) for line in self.lines)
        area = sum(_polygon_area(line.box) for line in self.lines)
        frac = min(1.0, area / float(self.width * self.height)) if self.width and self.height else 0.0
        conf = (sum(line.confidence * len(line.text) for line in self.lines) / chars) if chars else 0.0
        return {"ocr_chars": chars, "ocr_lines": len(self.lines), "text_area_fraction": round(frac, 4),
                "ocr_mean_confidence": round(conf, 4), "ocr_low_confidence_lines": self.low_confidence,
                "ocr_flagged_lines": sum(1 for line in self.lines if line.flag)}

    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True, slots=True)
class OcrError:
    """Why one image could not be read: a reason code from curation/core/reasons.py and a detail."""

    reason: str
    detail: str


class OcrEngine(Protocol):
    name: str

    def recognize(self, images: Sequence[bytes]) -> list[OcrResult | OcrError]: ...


def _polygon_area(box: Sequence[Sequence[int]]) -> float:
    """Shoelace area of a polygon."""
    n = len(box)
    return abs(sum(box[i][0] * box[(i + 1) % n][1] - box[(i + 1) % n][0] * box[i][1] for i in range(n))) / 2.0


def reading_order(lines: list[OcrLine]) -> tuple[OcrLine, ...]:
    """Top-to-bottom, then left-to-right; lines whose vertical centres are within half a line
    height count as one row, so a two-column row reads left then right."""
    def top(line: OcrLine) -> float:
        return min(p[1] for p in line.box)

    def height(line: OcrLine) -> float:
        ys = [p[1] for p in line.box]
        return max(ys) - min(ys)

    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: (top(ln), min(p[0] for p in ln.box))):
        centre = top(line) + height(line) / 2
        if rows:
            last = rows[-1][0]
            if abs(centre - (top(last) + height(last) / 2)) <= max(height(last), height(line)) / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    return tuple(ln for row in rows for ln in sorted(row, key=lambda ln: min(p[0] for p in ln.box)))


# ---------------------------------------------------------------------------------------------
# Offline PaddleOCR model folders from the ONNX files the rapidocr wheel ships


