"""OCR engines behind one interface: a batch of image bytes in, per image lines (box, text,
confidence) or an error with a reason code out - one bad image never fails its batch.

`paddleocr` is real PaddleOCR (PP-OCR detection + recognition through PaddleX). Offline it runs
the PP-OCRv6 small ONNX models that the `rapidocr` wheel ships, on PaddleX's onnxruntime engine,
from model folders made once under the cache (`paddle_model_dirs`); on a cluster with network the
stock PaddleOCR models are one config line away (`det_model` / `rec_model` with no folders).
`rapidocr` runs the same ONNX files through RapidOCR's own pipeline: the light fallback.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


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


def decode_for_ocr(data: bytes, max_pixels: int, max_side: int) -> tuple[np.ndarray, int, int] | OcrError:
    """Bytes -> (RGB uint8 array downscaled to `max_side`, display width, display height), EXIF-
    rotated, first frame; or an error with a reason. The decompression-bomb limit is checked from
    the header before any pixel is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from curation.core.images import to_rgb

    if not data:
        return OcrError("empty_body", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            return OcrError("decompression_bomb", f"{img.width}x{img.height} px > {max_pixels}")
        img.seek(0)
        img.load()
        img = to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        return OcrError("decode_error", f"not an image Pillow knows ({data[:8].hex()})")
    except Image.DecompressionBombError as err:
        return OcrError("decompression_bomb", str(err)[:160])
    except (ValueError, OSError, SyntaxError, EOFError, struct.error, zlib.error) as err:
        reason = "truncated_image" if "truncated" in str(err).lower() or isinstance(err, EOFError) else "decode_error"
        return OcrError(reason, f"{type(err).__name__}: {err}"[:200])
    w, h = img.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    return np.asarray(img), w, h


def sized_for_detection(arr: np.ndarray, cfg: "OcrConfig") -> np.ndarray:
    """`det_limit_type: auto`: an image whose long side is under `det_min_long` grows towards it, at
    most `det_max_upscale` times; larger ones go as they are (the engine caps the long side at
    `det_limit_side_len`). Boxes map back through the array's width, so they stay in original pixels."""
    if cfg.det_limit_type != "auto":
        return arr
    h, w = arr.shape[:2]
    factor = min(cfg.det_max_upscale, cfg.det_min_long / max(h, w))
    if factor <= 1.0:
        return arr
    from PIL import Image

    img = Image.fromarray(arr).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC)
    return np.asarray(img)


def det_limits(cfg: "OcrConfig") -> tuple[str, int]:
    """(limit type, side) the engine is built with: auto caps the long side (never upscales)."""
    return ("max" if cfg.det_limit_type == "auto" else cfg.det_limit_type), cfg.det_limit_side_len


def _line(text: str, score: float, poly, scale: float) -> OcrLine:
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2) / scale
    return OcrLine(text=str(text), confidence=float(score), box=tuple((int(round(x)), int(round(y))) for x, y in pts))


class _BatchedEngine:
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


class PaddleOcrEngine(_BatchedEngine):
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


class RapidOcrEngine(_BatchedEngine):
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


