"""The decontamination index (filters/quality/decontam.py) from benchmarks' own files, read with
the readers `curate mmpr` has (MMPR rows, ScienceQA, A-OKVQA, ChartQA, DocVQA parquet, MathVista
jsonl): every row's question (with and without its listed options), options and answers, and the
pHash of every image it names or embeds. Built once per worker process, where it is used."""

from __future__ import annotations

import functools
import io
import json
import posixpath
from typing import Any

from filters.quality.decontam import DecontamConfig, EvalIndex

PLACEHOLDER = "<image>"


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
    """What of a question row decontamination compares: the question (with and without its listed
    options, placeholders out), each option and each answer."""
    question = item.question.replace(PLACEHOLDER, " ")
    texts = [question, question.split("\nOptions: ", 1)[0], *item.options]
    gt = item.answer_gt
    texts += [gt] if isinstance(gt, str) else list(gt or ())
    return texts


def _read(path: str, limit: int) -> bytes:
    from curation.core.fs import open_binary

    with open_binary(path) as f:
        return f.read(limit)


def build_eval_index(cfg: DecontamConfig) -> EvalIndex:
    """Read every eval set file; a row that cannot be parsed counts as `unusable`, never an error
    (the benchmark file is the benchmark's, warts included)."""
    from PIL import Image

    from curation.core.fs import open_binary
    from curation.core.images import phash, to_rgb
    from curation.mmpr.config import MmprImageConfig, MmprSourceConfig
    from curation.mmpr.shards import read_tasks
    from curation.mmpr.tasks import load_images, task_images

    index = EvalIndex(cfg)
    images_cfg = MmprImageConfig()
    for path in _files(cfg.eval_sets):
        source = len(index.names)
        name = posixpath.basename(path.rstrip("/"))
        index.names.append(name)
        counts = {"rows": 0, "texts": 0, "images": 0, "unusable": 0}
        root = cfg.image_root or posixpath.dirname(path)
        with open_binary(path) as f:
            for task in read_tasks(f, name, MmprSourceConfig()):
                counts["rows"] += 1
                if task.item is None:
                    counts["unusable"] += 1
                    continue
                for text in item_texts(task.item):
                    index.add_text(text, source)
                    counts["texts"] += 1
                if cfg.phash_bits < 0 or not task.item.images:
                    continue
                task = load_images(task, root, images_cfg, _read)
                if task.reason:  # an eval image that cannot be read guards nothing: its texts still do
                    counts["unusable"] += 1
                    continue
                for data in task_images(task, lambda p: _read(p, -1)):
                    with Image.open(io.BytesIO(data)) as img:
                        index.add_image(phash(to_rgb(img)), source)
                    counts["images"] += 1
        index.counts[name] = counts
    return index


@functools.lru_cache(maxsize=4)
def _cached(doc: str) -> EvalIndex:
    return build_eval_index(DecontamConfig(**json.loads(doc)))


def eval_index(cfg: DecontamConfig) -> EvalIndex:
    """This process's index for `cfg` (built on first use, then shared by every row)."""
    import dataclasses

    return _cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True))
