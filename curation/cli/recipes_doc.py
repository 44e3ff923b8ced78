"""docs/recipes.md: every recipe key of every stage, with its type, default and meaning, read from
the config dataclasses themselves (a field's meaning is the comment beside or above it, else its
class docstring's first line), so the page cannot drift from the code
(`python -m curation.cli.recipes_doc > docs/recipes.md`; tests/test_docs.py keeps it current)."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from typing import Any, Iterator


def _stages() -> list[tuple[str, str, type]]:
    """(stage, its recipe in configs/, its config class), in pipeline order."""
    from curation.annotate.config import AnnotateConfig
    from curation.annotate.translate import TranslateConfig
    from curation.ingest.config import IngestConfig
    from curation.mmpr.config import MmprConfig
    from curation.plan.config import PlanConfig
    from filters.dedup.config import DedupConfig
    from model.config import TrainConfig
    from packing.config import PackConfig

    return [("ingest", "configs/laion.yaml, coyo.yaml, datacomp.yaml", IngestConfig),
            ("plan", "configs/plan.yaml", PlanConfig), ("dedup", "configs/dedup.yaml", DedupConfig),
            ("annotate", "configs/annotate.yaml", AnnotateConfig), ("translate", "configs/translate.yaml", TranslateConfig),
            ("mmpr", "configs/mmpr.yaml", MmprConfig), ("pack", "configs/pack.yaml", PackConfig),
            ("check / train / generate", "configs/train.yaml", TrainConfig)]


def _comments(cls: type) -> dict[str, str]:
    """field name -> the comment on its line, else the comment block right above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comment_at: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comment_at[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    field_line = re.compile(r"^    (\w+)\s*:")
    for no, line in enumerate(lines, 1):
        m = field_line.match(line)
        if not m:
            continue
        if no in comment_at and not line.lstrip().startswith("#"):
            out[m.group(1)] = comment_at[no]
            continue
        block, k = [], no - 1
        while k in comment_at and lines[k - 1].lstrip().startswith("#"):
            block.insert(0, comment_at[k])
            k -= 1
        if block:
            out[m.group(1)] = " ".join(block)
    return out


def _dataclass_of(tp: Any) -> type | None:
    """The config dataclass a field holds (directly, optional, or as list / dict values)."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        inner = _dataclass_of(arg)
        if inner is not None:
            return inner
    return None


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    text = text or str(tp).replace("typing.", "")
    return re.sub(r"\b(\w+\.)+(\w+)", r"\2", text).replace("NoneType", "None")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        try:
            value = f.default_factory()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - a nested recipe valid only with some keys given
            return "nested, below"
        if dataclasses.is_dataclass(value):
            return "nested, below"
    else:
        return "required"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rows(cls: type, prefix: str = "", seen: dict[type, tuple[str, str]] | None = None,
         stage: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every field of `cls`, nested recipes after their parent key;
    a nested recipe listed before (`seen`: class -> (stage, key); key "" for a stage's own recipe)
    is named, not repeated."""
    seen = {} if seen is None else seen
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    nested = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or not f.init:
            continue
        tp = hints.get(f.name, f.type)
        inner = _dataclass_of(tp)
        meaning = notes.get(f.name, "")
        if inner is not None and not meaning:
            meaning = (inspect.getdoc(inner) or "").split("\n\n")[0].replace("\n", " ")
        if inner is not None and inner in seen:
            where, key = seen[inner]
            meaning = f"{meaning} Its keys: as `{key}` under {where}." if key else \
                f"{meaning} Its keys: {where}'s recipe, below or above."
            meaning = meaning.strip()
        elif inner is not None:
            seen[inner] = (stage, f"{prefix}{f.name}")
            nested.append((f.name, inner, typing.get_origin(tp) in (list, dict)))
        yield f"{prefix}{f.name}", _type_name(tp), _default(f), meaning
    for name, inner, many in nested:
        yield from rows(inner, f"{prefix}{name}{'[]' if many else ''}.", seen, stage)


def _entry(key: str, tp: str, default: str, meaning: str) -> list[str]:
    """One key as a bullet: `key` (type, default): meaning, wrapped to 100 columns."""
    if default in ("required", "nested, below"):
        head = f"- `{key}` (`{tp}`, {default})"
    else:
        head = f"- `{key}` (`{tp}`, default `{default}`)"
    return textwrap.wrap(f"{head}: {meaning}" if meaning else head, 100, subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)


def render() -> str:
    out = ["# Recipes", "",
           "Every key of every stage's recipe, with its type, default and meaning, generated from the config",
           "dataclasses (`python -m curation.cli.recipes_doc > docs/recipes.md`; a test fails when this page is",
           "stale). A key left out of a YAML recipe takes its default; an unknown key or a bad value fails at load",
           "with the key named. Nested recipes are listed as `parent.key`; `[]` marks a list of them.", ""]
    stages = _stages()
    seen = {cls: (stage, "") for stage, _, cls in stages}  # a stage's recipe inside another: named
    for stage, files, cls in stages:
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        out += [f"## {stage}", "", *textwrap.wrap(f"`{cls.__module__}.{cls.__name__}` ({files}). {doc}", 100), ""]
        for k, t, d, m in rows(cls, "", seen, stage):
            out += _entry(k, t, d, m)
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
