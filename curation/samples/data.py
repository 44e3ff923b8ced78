"""The embedded sample: deterministically generated images and LAION/COYO/DataComp-schema metadata.

Images are drawn from a seed (shapes, gradients, some printed words) with captions that describe
them, plus the awkward kinds real crawls meet (CMYK, palette with transparency, RGBA, 16-bit,
EXIF-rotated, animated, tiny, panoramic, a pixel bomb, a zlib text-chunk bomb). Metadata rows point
at the local image server and include one row per failure case, each with the reason code we
expect, so tests can check every case ends with its own reason.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (130, 50, 160), "orange": (245, 140, 30), "white": (250, 250, 250), "black": (15, 15, 15),
    "teal": (20, 150, 150), "pink": (240, 130, 180),
}
SHAPES = ("circle", "square", "triangle", "stripe")
WORDS = ("OPEN", "SALE", "COFFEE", "EXIT", "HELLO", "STOP", "MARKET", "BOOKS", "PARK", "HOTEL")
SIZES = ((640, 480), (800, 600), (512, 512), (1024, 768), (480, 640), (1300, 800), (300, 400), (720, 1280))


@dataclass(frozen=True)
class SampleImage:
    name: str
    data: bytes
    caption: str
    width: int
    height: int


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, color, box) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=color)
    else:
        for k in range(x0, x1, max(4, (x1 - x0) // 6)):
            draw.rectangle((k, y0, k + max(2, (x1 - x0) // 12), y1), fill=color)


def render(seed: int, i: int) -> tuple[Image.Image, str]:
    """One picture and a caption that says what is in it."""
    rng = np.random.default_rng([seed, i])
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    names = list(COLORS)
    bg_a, bg_b = (names[int(k)] for k in rng.choice(len(names), 2, replace=False))
    t = np.linspace(0.0, 1.0, w)[None, :, None]
    grad = (1 - t) * np.array(COLORS[bg_a]) + t * np.array(COLORS[bg_b])
    noise = rng.normal(0, 6, (h, w, 3))
    img = Image.fromarray(np.clip(np.broadcast_to(grad, (h, w, 3)) + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = names[int(rng.integers(len(names)))]
        s = int(rng.integers(min(w, h) // 6, min(w, h) // 2))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        _draw_shape(draw, shape, COLORS[color], (x, y, x + s, y + s))
        parts.append(f"a {color} {shape}")
    caption = f"{', '.join(parts[:-1]) + ' and ' if len(parts) > 1 else ''}{parts[-1]} on a {bg_a} to {bg_b} gradient"
    if rng.random() < 0.4:
        word = WORDS[int(rng.integers(len(WORDS)))]
        size = max(24, min(w, h) // 8)
        font = ImageFont.load_default(size=size)
        draw.rectangle((10, 10, 20 + size * len(word) * 0.7, 20 + size * 1.2), fill=(255, 255, 255))
        draw.text((15, 12), word, fill=(0, 0, 0), font=font)
        caption += f", with a white sign that reads \"{word}\""
    return img, caption[0].upper() + caption[1:]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def pixel_bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def text_bomb_png() -> bytes:
    """A valid 8x8 PNG carrying a zTXt chunk that inflates to 64 MiB (a zlib text-chunk bomb)."""
    base = _encode(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG")
    ztxt = b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)
    iend = base.rindex(b"IEND") - 4
    return base[:iend] + _png_chunk(b"zTXt", ztxt) + base[iend:]


def _white_text(seed: int) -> Image.Image:
    """White text on full transparency (a logo or a headline PNG): composited on white it is blank."""
    from PIL import ImageDraw

    im = Image.new("RGBA", (320, 120), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    for k in range(3):
        draw.text((12, 10 + 34 * k), f"OPEN {seed % 7 + k} DAYS A WEEK", fill=(255, 255, 255, 255), font_size=24)
    return im


def special_images(seed: int) -> list[SampleImage]:
    """The awkward-but-valid and the hostile images."""
    out = []
    base, caption = render(seed, 10_000)

    def add(name: str, data: bytes, cap: str, size: tuple[int, int]) -> None:
        out.append(SampleImage(name, data, cap, *size))

    add("cmyk.jpg", _encode(base.convert("CMYK"), "JPEG", quality=90), caption + " (CMYK)", base.size)
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    add("palette.png", _encode(pal, "PNG", transparency=0), caption + " (palette)", base.size)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    add("rgba.png", _encode(rgba, "PNG"), caption + " fading out", base.size)
    grey16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257), "I;16")
    add("grey16.png", _encode(grey16, "PNG"), caption + " in 16-bit grey", base.size)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    add("rotated.jpg", _encode(base, "JPEG", quality=90, exif=exif.tobytes()), caption + " (EXIF rotated)", base.size[::-1])
    frames = [render(seed, 10_001 + k)[0].resize((320, 240)) for k in range(3)]
    add("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "An animation of coloured shapes on gradients", (320, 240))
    add("grey.webp", _encode(base.convert("L"), "WEBP", quality=80), caption + " in grey", base.size)
    add("tiny.png", _encode(base.resize((24, 24)), "PNG"), "A tiny thumbnail of coloured shapes", (24, 24))
    add("blank.png", _encode(Image.new("RGB", (320, 240), (238, 238, 238)), "PNG"), "A new banner for our shop", (320, 240))
    add("white_text.png", _encode(_white_text(seed), "PNG"), "White lettering on a transparent background", (320, 120))
    add("panorama.jpg", _encode(base.resize((2400, 240)), "JPEG", quality=85), "A very wide panorama strip of shapes", (2400, 240))
    add("bomb.png", pixel_bomb_png(), "A picture that claims to be huge", (40_000, 40_000))
    add("textbomb.png", text_bomb_png(), "A picture with a compressed text bomb", (8, 8))
    return out


def make_images(seed: int = 0, n: int = 48) -> list[SampleImage]:
    """`n` ordinary images then the special ones; the same bytes for the same seed."""
    images = []
    for i in range(n):
        img, caption = render(seed, i)
        fmt, ext = (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))[i % 7 % 3] if i % 7 in (3, 5) else ("JPEG", "jpg")
        kw = {"quality": 90} if fmt != "PNG" else {}
        images.append(SampleImage(f"{i:04d}.{ext}", _encode(img, fmt, **kw), caption, *img.size))
    return images + special_images(seed)


@dataclass(frozen=True)
class SampleRow:
    """One metadata row and the outcome the pipeline must reach for it."""

    url: str
    caption: str
    width: int | None
    height: int | None
    expect: str  # "kept" or a reason code
    scores: dict[str, float] | None = None


def sample_rows(base_url: str, images: list[SampleImage]) -> list[SampleRow]:
    """Every ordinary image kept, every special case paired with its expected reason."""
    by = {im.name: im for im in images}
    ordinary = [im for im in images if im.name[0].isdigit()]
    rows = [SampleRow(f"{base_url}/img/{im.name}", im.caption, im.width, im.height, "kept") for im in ordinary[:-12]]
    o = ordinary[-12:]

    def row(path: str, im: SampleImage, expect: str, caption: str | None = None, size=None, **scores) -> SampleRow:
        w, h = size if size is not None else (im.width, im.height)
        return SampleRow(f"{base_url}{path}", caption if caption is not None else im.caption, w, h, expect, scores or None)

    for name in ("cmyk.jpg", "palette.png", "rgba.png", "grey16.png", "rotated.jpg", "animated.gif", "grey.webp",
                 "white_text.png"):
        rows.append(row(f"/img/{name}", by[name], "kept"))
    rows += [
        row(f"/redirect/{o[0].name}", o[0], "kept"),
        row(f"/optout-other/{o[1].name}", o[1], "kept"),
        row(f"/retry-once/{o[2].name}", o[2], "kept"),
        row("/status/404", o[3], "http_404"),
        row("/status/500", o[3], "http_500"),
        row("/status/403", o[3], "http_403"),
        row(f"/slow/{o[3].name}", o[3], "timeout"),
        row(f"/stall/{o[4].name}", o[4], "timeout"),
        row(f"/html/{o[3].name}", o[3], "not_an_image"),
        row(f"/json/{o[3].name}", o[3], "not_an_image"),
        row(f"/truncated/{o[5].name}", o[5], "truncated_image"),
        row(f"/corrupt/{o[5].name}", o[5], "decode_error"),
        row(f"/optout/{o[6].name}", o[6], "robots_noai"),
        row("/loop/a", o[6], "redirect_loop"),
        row("/big", o[6], "body_too_large"),
        row("/empty", o[6], "empty_body"),
        row("/reset", o[6], "connection_error"),
        row("/img/bomb.png", by["bomb.png"], "decompression_bomb", size=(None, None)),
        row("/img/textbomb.png", by["textbomb.png"], "decompression_bomb", size=(None, None)),
        row("/img/tiny.png", by["tiny.png"], "too_small", size=(None, None)),
        row("/img/panorama.jpg", by["panorama.jpg"], "bad_aspect_ratio", size=(None, None)),
        row("/img/blank.png", by["blank.png"], "blank_image"),
        SampleRow("ftp://example.com/a.jpg", o[7].caption, 640, 480, "unsupported_scheme"),
        SampleRow("file:///etc/passwd", o[7].caption, 640, 480, "unsupported_scheme"),
        SampleRow("data:image/png;base64,iVBORw0KGgo=", o[7].caption, 640, 480, "unsupported_scheme"),
        SampleRow("http://", o[7].caption, 640, 480, "invalid_url"),
        SampleRow("", o[7].caption, 640, 480, "missing_url"),
        row(f"/img/{o[7].name}", o[7], "empty_caption", caption="   "),
        row(f"/img/{o[7].name}?v=placeholder", o[7], "placeholder_caption", caption="IMG_2041.JPG"),
        row(f"/img/{o[7].name}?v=svgname", o[7], "placeholder_caption", caption="Logo Final, v2 (1).SVG"),
        row(f"/img/{o[7].name}?v=short", o[7], "caption_too_short", caption="Shapes"),
        row(f"/img/{o[8].name}", o[8], "nsfw", nsfw=0.93),
        row(f"/img/{o[9].name}", o[9], "watermark", watermark=0.97),
        row(f"/img/{o[10].name}", o[10], "low_clip_similarity", similarity=0.05),
        row(f"/img/{o[11].name}?v=small", o[11], "declared_too_small", size=(20, 20)),
        # the same URL twice: the row with the higher CLIP score is the representative, the other a duplicate
        row(f"/img/{ordinary[0].name}", ordinary[0], "dup_url", caption=ordinary[0].caption + " again", similarity=0.29),
    ]
    return rows


def _scores(row: SampleRow, i: int) -> dict[str, float]:
    s = row.scores or {}
    return {
        "similarity": s.get("similarity", 0.30 + (i % 7) * 0.01),
        "nsfw": s.get("nsfw", 0.02 + (i % 5) * 0.01),
        "watermark": s.get("watermark", 0.05 + (i % 3) * 0.02),
        "aesthetic": 4.5 + (i % 9) * 0.2,
    }


def laion_table(rows: list[SampleRow]) -> pa.Table:
    """LAION-5B joined schema (no id column: uids are hashes of url + caption)."""
    sc = [_scores(r, i) for i, r in enumerate(rows)]
    return pa.table({
        "URL": [r.url or None for r in rows],
        "TEXT": [r.caption for r in rows],
        "WIDTH": pa.array([r.width for r in rows], pa.float64()),
        "HEIGHT": pa.array([r.height for r in rows], pa.float64()),
        "similarity": [s["similarity"] for s in sc],
        "hash": [int.from_bytes(zlib.crc32(r.url.encode()).to_bytes(4, "big") * 2, "big", signed=True) for r in rows],
        "punsafe": [s["nsfw"] for s in sc],
        "pwatermark": [s["watermark"] for s in sc],
        "aesthetic": [s["aesthetic"] for s in sc],
    })


def _source_phash(url: str, images: dict[str, bytes]) -> str:
    """What COYO's `image_phash` column holds: the pHash of the original image (imagehash's
    definition, as ours, of the upright picture); for a URL that serves no image, a stand-in."""
    import io

    from PIL import Image, ImageOps

    from curation.core.images import phash, to_rgb

    data = images.get(url.rstrip("/").rsplit("/", 1)[-1]) if url else None
    if data is not None:
        try:
            return phash(to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))))
        except Exception:  # noqa: BLE001 - a corrupt planted image has no pHash of its own
            pass
    return f"{zlib.crc32(url.encode()):016x}"


def coyo_table(rows: list[SampleRow], id_base: int = 4_000_000_000, images: dict[str, bytes] | None = None) -> pa.Table:
    """COYO-700M schema (int64 ids become uids); `image_phash` is the served image's real pHash."""
    sc = [_scores(r, i) for i, r in enumerate(rows)]
    return pa.table({
        "id": pa.array([id_base + i for i in range(len(rows))], pa.int64()),
        "url": [r.url or None for r in rows],
        "text": [r.caption for r in rows],
        "width": pa.array([r.width for r in rows], pa.int64()),
        "height": pa.array([r.height for r in rows], pa.int64()),
        "image_phash": [_source_phash(r.url, images or {}) for r in rows],
        "text_length": [len(r.caption) for r in rows],
        "word_count": [len(r.caption.split()) for r in rows],
        "num_tokens_bert": [len(r.caption.split()) + 2 for r in rows],
        "num_tokens_gpt": [len(r.caption.split()) + 1 for r in rows],
        "num_faces": [0 for _ in rows],
        "clip_similarity_vitb32": [s["similarity"] for s in sc],
        "clip_similarity_vitl14": [s["similarity"] - 0.02 for s in sc],
        "nsfw_score_opennsfw2": [s["nsfw"] for s in sc],
        "nsfw_score_gantman": [s["nsfw"] / 2 for s in sc],
        "watermark_score": [s["watermark"] for s in sc],
        "aesthetic_score_laion_v2": [s["aesthetic"] for s in sc],
    })


