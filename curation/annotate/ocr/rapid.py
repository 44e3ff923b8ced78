"""RapidOCR: the same PP-OCR ONNX files through RapidOCR's own pipeline, the light fallback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from curation.annotate.ocr.batched import BatchedEngine
from curation.annotate.ocr.images import det_limits

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


class RapidOcrEngine(BatchedEngine):
    """RapidOCR: the same PP-OCRv6 ONNX models through its own onnxruntime pipeline."""

    name = "rapidocr"

    def __init__(self, cfg: "OcrConfig") -> None:
        super().__init__(cfg)
        from rapidocr import RapidOCR

        self.ocr = RapidOCR(params={"Global.use_cls": False, "Global.log_level": "error",
                                    "Global.max_side_len": cfg.max_side, "Global.text_score": 0.0,
                                    "Det.limit_type": det_limits(cfg)[0], "Det.limit_side_len": det_limits(cfg)[1]})

    def _run(self, arrays):
        out = []
        for arr in arrays:
            r = self.ocr(arr[..., ::-1].copy())  # RapidOCR also reads arrays as BGR
            if r.txts is None:
                out.append([])
            else:
                out.append(list(zip(r.txts, r.scores, r.boxes)))
        return out
