"""PaddleOCR (PP-OCR detection + recognition through PaddleX). Offline it runs the PP-OCRv6 small
ONNX models the `rapidocr` wheel ships, on PaddleX's onnxruntime engine, from model folders made
once under the cache (`paddle_model_dirs`); with network the stock PaddleOCR models are one config
line away (`det_model` / `rec_model` with no folders)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from curation.annotate.ocr.batched import BatchedEngine
from curation.annotate.ocr.images import det_limits

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


class PaddleOcrEngine(BatchedEngine):
    """PaddleOCR 3.x (PaddleX pipeline): text detection + recognition, no orientation models."""

    name = "paddleocr"

    def __init__(self, cfg: "OcrConfig") -> None:
        super().__init__(cfg)
        import logging

        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        from paddleocr import PaddleOCR

        logging.getLogger("paddlex").setLevel(logging.WARNING)
        kwargs = dict(text_detection_model_name=cfg.det_model, text_recognition_model_name=cfg.rec_model,
                      use_doc_orientation_classify=False, use_doc_unwarping=False, use_textline_orientation=False,
                      device=cfg.device, text_det_limit_type=det_limits(cfg)[0], text_det_limit_side_len=det_limits(cfg)[1],
                      text_rec_score_thresh=0.0)
        if cfg.engine_backend:
            kwargs["engine"] = cfg.engine_backend
        det_dir, rec_dir = (cfg.det_model_dir, cfg.rec_model_dir)
        if cfg.offline_models:
            det_dir, rec_dir = (str(p) for p in paddle_model_dirs())
        if det_dir:
            kwargs["text_detection_model_dir"] = det_dir
        if rec_dir:
            kwargs["text_recognition_model_dir"] = rec_dir
        self.ocr = PaddleOCR(**kwargs)

    def _run(self, arrays):
        results = self.ocr.predict([a[..., ::-1].copy() for a in arrays])  # PaddleX takes arrays as BGR
        return [list(zip(r["rec_texts"], r["rec_scores"], r["rec_polys"])) for r in results]


PADDLE_DET_NAME = "PP-OCRv6_small_det"


PADDLE_REC_NAME = "PP-OCRv6_small_rec"


_RAPIDOCR_FILES = {"det": "PP-OCRv6_det_small.onnx", "rec": "PP-OCRv6_rec_small.onnx"}


def paddle_model_dirs(root: Path | None = None) -> tuple[Path, Path]:
    """(det folder, rec folder) for PaddleX's onnxruntime engine, made once (atomic rename): each
    holds `inference.onnx` (a copy of the wheel's file) and the `inference.yml` PaddleX reads -
    model name, pre-processing and post-processing; the recogniser's character list comes from the
    ONNX metadata key `character`."""
    import importlib.util

    from curation.core.cache import cache_root

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise RuntimeError("offline PaddleOCR models come from the rapidocr wheel: pip install rapidocr==3.10.0")
    models = Path(spec.origin).parent / "models"
    root = root or cache_root() / "ocr"
    out = []
    for kind, name in (("det", PADDLE_DET_NAME), ("rec", PADDLE_REC_NAME)):
        target = root / name
        if not (target / "inference.yml").exists():
            _make_model_dir(kind, name, models / _RAPIDOCR_FILES[kind], target)
        out.append(target)
    return out[0], out[1]


def _make_model_dir(kind: str, name: str, onnx: Path, target: Path) -> None:
    import shutil

    import yaml

    from curation.core.cache import build_cache_dir

    if kind == "det":
        cfg = {
            "Global": {"model_name": name},
            "PreProcess": {"transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetResizeForTest": {"resize_long": 960}},
                {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                    "scale": 1 / 255, "order": "hwc"}},
                {"ToCHWImage": None},
            ]},
            "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                            "unclip_ratio": 1.5},
        }
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        chars = session.get_modelmeta().custom_metadata_map["character"].splitlines()
        cfg = {
            "Global": {"model_name": name},
            "PreProcess": {"transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
            ]},
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": chars},
        }

    def fill(folder: Path) -> None:
        shutil.copyfile(onnx, folder / "inference.onnx")
        with open(folder / "inference.yml", "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg, f, allow_unicode=True)

    build_cache_dir(target, fill)


def rec_characters(cfg: "OcrConfig") -> list[str] | None:
    """The primary engine's recognition character list (the offline PP-OCRv6 model's), if known."""
    if cfg.engine == "tesseract" or not cfg.offline_models:
        return None
    import yaml

    _, rec = paddle_model_dirs()
    with open(rec / "inference.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)["PostProcess"]["character_dict"]
