"""OCR engines on real images with known text: real PaddleOCR (PP-OCRv6 ONNX through PaddleX's
onnxruntime engine, offline) and RapidOCR, never a mock."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from curation.annotate.config import OcrConfig
from curation.annotate.ocr.records import OcrError, OcrResult, reading_order, OcrLine
from curation.annotate.ocr.routed import build_ocr_engine
from curation.annotate.ocr.paddle import paddle_model_dirs
from curation.samples.text_images import char_similarity, text_images

IMAGES = text_images(20, seed=3)


@pytest.fixture(scope="module", params=["paddleocr", "rapidocr"])
def engine(request):
    return build_ocr_engine(OcrConfig(engine=request.param, batch_size=8))


@pytest.fixture(scope="module")
def results(engine):
    return engine.recognize([im.data for im in IMAGES])


def _similarities(results, photo: bool) -> list[float]:
    return [char_similarity(" ".join(im.lines), " ".join(line.text for line in res.lines))
            for im, res in zip(IMAGES, results) if ("photo" in im.name) == photo]


def test_clean_rendered_lines_read_exactly(results):
    sims = _similarities(results, photo=False)
    assert len(sims) == 10
    assert sum(sims) / len(sims) >= 0.95, sims
    assert min(sims) >= 0.9, sims


def test_text_on_photos_mostly_read(results):
    sims = _similarities(results, photo=True)
    assert sum(sims) / len(sims) >= 0.85, sims


def test_lines_come_in_reading_order_with_boxes_in_original_pixels(results):
    multi = [(im, res) for im, res in zip(IMAGES, results) if len(im.lines) >= 2 and "flat" in im.name]
    assert multi
    for im, res in multi:
        assert [line.text for line in res.lines] == list(im.lines) or char_similarity(
            "\n".join(im.lines), res.text()) >= 0.9
        w, h = Image.open(io.BytesIO(im.data)).size
        assert (res.width, res.height) == (w, h)
        for line in res.lines:
            assert all(-2 <= x <= w + 2 and -2 <= y <= h + 2 for x, y in line.box)
            assert 0.5 <= line.confidence <= 1.0


def test_features(results):
    res = next(r for r in results if r.lines)
    f = res.features()
    assert f["ocr_chars"] == sum(len(line.text) for line in res.lines) > 0
    assert f["ocr_lines"] == len(res.lines)
    assert 0 < f["text_area_fraction"] < 1
    assert 0.5 <= f["ocr_mean_confidence"] <= 1.0


def test_empty_image_gives_no_lines_and_bad_bytes_give_reasons(engine):
    blank = io.BytesIO()
    Image.new("RGB", (640, 480), (255, 255, 255)).save(blank, "PNG")
    truncated = IMAGES[0].data[: len(IMAGES[0].data) // 2]
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    got = engine.recognize([blank.getvalue(), b"<html>not an image</html>", b"", truncated, bomb.getvalue(),
                            IMAGES[1].data])
    assert isinstance(got[0], OcrResult) and got[0].lines == () and got[0].features()["ocr_chars"] == 0
    assert isinstance(got[1], OcrError) and got[1].reason == "decode_error"
    assert isinstance(got[2], OcrError) and got[2].reason == "empty_body"
    assert isinstance(got[3], OcrError) and got[3].reason in ("truncated_image", "decode_error")
    assert isinstance(got[4], OcrError) and got[4].reason == "decompression_bomb"
    # the good image in the same batch is still read
    assert isinstance(got[5], OcrResult) and char_similarity(" ".join(IMAGES[1].lines), " ".join(
        line.text for line in got[5].lines)) >= 0.8


def test_exif_rotated_image_is_read_upright():
    engine = build_ocr_engine(OcrConfig(engine="paddleocr"))
    im = next(i for i in IMAGES if "flat" in i.name and "+0deg" in i.name)
    upright = Image.open(io.BytesIO(im.data)).convert("RGB")
    stored = upright.rotate(90, expand=True)  # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    (res,) = engine.recognize([buf.getvalue()])
    assert (res.width, res.height) == upright.size
    assert char_similarity(" ".join(im.lines), " ".join(line.text for line in res.lines)) >= 0.9


def test_paddle_model_dirs_are_made_once(tmp_path):
    det, rec = paddle_model_dirs(tmp_path)
    assert (det / "inference.onnx").stat().st_size > 1_000_000 and (rec / "inference.onnx").exists()
    assert "PP-OCRv6_small_det" in (det / "inference.yml").read_text()
    assert "CTCLabelDecode" in (rec / "inference.yml").read_text()
    mtime = (rec / "inference.yml").stat().st_mtime_ns
    assert paddle_model_dirs(tmp_path) == (det, rec) and (rec / "inference.yml").stat().st_mtime_ns == mtime


def test_reading_order_groups_rows_left_to_right():
    def line(text, x, y):
        return OcrLine(text, 0.9, ((x, y), (x + 50, y), (x + 50, y + 20), (x, y + 20)))

    lines = [line("right", 200, 12), line("second", 10, 60), line("left", 10, 10)]
    assert [ln.text for ln in reading_order(lines)] == ["left", "right", "second"]


def test_detection_is_sized_to_the_image():
    """auto: a small crop grows at most det_max_upscale x towards det_min_long, a large image goes as
    it is and the engine caps its long side (never min / 736's 10x upscale of a 362 x 78 crop)."""
    import numpy as np

    from curation.annotate.ocr.images import det_limits, sized_for_detection

    cfg = OcrConfig()
    assert det_limits(cfg) == ("max", 960) and det_limits(OcrConfig(det_limit_type="min", det_limit_side_len=736)) == ("min", 736)
    crop = sized_for_detection(np.zeros((78, 362, 3), np.uint8), cfg)
    assert crop.shape[:2] == (round(78 * 640 / 362), 640)
    tiny = sized_for_detection(np.zeros((40, 100, 3), np.uint8), cfg)
    assert tiny.shape[:2] == (80, 200)  # capped at 2x
    big = np.zeros((800, 1200, 3), np.uint8)
    assert sized_for_detection(big, cfg) is big
    assert sized_for_detection(np.zeros((78, 362, 3), np.uint8), OcrConfig(det_limit_type="min")).shape[:2] == (78, 362)


def test_a_small_crop_is_read_with_boxes_in_its_own_pixels(engine):
    im = next(i for i in IMAGES if "flat" in i.name)
    img = Image.open(io.BytesIO(im.data)).convert("RGB")
    small = img.resize((img.width // 3, img.height // 3), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "PNG")
    res = engine.recognize([buf.getvalue()])[0]
    assert isinstance(res, OcrResult) and res.lines
    assert all(0 <= x <= small.width + 2 and 0 <= y <= small.height + 2 for line in res.lines for x, y in line.box)


CYRILLIC = ["НОВОСТИ ЭКОНОМИКИ", "ГОРОДСКАЯ БИБЛИОТЕКА"]


def _cyrillic_sign(seed: int = 0) -> bytes:
    from curation.samples.text_images import font_files, render

    return render(CYRILLIC, font_files()[0], 40, 0.0, False, seed)  # DejaVu Sans has Cyrillic


@pytest.fixture(scope="module")
def routed():
    import shutil

    if shutil.which("tesseract") is None:
        pytest.skip("Debian's tesseract-ocr is not installed (.ci/run installs it)")
    return build_ocr_engine(OcrConfig())


def test_cyrillic_images_go_to_tesseract_and_are_read(routed):
    """PP-OCRv6's recogniser has no Cyrillic letters: it reads Cyrillic as Latin look-alikes. With the
    caption's language written in Cyrillic, the image goes to Tesseract's rus+ukr packs."""
    assert "cyrillic" not in routed.covered and {"han", "latin"} <= routed.covered
    assert routed.engine_for("cyrillic")[1] == "tesseract:rus+ukr+eng"
    data = _cyrillic_sign()
    alone = routed.primary.recognize([data])[0]
    assert isinstance(alone, OcrResult)
    assert char_similarity(" ".join(CYRILLIC), " ".join(ln.text for ln in alone.lines)) < 0.5
    res = routed.recognize([data], ["cyrillic"])[0]
    assert isinstance(res, OcrResult) and res.engine == "tesseract:rus+ukr+eng"
    assert char_similarity(" ".join(CYRILLIC), " ".join(ln.text for ln in res.lines)) > 0.8
    assert not any(ln.flag for ln in res.lines)


def test_lines_an_engine_cannot_read_or_in_another_script_are_flagged(routed):
    from curation.annotate.config import TesseractConfig

    no_tesseract = build_ocr_engine(OcrConfig(tesseract=TesseractConfig(enabled=False)))
    latin = next(im for im in IMAGES if "flat" in im.name)
    # captioned in Russian, read by an engine without Cyrillic: whatever it reads is not to be trusted
    res = no_tesseract.recognize([latin.data], ["cyrillic"])[0]
    assert res.lines and all(ln.flag == "script_not_covered" for ln in res.lines)
    assert res.features()["ocr_flagged_lines"] == len(res.lines)
    mixed = routed.recognize([latin.data], ["han"])[0]  # Latin text on an image captioned in Chinese
    assert mixed.lines and all(ln.flag == "script_mismatch" for ln in mixed.lines)
    plain = routed.recognize([latin.data], ["latin"])[0]
    assert not any(ln.flag for ln in plain.lines) and "flag" not in plain.lines[0].to_json()


@pytest.mark.parametrize("script", ["latin", "cyrillic", "han"])
def test_signs_keep_their_text_and_textless_photos_get_no_ocr_task(routed, script):
    """Rendered signs (DejaVu Sans; Noto Sans CJK from the mplfonts wheel) and real photos without
    text (scikit-image's sample images), each read as if captioned in `script`'s languages. What an
    engine reads off a photo (`-_ У,`, `| Ге | -`, `C000`, `69日000`) is flagged `not_text`; a
    sign's text stays the target of its OCR task."""
    from curation.annotate.config import ConversationConfig
    from curation.annotate.tasks import build_conversation
    from curation.samples.text_images import sign_images, textless_photos

    signs, photos = sign_images(script), textless_photos()
    results = routed.recognize([im.data for im in signs + photos], [script] * (len(signs) + len(photos)))
    cfg = ConversationConfig(mix={"ocr": 1.0}, caption_prompts={"en": ["Describe."]}, ocr_prompts={"en": ["Read."]})
    rows = [build_conversation(f"u{i}", "x.png", "a caption", [ln.to_json() for ln in res.lines], cfg)
            for i, res in enumerate(results)]
    assert [r["task"] for r in rows[len(signs):]] == ["caption"] * len(photos)  # no photo becomes an OCR task
    read = [(im, r) for im, r in zip(signs, rows) if r["task"] == "ocr"]
    assert len(read) >= len(signs) - 1  # the engines' own misses aside (Tesseract on a photo background)
    for im, row in read:
        assert char_similarity("\n".join(im.lines), row["conversations"][1]["value"]) > 0.85, im.lines


@pytest.mark.parametrize("line, problem", [
    ("-_ У,", "not_text"), ("| Ге | -", "not_text"), ("| | у,", "not_text"), ('№" |', "not_text"), ("C000", "not_text"),
    ("69日000", "not_text"), ("му", "not_text"), ("=", "not_text"), ("оФфо@ о ®", "not_text"), ("", "not_text"),
    ("4.99", "number_only"), ("2019", "number_only"), ("8", "not_text"),
    ("OPEN 24 HOURS", None), ("Mo-Fr 8-18 Uhr", None), ("出口", None), ("ВЫХОД", None), ("รถบัส", None), ("Gleis 3", None),
])
def test_what_reads_as_text(line, problem):
    from filters.quality.language import text_line_problem

    assert text_line_problem(line) == problem
