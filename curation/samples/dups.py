"""Generated corpora with planted duplicates, and their brute-force ground truth, for dedup tests and
`bench/dedup.py`.

Captions: pseudo-word sentences (Zipf-distributed vocabulary, shared templates so that unrelated
captions overlap too) with planted variants - case, punctuation, one-word edits, swaps and clause
moves. The ground truth is every pair with true shingle Jaccard >= threshold, found exhaustively
(a length bound skips only pairs that cannot reach it). Images: drawn originals with planted
re-encodes, resizes and small crops; the ground truth is the planted groups. Both are written as
real pair shards (tar + manifest + `_index.json`) through the same writer ingest uses.
"""

from __future__ import annotations

import base64

import functools
import io
import json
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from curation.ingest.config import ImageConfig
from curation.core.records import ImageInfo, Pair, Sample
from curation.core.shards import build_index, num_shards_for, shard_name, shard_of, write_pair_shard

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "ke", "la",
              "mo", "nu", "pe", "ri", "so", "ta", "ve", "wi", "xa", "yo", "ze", "an", "el", "in", "or", "us"]
_TEMPLATES = ["photo of {0} {1} on {2}", "{0} {1} with {2} and {3}", "stock image {0} {1} {2} background",
              "close up of {0} {1} near {2} {3}", "{0} and {1} in {2} at {3}"]


@dataclass(frozen=True)
class Planted:
    """One generated record: its uid, caption, image bytes and planted group."""

    uid: str
    caption: str
    group: int
    image: bytes | None = None
    phash: str | None = None  # without an image: the blank image's pHash (bench/dedup_scale.py plants them)


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES, int(rng.integers(1, 4)))))
    return sorted(words)


def _edit(words: list[str], rng: np.random.Generator, vocab: list[str]) -> list[str]:
    """One planted edit: case, punctuation, substitute/insert/delete a word, swap, move a clause."""
    w = list(words)
    kind = int(rng.integers(0, 8))
    i = int(rng.integers(0, len(w)))
    if kind == 0:
        w = [x.upper() if rng.random() < 0.5 else x.title() for x in w]
    elif kind == 1:
        w[i] = w[i] + str(rng.choice([",", ".", "!", ";", " -"]))
    elif kind == 2:
        w[i] = str(rng.choice(vocab))
    elif kind == 3:
        w.insert(i, str(rng.choice(vocab)))
    elif kind == 4 and len(w) > 3:
        del w[i]
    elif kind == 5 and len(w) > 2:
        j = min(i + 1, len(w) - 1)
        w[i], w[j] = w[j], w[i]
    elif kind == 6 and len(w) > 6:
        cut = int(rng.integers(2, 4))
        w = w[-cut:] + w[:-cut]  # move the last clause to the front
    else:
        w[-1] = w[-1] + "."
    return w


