"""Read metadata files (parquet, csv/tsv, jsonl) and map rows onto `Pair` records.

Rows are yielded one at a time with their index in the file, so every input row can be
accounted for; a row that cannot be parsed becomes a `Rejection("malformed_row")`, never an error.
"""

from __future__ import annotations

import math
import posixpath
from typing import IO, Any, Iterator

from curation.core.rows import WHOLE, RowError, Split, detect_format, iter_raw_rows
from curation.ingest.config import SourceConfig
from curation.core.records import BOX_FIELDS, NUMERIC_FIELDS, TEXT_FIELDS, Pair, Rejection, hash_uid


def _to_number(value: Any, tp: type) -> int | float | None:
    """Lenient numeric cast: int or float or numeric string; NaN, empty and junk become None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return int(round(number)) if tp is int else number


def _clean_text(value: Any) -> str:
    """Caption text: str, with NUL and other C0 control characters (but \\t and \\n) removed."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else str(value)
    return "".join(ch for ch in text if ch >= " " or ch in "\t\n")


def _boxes(value: Any) -> list[list[float]] | None:
    """A box list column (DataComp's `face_bboxes`: [[x0, y0, x1, y1], ...], relative; a list, a
    numpy array from parquet, or JSON text) as plain lists of 4 floats; entries that are not four
    numbers are dropped, and nothing usable is None. Bounds are checked where the boxes are used."""
    import json

    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    out = []
    for box in value if isinstance(value, (list, tuple)) else []:
        if hasattr(box, "tolist"):
            box = box.tolist()
        if isinstance(box, (list, tuple)) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            out.append([float(v) for v in box])
    return out or None


def decode_references(text: str) -> str:
    """HTML character references in web alt text (`&amp;`, `&#8211;`, `&quot;`) decoded once, as a
    reader sees them: `&amp;amp;` becomes `&amp;`, never `&`. Control characters a reference
    spelled (`&#7;`) are dropped like literal ones."""
    if "&" not in text:
        return text
    import html

    return _clean_text(html.unescape(text))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def _caption_from_conversation(row: dict[str, Any]) -> str:
    for turn in row.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") in ("gpt", "pretrain", "assistant"):
            return str(turn.get("value", ""))
    return ""


def row_to_pair(raw: dict[str, Any] | RowError, cfg: SourceConfig, source_file: str, index: int) -> Pair | Rejection:
    """Map one raw row onto a Pair, or a Rejection that still identifies the row."""
    if isinstance(raw, RowError):  # malformed_row, or unreadable_file for a row the reader never reached
        return Rejection(_placeholder_pair(cfg, source_file, index), "read", raw.reason, str(raw))
    cols = cfg.columns
    try:
        url = raw.get(cols["url"]) if "url" in cols else None
        image_path = raw.get(cols["image_path"]) if "image_path" in cols else None
        if isinstance(image_path, list):
            if len(image_path) != 1:
                raise RowError(f"{len(image_path)} images in one row; ingest takes single-image pairs")
            image_path = image_path[0]
        if cfg.caption_from_conversation:
            caption = _clean_text(_caption_from_conversation(raw))
        else:
            caption = _clean_text(raw.get(cols["caption"])) if "caption" in cols else ""
        raw_caption, caption = caption, decode_references(caption)
        url = _clean_text(url).strip() if url is not None else ""
        image_path = _clean_text(image_path).strip() if image_path is not None else None
        source_id = raw.get(cols["uid"]) if "uid" in cols else None
        locator = url or image_path or ""
        if source_id is not None and str(source_id).strip() and not (isinstance(source_id, float) and math.isnan(source_id)):
            sid = source_id
            if isinstance(sid, float) and sid.is_integer():
                sid = int(sid)
            uid = cfg.uid.uid(str(sid).strip(), cfg.name, source_file)  # surrounding blanks are no part of an id
        else:
            uid = hash_uid(locator, raw_caption)  # the row as its source wrote it: uids stay what they were
        pair = Pair(uid=uid, url=url or (image_path or ""), caption=caption, source=cfg.name,
                    source_file=source_file, source_row=index, image_path=image_path or None,
                    caption_raw=raw_caption if raw_caption != caption else None)
        for name, tp in NUMERIC_FIELDS.items():
            if name in cols:
                setattr(pair, name, _to_number(raw.get(cols[name]), tp))
        for name in TEXT_FIELDS:
            if name in cols and raw.get(cols[name]) is not None:
                setattr(pair, name, _clean_text(raw.get(cols[name])))
        for name in BOX_FIELDS:
            if name in cols:
                setattr(pair, name, _boxes(raw.get(cols[name])))
        if cfg.keep_extra_columns:
            mapped = set(cols.values())
            pair.extra = {str(k): _json_safe(v) for k, v in raw.items() if k not in mapped}
    except RowError as err:
        return Rejection(_placeholder_pair(cfg, source_file, index), "read", "malformed_row", str(err))
    except (TypeError, ValueError, AttributeError) as err:
        return Rejection(_placeholder_pair(cfg, source_file, index), "read", "malformed_row", f"{type(err).__name__}: {err}")
    if not pair.url:
        return Rejection(pair, "read", "missing_url", "no URL or image path in the row")
    return pair


def _placeholder_pair(cfg: SourceConfig, source_file: str, index: int) -> Pair:
    """A Pair for a row we could not read: its uid is a hash of where it came from."""
    uid = hash_uid(f"row:{source_file}:{index}", "")
    return Pair(uid=uid, url="", caption="", source=cfg.name, source_file=source_file, source_row=index)


def read_pairs(f: IO[bytes], cfg: SourceConfig, name: str, source_file: str | None = None,
               split: Split = WHOLE) -> Iterator[Pair | Rejection]:
    """Every row of one metadata file (or of one `split` of it, rows.plan_splits) as a Pair or a
    Rejection, `source_file` its name relative to the input root (default: its base name), with the
    row's index in the file. Rows the reader cannot reach are `unreadable_file`
    rejections: one per row of a parquet row group that fails, one for the unread rest of a line
    format's stream (its detail names the byte offset), one for a file without a readable footer."""
    fmt = detect_format(name, cfg.format)
    base = source_file if source_file is not None else posixpath.basename(name.rstrip("/"))
    next_index = split.first_row
    try:
        for index, raw in iter_raw_rows(f, fmt, split=split):
            next_index = index + 1
            yield row_to_pair(raw, cfg, base, index)
    except Exception as err:  # noqa: BLE001 - any reader failure is data, not a crash
        detail = f"{fmt} reader stopped: {type(err).__name__}: {str(err)[:200]}"
        yield Rejection(_placeholder_pair(cfg, base, next_index), "read", "unreadable_file", detail)
