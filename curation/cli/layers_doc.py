"""docs/layers.md: which package may import which, drawn from pyproject.toml's import-linter
contracts (the ones `lint-imports` enforces), with each package's one-line purpose
(`python -m curation.cli.layers_doc > docs/layers.md`; tests/test_docs.py keeps it current)."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _purpose(package: str) -> str:
    doc = importlib.import_module(package).__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def render(pyproject: Path = ROOT / "pyproject.toml") -> str:
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    forbidden = [c for c in contracts if c["type"] == "forbidden"]
    acyclic = [c for c in contracts if c["type"] == "acyclic_siblings"]
    rows = [[p.strip() for p in layer.split("|")] for layer in layers]
    out = ["# Layers", "",
           "Which package may import which: a package imports only from the layers below it, and packages",
           "side by side in one layer not from each other. `lint-imports` (run by CI before the tests) enforces",
           "it from pyproject.toml's `[tool.importlinter]` contracts; this page is generated from them",
           "(`python -m curation.cli.layers_doc > docs/layers.md`; a test fails when it is stale).", "",
           "```mermaid", "flowchart TD"]
    ids = {p: p.replace(".", "_") for row in rows for p in row}
    for k, row in enumerate(rows):
        out.append(f"  subgraph L{k}[\" \"]")
        out += [f"    {ids[p]}[\"{p}\"]" for p in row]
        out.append("  end")
    out += [f"  L{k} --> L{k + 1}" for k in range(len(rows) - 1)]
    out += ["```", "", "| layer (top imports down) | package | what it holds |", "|---|---|---|"]
    for k, row in enumerate(rows):
        out += [f"| {k + 1} | `{p}` | {_purpose(p)} |" for p in row]
    out += ["", "Also enforced:", ""]
    for c in forbidden:
        out.append(f"- **{c['name']}**: may not import {', '.join(f'`{m}`' for m in c['forbidden_modules'])}:")
        out += [f"  `{m}`" + ("," if i < len(c["source_modules"]) - 1 else ".") for i, m in enumerate(c["source_modules"])]
    for c in acyclic:
        out.append(f"- **{c['name']}**: no import cycle among the modules directly inside")
        out += [f"  `{m}`" + ("," if i < len(c["ancestors"]) - 1 else ".") for i, m in enumerate(c["ancestors"])]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