def planted_captions(n_groups: int, seed: int = 0, max_variants: int = 4) -> list[Planted]:
    """Originals plus 0..max_variants edited copies each (one or two edits per copy)."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, 3000)
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    out: list[Planted] = []
    for g in range(n_groups):
        if rng.random() < 0.3:  # template captions: unrelated ones share most of their words
            tpl = str(rng.choice(_TEMPLATES))
            text = tpl.format(*rng.choice(vocab, 4, p=zipf)) + " " + " ".join(rng.choice(vocab, int(rng.integers(3, 9))))
        else:
            text = " ".join(rng.choice(vocab, int(rng.integers(8, 24)), p=zipf))
        words = text.split()
        out.append(Planted(f"c{g:06d}-0", text, g))
        for v in range(int(rng.integers(0, max_variants + 1))):
            edited = words
            for _ in range(int(rng.integers(1, 3))):
                edited = _edit(edited, rng, vocab)
            out.append(Planted(f"c{g:06d}-{v + 1}", " ".join(edited), g))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def caption_truth(captions: dict[str, str], threshold: float, kind: str = "char", n: int = 5) -> set[tuple[str, str]]:
    """Every uid pair (sorted) whose true shingle Jaccard is >= threshold, exactly. Prefix filtering
    (Bayardo et al., "Scaling up all pairs similarity search") only skips pairs that provably
    cannot reach it: with shingles in one global rare-first order, two sets with Jaccard >= t share
    a shingle among the first |x| - ceil(t|x|) + 1 of each."""
    import math
    from collections import Counter

    from filters.dedup.minhash import jaccard, shingles

    sets = {uid: shingles(text, kind, n) for uid, text in captions.items()}  # type: ignore[arg-type]
    freq = Counter(s for grams in sets.values() for s in grams)
    posting: dict[bytes, list[str]] = {}
    candidates: set[tuple[str, str]] = set()
    for uid in sorted(sets):
        grams = sorted(sets[uid], key=lambda g: (freq[g], g))
        prefix = len(grams) - math.ceil(threshold * len(grams)) + 1 if grams else 0
        for g in grams[:prefix]:
            for other in posting.setdefault(g, []):
                candidates.add((other, uid))
            posting[g].append(uid)
    return {pair for pair in candidates if jaccard(sets[pair[0]], sets[pair[1]]) >= threshold}


def _drawn(seed: int) -> Image.Image:
    r = np.random.default_rng(seed)
    w, h = int(r.integers(320, 640)), int(r.integers(240, 480))
    img = Image.fromarray((r.random((6, 8, 3)) * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(r.integers(3, 9))):
        x0, y0 = int(r.integers(0, w)), int(r.integers(0, h))
        box = [x0, y0, x0 + int(r.integers(20, w // 2)), y0 + int(r.integers(20, h // 2))]
        color = tuple(int(c) for c in r.integers(0, 256, 3))
        (draw.ellipse if r.random() < 0.5 else draw.rectangle)(box, fill=color)
    return img


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def image_variant(img: Image.Image, rng: np.random.Generator) -> bytes:
    """A planted near-duplicate: JPEG re-encode (q 40-90), resize (0.4-0.9x) or a 1-5% crop."""
    w, h = img.size
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return _jpeg(img, int(rng.integers(40, 90)))
    if kind == 1:
        s = float(rng.uniform(0.4, 0.9))
        return _jpeg(img.resize((int(w * s), int(h * s)), Image.Resampling.BILINEAR))
    f = float(rng.uniform(0.01, 0.05))
    dx, dy = int(w * f * rng.random()), int(h * f * rng.random())
    return _jpeg(img.crop((dx, dy, w - int(w * f) + dx, h - int(h * f) + dy)))


def planted_images(n_groups: int, seed: int = 0, max_variants: int = 3) -> list[Planted]:
    """Drawn originals plus 0..max_variants planted variants each; captions are all unrelated."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, 3000)
    out: list[Planted] = []
    for g in range(n_groups):
        img = _drawn(seed * 100_003 + g)
        out.append(Planted(f"i{g:06d}-0", " ".join(rng.choice(vocab, 12)), g, _jpeg(img)))
        for v in range(int(rng.integers(0, max_variants + 1))):
            out.append(Planted(f"i{g:06d}-{v + 1}", " ".join(rng.choice(vocab, 12)), g, image_variant(img, rng)))
    return out


def group_truth(records: list[Planted]) -> set[tuple[str, str]]:
    """Every uid pair in the same planted group."""
    by_group: dict[int, list[str]] = {}
    for r in records:
        by_group.setdefault(r.group, []).append(r.uid)
    return {tuple(sorted(p)) for uids in by_group.values() for p in combinations(uids, 2)}  # type: ignore[misc]


@functools.lru_cache(maxsize=1)
def _blank_jpeg() -> bytes:
    return _jpeg(Image.new("RGB", (64, 64), (128, 128, 128)))


def _blank_image(phash: str | None = None) -> ImageInfo:
    return ImageInfo(_blank_jpeg(), "jpg", 64, 64, 64, 64, "JPEG", "0" * 64, phash or "0" * 16)


