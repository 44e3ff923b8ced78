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


def unexpected(problems: list[str]) -> int:
    """Print each problem a demo check found; returns how many."""
    for line in problems:
        print(f"  UNEXPECTED: {line}")
    return len(problems)
