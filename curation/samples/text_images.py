"""Images with known text for OCR tests and the annotate benchmark: rendered lines in several
fonts (matplotlib's bundled DejaVu and STIX, so every machine has them) and sizes, slightly
rotated, on flat backgrounds and on photo-like ones (noise, gradients, blurred shapes)."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = ("open", "sale", "hotel", "coffee", "market", "station", "garden", "north", "river", "bakery", "museum",
         "library", "exit", "parking", "fresh", "bread", "daily", "street", "harbor", "cinema", "theatre",
         "ticket", "office", "platform", "welcome", "city", "center", "park", "road", "avenue")


def font_files() -> list[Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf", "STIXGeneral.ttf")
    return [ttf / n for n in names if (ttf / n).exists()]


@dataclass(frozen=True)
class TextImage:
    name: str
    data: bytes
    lines: tuple[str, ...]  # the text, top to bottom


def _background(rng: random.Random, w: int, h: int, photo: bool) -> Image.Image:
    if not photo:
        shade = rng.randint(225, 255)
        return Image.new("RGB", (w, h), (shade, shade, rng.randint(215, 255)))
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    a = [rng.randint(40, 200) for _ in range(3)]
    b = [rng.randint(40, 200) for _ in range(3)]
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a[i] * (1 - t) + b[i] * t) for i in range(3)))
    for _ in range(12):
        x, y, r = rng.randint(0, w), rng.randint(0, h), rng.randint(10, 80)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(6))
    noise = Image.effect_noise((w, h), 18).convert("RGB")
    return Image.blend(img, noise, 0.12)


def render(lines: list[str], font_path: Path, size: int, angle: float, photo: bool, seed: int,
           fmt: str = "PNG") -> bytes:
    """Lines of text on a plate (a sign: light plate on a photo, or a flat page), rotated by `angle`."""
    rng = random.Random(seed)
    font = ImageFont.truetype(str(font_path), size)
    widths = [font.getbbox(line)[2] for line in lines]
    pad, gap = size, int(size * 0.6)
    tw, th = max(widths) + 2 * pad, len(lines) * size + (len(lines) - 1) * gap + 2 * pad
    plate = Image.new("RGBA", (tw, th), (250, 250, 245, 255) if photo else (0, 0, 0, 0))
    draw = ImageDraw.Draw(plate)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * (size + gap)), line, font=font, fill=(15, 15, 25, 255))
    plate = plate.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    w, h = plate.width + 2 * rng.randint(30, 120), plate.height + 2 * rng.randint(30, 100)
    canvas = _background(rng, w, h, photo)
    canvas.paste(plate, ((w - plate.width) // 2, (h - plate.height) // 2), plate)
    buf = io.BytesIO()
    canvas.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def text_images(n: int, seed: int = 0) -> list[TextImage]:
    """`n` images cycling through fonts, sizes (22-48 px), angles (-4..4 degrees), flat / photo
    backgrounds and PNG / JPEG, each with 1-3 lines of 1-3 capitalised words and numbers."""
    rng = random.Random(seed)
    fonts = font_files()
    out = []
    for i in range(n):
        lines = []
        for _ in range(rng.randint(1, 3)):
            words = [rng.choice(WORDS).capitalize() for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.3:
                words.append(str(rng.randint(1, 999)))
            lines.append(" ".join(words))
        font = fonts[i % len(fonts)]
        size = (22, 30, 38, 48)[(i // len(fonts)) % 4]
        angle = rng.choice((0.0, 0.0, -2.0, 2.0, -4.0, 4.0))
        photo = i % 2 == 1
        fmt = "JPEG" if i % 3 == 2 else "PNG"
        name = f"{font.stem}-{size}px-{angle:+.0f}deg-{'photo' if photo else 'flat'}-{i}"
        out.append(TextImage(name, render(lines, font, size, angle, photo, seed * 1000 + i, fmt), tuple(lines)))
    return out


def char_similarity(expected: str, got: str) -> float:
    """1 - normalised Levenshtein distance over characters (1.0 = identical)."""
    from curation.mmpr.answer_metrics import levenshtein

    if not expected and not got:
        return 1.0
    return 1.0 - levenshtein(expected, got) / max(len(expected), len(got))


# Signs per script for the OCR-target measurements: what a street photo's text reads.
SIGNS = {
    "latin": [["BAKERY", "Fresh bread daily"], ["CITY LIBRARY", "Open 9-18"], ["PLATFORM 3", "Trains to Berlin"],
              ["HOTEL CENTRAL"], ["NO PARKING", "Tow away zone"], ["MUSEUM", "Tickets 12 EUR"]],
    "cyrillic": [["НОВОСТИ ЭКОНОМИКИ"], ["ГОРОДСКАЯ БИБЛИОТЕКА"], ["АПТЕКА", "Круглосуточно"], ["ВЫХОД"],
                 ["СВЕЖИЙ ХЛЕБ"], ["ОСТАНОВКА АВТОБУСА"]],
    "han": [["北京火车站"], ["出口", "紧急出口"], ["新鲜面包"], ["欢迎光临"], ["中国银行"], ["停车场", "请勿停车"]],
}
# Photos with no text in them: scikit-image's bundled sample images (the `scikit-image` wheel, a test
# dependency). Left out: motorcycle_left (its tank reads YAMAHA), astronaut, rocket (lettered), page and text.
TEXTLESS_PHOTOS = ("coffee.png", "chelsea.png", "motorcycle_right.png", "gravel.png", "grass.png", "brick.png",
                   "moon.png", "camera.png", "coins.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png")


def cjk_font() -> Path | None:
    """Noto Sans CJK SC from the `mplfonts` wheel (a test dependency), or None where it is not installed."""
    try:
        from importlib.resources import files

        path = Path(str(files("mplfonts") / "fonts" / "NotoSansCJKsc-Regular.otf"))
    except ModuleNotFoundError:
        return None
    return path if path.exists() else None


def sign_images(script: str, seed: int = 0) -> list[TextImage]:
    """The SIGNS of one script rendered as signs on photo-like and flat backgrounds (DejaVu Sans for
    Latin and Cyrillic, Noto Sans CJK for Chinese)."""
    font = cjk_font() if script == "han" else font_files()[0]
    if font is None:
        raise FileNotFoundError("no CJK font: pip install mplfonts (the test extra)")
    return [TextImage(f"{script}-{i}", render(lines, font, 40, (0.0, 2.0, -2.0)[i % 3], i % 2 == 1, seed + i), tuple(lines))
            for i, lines in enumerate(SIGNS[script])]


def textless_photos() -> list[TextImage]:
    """Real photos without text (TEXTLESS_PHOTOS), re-encoded as RGB PNG."""
    from importlib.resources import files

    out = []
    for name in TEXTLESS_PHOTOS:
        image = Image.open(io.BytesIO((files("skimage") / "data" / name).read_bytes())).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, "PNG")
        out.append(TextImage(name, buf.getvalue(), ()))
    return out
