"""Build filter objects from YAML specs: a list of `{name: {params}}` single-key mappings."""

from __future__ import annotations

from typing import Any

from curation.core.config import ConfigError, build
from filters.quality.language import LanguageFilter
from filters.quality.metadata import CaptionLength, ClipSimilarity, DeclaredSize, Nsfw, PlaceholderCaption, Watermark
from filters.quality.pixels import AspectRatio, BlankImage, MaxArea, MinSide

METADATA_FILTERS = {
    "caption_length": CaptionLength,
    "placeholder_caption": PlaceholderCaption,
    "declared_size": DeclaredSize,
    "nsfw": Nsfw,
    "watermark": Watermark,
    "clip_similarity": ClipSimilarity,
    "language": LanguageFilter,
}
PIXEL_FILTERS = {"min_side": MinSide, "aspect_ratio": AspectRatio, "max_area": MaxArea, "blank_image": BlankImage}
_BY_SECTION = {"metadata_filters": METADATA_FILTERS, "pixel_filters": PIXEL_FILTERS}


def build_filters(specs: list[dict[str, Any]], section: str) -> list[Any]:
    """Turn `[{caption_length: {min_words: 2}}, ...]` into filter objects, in order."""
    known = _BY_SECTION[section]
    out = []
    for i, spec in enumerate(specs):
        where = f"{section}[{i}]"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"{where}: expected a single-key mapping like {{{next(iter(known))}: {{...}}}}, got {spec!r}")
        (name, params), = spec.items()
        if name not in known:
            raise ConfigError(f"{where}.{name}: unknown filter (expected one of: {', '.join(sorted(known))})")
        out.append(build(known[name], params, f"{where}.{name}"))
    return out
