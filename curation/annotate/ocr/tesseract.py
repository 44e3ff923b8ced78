"""Tesseract 5 (the Debian package and its language packs): the engine for scripts PP-OCRv6 cannot read."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curation.annotate.ocr.batched import BatchedEngine

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


class TesseractEngine(BatchedEngine):
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
