"""The decontamination index (filters/quality/decontam.py) from benchmarks' own files, read with
the row readers `curate mmpr` has (jsonl, json arrays, parquet with Hugging Face image structs).
Test splits seldom publish answers, so rows are read leniently, without the training schemas:
every row's question (`question` or `query`, as the benchmark wrote it: no context, no options),
its choices and whatever answers it has, and the pHash of every image it names or embeds. Built
once per worker process, where it is used."""

from __future__ import annotations

import functools
import io
import json
import posixpath
import threading
from typing import Any

from filters.quality.decontam import DecontamConfig, EvalIndex

PLACEHOLDER = "<image>"
# The fields benchmarks keep their texts in (MMPR rows, ScienceQA, A-OKVQA, ChartQA, DocVQA, MathVista, MMBench)
TEXT_KEYS = ("question", "query", "choices", "options", "answer", "answers", "direct_answers", "label", "answer_gt",
             "A", "B", "C", "D")
IMAGE_KEYS = ("image", "images", "decoded_image")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError)


def _files(patterns: list[str]) -> list[str]:
    """Every file the eval-set patterns name (globs expanded, local or fsspec URLs), in order."""
    import glob

    from curation.core.fs import is_url

    out: list[str] = []
    for pattern in patterns:
        if is_url(pattern):
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(pattern)
            found = [fs.unstrip_protocol(p) for p in sorted(paths)]
        else:
            found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not found:
            raise FileNotFoundError(f"decontamination.eval_sets: nothing matches {pattern!r}")
        out += found
    return out


def item_texts(item: Any) -> list[str]:
    """What of a training question decontamination compares: the question (with and without its
    listed options, placeholders out), each option and each answer."""
    question = item.question.replace(PLACEHOLDER, " ")
    texts = [question, question.split("\nOptions: ", 1)[0], *item.options]
    gt = item.answer_gt
    texts += [gt] if isinstance(gt, str) else list(gt or ())
    return texts


def row_texts(raw: dict[str, Any]) -> list[str]:
    """An eval row's texts from its benchmark fields (strings, or lists of strings)."""
    out = []
    for key in TEXT_KEYS:
        value = raw.get(key)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v.strip():
                out.append(v.replace(PLACEHOLDER, " "))
    return out


def image_phash(data: bytes) -> str:
    """The pHash of encoded image bytes as ingest computes it (EXIF-upright, RGB); the decoder's
    error when they do not decode."""
    from PIL import Image, ImageOps

    from curation.core.images import phash, to_rgb

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return phash(to_rgb(ImageOps.exif_transpose(img)))


def _row_images(raw: dict[str, Any], root: str) -> list[bytes]:
    from curation.core.fs import open_binary
    from curation.core.image_refs import image_values
    from packing.units import resolve_image

    out = []
    for key in IMAGE_KEYS:
        if raw.get(key) is None:
            continue
        for value in image_values(raw[key], key):
            if isinstance(value, bytes):
                out.append(value)
            else:
                with open_binary(resolve_image(root, value)) as f:
                    out.append(f.read(64 << 20))
    return out


def build_eval_index(cfg: DecontamConfig) -> EvalIndex:
    """Read every eval set file. A row or image that cannot be read counts as `unusable`, never an
    error: the benchmark file is the benchmark's, warts included."""
    from curation.core.fs import open_binary
    from curation.core.rows import RowError, detect_format, iter_raw_rows

    index = EvalIndex(cfg)
    for path in _files(cfg.eval_sets):
        source = len(index.names)
        index.names.append(path)
        counts = {"rows": 0, "texts": 0, "images": 0, "unusable": 0}
        root = cfg.image_root or posixpath.dirname(path)
        with open_binary(path) as f:
            for _, raw in iter_raw_rows(f, detect_format(path), parquet_batch_rows=256):
                counts["rows"] += 1
                if isinstance(raw, RowError):
                    counts["unusable"] += 1
                    continue
                texts = row_texts(raw)
                for text in texts:
                    index.add_text(text, source, counts["rows"])
                counts["texts"] += len(texts)
                if cfg.phash_bits < 0:
                    continue
                try:
                    for data in _row_images(raw, root):
                        index.add_image(image_phash(data), source)
                        counts["images"] += 1
                except DECODE_ERRORS:  # a missing or broken eval image guards nothing; its texts still do
                    counts["unusable"] += 1
        index.counts[path] = counts
    index.drop_templates()
    return index


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached(doc: str) -> EvalIndex:
    return build_eval_index(DecontamConfig(**json.loads(doc)))


def eval_index(cfg: DecontamConfig) -> EvalIndex:
    """This process's index for `cfg`, built once (the SDK harness runs bundles on several
    threads: the first builds it, the others wait)."""
    import dataclasses

    with _LOCK:
        return _cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True))
