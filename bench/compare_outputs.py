"""Are two output trees the same? Every tar, parquet and `_index.json` under both folders, compared
byte for byte (indexes as JSON, with the run's own output folder and `_metrics` timings left out).

  python bench/compare_outputs.py BEFORE AFTER [--also jsonl]

Used to prove that a refactor changed no output: run `curate demo` on the commit before and after,
then compare. Prints one JSON line (`identical`, files compared, the differing ones) and exits 1 on
any difference, or when a file exists on one side only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

SUFFIXES = (".tar", ".parquet")
VOLATILE_KEYS = {"_metrics"}  # Beam counters of this run (timings, bundle-dependent msecs)


def _normalise(value: Any, root: str) -> Any:
    """The index with this run's output folder replaced, so two runs in two folders compare."""
    if isinstance(value, dict):
        return {k: _normalise(v, root) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_normalise(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<out>")
    return value


def digest(path: Path, root: Path) -> str:
    """sha256 of the file, or of its normalised JSON for an index."""
    if path.name == "_index.json":
        doc = _normalise(json.loads(path.read_text()), str(root))
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Relative path -> path of every compared file (staging and progress folders left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or "/_staging/" in f"/{rel}" or "/_progress/" in f"/{rel}":
            continue
        if path.name == "_index.json" or path.name.endswith(suffixes):
            out[rel] = path
    return out


def compare(before: Path, after: Path, suffixes: tuple[str, ...] = SUFFIXES) -> dict[str, Any]:
    a, b = files(before, suffixes), files(after, suffixes)
    differing = sorted(rel for rel in a.keys() & b.keys() if digest(a[rel], before) != digest(b[rel], after))
    only = sorted(a.keys() ^ b.keys())
    return {"identical": not differing and not only and bool(a), "compared": len(a.keys() & b.keys()),
            "differing": differing, "only_one_side": only}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--also", action="append", default=[], help="another suffix to compare (e.g. jsonl)")
    args = ap.parse_args()
    result = compare(args.before, args.after, SUFFIXES + tuple(f".{s.lstrip('.')}" for s in args.also))
    print(json.dumps(result))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
