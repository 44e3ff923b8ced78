"""OCR detection sizing: today's `min` / 736 against `max` / 960 and the size-aware `auto`, on the
same rendered pages and small web-style thumbnails, with the real PaddleOCR engine (PP-OCRv6 small
ONNX, offline).

Pages: `curation.samples.text_images` (1-3 lines of 22-48 px text on flat pages and photo-like
plates, 300-1000 px). Thumbnails: the same renders shrunk to a long side of 80-400 px, and one-line
crops like the 362 x 78 one from the issue. Per (set, mode) one JSON line: `cer` (1 - normalised
Levenshtein similarity of all text read against the truth, lower is better), `found` (images with
any text read), `s_per_image` (best of --repeats); then one summary line with the ratios.

    python bench/ocr.py --pages 24 --thumbs 24 --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from curation.annotate.config import AnnotateConfig  # noqa: E402
from curation.annotate.ocr.records import OcrResult  # noqa: E402
from curation.annotate.ocr.routed import build_ocr_engine
from curation.core.config import load_config  # noqa: E402
from curation.samples.text_images import TextImage, char_similarity, font_files, render, text_images  # noqa: E402

MODES = {"min736": {"det_limit_type": "min", "det_limit_side_len": 736},
         "max960": {"det_limit_type": "max", "det_limit_side_len": 960},
         "auto": {"det_limit_type": "auto", "det_limit_side_len": 960}}


CJK_FONTS = [Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # Debian fonts-wqy-microhei
             Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")]


def cjk_font() -> Path | None:
    return next((p for p in CJK_FONTS if p.exists()), None)


def thumbnails(n: int, seed: int) -> list[TextImage]:
    """Renders shrunk to web-thumbnail sizes, and single-line crops with a 362 x 78 look (every
    other one in Chinese when a CJK font is installed, as the issue's crop)."""
    from curation.samples.languages import ALT_TEXTS

    rng = random.Random(seed)
    out = []
    cjk = cjk_font()
    for k, page in enumerate(text_images(n, seed + 1)):
        if k % 3 == 2:  # a tight one-line crop: 26 px text, ~4.6 : 1
            line, font = page.lines[0], font_files()[k % len(font_files())]
            if cjk and k % 2 == 0:
                line, font = ALT_TEXTS["zh"][k % len(ALT_TEXTS["zh"])], cjk
            data = render([line], font, 26, 0.0, False, seed + k)
            img = Image.open(io.BytesIO(data)).convert("RGB")
            img = img.crop((max(0, img.width // 2 - 181), max(0, img.height // 2 - 39),
                            min(img.width, img.width // 2 + 181), min(img.height, img.height // 2 + 39)))
            lines = (line,)
        else:
            img = Image.open(io.BytesIO(page.data)).convert("RGB")
            side = rng.randint(80, 400)
            scale = side / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
            lines = page.lines
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(TextImage(f"thumb-{k}-{img.width}x{img.height}", buf.getvalue(), lines))
    return out


def measure(engine, images: list[TextImage], repeats: int) -> dict:
    best, results = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = [engine.recognize([im.data])[0] for im in images]
        best = min(best, time.perf_counter() - t0)
    sims, found = [], 0
    for im, res in zip(images, results):
        text = res.text() if isinstance(res, OcrResult) else ""
        found += bool(text.strip())
        truth = " ".join(im.lines).lower()
        if not truth.isascii():  # Chinese: spacing is not text
            truth, text = truth.replace(" ", ""), text.replace(" ", "")
        sims.append(char_similarity(truth, " ".join(text.split()).lower()))
    return {"cer": round(1 - sum(sims) / len(sims), 4), "found": found, "images": len(images),
            "s_per_image": round(best / len(images), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=24)
    ap.add_argument("--thumbs", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    base = load_config(ROOT / "configs" / "annotate.yaml", AnnotateConfig).ocr
    sets = {"pages": text_images(args.pages, args.seed), "thumbnails": thumbnails(args.thumbs, args.seed)}
    lines = {}
    for mode, over in MODES.items():
        engine = build_ocr_engine(dataclasses.replace(base, **over))
        for name, images in sets.items():
            lines[name, mode] = row = {"bench": "ocr_det_size", "set": name, "mode": mode, "engine": engine.name,
                                       **measure(engine, images, args.repeats)}
            print(json.dumps(row), flush=True)
    summary = {"bench": "ocr_det_size_summary", "cjk_font": str(cjk_font()) if cjk_font() else None}
    for mode in ("max960", "auto"):
        summary[f"thumb_speedup_{mode}_vs_min736"] = round(lines["thumbnails", "min736"]["s_per_image"]
                                                           / lines["thumbnails", mode]["s_per_image"], 2)
        summary[f"pages_cer_{mode}_minus_min736"] = round(lines["pages", mode]["cer"] - lines["pages", "min736"]["cer"], 4)
        summary[f"thumb_found_{mode}_minus_min736"] = lines["thumbnails", mode]["found"] - lines["thumbnails", "min736"]["found"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
