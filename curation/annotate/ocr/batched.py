"""What every engine shares: per-image decoding and error isolation (one bad image never fails its
batch), confidence filtering and reading order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from curation.annotate.ocr.images import decode_for_ocr, sized_for_detection
from curation.annotate.ocr.records import OcrError, OcrLine, OcrResult, reading_order

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


def _line(text: str, score: float, poly, scale: float) -> OcrLine:
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2) / scale
    return OcrLine(text=str(text), confidence=float(score), box=tuple((int(round(x)), int(round(y))) for x, y in pts))


class BatchedEngine:
    """Shared per-image decoding and error isolation; subclasses implement `_run(arrays)`."""

    name = "base"

    def __init__(self, cfg: "OcrConfig") -> None:
        self.cfg = cfg

    def recognize(self, images: Sequence[bytes]) -> list[OcrResult | OcrError]:
        out: list[OcrResult | OcrError | None] = [None] * len(images)
        arrays, where, sizes = [], [], []
        for i, data in enumerate(images):
            decoded = decode_for_ocr(data, self.cfg.max_pixels, self.cfg.max_side)
            if isinstance(decoded, OcrError):
                out[i] = decoded
                continue
            arrays.append(sized_for_detection(decoded[0], self.cfg))
            where.append(i)
            sizes.append(decoded[1:])
        if arrays:
            try:
                results = self._run(arrays)
            except Exception:  # noqa: BLE001 - isolate the image that fails, keep the rest
                results = []
                for arr in arrays:
                    try:
                        results.extend(self._run([arr]))
                    except Exception as err:  # noqa: BLE001
                        results.append(OcrError("ocr_error", f"{type(err).__name__}: {err}"[:200]))
            for i, arr, (w, h), res in zip(where, arrays, sizes, results):
                if isinstance(res, OcrError):
                    out[i] = res
                    continue
                scale = arr.shape[1] / w
                read = [(t, s, p) for t, s, p in res if str(t).strip()]
                lines = [_line(t, s, p, scale) for t, s, p in read if s >= self.cfg.min_confidence]
                out[i] = OcrResult(reading_order(lines), w, h, len(read) - len(lines), self.name)
        return out  # type: ignore[return-value]

    def _run(self, arrays: list[np.ndarray]) -> list[list[tuple[str, float, object]]]:
        raise NotImplementedError
