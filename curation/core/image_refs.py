"""Image references in rows: a path, a Hugging Face image struct (`{"bytes", "path"}`, as datasets
write Image columns to parquet) or a list of them. Embedded bytes are staged to files by the stage
that reads them, so every later step sees paths."""

from __future__ import annotations

import hashlib
from typing import Any


def image_values(value: Any, key: str) -> list[str | bytes]:
    """A row's image field as paths or bytes: a path, a Hugging Face image struct (`{"bytes",
    "path"}`, bytes first), or a list of them; None / "" is no image."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str | bytes] = []
    for v in items:
        if isinstance(v, str) and v:
            out.append(v)
        elif isinstance(v, dict) and isinstance(v.get("bytes"), (bytes, bytearray)) and v["bytes"]:
            out.append(bytes(v["bytes"]))
        elif isinstance(v, dict) and isinstance(v.get("path"), str) and v["path"]:
            out.append(v["path"])
        else:
            raise ValueError(f"`{key}` must be a path, an image struct {{bytes, path}} or a list of them")
    return out


def split_images(values: list[str | bytes]) -> tuple[list[str], list[bytes | None]]:
    """Image values as (paths, embedded): `embedded:k` stands in the paths for image k given as
    bytes, whose bytes are `embedded[k]` (None for a real path)."""
    return ([v if isinstance(v, str) else f"embedded:{k}" for k, v in enumerate(values)],
            [v if isinstance(v, bytes) else None for v in values])


def embedded_name(uid: str, k: int, data: bytes, ext: str) -> str:
    """A staged file name for a row's embedded image k: stable across reruns, distinct per content."""
    return f"{uid}-{k}-{hashlib.blake2b(data, digest_size=6).hexdigest()}.{ext}"
