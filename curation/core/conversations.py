"""Records at the pack stage's input boundary: conversations and preference pairs, declared once.

InternVL / LLaVA conversation rows (`{"id", "image", "conversations": [{"from", "value"}]}`, with
InternVL 3.5's `"from": "pretrain"` turns), LLaMA-Factory / ShareGPT-OpenAI rows (`{"messages":
[{"role", "content"}], "images"}`, content a string with `<image>` or OpenAI content parts) and
InternVL MPO preference rows (`{"id", "image", "question", "chosen", "rejected", ...}`) are parsed
here, from jsonl, JSON arrays or Hugging Face parquet (image structs `{bytes, path}` become
`embedded` images the pack stage stages to files); a row that cannot be used becomes a `Rejection`
with a reason code, never an error.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

from curation.core.image_refs import image_values, split_images
from curation.core.records import Rejection, RowRef, UidConfig, hash_uid
from curation.core.rows import RowError, iter_raw_rows

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
         "pretrain": "pretrain"}
IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # user | assistant | system | pretrain
    value: str


@dataclass(slots=True)
class Conversation:
    """One SFT or pretrain sample: its turns and the images its `<image>` placeholders refer to."""

    uid: str
    source_file: str
    source_row: int
    images: list[str]
    turns: list[Turn]
    embedded: list[bytes | None] = field(default_factory=list)  # image k's bytes when the row carried them
    tiling: dict[str, Any] | None = None  # a meta dataset's tile budget ({max_num, min_num, use_thumbnail})

    @property
    def order_key(self) -> tuple[str, int]:
        return self.source_file, self.source_row


@dataclass(slots=True)
class PreferencePair:
    """One MPO preference pair: chosen and rejected answers to one question, packed as one unit."""

    uid: str
    source_file: str
    source_row: int
    images: list[str]
    question: str
    chosen: str
    rejected: str
    method: str = ""
    answer_gt: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    tiling: dict[str, Any] | None = None  # the policy's tiling ({max_num, min_num, use_thumbnail}), applied by pack
    embedded: list[bytes | None] = field(default_factory=list)  # image k's bytes when the row carried them

    @property
    def order_key(self) -> tuple[str, int]:
        return self.source_file, self.source_row


PackInput = Conversation | PreferencePair


def _digest(value: Any) -> str:
    """How a content hash sees what JSON cannot hold: image bytes by their own hash, the rest as text."""
    if isinstance(value, (bytes, bytearray)):
        return "blake2b:" + hashlib.blake2b(value, digest_size=16).hexdigest()
    return str(value)


def row_uid(raw: dict[str, Any], source_file: str, index: int, uid: UidConfig = UidConfig("none"),
            source: str = "") -> str:
    """The row's own id when it has one, in its namespace (`uid`: per file, per source or none),
    else a hash of the row's content (stable across reruns, global by itself)."""
    rid = raw.get("id")
    if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip():
        return uid.uid(str(rid).strip(), source, source_file)
    blob = json.dumps(raw, sort_keys=True, ensure_ascii=False, default=_digest)
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _part_image(part: dict[str, Any]) -> str | bytes:
    """The image of an OpenAI-style content part: a path or URL, or a data URI's bytes."""
    import base64

    ref = part.get("image_url", part.get("image", part.get("url", part.get("path"))))
    if isinstance(ref, dict):
        ref = ref.get("url", ref.get("path", ref.get("bytes")))
    if isinstance(ref, (bytes, bytearray)) and ref:
        return bytes(ref)
    if not isinstance(ref, str) or not ref:
        raise ValueError("an image content part must name its image (image_url.url, image or path)")
    if ref.startswith("data:"):
        try:
            return base64.b64decode(ref.split(",", 1)[1], validate=True)
        except (IndexError, ValueError):
            raise ValueError("an image content part holds a data URI that is not base64") from None
    return ref


def _turns(raw: dict[str, Any], key: str) -> tuple[list[Turn], list[str | bytes]]:
    """Turns from `conversations` / `messages`: {from, value} or {role, content}, content a string
    or content parts (`text`, `image_url` / `image`: a `<image>` placeholder where the image was)."""
    turns, images = [], []
    convs = raw.get(key)
    if not isinstance(convs, list) or not convs:
        raise ValueError(f"`{key}` must be a non-empty list")
    for i, t in enumerate(convs):
        role = t.get("from", t.get("role")) if isinstance(t, dict) else None
        value = t.get("value", t.get("content")) if isinstance(t, dict) else None
        if isinstance(value, list):
            pieces = []
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif kind in ("image_url", "image"):
                    images.append(_part_image(part))
                    pieces.append(IMAGE_PLACEHOLDER)
                else:
                    raise ValueError(f"turn {i}: content parts must be {{type: text | image_url | image}}")
            value = "\n".join(pieces)
        if role not in ROLES or not isinstance(value, str):
            raise ValueError(f"turn {i} must be {{'from' / 'role': one of {sorted(ROLES)}, 'value' / 'content': "
                             "string or content parts}")
        turns.append(Turn(ROLES[role], value))
    return turns, images


