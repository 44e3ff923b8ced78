"""Raw rows out of metadata and conversation files (parquet, csv / tsv, jsonl, and `.json`: a JSON
array of rows, as LLaVA and ShareGPT ship them, streamed, or jsonl under a .json name), one at a time
with their index in the file, so every row can be accounted for; a row that cannot be parsed is a
`RowError` value, never an exception, and rows the reader cannot reach (a corrupt row group, a stream
that breaks) are `Unread` values. Also where a file's name is taken from: relative to the input root."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from typing import IO, Any, Iterator

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class RowError(Exception):
    """A row that cannot be parsed; the message becomes the rejection detail."""

    reason = "malformed_row"


class Unread(RowError):
    """Rows the reader could not reach: one per row of a parquet row group that fails to decode (the
    footer knows how many), or, for line formats, one for the whole unread rest of the stream (its row
    count cannot be known), its detail naming the byte offset where reading stopped."""

    reason = "unreadable_file"


_GLOB_CHARS = "*?[{"


def input_root(patterns: list[str]) -> str:
    """The folder input files are named relative to: the fixed prefix of the glob (up to its last
    `/` before any wildcard), the longest common folder of them given several; '' if none."""
    roots = []
    for pattern in patterns:
        cut = min((i for i in (pattern.find(c) for c in _GLOB_CHARS) if i >= 0), default=len(pattern))
        roots.append(pattern[:pattern.rfind("/", 0, cut) + 1])
    common = roots[0] if len(roots) == 1 else _common_prefix(roots)
    return common[:common.rfind("/") + 1]


def _common_prefix(names: list[str]) -> str:
    first, last = min(names, default=""), max(names, default="")
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def relative_name(path: str, root: str) -> str:
    """`path` as recorded in `source_file`: relative to the input root (the whole path outside it)."""
    return path[len(root):] if root and path.startswith(root) else path


def detect_format(name: str, declared: str = "auto") -> str:
    """Format from the config, else from the file extension (a .gz suffix is looked through)."""
    if declared != "auto":
        return declared
    base = name.lower().removesuffix(".gz").removesuffix(".zst")
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".json", "json")):
        if base.endswith(ext):
            return fmt
    raise ValueError(f"{name}: cannot tell the metadata format from the extension; set source.format")


@dataclass(frozen=True)
class Split:
    """One work item of an input file (`plan_splits`): its rows from `first_row` on, as parquet row
    groups [start, stop) or the byte range [start, stop) of a line format (a csv's header, bytes
    [0, header_end), read first); stop -1: the whole file, as one item."""

    first_row: int = 0
    start: int = 0
    stop: int = -1
    header_end: int = 0


WHOLE = Split()
_COMPRESSED = (".gz", ".zst", ".bz2", ".xz", ".lz4", ".deflate", ".zip")


def iter_raw_rows(f: IO[bytes], fmt: str, parquet_batch_rows: int = 8192,
                  split: Split = WHOLE) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Yield (row index in the file, raw mapping, RowError or Unread) for every row of a metadata
    file, or of one `split` of it (parquet decoded `parquet_batch_rows` at a time: few where rows
    hold images); a reader failure is data."""
    if fmt == "parquet":
        yield from _parquet_rows(f, parquet_batch_rows, split)
        return
    readers = {"csv": lambda s: _csv_rows(s, ","), "tsv": lambda s: _csv_rows(s, "\t"), "jsonl": _jsonl_rows,
               "json": _json_rows}
    if fmt not in readers:
        raise ValueError(f"unknown metadata format {fmt!r}")
    head = b""
    if split.stop >= 0:  # a byte range: the csv header, then the range
        f.seek(0)
        head = f.read(split.header_end)
        f.seek(split.start)
        f = _Range(f, split.stop - split.start)
    stream = _Prefixed(head, f)  # counts the bytes read, for the detail of a stream that breaks
    index = split.first_row
    try:
        for i, row in readers[fmt](io.BufferedReader(stream)):
            yield split.first_row + i, row
            index = split.first_row + i + 1
        return
    except Exception as err:  # noqa: BLE001 - the rest of the stream cannot be read: one row says so
        at = stream.offset - len(head) + (split.start if split.stop >= 0 else 0)
        yield index, Unread(f"{fmt} reader stopped after byte {at} of the (decompressed) stream; rows from {index} "
                            f"on{' in its split' if split.stop >= 0 else ''} are unread (their count is unknown): {_why(err)}")


def plan_splits(f: IO[bytes], fmt: str, name: str, split_rows: int) -> list[Split]:
    """Cut one input file into work items of about `split_rows` rows, so one big file keeps many
    workers busy: parquet by row groups (from the footer), csv / tsv / jsonl by byte ranges at row
    boundaries found in one pass over the bytes (the csv module's own records; rows counted as the
    reader counts them, so `source_row` stays the row's index in its file). Compressed files, JSON
    arrays, a file the pass cannot read and `split_rows` 0 are one item."""
    if split_rows <= 0 or fmt == "json" or name.lower().endswith(_COMPRESSED):
        return [WHOLE]
    try:
        if fmt == "parquet":
            return _parquet_splits(f, split_rows)
        return _line_splits(f, fmt, split_rows)
    except Exception:  # noqa: BLE001 - the reader of the whole file reports what is wrong with it
        return [WHOLE]


def _parquet_splits(f: IO[bytes], split_rows: int) -> list[Split]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(f).metadata
    splits, first, start, rows = [], 0, 0, 0
    for group in range(meta.num_row_groups):
        rows += meta.row_group(group).num_rows
        if rows - first >= split_rows or group == meta.num_row_groups - 1:
            splits.append(Split(first, start, group + 1))
            first, start = rows, group + 1
    return splits if len(splits) > 1 else [WHOLE]


