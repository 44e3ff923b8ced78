"""Records at the pack stage's input boundary: conversations and preference pairs, declared once.

InternVL / LLaVA conversation jsonl (`{"id", "image", "conversations": [{"from", "value"}]}`, with
InternVL 3.5's `"from": "pretrain"` turns) and InternVL MPO preference jsonl (`{"id", "image",
"question", "chosen", "rejected", ...}`) are parsed here; a row that cannot be used becomes a
`Rejection` with a reason code, never an error.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

from curation.core.records import Rejection, RowRef, clean_uid, hash_uid
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

    @property
    def order_key(self) -> tuple[str, int]:
        return self.source_file, self.source_row


PackInput = Conversation | PreferencePair


def row_uid(raw: dict[str, Any], source_file: str, index: int) -> str:
    """The row's own id when it has one, else a hash of the row's content (stable across reruns)."""
    rid = raw.get("id")
    if isinstance(rid, (str, int)) and not isinstance(rid, bool) and clean_uid(str(rid)):
        return clean_uid(str(rid))
    blob = json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _images(raw: dict[str, Any]) -> list[str]:
    image = raw.get("image", raw.get("images"))
    if image is None or image == "":
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and all(isinstance(p, str) and p for p in image):
        return list(image)
    raise ValueError("`image` must be a path or a list of paths")


def _tiling(value: Any) -> dict[str, Any] | None:
    """An MPO row's recorded tiling, checked: {max_num >= min_num >= 1, use_thumbnail: bool}."""
    if value is None:
        return None
    ok = (isinstance(value, dict) and set(value) <= {"max_num", "min_num", "use_thumbnail"}
          and isinstance(value.get("max_num"), int) and isinstance(value.get("min_num", 1), int)
          and isinstance(value.get("use_thumbnail", True), bool) and 1 <= value.get("min_num", 1) <= value["max_num"])
    if not ok:
        raise ValueError("`tiling` must be {max_num: int >= min_num >= 1, min_num: int, use_thumbnail: bool}")
    return {"max_num": value["max_num"], "min_num": value.get("min_num", 1), "use_thumbnail": value.get("use_thumbnail", True)}


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string")
    return value


def parse_row(raw: dict[str, Any] | RowError, source_file: str, index: int) -> PackInput | Rejection:
    """One jsonl row -> Conversation, PreferencePair or a `malformed_row` rejection."""
    if isinstance(raw, RowError):
        return Rejection(RowRef(hash_uid(f"row:{source_file}:{index}", ""), source_file, index), "read", "malformed_row", str(raw))
    uid = row_uid(raw, source_file, index)
    try:
        images = _images(raw)
        if "chosen" in raw or "rejected" in raw:
            meta = {k: raw[k] for k in ("chosen_meta", "rejected_meta") if k in raw}
            gt = raw.get("answer_gt")
            return PreferencePair(uid, source_file, index, images, _text(raw, "question"), _text(raw, "chosen"),
                                  _text(raw, "rejected"), str(raw.get("method") or ""),
                                  None if gt is None else str(gt), meta, _tiling(raw.get("tiling")))
        convs = raw.get("conversations")
        if not isinstance(convs, list) or not convs:
            raise ValueError("`conversations` must be a non-empty list")
        turns = []
        for i, t in enumerate(convs):
            if not isinstance(t, dict) or not isinstance(t.get("value"), str) or t.get("from") not in ROLES:
                raise ValueError(f"turn {i} must be {{'from': one of {sorted(ROLES)}, 'value': string}}")
            turns.append(Turn(ROLES[t["from"]], t["value"]))
        return Conversation(uid, source_file, index, images, turns)
    except ValueError as err:
        return Rejection(RowRef(uid, source_file, index), "read", "malformed_row", str(err))


def read_conversations(f: IO[bytes], name: str) -> Iterator[PackInput | Rejection]:
    """Every row of a conversation / preference jsonl file, parsed or rejected; a file that stops
    being readable (bad compression, say) ends with one `unreadable_file` rejection."""
    base = posixpath.basename(name.rstrip("/"))
    next_index = 0
    try:
        for index, raw in iter_raw_rows(f, "jsonl"):
            next_index = index + 1
            yield parse_row(raw, base, index)
    except Exception as err:  # noqa: BLE001 - any reader failure is data, not a crash
        yield Rejection(RowRef(hash_uid(f"row:{base}:{next_index}", ""), base, next_index), "read", "unreadable_file",
                            f"jsonl reader stopped: {type(err).__name__}: {str(err)[:200]}")
