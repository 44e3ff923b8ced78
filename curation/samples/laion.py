"""Synthetic LAION-5B metadata at any size: the real column schema (URL, TEXT, WIDTH, HEIGHT,
similarity, punsafe, pwatermark, aesthetic, hash) with a known mix of what real part files hold.

Exact URL and caption copies, near-duplicate captions (one word changed), a templated caption
family big enough to make hot LSH buckets, rows the metadata filters reject (small, NSFW,
watermarked, low CLIP similarity, placeholder captions, extreme aspect), rows without a URL or a
declared size. Deterministic for a seed: the scale simulation and its tests run on it, offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Fractions of rows per kind; the rest are plain, distinct pairs.
MIX: dict[str, float] = {
    "dup_url": 0.03,          # an earlier row's URL, its own caption
    "dup_caption": 0.04,      # an earlier row's caption (case and punctuation changed), its own URL
    "near_caption": 0.03,     # an earlier row's caption with one word replaced
    "template": 0.01,         # "<brand> dress for sale, size N, item N, colour C": near-copies that make hot LSH buckets
    "small": 0.02,            # declared side below 64
    "nsfw": 0.015,
    "watermark": 0.01,
    "low_similarity": 0.02,
    "placeholder": 0.005,     # "image", "IMG_1234.jpg", ...
    "bad_aspect": 0.002,
    "no_size": 0.003,         # WIDTH / HEIGHT null
    "no_url": 0.001,
}
PLACEHOLDERS = ("image", "IMG_{n}.jpg", "photo", "DSC{n}.JPG", "untitled", "{n}.png")
COLUMNS = ("URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "punsafe", "pwatermark", "aesthetic", "hash")


@dataclass(frozen=True)
class Generated:
    files: list[Path]
    rows: int
    injected: dict[str, int]  # rows drawn per kind of MIX


def _vocabulary(rng: np.random.Generator, size: int = 6000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "ba", "de", "fi", "go", "hu", "ja", "pe",
                 "qui", "ro", "su", "ta", "wen", "xo", "yal", "ber", "con", "dor", "est", "fan", "gir", "hol"]
    words = set()
    while len(words) < size:
        n = int(rng.integers(1, 4))
        words.add("".join(rng.choice(syllables, n)))
    return sorted(words)


def generate_laion(folder: str | Path, rows: int, part_rows: int = 100_000, seed: int = 0) -> Generated:
    """Write ceil(rows / part_rows) parquet part files under `folder`; returns them and the mix drawn."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = list(MIX)
    probs = np.array([MIX[k] for k in kinds] + [1.0 - sum(MIX.values())])
    drawn = rng.choice(len(probs), size=rows, p=probs)
    lengths = rng.integers(5, 26, size=rows)
    word_ids = rng.integers(0, len(vocab), size=int(lengths.sum()))
    widths = np.clip(rng.lognormal(6.3, 0.45, size=rows), 80, 6000).astype(np.int64)
    aspects = np.clip(rng.lognormal(-0.1, 0.3, size=rows), 0.4, 2.5)
    heights = np.clip(widths * aspects, 80, 6000).astype(np.int64)
    sims = rng.uniform(0.28, 0.42, size=rows)
    punsafe = rng.uniform(0.0, 0.3, size=rows)
    pwater = rng.uniform(0.0, 0.6, size=rows)
    aesthetic = rng.uniform(3.5, 7.0, size=rows)
    picks = rng.random(size=rows)
    files, injected = [], {k: 0 for k in kinds}
    urls: list[str | None] = []
    texts: list[str] = []
    offset = 0
    for i in range(rows):
        kind = kinds[drawn[i]] if drawn[i] < len(kinds) else "plain"
        n = int(lengths[i])
        words = [vocab[j] for j in word_ids[offset:offset + n]]
        offset += n
        url: str | None = f"https://img{i % 97}.example-cdn.com/{i:08d}/{words[0]}.jpg"
        text = " ".join(words).capitalize() + "."
        w, h = int(widths[i]), int(heights[i])
        sim, nsfw, wm = float(sims[i]), float(punsafe[i]), float(pwater[i])
        earlier = int(picks[i] * i) if i else None
        if kind == "dup_url" and earlier is not None and urls[earlier]:
            url = urls[earlier]
        elif kind == "dup_caption" and earlier is not None:
            text = texts[earlier].upper().rstrip(".") + "!"
        elif kind == "near_caption" and earlier is not None:
            base = texts[earlier].rstrip(".").split(" ")
            if len(base) >= 12:  # one word of 12+ changed: char-5-gram Jaccard stays near 0.85
                base[len(base) // 2] = vocab[(word_ids[i % len(word_ids)] + 1) % len(vocab)]
                text = " ".join(base) + "."
        elif kind == "template":
            text = (f"Kalomi brand ruvite dress for sale online, size {i % 40}, item {i}, colour {vocab[i % 50]}, "
                    f"free shipping on orders over 50 dollars.")
        elif kind == "small":
            w, h = int(rng.integers(16, 64)), int(rng.integers(16, 64))
        elif kind == "nsfw":
            nsfw = float(rng.uniform(0.6, 1.0))
        elif kind == "watermark":
            wm = float(rng.uniform(0.85, 1.0))
        elif kind == "low_similarity":
            sim = float(rng.uniform(0.1, 0.27))
        elif kind == "placeholder":
            text = PLACEHOLDERS[i % len(PLACEHOLDERS)].format(n=i)
        elif kind == "bad_aspect":
            h = max(64, w // 5)
        elif kind == "no_size":
            w = h = None  # type: ignore[assignment]
        elif kind == "no_url":
            url = None
        if kind in injected:
            injected[kind] += 1
        urls.append(url)
        texts.append(text)
        widths[i] = w if w is not None else -1
        heights[i] = h if h is not None else -1
        sims[i], punsafe[i], pwater[i] = sim, nsfw, wm
    for part, start in enumerate(range(0, rows, part_rows)):
        end = min(rows, start + part_rows)
        w = [None if x < 0 else int(x) for x in widths[start:end]]
        h = [None if x < 0 else int(x) for x in heights[start:end]]
        table = pa.table({
            "URL": pa.array(urls[start:end], pa.string()), "TEXT": pa.array(texts[start:end], pa.string()),
            "WIDTH": pa.array(w, pa.int64()), "HEIGHT": pa.array(h, pa.int64()),
            "similarity": pa.array(sims[start:end]), "punsafe": pa.array(punsafe[start:end]),
            "pwatermark": pa.array(pwater[start:end]), "aesthetic": pa.array(aesthetic[start:end]),
            "hash": pa.array(rng.integers(-2**62, 2**62, size=end - start)),
        })
        path = folder / f"part-{part:05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        files.append(path)
    return Generated(files, rows, injected)