def _line_splits(f: IO[bytes], fmt: str, split_rows: int) -> list[Split]:
    offset, header_end = 0, 0

    def lines():  # the file's lines as text, `offset` at the end of the last one handed out
        nonlocal offset
        for k, line in enumerate(f):
            offset += len(line)
            if fmt != "jsonl" and b"\r" in line.rstrip(b"\r\n"):
                raise ValueError("a lone CR: the byte scan and the csv text reader could disagree on lines")
            yield line.decode("utf-8-sig" if k == 0 else "utf-8", "surrogateescape")

    if fmt == "jsonl":
        records = (line.strip(" \t\n\r\x0b\x0c") for line in lines())  # ASCII whitespace only, as _jsonl_rows' bytes.strip()
    else:
        records = csv.reader(lines(), delimiter="\t" if fmt == "tsv" else ",")  # csv.Error: one item
        if next(records, None) is None:
            return [WHOLE]
        header_end = offset
    splits, first, start, rows = [], 0, header_end, 0
    for record in records:
        if not record:
            continue  # a blank line, not a row (as the readers skip it)
        rows += 1
        if rows - first == split_rows:
            splits.append(Split(first, start, offset, header_end))
            first, start = rows, offset
    if rows > first:
        splits.append(Split(first, start, offset, header_end))
    return splits if len(splits) > 1 else [WHOLE]


def _why(err: Exception) -> str:
    """A reader failure as one short line of a rejection's detail."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _parquet_rows(f: IO[bytes], batch_rows: int, split: Split) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Row group by row group (those of `split`): a group that fails to decode is one `Unread` per
    row it did not yield (the footer knows how many), and the next group is read as usual."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as err:  # noqa: BLE001 - no footer: how many rows it held is unknown
        yield split.first_row, Unread(f"parquet reader stopped: {_why(err)} (footer unreadable, row count unknown: "
                                      "one row for the file)")
        return
    start = split.first_row
    groups = range(pf.metadata.num_row_groups) if split.stop < 0 else range(split.start, split.stop)
    for group in groups:
        rows = pf.metadata.row_group(group).num_rows
        index = start
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group]):
                for row in batch.to_pylist():
                    yield index, row
                    index += 1
        except Exception as err:  # noqa: BLE001 - that row group's remaining rows are unread
            detail = f"parquet reader stopped: {_why(err)} (row group {group}, rows {start}..{start + rows - 1})"
            for i in range(index, start + rows):
                yield i, Unread(detail)
        start += rows


def _has_surrogates(values: Any) -> bool:
    return any(isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


def _csv_rows(f: IO[bytes], delimiter: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    index = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield index, RowError(f"csv: {err}")
            index += 1
            continue
        if not values:
            continue  # blank line, not a row
        if len(values) != len(header):
            yield index, RowError(f"csv: {len(values)} fields, header has {len(header)}")
        elif _has_surrogates(values):
            yield index, RowError("invalid UTF-8 in row")
        else:
            yield index, dict(zip(header, values))
        index += 1


def _jsonl_rows(f: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    index = 0
    for line in f:
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield index, RowError(f"invalid UTF-8 at byte {err.start}")
        except json.JSONDecodeError as err:
            yield index, RowError(f"invalid JSON: {err.msg} at column {err.colno}")
        else:
            yield index, row if isinstance(row, dict) else RowError(f"JSON line is a {type(row).__name__}, not an object")
        index += 1


class _Prefixed(io.RawIOBase):
    """Bytes already read from a file, then the rest of it; `offset` counts the bytes handed out."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest
        self.offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
        else:
            data = self.rest.read(len(b))
            n = len(data)
            b[:n] = data
        self.offset += n
        return n


class _Range(io.RawIOBase):
    """The next `size` bytes of a file (positioned at the range's start), then end of file."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(min(len(b), self.left)) if self.left > 0 else b""
        n = len(data)
        b[:n] = data
        self.left -= n
        return n


MAX_JSON_ROW = 64 << 20  # characters one array element may take


def _json_rows(f: IO[bytes], chunk: int = 1 << 20) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """A `.json` file: a JSON array of rows, decoded one element at a time (never the whole file in
    memory); a file that does not start with `[` is read as jsonl. A syntax error inside the array
    ends the file: the rest cannot be told apart, so it raises (one `unreadable_file` rejection)."""
    first = f.read(4096)
    stream = io.BufferedReader(_Prefixed(first, f))  # any file object (Beam's have no peek)
    if not first.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        yield from _jsonl_rows(stream)
        return
    text = io.TextIOWrapper(stream, encoding="utf-8-sig")
    decoder = json.JSONDecoder()
    buf = text.read(chunk)
    pos, index, done = buf.index("[") + 1, 0, False
    while True:
        while True:  # skip whitespace and the comma before the next element
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) or done:
                break
            more = text.read(chunk)
            done = not more
            buf, pos = buf[pos:] + more, 0
        if pos >= len(buf):
            raise ValueError(f"JSON array ends without ']' after {index} rows")
        if buf[pos] == "]":
            return
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as err:
                if done or len(buf) - pos > MAX_JSON_ROW:  # a broken element, not one cut by the chunk
                    raise ValueError(f"invalid JSON in array element {index}: {err.msg}") from None
                more = text.read(chunk)  # the element may go on in the next chunk
                done = not more
                buf, pos = buf[pos:] + more, 0
        yield index, value if isinstance(value, dict) else RowError(f"array element is a {type(value).__name__}, not an object")
        index += 1
        pos = end
