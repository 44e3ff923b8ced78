"""Row identity when files and sources are read together: uids namespaced per file or per source
(the rows of a second file numbered 0..N are never lost as `dup_uid`), source ids escaped
injectively into webdataset keys, file names relative to the input root, a job's inputs known by
full path + size + modification time; and a file broken mid-way accounts for every row it could
not read, with its row number."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core.jobstate import input_identity, job_fingerprint
from curation.core.records import UID_MAX, Pair, Rejection, UidConfig, clean_uid
from curation.core.rows import input_root, relative_name
from curation.ingest.config import SourceConfig
from curation.ingest.sources import read_pairs

KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # a webdataset key: no dots, no path characters
CFG = SourceConfig(name="t", columns={"url": "URL", "caption": "TEXT"})


def test_clean_uid_is_injective_and_key_safe():
    ids = ["a.b", "a_b", "a-b", "a/b", "a b", "a\\b", "a..b", "ab", "a-2eb", "é", "e\u0301", "日本", "x" * 200,
           "x" * 199 + "y", "0", "00", "a.b.c", "-", "--", "_"]
    uids = [clean_uid(i) for i in ids]
    assert len(set(uids)) == len(ids)
    assert all(KEY.match(u) and len(u) <= UID_MAX for u in uids)
    assert clean_uid("GCC_train_002582585") == "GCC_train_002582585"  # the common case stays readable


def test_uid_namespaces():
    ns = {mode: UidConfig(mode) for mode in ("file", "source", "none")}
    assert ns["file"].uid("0", "llava", "a/train.jsonl") != ns["file"].uid("0", "llava", "b/train.jsonl")
    assert ns["source"].uid("7", "coyo", "part-0.parquet") == ns["source"].uid("7", "coyo", "part-1.parquet") == "coyo--7"
    assert ns["source"].uid("7", "coyo", "x") != ns["source"].uid("7", "laion400m", "x")
    assert ns["none"].uid("a.b", "coyo", "x") == clean_uid("a.b")
    # the namespace and the id split at the one `--` no key contains: no two (namespace, id) meet
    assert ns["source"].uid("b--c", "a", "x") != ns["source"].uid("c", "a--b", "x")
    long = [ns["file"].uid("x" * 300 + str(i), "s", "f") for i in range(3)]
    assert len(set(long)) == 3 and all(len(u) <= UID_MAX and KEY.match(u) for u in long)


def test_input_root_and_relative_names():
    assert input_root(["data/laion/part-*.parquet"]) == "data/laion/"
    assert input_root(["gs://b/laion/**/*.parquet"]) == "gs://b/laion/"
    assert input_root(["data/x.jsonl"]) == "data/"
    assert input_root(["data/a/*.jsonl", "data/b/*.jsonl"]) == "data/"  # several globs: their common folder
    assert input_root(["data/ab*.jsonl", "data/ac/*.jsonl"]) == "data/"  # never a partial folder name
    assert input_root(["x.jsonl"]) == ""
    assert relative_name("data/a/train.jsonl", "data/") == "a/train.jsonl"
    assert relative_name("other/train.jsonl", "data/") == "other/train.jsonl"


def test_an_input_edited_in_place_is_another_job(tmp_path):
    from pipelines import fsio

    path = tmp_path / "a" / "part.jsonl"
    path.parent.mkdir()
    path.write_text('{"id": 1}\n')
    first = job_fingerprint(CFG, input_identity(fsio.match([str(tmp_path / "*" / "*.jsonl")])))
    assert first == job_fingerprint(CFG, input_identity(fsio.match([str(path)])))  # same file, same job
    path.write_text('{"id": 2}\n')  # same size, new content
    os.utime(path, (1_700_000_000, 1_700_000_000))
    assert job_fingerprint(CFG, input_identity(fsio.match([str(path)]))) != first
    # same name and size in another folder: another input
    other = tmp_path / "b" / "part.jsonl"
    other.parent.mkdir()
    other.write_bytes(path.read_bytes())
    os.utime(other, (1_700_000_000, 1_700_000_000))
    assert input_identity(fsio.match([str(other)])) != input_identity(fsio.match([str(path)]))
    # the same files named from another root (it names source_file and file-scoped uids): another job
    assert input_identity(fsio.match([str(path)]), "a/") != input_identity(fsio.match([str(path)]), "")


def _broken_parquet(rows: int = 30, group: int = 10, bad_group: int = 1) -> bytes:
    """A parquet file whose row group `bad_group` has its page headers overwritten; footer intact."""
    t = pa.table({"URL": [f"http://x.example/{i}.jpg" for i in range(rows)], "TEXT": [f"caption {i}" for i in range(rows)]})
    buf = io.BytesIO()
    pq.write_table(t, buf, row_group_size=group)
    data = bytearray(buf.getvalue())
    meta = pq.read_metadata(io.BytesIO(bytes(data)))
    for c in range(meta.num_columns):
        col = meta.row_group(bad_group).column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        data[start:start + 12] = b"\xff" * 12
    return bytes(data)


def test_a_parquet_row_group_that_breaks_is_one_rejection_per_row():
    out = list(read_pairs(io.BytesIO(_broken_parquet()), CFG, "d/part.parquet", "d/part.parquet"))
    assert [r.source_row for r in out] == list(range(30))  # every row, in order, the later groups still read
    assert all(isinstance(r, Pair) for r in out[:10] + out[20:])
    bad = out[10:20]
    assert all(isinstance(r, Rejection) and r.reason == "unreadable_file" for r in bad)
    assert "row group 1, rows 10..19" in bad[0].detail and len({r.uid for r in bad}) == 10
    assert all(r.source_file == "d/part.parquet" for r in out)


def test_a_line_stream_that_breaks_is_one_rejection_for_the_unread_range():
    lines = "".join(json.dumps({"URL": f"http://x.example/{i}.jpg", "TEXT": f"caption number {i}"}) + "\n"
                    for i in range(2000)).encode()
    packed = gzip.compress(lines)
    torn = gzip.GzipFile(fileobj=io.BytesIO(packed[: len(packed) // 2]))  # bad compression half-way
    out = list(read_pairs(torn, CFG, "m.jsonl.gz"))
    good, last = out[:-1], out[-1]
    assert good and all(isinstance(r, Pair) for r in good) and [r.source_row for r in good] == list(range(len(good)))
    assert len(good) < 2000 and last.reason == "unreadable_file" and last.source_row == len(good)
    offset = int(re.search(r"after byte (\d+)", last.detail).group(1))
    assert lines[:offset].count(b"\n") >= len(good) and "count is unknown" in last.detail


@pytest.mark.slow
def test_two_jsonl_files_numbered_from_zero_keep_every_row_through_ingest(tmp_path, images):
    from pipelines.ingest import run_ingest
    from tests.conftest import local_config

    root = tmp_path / "images"
    root.mkdir()
    names = sorted(n for n in images if n.endswith(".jpg"))[:6]
    for n in names:
        (root / n).write_bytes(images[n])
    for folder in ("a", "b"):  # InternVL / LLaVA layout: each file numbers its rows 0..N, same base name
        (tmp_path / "in" / folder).mkdir(parents=True)
        rows = [{"id": i, "image": n, "conversations": [{"from": "gpt", "value": f"picture {folder} {i}"}]}
                for i, n in enumerate(names[:3] if folder == "a" else names[3:])]
        (tmp_path / "in" / folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # split_rows 2: each file is read as two byte ranges (rows 0-1, row 2), row numbers still the file's
    cfg = local_config("internvl_jsonl.yaml", source={"image_root": str(root), "split_rows": 2})
    index = run_ingest(cfg, [str(tmp_path / "in" / "*" / "train.jsonl")], str(tmp_path / "out"), [])
    assert index["totals"] == {"inputs": 6, "kept": 6, "rejected": 0} and index["_metrics"]["read_splits"] == 4
    manifest = [r for p in sorted((tmp_path / "out").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert sorted((r["source_file"], r["source_row"]) for r in manifest) == [
        (f"{d}/train.jsonl", i) for d in ("a", "b") for i in range(3)]
    assert len({r["uid"] for r in manifest}) == 6 and all(KEY.match(r["uid"]) for r in manifest)


@pytest.mark.slow
def test_two_conversation_files_numbered_from_zero_keep_every_row_through_pack(tmp_path):
    from curation.core.config import ShardConfig
    from packing.config import PackConfig
    from pipelines.pack import run_pack

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        rows = [{"id": i, "conversations": [{"from": "human", "value": f"Say {folder}{i}."},
                                            {"from": "gpt", "value": f"{folder}{i}"}]} for i in range(4)]
        (tmp_path / folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PackConfig(l_max=512, t_max=4, progress=False, shards=ShardConfig(prefix="packed", samples_per_shard=100))
    index = run_pack(cfg, [str(tmp_path / "*" / "train.jsonl")], str(tmp_path / "out"), [])
    assert index["totals"] == {"inputs": 8, "kept": 8, "rejected": 0}
    manifest = [r for p in sorted((tmp_path / "out").glob("*-of-*.parquet")) if not p.name.endswith(".packs.parquet")
                for r in pq.read_table(p).to_pylist()]
    assert sorted((r["source_file"], r["source_row"]) for r in manifest) == [
        (f"{d}/train.jsonl", i) for d in ("a", "b") for i in range(4)]
    # the recipe can say the ids are global: then the second file's rows are duplicates
    none = run_pack(dataclasses.replace(cfg, uid=UidConfig("none")), [str(tmp_path / "*" / "train.jsonl")],
                    str(tmp_path / "none"), [])
    assert none["reasons"] == {"dup_uid": 4}
