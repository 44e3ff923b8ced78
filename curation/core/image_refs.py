"""Image references in rows: a path, a Hugging Face image struct (`{"bytes", "path"}`, as datasets
write Image columns to parquet) or a list of them. Embedded bytes are staged to files by the stage
that reads them, so every later step sees paths. A path may name a member of a shard's tar
(`member_ref`): annotate keeps its images only inside its shards."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import IO, Any, Callable


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


# A kept image inside a shard's tar, named in a conversation row instead of a loose file:
# "{tar}!/{member}@{offset}:{size}" (offset and size of the member's bytes in the uncompressed tar),
# e.g. "annotated-00000-of-00004.tar!/3f2a9c.jpg@1536:84211". Relative like any image path.
_MEMBER_REF = re.compile(r"^(?P<tar>.+\.tar)!/(?P<member>[^/]+)@(?P<offset>\d+):(?P<size>\d+)$")


@dataclass(frozen=True)
class MemberRef:
    tar: str
    member: str
    offset: int
    size: int


def member_ref(tar: str, member: str, offset: int, size: int) -> str:
    return f"{tar}!/{member}@{offset}:{size}"


def parse_member_ref(path: str) -> MemberRef | None:
    """The tar member an image path names, or None for a plain path."""
    m = _MEMBER_REF.match(path)
    if m is None:
        return None
    return MemberRef(m["tar"], m["member"], int(m["offset"]), int(m["size"]))


def read_range(f: IO[bytes], offset: int, size: int, where: str) -> bytes:
    """`size` bytes at `offset` of an open file (reads may come back short on a stream: read on);
    OSError naming `where` if the file ends first."""
    f.seek(offset)
    chunks, got = [], 0
    while got < size:
        chunk = f.read(size - got)
        if not chunk:
            raise OSError(f"{where}: {size} bytes expected at {offset}, the file ends after {got}")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_image_bytes(path: str, open_file: Callable[[str], IO[bytes]], limit: int = -1) -> bytes:
    """An image's bytes by path (at most `limit` of them, -1: all): a plain file, or a tar member
    by its byte range (one ranged read), through `open_file` (local `open`, or a store's opener)."""
    ref = parse_member_ref(path)
    with open_file(ref.tar if ref else path) as f:
        if ref is None:
            return f.read(limit)
        return read_range(f, ref.offset, ref.size if limit < 0 else min(ref.size, limit), ref.tar)
