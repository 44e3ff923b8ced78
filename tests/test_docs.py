"""The guide stays a guide: the generated pages (docs/recipes.md from the config dataclasses,
docs/layers.md from pyproject.toml's import contracts) are current, every recipe key has a meaning,
README.md stays short, no page has a line over 200 characters, and every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_recipes_page_is_current_and_every_key_has_a_meaning():
    from curation.cli.recipes_doc import _stages, render, rows

    page = render()
    assert (ROOT / "docs" / "recipes.md").read_text() == page, \
        "docs/recipes.md is stale: python -m curation.cli.recipes_doc > docs/recipes.md"
    seen: dict = {}
    keys = [(stage, key, meaning) for stage, _, cls in _stages() for key, _, _, meaning in rows(cls, "", seen, stage)]
    assert len(keys) > 300  # every stage's keys, nested ones included
    blank = [f"{stage}: {key}" for stage, key, meaning in keys if not meaning.strip()]
    assert not blank, f"recipe keys without a meaning (add a comment beside the field): {blank[:10]}"
    for key in ("download.allow_private_addresses", "template", "near_caption.threshold", "l_max"):
        assert f"- `{key}` (" in page, key


def test_layers_page_is_current():
    from curation.cli.layers_doc import render

    assert (ROOT / "docs" / "layers.md").read_text() == render(), \
        "docs/layers.md is stale: python -m curation.cli.layers_doc > docs/layers.md"


def test_readme_is_short_and_no_page_has_a_line_over_200_characters():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 220
    long = [f"{p.name}:{i}" for p in PAGES for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 200]
    assert not long, long


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: {target}"
