"""Reads split below the file: parquet by row groups, csv / tsv / jsonl by byte ranges at row
boundaries. Reading every split of a file yields exactly the rows, row numbers and rejections of
reading the file whole, whatever the quoting, blank lines or bad rows."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core.rows import WHOLE, Split, Unread, iter_raw_rows, plan_splits

ROWS = [{"URL": f"http://x.example/{i}.jpg",
         "TEXT": f"a caption\nover two lines {i}" if i % 7 == 0 else f'a 12" record, {i}'} for i in range(1000)]


def _csv(delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["URL", "TEXT"], delimiter=delimiter)
    writer.writeheader()
    for i, row in enumerate(ROWS):
        writer.writerow(row)
        if i % 50 == 0:
            buf.write("\r\n")  # a blank line: not a row
        if i == 500:
            buf.write('http://x.example/odd.jpg,"two",fields,too many\r\n')  # a malformed row keeps its number
    return ("\ufeff" + buf.getvalue()).encode()


def _jsonl() -> bytes:
    lines = [json.dumps(r) for r in ROWS]
    lines[300] = "{not json"
    lines.insert(10, "")
    return ("\n".join(lines) + "\n").encode()


def _parquet(group: int = 64) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buf, row_group_size=group)
    return buf.getvalue()


def _rows(data: bytes, fmt: str, splits: list[Split]) -> list[tuple[int, str]]:
    return [(i, repr(r)) for s in splits for i, r in iter_raw_rows(io.BytesIO(data), fmt, 16, s)]


@pytest.mark.parametrize("fmt,data,name", [("csv", _csv(), "m.csv"), ("tsv", _csv("\t"), "m.tsv"),
                                           ("jsonl", _jsonl(), "m.jsonl"), ("parquet", _parquet(), "m.parquet")])
def test_every_split_together_reads_like_the_whole_file(fmt, data, name):
    splits = plan_splits(io.BytesIO(data), fmt, name, 128)
    assert len(splits) >= 7 and [s.first_row for s in splits] == sorted({s.first_row for s in splits})
    whole = _rows(data, fmt, [WHOLE])
    assert len(whole) == len(ROWS) + (1 if fmt == "csv" or fmt == "tsv" else 0)  # + the malformed csv row
    assert _rows(data, fmt, splits) == whole


def test_what_is_not_split():
    assert plan_splits(io.BytesIO(_jsonl()), "jsonl", "m.jsonl.gz", 10) == [WHOLE]  # compressed: no byte ranges
    assert plan_splits(io.BytesIO(b"[]"), "json", "m.json", 10) == [WHOLE]  # a JSON array
    assert plan_splits(io.BytesIO(_jsonl()), "jsonl", "m.jsonl", 0) == [WHOLE]  # split_rows 0
    assert plan_splits(io.BytesIO(_parquet(group=5000)), "parquet", "m.parquet", 10) == [WHOLE]  # one row group
    assert plan_splits(io.BytesIO(b"PAR1 broken"), "parquet", "m.parquet", 10) == [WHOLE]  # the reader reports it
    assert plan_splits(io.BytesIO(b"URL,TEXT\na,b\rc,d\n"), "csv", "m.csv", 1) == [WHOLE]  # a lone CR


def test_a_broken_row_group_inside_a_split_keeps_its_row_numbers():
    from tests.test_identity import _broken_parquet

    data = _broken_parquet(rows=60, group=10, bad_group=3)
    splits = plan_splits(io.BytesIO(data), "parquet", "m.parquet", 20)
    assert [(s.first_row, s.start, s.stop) for s in splits] == [(0, 0, 2), (20, 2, 4), (40, 4, 6)]
    rows = [(i, r) for s in splits for i, r in iter_raw_rows(io.BytesIO(data), "parquet", 4, s)]
    assert [i for i, _ in rows] == list(range(60))
    assert [i for i, r in rows if isinstance(r, Unread)] == list(range(30, 40))