def write_pair_folder(out_dir: str | Path, records: list[Planted], samples_per_shard: int = 500,
                      scores: dict[str, float] | None = None, prefix: str = "planted",
                      source_rows: dict[str, int] | None = None, source_file: str = "planted.jsonl",
                      embeddings: dict[str, bytes] | None = None) -> Path:
    """Planted records -> a pair-shard folder (tars, manifests, `_index.json`) like ingest writes.
    Images go through ingest's own decode/resize/pHash; records without one share a blank image
    (turn exact and near image dedup off for such a folder). `source_rows` fixes each uid's row
    number, so the same records can be written in another order and stay the same records.
    `embeddings`: float16 image embeddings stored as ingest's CLIP step stores them (`clip_embedding`)."""
    from curation.ingest.images import process_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ImageConfig()
    samples: list[Sample] = []
    for row, r in enumerate(records):
        pair = Pair(uid=r.uid, url=f"https://example.com/{r.uid}.jpg", caption=r.caption, source="planted",
                    source_file=source_file, source_row=(source_rows or {}).get(r.uid, row), clip_similarity=(scores or {}).get(r.uid))
        image = process_image(r.image, cfg) if r.image is not None else _blank_image(r.phash)
        if not isinstance(image, ImageInfo):
            raise ValueError(f"{r.uid}: generated image rejected: {image}")
        if embeddings and r.uid in embeddings:
            image.clip_embedding = base64.b64encode(embeddings[r.uid]).decode("ascii")
        samples.append(Sample(pair, image))
    n = num_shards_for(len(samples), samples_per_shard)
    by_shard: dict[int, list[Sample]] = {i: [] for i in range(n)}
    for s in samples:
        by_shard[shard_of(s.pair.uid, n)].append(s)
    reports = []
    for shard, members in by_shard.items():
        name = shard_name(prefix, shard, n)
        with open(out / f"{name}.tar", "wb") as tar_f, open(out / f"{name}.parquet", "wb") as man_f:
            reports.append(write_pair_shard(shard, name, members, tar_f, man_f))
    index = build_index(reports, kind="pairs", prefix=prefix, num_shards=n, fingerprint="planted",
                        extra={"source": prefix})
    (out / "_index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return out


def components_to_pairs(rep_of: dict[str, str]) -> set[tuple[str, str]]:
    """uid -> representative uid (a representative maps to itself) -> every same-component pair."""
    groups: dict[str, list[str]] = {}
    for uid, rep in rep_of.items():
        groups.setdefault(rep, []).append(uid)
    return {tuple(sorted(p)) for uids in groups.values() for p in combinations(uids, 2)}  # type: ignore[misc]


def closure(pairs: set[tuple[str, str]]) -> dict[str, str]:
    """Transitive closure of a pair set as uid -> component minimum."""
    from filters.dedup.components import union_find

    return union_find(pairs)


def score(found: set[tuple[str, str]], truth: set[tuple[str, str]], truth_components: dict[str, str]) -> dict[str, float]:
    """Pair recall against `truth`, and precision: the share of found same-component pairs that are
    in one component of the truth's transitive closure (dedup by components is transitive)."""
    recall = len(found & truth) / len(truth) if truth else 1.0
    ok = sum(1 for a, b in found if a in truth_components and truth_components.get(a) == truth_components.get(b))
    precision = ok / len(found) if found else 1.0
    direct = len(found & truth) / len(found) if found else 1.0
    return {"recall": recall, "precision": precision, "direct_precision": direct,
            "true_pairs": len(truth), "found_pairs": len(found)}


def representatives(folder: str | Path) -> dict[str, str]:
    """uid -> the kept uid it was deduplicated onto (itself if kept), read from a dedup output's
    manifests; chains (an exact duplicate of a later near-duplicate) are followed to the end."""
    from curation.core.shardset import ShardSet
    from filters.dedup.keys import DETAIL, representative_of

    rep: dict[str, str] = {}
    for _, table in ShardSet.open(str(folder)).manifests(["uid", "status", "reason", "detail"]):
        for row in table.to_pylist():
            if row["status"] == "kept":
                rep[row["uid"]] = row["uid"]
            elif row["reason"] in DETAIL:
                rep[row["uid"]] = representative_of(row["detail"])

    def root(uid: str) -> str:
        seen = set()
        while rep.get(uid, uid) != uid and uid not in seen:
            seen.add(uid)
            uid = rep[uid]
        return uid

    return {uid: root(uid) for uid in rep}


def check_dedup(output: str | Path, inputs: list[str | Path], images: bool = True) -> list[str]:
    """A dedup output's invariants against its inputs; one line per problem (empty when all hold):
    every input row exactly as often as the inputs hold it, upstream rejections carried unchanged,
    every duplicate's representative kept, and no URL, caption or (with `images`) image bytes kept
    twice."""
    from curation.core.shardset import ShardSet
    from filters.dedup.keys import DETAIL, caption_hash, representative_of
    from filters.dedup.exact import normalize_url

    def rows(folder) -> list[dict]:
        return [r for _, table in ShardSet.open(str(folder)).manifests() for r in table.to_pylist()]

    def ident(r: dict) -> tuple:
        return r["source_file"], r["source_row"], r["uid"]

    inputs_rows = [r for f in inputs for r in rows(f)]
    before = {ident(r): r for r in inputs_rows}  # a row repeated across inputs: its copies are alike
    after = rows(output)
    problems = []
    if Counter(map(ident, after)) != Counter(map(ident, inputs_rows)):
        problems.append(f"{len(after)} output rows for {len(inputs_rows)} input rows, or not the same rows")
    kept = {r["uid"]: r for r in after if r["status"] == "kept"}
    for r in after:
        was = before.get(ident(r))
        if was is None:
            continue
        if was["status"] == "rejected" and (r["status"], r["reason"]) != ("rejected", was["reason"]):
            problems.append(f"{r['uid']}: upstream {was['reason']} became {r['status']} {r['reason']}")
        elif was["status"] == "kept" and r["status"] == "rejected":
            if r["stage"] != "dedup" or r["reason"] not in DETAIL:
                problems.append(f"{r['uid']}: dedup rejected it as {r['stage']}/{r['reason']}")
            elif representative_of(r["detail"]) not in kept:
                problems.append(f"{r['uid']}: representative {representative_of(r['detail'])} is not kept")
    keys = [("URL", lambda r: normalize_url(r["url"])), ("caption", lambda r: caption_hash(r["caption"]))]
    for name, key in keys + ([("image", lambda r: r["sha256"])] if images else []):
        seen: dict[str, str] = {}
        for uid, r in sorted(kept.items()):
            k = key(r)
            if k in seen:
                problems.append(f"{uid}: same {name} as kept {seen[k]}")
            seen[k] = uid
    return problems
