"""What every `curate` command shares: the `--` split of Beam's options, recipe lookup, the
accounting check and the one-line report of unexpected outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def split_beam_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split at the first `--`: ours before, Beam's after."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def find_config(name: str) -> Path:
    """A config path as given, else under the project's configs/ folder."""
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    candidate = CONFIG_DIR / name
    return candidate if candidate.exists() else path


def accounted(index: dict[str, Any]) -> bool:
    totals = index["totals"]
    return totals["inputs"] == totals["kept"] + sum(index["reasons"].values())


UNUSABLE = ("malformed_row", "unreadable_file")


def unusable_files(index: dict[str, Any], output: str) -> list[str]:
    """One message per input file none of whose rows could be read (a wrong format or schema,
    not bad rows), naming what the reader saw, from the manifests' source_file / reason / detail."""
    import pyarrow.parquet as pq

    from curation.core.fs import join, open_binary

    seen: dict[str, list[int]] = {}
    first: dict[str, str] = {}
    for shard in index.get("shards", []):
        with open_binary(join(output, shard["manifest"])) as f:
            table = pq.read_table(f, columns=["source_file", "reason", "detail"], use_threads=False).to_pylist()
        for row in table:
            counts = seen.setdefault(row["source_file"], [0, 0])
            counts[0] += 1
            if row["reason"] in UNUSABLE:
                counts[1] += 1
                first.setdefault(row["source_file"], row["detail"] or row["reason"])
    return [f"{name}: none of its {n} rows could be read ({first[name]})"
            for name, (n, bad) in sorted(seen.items()) if n and bad == n]


def unexpected(problems: list[str]) -> int:
    """Print each problem a demo check found; returns how many."""
    for line in problems:
        print(f"  UNEXPECTED: {line}")
    return len(problems)