MAX_ROW_TILES = 64  # a row's own max_num: InternVL's dynamic tiling searches max_num^2 grids, a hostile row stalls no worker


def _tiling(value: Any) -> dict[str, Any] | None:
    """A row's own tiling (an MPO row's policy view, a video's one tile per frame), checked:
    {max_num >= min_num >= 1, use_thumbnail: bool}."""
    if value is None:
        return None
    ok = (isinstance(value, dict) and set(value) <= {"max_num", "min_num", "use_thumbnail"}
          and isinstance(value.get("max_num"), int) and isinstance(value.get("min_num", 1), int)
          and isinstance(value.get("use_thumbnail", True), bool)
          and 1 <= value.get("min_num", 1) <= value["max_num"] <= MAX_ROW_TILES)
    if not ok:
        raise ValueError(f"`tiling` must be {{max_num: int in min_num..{MAX_ROW_TILES}, min_num: int >= 1, "
                         "use_thumbnail: bool}")
    return {"max_num": value["max_num"], "min_num": value.get("min_num", 1), "use_thumbnail": value.get("use_thumbnail", True)}


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string")
    return value


def parse_row(raw: dict[str, Any] | RowError, source_file: str, index: int, uid_cfg: UidConfig = UidConfig("none"),
              source: str = "") -> PackInput | Rejection:
    """One jsonl row -> Conversation, PreferencePair or a `malformed_row` rejection (`unreadable_file`
    for a row the reader never reached); its id namespaced by `uid_cfg`."""
    if isinstance(raw, RowError):
        return Rejection(RowRef(hash_uid(f"row:{source_file}:{index}", ""), source_file, index), "read", raw.reason, str(raw))
    uid = row_uid(raw, source_file, index, uid_cfg, source)
    try:
        images, embedded = split_images(image_values(raw.get("image", raw.get("images")), "image"))
        if "chosen" in raw or "rejected" in raw:
            meta = {k: raw[k] for k in ("chosen_meta", "rejected_meta") if k in raw}
            gt = raw.get("answer_gt")
            return PreferencePair(uid, source_file, index, images, _text(raw, "question"), _text(raw, "chosen"),
                                  _text(raw, "rejected"), str(raw.get("method") or ""),
                                  None if gt is None else str(gt), meta, _tiling(raw.get("tiling")), embedded)
        key = next((k for k in ("conversations", "messages") if k in raw), None)
        if key is None:
            raise ValueError("not a conversation or preference row: no `conversations`, `messages` or `chosen` / "
                             f"`rejected` (keys: {', '.join(sorted(raw)) or 'none'})")
        turns, part_images = _turns(raw, key)
        if part_images:
            if images:
                raise ValueError("images given both in content parts and in `images`")
            images, embedded = split_images(part_images)
        return Conversation(uid, source_file, index, images, turns, embedded, _tiling(raw.get("tiling")))
    except ValueError as err:
        return Rejection(RowRef(uid, source_file, index), "read", "malformed_row", str(err))


def read_conversations(f: IO[bytes], name: str, fmt: str = "auto", source_file: str | None = None,
                       uid: UidConfig = UidConfig("none"), source: str = "") -> Iterator[PackInput | Rejection]:
    """Every row of a conversation / preference file (jsonl, JSON array or parquet, by extension
    unless `fmt` says), parsed or rejected, `source_file` its name relative to the input root
    (default: its base name) and ids namespaced by `uid` (`source`: the name of the dataset it
    belongs to); rows the reader cannot reach are `unreadable_file` rejections (rows.iter_raw_rows)."""
    from curation.core.rows import detect_format

    base = source_file if source_file is not None else posixpath.basename(name.rstrip("/"))
    next_index = 0
    try:
        try:
            fmt = detect_format(name, fmt)
        except ValueError:  # no telling extension: conversation files are jsonl unless they say otherwise
            fmt = "jsonl"
        for index, raw in iter_raw_rows(f, fmt, parquet_batch_rows=64):
            next_index = index + 1
            yield parse_row(raw, base, index, uid, source)
    except Exception as err:  # noqa: BLE001 - any reader failure is data, not a crash
        yield Rejection(RowRef(hash_uid(f"row:{base}:{next_index}", ""), base, next_index), "read", "unreadable_file",
                        f"{fmt} reader stopped: {type(err).__name__}: {str(err)[:200]}")
