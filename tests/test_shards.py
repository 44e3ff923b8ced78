"""Shard building: byte-determinism regardless of input order, dup uids, manifests, the index."""

import io
import json
import random
import tarfile

import pyarrow.parquet as pq

from curation.core.records import ImageInfo, Pair, Rejection, Sample
from curation.core.shards import build_index, num_shards_for, shard_of, write_pair_shard


def make_records():
    recs = []
    for i in range(12):
        p = Pair(uid=f"u{i:03d}", url=f"http://x.example/{i}.jpg", caption=f"caption {i}", source="t",
                 source_file="a.parquet", source_row=i)
        if i % 3 == 0:
            recs.append(Rejection(p, "download", "http_404", "HTTP 404"))
        else:
            recs.append(Sample(p, ImageInfo(b"jpegdata%d" % i, "jpg", 10, 10, 20, 20, "JPEG", "ab" * 32, "0" * 16)))
    # the same uid again later in source order: a second kept sample becomes dup_uid
    dup = Pair(uid="u001", url="http://x.example/other.jpg", caption="again", source="t", source_file="b.parquet", source_row=0)
    recs.append(Sample(dup, ImageInfo(b"other", "jpg", 10, 10, 20, 20, "JPEG", "cd" * 32, "1" * 16)))
    return recs


def write(records):
    tar_f, man_f = io.BytesIO(), io.BytesIO()
    report = write_pair_shard(0, "t-00000-of-00001", records, tar_f, man_f)
    return report, tar_f.getvalue(), man_f.getvalue()


def test_same_bytes_in_any_order():
    recs = make_records()
    first = write(recs)
    for seed in range(3):
        shuffled = recs[:]
        random.Random(seed).shuffle(shuffled)
        again = write(shuffled)
        assert again[1] == first[1] and again[2] == first[2] and again[0] == first[0]


def test_tar_members_manifest_rows_and_dup_uid():
    report, tar_bytes, man_bytes = write(make_records())
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = tar.getnames()
        infos = tar.getmembers()
    assert names[:3] == ["u001.jpg", "u001.json", "u001.txt"]
    assert all(i.mtime == infos[0].mtime and i.uid == 0 and i.mode == 0o644 for i in infos)
    assert len(names) == 3 * report.kept
    rows = pq.read_table(io.BytesIO(man_bytes)).to_pylist()
    assert len(rows) == 13 == report.rows
    assert report.kept == 8 and report.reasons == {"dup_uid": 1, "http_404": 4}
    dup = [r for r in rows if r["reason"] == "dup_uid"]
    assert dup[0]["source_file"] == "b.parquet" and "a.parquet:1" in dup[0]["detail"]


def test_index_totals():
    report, _, _ = write(make_records())
    index = build_index([report], kind="pairs", prefix="t", num_shards=1, fingerprint="f")
    assert index["totals"] == {"inputs": 13, "kept": 8, "rejected": 5}
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    assert json.dumps(index)  # serialisable


def test_shard_assignment_is_stable():
    assert shard_of("abc", 7) == shard_of("abc", 7)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"uid{i}", 4)] += 1
    assert min(counts) > 850  # roughly even
    assert num_shards_for(0, 10) == 1 and num_shards_for(21, 10) == 3
