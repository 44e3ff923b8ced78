"""Ingest's image staging: a few bundle files, never a file per image; every image read back
exactly, whatever order the shard writer sees its records in; object-store uploads in large parts."""

import io
import os
import random
import tempfile

from curation.core.records import ImageInfo, Pair, Sample
from pipelines import fsio
from pipelines.staging import STAGING, BundleStager, Unstaged


def _samples(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        data = os.urandom(rng.randint(1, 5000))
        pair = Pair(uid=f"u{i:04d}", url=f"http://x.example/{i}.jpg", caption=f"c {i}", source="t",
                    source_file="a.parquet", source_row=i)
        out.append(Sample(pair, ImageInfo(data, "jpg", 10, 10, 20, 20, "JPEG", "ab" * 32, "0" * 16)))
    return out


def test_images_wait_in_bundle_files_and_come_back_exactly(tmp_path):
    samples = _samples(300)
    original = {s.pair.uid: s.image.data for s in samples}
    budget = 64 * 1024
    stager = BundleStager(str(tmp_path), budget)
    released = []
    for i, s in enumerate(samples):
        released += stager.add(i % 7, s)
    assert len(released) < len(samples)  # the last partial bundle is still held
    released += stager.flush()
    assert stager.flush() == []
    assert sorted(s.pair.uid for _, s in released) == sorted(original)
    assert all(shard == int(s.pair.uid[1:]) % 7 for shard, s in released)  # each keeps its shard
    assert all(s.image.data == b"" and s.staged for _, s in released)  # only metadata crosses the shuffle
    bundles = sorted((tmp_path / STAGING).iterdir())
    total = sum(len(v) for v in original.values())
    assert len(bundles) == len({s.staged[0] for _, s in released})
    assert total // (budget + 5000) <= len(bundles) <= total // budget + 1  # one file per ~budget bytes
    assert sum(b.stat().st_size for b in bundles) == total
    # a shard writer sees its records in any order, spread over every bundle
    records = [s for _, s in released]
    random.Random(1).shuffle(records)
    with tempfile.TemporaryFile() as spill:
        unstaged = Unstaged(records, spill)
        assert all(s.staged is None and s.image.data == b"" for s in records)  # spilled, not held
        assert spill.tell() == total
        for s in reversed(records):
            unstaged.load(s)
    assert {s.pair.uid: s.image.data for s in records} == original


def test_a_short_read_names_the_bundle(tmp_path):
    samples = _samples(3)
    stager = BundleStager(str(tmp_path), 1 << 30)
    for s in samples:
        stager.add(0, s)
    released = [s for _, s in stager.flush()]
    path = released[0].staged[0]
    with open(path, "r+b") as f:
        f.truncate(10)
    try:
        Unstaged(released, io.BytesIO())
    except OSError as e:
        assert path in str(e)
    else:
        raise AssertionError("a truncated bundle read back without an error")


class _Sink(io.RawIOBase):
    def __init__(self):
        self.sizes: list[int] = []

    def writable(self):
        return True

    def write(self, b):
        self.sizes.append(len(b))
        return len(b)


def test_object_store_writes_go_out_in_large_parts():
    sink = _Sink()
    parts = fsio.PartWriter(sink, part_bytes=1000)
    for _ in range(250):
        assert parts.write(b"x" * 9) == 9
    assert parts.tell() == 2250
    parts.close()
    assert sink.sizes == [1008, 1008, 234]  # small writes held until a part is full, the rest on close


def test_a_staged_shard_streams_one_image_at_a_time_and_matches_the_in_memory_writer(tmp_path):
    from curation.core.shards import write_pair_shard

    samples = _samples(40, seed=3)
    reference = io.BytesIO(), io.BytesIO()
    write_pair_shard(0, "s", [Sample(s.pair, ImageInfo(**{**_info(s), "data": s.image.data})) for s in samples],
                     *reference)
    stager = BundleStager(str(tmp_path), 20_000)
    staged = [s for _, s in [r for s in samples for r in stager.add(0, s)] + stager.flush()]
    held = []

    def load(sample):
        unstaged.load(sample)
        held.append(sum(len(s.image.data) for s in staged))  # bytes in memory while this one is written

    out = io.BytesIO(), io.BytesIO()
    with tempfile.TemporaryFile() as spill:
        unstaged = Unstaged(staged, spill)
        write_pair_shard(0, "s", staged, *out, load)
    assert out[0].getvalue() == reference[0].getvalue() and out[1].getvalue() == reference[1].getvalue()
    assert len(held) == 40 and max(held) <= 5000  # never more than the one image being written


def _info(sample: Sample) -> dict:
    from dataclasses import asdict

    return asdict(sample.image)
