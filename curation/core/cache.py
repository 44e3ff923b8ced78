"""The local cache (models, tokenizers, probe scores) and how a folder is made in it once."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    return Path(os.environ.get("CURATE_CACHE") or Path.home() / ".cache" / "curate-vlm")


def build_cache_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Make a cache folder once: `fill` writes into a temporary sibling that is then renamed into
    place, so a reader never sees half a folder; a worker that loses the race uses the winner's."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError:  # another worker won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target
