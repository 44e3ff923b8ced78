"""The engine a recipe builds: each image routed by the caption's script to an engine that reads it,
lines that are not text dropped before they become OCR targets."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from curation.annotate.ocr.batched import BatchedEngine
from curation.annotate.ocr.paddle import PaddleOcrEngine, rec_characters
from curation.annotate.ocr.rapid import RapidOcrEngine
from curation.annotate.ocr.records import OcrError, OcrResult
from curation.annotate.ocr.tesseract import TesseractEngine

if TYPE_CHECKING:
    from curation.annotate.config import OcrConfig


ENGINES = {"paddleocr": PaddleOcrEngine, "rapidocr": RapidOcrEngine, "tesseract": TesseractEngine}


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

    def engine_for(self, script: str | None) -> tuple[BatchedEngine, str]:
        """(engine, its name) to read an image whose text is expected in `script`."""
        if script is None or script in self.covered or script not in self.tesseract_scripts or self.tesseract is None:
            return self.primary, self.primary.name
        langs = self.tesseract_scripts[script]
        return self.tesseract.with_languages(langs), f"tesseract:{langs}"

    def recognize(self, images: Sequence[bytes], scripts: Sequence[str | None] | None = None
                  ) -> list[OcrResult | OcrError]:
        scripts = list(scripts) if scripts is not None else [None] * len(images)
        out: list[OcrResult | OcrError | None] = [None] * len(images)
        groups: dict[str, tuple[BatchedEngine, list[int]]] = {}
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
