"""The one validator of the packed layout (DESIGN.md section 3): `curate check`, `curate inspect
validate`, the model's batch builder and the packer's tests all ask it what is wrong with a pack.

Checks: token and tile counts (stored images' tiles plus any counted `blank_tiles` of image-less
samples, never more than there are such samples) against the json and within l_max / t_max; segments contiguous,
non-empty and covering the row; each image stored, its tile count matching its grid, its `<img>`
span inside one segment holding exactly 256 x tiles context tokens; no context token outside a
span; labels only on supervised text, equal to the ids there, never on images, at least one per
segment; a preference pair's chosen and rejected in the same pack; ids inside the vocabulary. With
the tokenizer's `TokenIds` the span's `<img>` / `</img>` / `<IMG_CONTEXT>` ids are checked too;
without them (inspect reads no tokenizer) the context id is read off the span itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from packing.tiling import TOKENS_PER_TILE, tile_image
from packing.tokens import IGNORE_INDEX
from packing.tokenizer import IMG_CONTEXT, IMG_END, IMG_START

# Problem kinds under which a row cannot be assembled into a batch at all.
LAYOUT_CHECKS = ("segments", "image_tokens", "ids")


@dataclass(frozen=True)
class TokenIds:
    """The ids a packed row is read against: InternVL's three image tokens and the vocabulary size."""

    img_start: int
    img_end: int
    img_context: int
    vocab_size: int

    @classmethod
    def of(cls, tokenizer: Any, vocab_size: int) -> "TokenIds":
        vocab = tokenizer.get_vocab()
        return cls(vocab[IMG_START], vocab[IMG_END], vocab[IMG_CONTEXT], vocab_size)


def pack_problems(meta: dict[str, Any], input_ids: np.ndarray, labels: np.ndarray, *,
                  members: set[str] | None = None, tokens: TokenIds | None = None) -> list[tuple[str, str]]:
    """(kind, detail) for everything wrong with one pack; [] when it is sound. `members`: the names
    stored with the pack (its images are checked against them); `tokens`: the tokenizer's image ids."""
    ids, labels = np.asarray(input_ids).astype(np.int64), np.asarray(labels).astype(np.int64)
    if ids.ndim != 1 or ids.shape != labels.shape:
        return [("segments", f"input_ids {ids.shape} and labels {labels.shape} differ")]
    out: list[tuple[str, str]] = []
    n, l_max, t_max = len(ids), meta.get("l_max", 0), meta.get("t_max", 0)
    if n != meta.get("tokens", n):
        out.append(("segments", f"{n} tokens stored, json says {meta['tokens']}"))
    if n > l_max:
        out.append(("segments", f"{n} tokens overrun l_max {l_max}"))
    images = meta["images"]
    out += _image_problems(meta, images, t_max, members)
    in_image = np.zeros(n, dtype=bool)
    context_ids: set[int] = set() if tokens is None else {tokens.img_context}
    pairs: dict[str, set[str]] = {}
    offset = 0
    for seg in meta["segments"]:
        start, length = seg["offset"], seg["length"]
        if start != offset or length < 1:
            out.append(("segments", f"segment {seg['id']} ({seg['role']}) at offset {start} length {length}, "
                                    f"the previous one ends at {offset}"))
        end = offset = start + length
        if end > l_max:
            out.append(("segments", f"segment {seg['id']} ends at {end}, over l_max {l_max}"))
        for a, b, img in seg["image_spans"]:
            if not (start <= a < b <= end) or not 0 <= img < len(images):
                out.append(("segments", f"segment {seg['id']}: image span [{a}, {b}) outside the segment "
                                        f"[{start}, {end}) or no image {img}"))
                continue
            out += _span_problems(ids, a, b, img, images[img]["tiles"], tokens, context_ids)
            in_image[a:b] = True
        supervised = int(np.count_nonzero(labels[start:end] != IGNORE_INDEX))
        if supervised != seg["supervised"]:
            out.append(("labels", f"segment {seg['id']}: {supervised} supervised labels, json says {seg['supervised']}"))
        if not supervised:
            out.append(("labels", f"segment {seg['id']} ({seg['role']}): nothing supervised"))
        if seg["role"] in ("chosen", "rejected"):
            pairs.setdefault(seg["id"], set()).add(seg["role"])
    if offset != n:
        out.append(("segments", f"segments cover {offset} of {n} tokens"))
    for cid in sorted(context_ids):
        stray = np.flatnonzero((ids == cid) & ~in_image)
        if len(stray):
            out.append(("image_tokens", f"{len(stray)} image context tokens outside any <img> span (first at {stray[0]})"))
    supervised = labels != IGNORE_INDEX
    if np.any(supervised & in_image):
        out.append(("labels", f"{int(np.sum(supervised & in_image))} labels on image tokens"))
    if np.any(supervised & (labels != ids)):
        out.append(("labels", f"{int(np.sum(supervised & (labels != ids)))} labels differ from their input ids"))
    if tokens is not None:
        bad = np.flatnonzero((ids < 0) | (ids >= tokens.vocab_size))
        if len(bad):
            out.append(("ids", f"{len(bad)} ids outside the vocabulary of {tokens.vocab_size} (first {int(ids[bad[0]])})"))
    for uid, roles in sorted(pairs.items()):
        if roles != {"chosen", "rejected"}:
            out.append(("pairs", f"preference pair {uid} split: only {sorted(roles)} in this pack"))
    return out