def write_sample(out_dir: str | Path, base_url: str, seed: int = 0, n_images: int = 48) -> dict[str, Path]:
    """Write LAION- and COYO-schema parquet files for the served images, plus the expectations."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = make_images(seed, n_images)
    rows = sample_rows(base_url, images)
    paths = {"laion": out / "laion" / "part-00000.parquet", "coyo": out / "coyo" / "part-00000.parquet"}
    served = {im.name: im.data for im in images}
    for key, table in (("laion", laion_table(rows)), ("coyo", coyo_table(rows, images=served))):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, paths[key])
    expect = out / "expected.json"
    expect.write_text(json.dumps([{"url": r.url, "caption": r.caption, "expect": r.expect} for r in rows], indent=1))
    paths["expected"] = expect
    return paths


def image_map(seed: int = 0, n_images: int = 48) -> dict[str, bytes]:
    """name -> bytes, what the image server serves."""
    return {im.name: im.data for im in make_images(seed, n_images)}


def check_outcomes(output: str | Path, expected_path: str | Path) -> list[str]:
    """Compare every manifest row of an ingest output with the outcome the sample promises for
    its URL + caption; returns one line per surprise (empty when all is as expected)."""
    expected = {(r["url"], r["caption"]): r["expect"] for r in json.loads(Path(expected_path).read_text())}
    problems, seen = [], 0
    for path in sorted(Path(output).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            seen += 1
            want = expected.get((row["url"], row["caption"]))
            got = "kept" if row["status"] == "kept" else row["reason"]
            if want != got:
                problems.append(f"{row['url'] or '<no url>'}: expected {want}, got {got} ({row['detail']})")
    if seen != len(expected):
        problems.append(f"{seen} manifest rows for {len(expected)} input rows")
    return problems


def check_annotate(output: str | Path) -> list[str]:
    """What the annotate stage promises on the sample: every kept pair carries its OCR lines,
    quality scores and one conversation whose image exists; a kept picture whose caption says it
    shows a sign that reads WORD had WORD read by OCR. One line per surprise."""
    import re

    from curation.core.shards import iter_tar_groups

    out = Path(output)
    index = json.loads((out / "_index.json").read_text())
    problems: list[str] = []
    kept = 0
    for shard in index["shards"]:
        for uid, group in iter_tar_groups(str(out / shard["tar"])):
            kept += 1
            meta = json.loads(group["json"])
            missing = [k for k in ("ocr", "quality", "conversation") if k not in meta]
            if missing:
                problems.append(f"{uid}: {uid}.json lacks {', '.join(missing)}")
                continue
            sign = re.search(r'reads "([A-Z]+)"', meta.get("caption", ""))
            read = " ".join(line["text"] for line in meta["ocr"]["lines"]).upper()
            if sign and sign.group(1) not in read:
                problems.append(f"{uid}: the sign reads {sign.group(1)!r}, OCR read {read!r}")
    rows = []
    for path in sorted(out.glob("*.conversations.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    if len(rows) != kept:
        problems.append(f"{len(rows)} conversations for {kept} kept pairs")
    problems += [f"{r['id']}: image {r['image']} unreadable" for r in rows if not _image_readable(out, r["image"])]
    return problems


def _image_readable(root: Path, path: str) -> bool:
    """Whether a conversation row's image (a file, or a member of a shard's tar) reads as an image."""
    from curation.core.image_refs import read_image_bytes

    try:
        data = read_image_bytes(str(root / path), lambda p: open(p, "rb"))
    except OSError:
        return False
    return data[:2] in (b"\xff\xd8", b"\x89P", b"RI", b"GI", b"BM", b"II", b"MM")
