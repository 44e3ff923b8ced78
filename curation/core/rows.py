"""Raw rows out of metadata and conversation files (parquet, csv / tsv, jsonl, and `.json`: a JSON
array of rows, as LLaVA and ShareGPT ship them, streamed, or jsonl under a .json name), one at a time
with their index in the file, so every row can be accounted for; a row that cannot be parsed is a
`RowError` value, never an exception."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import IO, Any, Iterator

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class RowError(Exception):
    """A row that cannot be read; the message becomes the rejection detail."""


def detect_format(name: str, declared: str = "auto") -> str:
    """Format from the config, else from the file extension (a .gz suffix is looked through)."""
    if declared != "auto":
        return declared
    base = name.lower().removesuffix(".gz").removesuffix(".zst")
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".json", "json")):
        if base.endswith(ext):
            return fmt
    raise ValueError(f"{name}: cannot tell the metadata format from the extension; set source.format")


def iter_raw_rows(f: IO[bytes], fmt: str, parquet_batch_rows: int = 8192) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Yield (row index, raw mapping or RowError) for every row of a metadata file (parquet decoded
    `parquet_batch_rows` at a time: few where rows hold images)."""
    if fmt == "parquet":
        yield from _parquet_rows(f, parquet_batch_rows)
    elif fmt in ("csv", "tsv"):
        yield from _csv_rows(f, "\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        yield from _jsonl_rows(f)
    elif fmt == "json":
        yield from _json_rows(f)
    else:
        raise ValueError(f"unknown metadata format {fmt!r}")


def _parquet_rows(f: IO[bytes], batch_rows: int) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            yield index, row
            index += 1


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
    """Bytes already read from a file, then the rest of it."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[:len(data)] = data
        return len(data)


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