def _image_problems(meta: dict[str, Any], images: list[dict[str, Any]], t_max: int,
                    members: set[str] | None) -> list[tuple[str, str]]:
    out = []
    tiles = sum(im["tiles"] for im in images) + meta.get("blank_tiles", 0)  # blank: counted, never stored
    if tiles > t_max:
        out.append(("segments", f"{tiles} tiles over t_max {t_max}"))
    if tiles != meta.get("tiles", tiles):
        out.append(("images", f"images (and blank tiles) hold {tiles} tiles, json says {meta['tiles']}"))
    imageless = {s["id"] for s in meta["segments"]} - {s["id"] for s in meta["segments"] if s["image_spans"]}
    if not 0 <= meta.get("blank_tiles", 0) <= len(imageless):
        out.append(("images", f"{meta['blank_tiles']} blank tiles for {len(imageless)} samples without an image"))
    for i, im in enumerate(images):
        if members is not None and im["name"] not in members:
            out.append(("images", f"image {im['name']} listed but not stored"))
        cols, rows = im["grid"]
        if im["tiles"] != cols * rows + (1 if im["thumbnail"] and cols * rows > 1 else 0):
            out.append(("images", f"image {i}: {im['tiles']} tiles for a {cols}x{rows} grid"))
        if "max_num" in im and im.get("width") and im.get("height"):  # the grid InternVL's rule gives its size and budget
            want = tile_image(im["width"], im["height"], im["max_num"], im.get("min_num", 1))
            if [want.columns, want.rows] != [cols, rows]:
                out.append(("images", f"image {i}: a {cols}x{rows} grid, but a {im['width']}x{im['height']} image under "
                                      f"max_num {im['max_num']} tiles as {want.columns}x{want.rows}"))
    return out


def _span_problems(ids: np.ndarray, a: int, b: int, img: int, tiles: int, tokens: TokenIds | None,
                   context_ids: set[int]) -> list[tuple[str, str]]:
    """An `<img>` span: `<img>`, then exactly 256 x tiles copies of one context id, then `</img>`."""
    inner = ids[a + 1:b - 1]
    want = TOKENS_PER_TILE * tiles
    context = tokens.img_context if tokens is not None else (int(inner[0]) if len(inner) else None)
    ends_ok = tokens is None or (ids[a] == tokens.img_start and ids[b - 1] == tokens.img_end)
    if context is not None:
        context_ids.add(context)
    if not ends_ok or len(inner) != want or np.any(inner != context):
        return [("image_tokens", f"image {img}: {int(np.sum(inner == context))} context tokens in its <img> span "
                                 f"[{a}, {b}), wants {TOKENS_PER_TILE} x {tiles} tiles = {want}")]
    return []
