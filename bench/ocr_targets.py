"""OCR targets: do rendered signs keep their text, and do textless photos stay without an OCR task?

Per expected script (Latin, Cyrillic, Chinese): the SIGNS of curation/samples/text_images.py
rendered on flat and photo-like plates (DejaVu Sans; Noto Sans CJK from the mplfonts wheel) and
12 real photos without text (scikit-image's sample images), read by the configured engines
(PP-OCRv6, Tesseract for Cyrillic) as `curate annotate` reads them, then turned into conversations
with every draw an OCR task. `before` counts what the line flags of the previous release (engine
coverage and script only) would have let through. Prints one JSON line per script.

    python bench/ocr_targets.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _before_kept(line, script: str, readable: bool) -> bool:
    """The previous release's rule: only the engine's coverage and the line's script."""
    from filters.quality.language import main_script

    found = main_script(line.text)
    return readable and not (found is not None and found != script and not {found, script} <= {"han", "kana"})


def main() -> None:
    from curation.annotate.config import ConversationConfig, OcrConfig
    from curation.annotate.ocr.routed import build_ocr_engine
    from curation.annotate.tasks import build_conversation
    from curation.samples.text_images import char_similarity, sign_images, textless_photos

    engine = build_ocr_engine(OcrConfig())
    cfg = ConversationConfig(mix={"ocr": 1.0}, caption_prompts={"en": ["Describe."]}, ocr_prompts={"en": ["Read."]})
    photos = textless_photos()
    for script in ("latin", "cyrillic", "han"):
        signs = sign_images(script)
        t0 = time.perf_counter()
        results = engine.recognize([im.data for im in signs + photos], [script] * (len(signs) + len(photos)))
        seconds = time.perf_counter() - t0
        rows = [build_conversation(f"u{i}", "x.png", "a caption", [ln.to_json() for ln in res.lines], cfg)
                for i, res in enumerate(results)]
        readable = engine.engine_for(script)[1].startswith("tesseract") or script in engine.covered
        before = [[ln.to_json() | {"flag": None} for ln in res.lines if _before_kept(ln, script, readable)] for res in results]
        before_rows = [build_conversation(f"u{i}", "x.png", "a caption", lines, cfg) for i, lines in enumerate(before)]
        sims = [char_similarity("\n".join(im.lines), r["conversations"][1]["value"])
                for im, r in zip(signs, rows) if r["task"] == "ocr"]
        garbage = sorted({ln.text for res in results[len(signs):] for ln in res.lines})
        print(json.dumps({
            "script": script, "engine": engine.engine_for(script)[1], "signs": len(signs),
            "signs_with_ocr_task": sum(r["task"] == "ocr" for r in rows[:len(signs)]),
            "sign_target_similarity": round(sum(sims) / len(sims), 3) if sims else None,
            "photos": len(photos), "photos_with_ocr_task": sum(r["task"] == "ocr" for r in rows[len(signs):]),
            "before_photos_with_ocr_task": sum(r["task"] == "ocr" for r in before_rows[len(signs):]),
            "before_signs_with_ocr_task": sum(r["task"] == "ocr" for r in before_rows[:len(signs)]),
            "photo_lines_read": sum(len(res.lines) for res in results[len(signs):]), "photo_line_examples": garbage[:8],
            "seconds": round(seconds, 1)}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