class TesseractEngine(_BatchedEngine):
    """Tesseract 5 (Debian's `tesseract-ocr` and its language packs) through its command line, TSV
    out: words grouped into lines, boxes in pixels, confidence / 100. For scripts the PP-OCR
    recognition model has no characters for (Cyrillic, Hangul, Arabic, ...)."""

    name = "tesseract"

    def __init__(self, cfg: "OcrConfig", languages: str = "eng") -> None:
        super().__init__(cfg)
        import shutil

        self.binary = shutil.which(cfg.tesseract.binary) or cfg.tesseract.binary
        self.languages = languages
        if not Path(self.binary).exists():
            raise RuntimeError(f"ocr.tesseract: {cfg.tesseract.binary!r} not found (apt-get install tesseract-ocr "
                               "tesseract-ocr-rus ...)")

    def installed_languages(self) -> set[str]:
        import subprocess

        out = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True, timeout=30).stdout
        return {line.strip() for line in out.splitlines()[1:] if line.strip()}

    def with_languages(self, languages: str) -> "TesseractEngine":
        clone = object.__new__(TesseractEngine)
        clone.__dict__.update(self.__dict__, languages=languages)
        return clone

    def _run(self, arrays):
        return [self._one(arr) for arr in arrays]

    def _one(self, arr: np.ndarray) -> list[tuple[str, float, object]]:
        import subprocess

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        run = subprocess.run([self.binary, "stdin", "stdout", "-l", self.languages, "--psm", str(self.cfg.tesseract.psm),
                              "tsv"], input=buf.getvalue(), capture_output=True, timeout=self.cfg.tesseract.timeout_s)
        if run.returncode:
            raise RuntimeError(f"tesseract exit {run.returncode}: {run.stderr.decode(errors='replace')[-200:]}")
        lines: dict[tuple[str, ...], list[list[str]]] = {}
        for row in run.stdout.decode("utf-8", errors="replace").split("\n")[1:]:  # not splitlines: \x0c etc. are text
            f = row.split("\t")
            if len(f) == 12 and f[0] == "5" and f[11].strip() and float(f[10]) >= 0:
                lines.setdefault((f[1], f[2], f[3], f[4]), []).append(f)
        out = []
        for words in lines.values():
            x0 = min(int(w[6]) for w in words)
            y0 = min(int(w[7]) for w in words)
            x1 = max(int(w[6]) + int(w[8]) for w in words)
            y1 = max(int(w[7]) + int(w[9]) for w in words)
            conf = sum(float(w[10]) for w in words) / len(words) / 100.0
            out.append((" ".join(w[11] for w in words), conf, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        return out


ENGINES = {"paddleocr": PaddleOcrEngine, "rapidocr": RapidOcrEngine, "tesseract": TesseractEngine}


def rec_characters(cfg: "OcrConfig") -> list[str] | None:
    """The primary engine's recognition character list (the offline PP-OCRv6 model's), if known."""
    if cfg.engine == "tesseract" or not cfg.offline_models:
        return None
    import yaml

    _, rec = paddle_model_dirs()
    with open(rec / "inference.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)["PostProcess"]["character_dict"]


class RoutedOcrEngine:
    """The configured engine, with images whose expected script (from the caption's language) its
    recognition model cannot write sent to Tesseract with that script's language packs. Lines are
    flagged `script_not_covered` when no engine here can read the expected script, and
    `script_mismatch` when a line is in another script than the caption's language is written in."""

    def __init__(self, cfg: "OcrConfig") -> None:
        from filters.quality.language import scripts_covered

        self.cfg = cfg
        self.primary = ENGINES[cfg.engine](cfg)
        self.name = self.primary.name
        chars = rec_characters(cfg)
        self.covered = scripts_covered(chars) if chars else frozenset({"latin", "han"})
        self.tesseract: TesseractEngine | None = None
        self.tesseract_scripts: dict[str, str] = {}
        if cfg.tesseract.enabled and cfg.engine != "tesseract":
            try:
                self.tesseract = TesseractEngine(cfg)
            except RuntimeError:
                self.tesseract = None  # not installed: those images are read by the primary engine and flagged
            if self.tesseract is not None:
                have = self.tesseract.installed_languages()
                for script, langs in cfg.tesseract.languages.items():
                    if all(part in have for part in langs.split("+")):
                        self.tesseract_scripts[script] = langs

    def info(self) -> dict[str, str]:
        """The engine's name, as a method: a model shared across processes is a proxy (methods only)."""
        return {"name": self.name}

    def engine_for(self, script: str | None) -> tuple[_BatchedEngine, str]:
        """(engine, its name) to read an image whose text is expected in `script`."""
        if script is None or script in self.covered or script not in self.tesseract_scripts or self.tesseract is None:
            return self.primary, self.primary.name
        langs = self.tesseract_scripts[script]
        return self.tesseract.with_languages(langs), f"tesseract:{langs}"

    def recognize(self, images: Sequence[bytes], scripts: Sequence[str | None] | None = None
                  ) -> list[OcrResult | OcrError]:
        scripts = list(scripts) if scripts is not None else [None] * len(images)
        out: list[OcrResult | OcrError | None] = [None] * len(images)
        groups: dict[str, tuple[_BatchedEngine, list[int]]] = {}
        for i, script in enumerate(scripts):
            engine, label = self.engine_for(script)
            groups.setdefault(label, (engine, []))[1].append(i)
        for label, (engine, where) in groups.items():
            for i, res in zip(where, engine.recognize([images[i] for i in where])):
                out[i] = self._flag(res, scripts[i], label) if isinstance(res, OcrResult) else res
        return out  # type: ignore[return-value]

    def _flag(self, res: "OcrResult", script: str | None, engine: str) -> "OcrResult":
        """Flag the lines no OCR target may come from: read by an engine without the expected
        script, in another script, or not text at all (filters.quality.language.text_line_problem; a line
        of digits alone stands only beside a line of text)."""
        from filters.quality.language import main_script, text_line_problem

        readable = script is None or engine.startswith("tesseract") or script in self.covered
        lines = []
        for line in res.lines:
            found = main_script(line.text)
            flag = text_line_problem(line.text)
            if not readable:
                flag = "script_not_covered"
            elif flag is None and script is not None and found is not None and found != script \
                    and not {found, script} <= {"han", "kana"}:
                flag = "script_mismatch"
            lines.append(dataclasses.replace(line, flag=flag))
        if not any(line.flag is None for line in lines):  # digits alone, with no text beside them
            lines = [dataclasses.replace(line, flag="not_text") if line.flag == "number_only" else line for line in lines]
        lines = [dataclasses.replace(line, flag=None) if line.flag == "number_only" else line for line in lines]
        return dataclasses.replace(res, lines=tuple(lines), engine=engine)


def build_ocr_engine(cfg: "OcrConfig") -> RoutedOcrEngine:
    """The configured engine (and Tesseract for the scripts it cannot read), with its models
    loaded (call once per worker)."""
    return RoutedOcrEngine(cfg)


# ---------------------------------------------------------------------------------------------
# Offline PaddleOCR model folders from the ONNX files the rapidocr wheel ships

PADDLE_DET_NAME = "PP-OCRv6_small_det"
PADDLE_REC_NAME = "PP-OCRv6_small_rec"
_RAPIDOCR_FILES = {"det": "PP-OCRv6_det_small.onnx", "rec": "PP-OCRv6_rec_small.onnx"}


def paddle_model_dirs(root: Path | None = None) -> tuple[Path, Path]:
    """(det folder, rec folder) for PaddleX's onnxruntime engine, made once (atomic rename): each
    holds `inference.onnx` (a copy of the wheel's file) and the `inference.yml` PaddleX reads -
    model name, pre-processing and post-processing; the recogniser's character list comes from the
    ONNX metadata key `character`."""
    import importlib.util

    from packing.tokens import cache_root

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

    from packing.tokens import build_cache_dir

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
