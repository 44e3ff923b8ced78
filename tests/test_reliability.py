"""Reliability: hostile images in every container format end as rejections with their own reason,
and a multi_processing DirectRunner run killed with SIGKILL part-way (ingest, then pack; once
mid-run, then again as its rerun writes shards) resumes to shards byte-identical to an
uninterrupted run, with no row lost or duplicated. The rest of the hostile-input corpus (HTTP
failures, SSRF, bombs, odd modes, bad rows and configs) is exercised by test_fetch, test_images,
test_sources, test_config and the ingest sample in test_ingest_pipeline."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from curation.core.config import deep_merge
from curation.ingest.images import ImageInfo, process_image
from tests.conftest import CONFIGS, LOCAL_DOWNLOAD, output_files

CURATE = [sys.executable, "-m", "curation.cli"]
MULTI = ["--", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _encoded(fmt: str) -> bytes:
    img = Image.radial_gradient("L").convert("RGB").resize((300, 200))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,truncated", [
    ("JPEG", "truncated_image"), ("PNG", "truncated_image"), ("GIF", "truncated_image"),
    ("TIFF", "truncated_image"), ("WEBP", "decode_error"),
])
def test_truncated_and_corrupt_images_of_every_format(fmt, truncated):
    from tests.test_images import cfg

    data = _encoded(fmt)
    assert isinstance(process_image(data, cfg()), ImageInfo)  # the intact file is fine
    assert process_image(data[: len(data) // 2], cfg()).reason == truncated
    assert process_image(data[:16] + b"\x13\x37" * 200, cfg()).reason in ("decode_error", "truncated_image")
    assert process_image(data[:40] + bytes(64), cfg()).reason in ("decode_error", "truncated_image")
    assert process_image(b"", cfg()).reason == "empty_body"


def test_missing_columns_huge_and_hostile_captions_are_row_rejections():
    """Metadata without a URL column, a 10 MB caption, control characters: each row is accounted for."""
    import pyarrow as pa

    from curation.ingest.config import IngestConfig
    from curation.core.config import load_config
    from curation.core.records import Pair, Rejection
    from curation.ingest.sources import read_pairs
    from filters.registry import build_filters

    cfg = load_config(CONFIGS / "laion.yaml", IngestConfig)
    buf = io.BytesIO()
    pq.write_table(pa.table({"TEXT": ["a cat on a mat", "a dog"], "WIDTH": [1.0, 2.0]}), buf)
    out = list(read_pairs(io.BytesIO(buf.getvalue()), cfg.source, "no-url.parquet"))
    assert [r.reason for r in out] == ["missing_url", "missing_url"] and all(isinstance(r, Rejection) for r in out)
    buf = io.BytesIO()
    huge = "word " * 2_000_000
    pq.write_table(pa.table({"URL": ["http://a.example/1.jpg", "http://a.example/2.jpg"],
                             "TEXT": [huge, "tab\tbell\x07 nul\x00 and\u200b zero width"]}), buf)
    big, odd = read_pairs(io.BytesIO(buf.getvalue()), cfg.source, "odd.parquet")
    filters = build_filters(cfg.metadata_filters, "metadata_filters")
    first_failure = next((v for f in filters if not (v := f(big)).ok), None)
    assert first_failure is not None and first_failure.reason == "caption_too_long"
    assert isinstance(odd, Pair) and "\x07" not in odd.caption and "\x00" not in odd.caption


# ---------------------------------------------------------------------------------------------
# SIGKILL part-way, then resume


def run_killed(cmd: list[str], ready, timeout: float = 300) -> bool:
    """Start `cmd` in its own process group and SIGKILL the whole group as soon as `ready()`;
    True if it was killed, False if it finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
                return False
            time.sleep(0.002)
        raise AssertionError("the run neither got ready to kill nor finished in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kill_twice(cmd: list[str], output: Path, early) -> tuple[int, int | None]:
    """Kill a run once `early()` (mid-run, before any shard: always reached), rerun it and kill
    that as soon as a shard is finished (mid-write, when the poll catches it). Returns the shards
    finished at each kill (None: the second run finished before the poll saw a shard)."""
    def markers() -> int:
        return len(list((output / "_progress").glob("*.json"))) if (output / "_progress").exists() else 0

    assert run_killed(cmd, early), "the first run finished before the kill"
    first = markers()
    second = markers() if run_killed(cmd, lambda: markers() > first) else None
    return first, second


def _rows(folder: Path, index: dict) -> list[tuple[str, int]]:
    return sorted((r["source_file"], r["source_row"]) for s in index["shards"]
                  for r in pq.read_table(folder / s["manifest"], columns=["source_file", "source_row"]).to_pylist())


@pytest.mark.slow
def test_ingest_killed_part_way_resumes_byte_identical(sample, tmp_path):
    import json

    from curation.ingest.config import IngestConfig
    from curation.core.config import load_config
    from pipelines.ingest import run_ingest

    over = {"download": LOCAL_DOWNLOAD, "image": {"image_size": 256}, "shards": {"samples_per_shard": 2}, "progress": False}
    recipe = tmp_path / "laion.yaml"
    recipe.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((CONFIGS / "laion.yaml").read_text()), over)))
    killed = tmp_path / "killed"
    cmd = CURATE + ["ingest", "--config", str(recipe), "--input", str(sample["laion"]), "--output", str(killed), *MULTI]
    staging = killed / "_staging"
    first, second = kill_twice(cmd, killed, lambda: staging.exists() and any(staging.rglob("*.bundle")))  # mid-download
    assert not (killed / "_index.json").exists() or second is None
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # the rerun resumes
    assert res.returncode == 0, res.stderr[-3000:]
    reference = tmp_path / "reference"
    ref_index = run_ingest(load_config(recipe, IngestConfig), [str(sample["laion"])], str(reference),
                           ["--direct_running_mode=in_memory"])
    assert first == 0 and (second is None or second < ref_index["num_shards"])  # really part-way
    assert output_files(killed) == output_files(reference)
    index = json.loads((killed / "_index.json").read_text())
    n_rows = pq.read_metadata(sample["laion"]).num_rows
    rows = _rows(killed, index)
    assert len(rows) == len(set(rows)) == n_rows == index["totals"]["inputs"]  # none lost, none twice
    # a rerun of the finished job writes nothing
    before = {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file()}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_pack_killed_part_way_resumes_byte_identical(conv_sample, tmp_path):
    import json

    from packing.config import PackConfig
    from curation.core.config import load_config
    from pipelines.pack import run_pack

    recipe = tmp_path / "pack.yaml"
    over = {"l_max": 8192, "t_max": 24, "shards": {"prefix": "packed", "samples_per_shard": 1}, "progress": False}
    recipe.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((CONFIGS / "pack.yaml").read_text()), over)))
    inputs = [str(conv_sample["conversations"]), str(conv_sample["preferences"])]
    killed = tmp_path / "killed"
    cmd = CURATE + ["pack", "--config", str(recipe), *(a for i in inputs for a in ("--input", i)), "--output", str(killed), *MULTI]
    job = killed / "_job.json"  # claimed: the pipeline is running (the first shard lands ~8 s later here)
    first, second = kill_twice(cmd, killed, lambda: job.exists() and time.time() - job.stat().st_mtime > 2.0)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ref_index = run_pack(load_config(recipe, PackConfig), inputs, str(tmp_path / "reference"), ["--direct_running_mode=in_memory"])
    assert first == 0 and (second is None or second < ref_index["num_shards"])
    assert output_files(killed) == output_files(tmp_path / "reference")
    index = json.loads((killed / "_index.json").read_text())
    n_lines = sum(1 for path in inputs for _ in open(path, encoding="utf-8"))
    rows = _rows(killed, index)
    assert len(rows) == len(set(rows)) == n_lines == index["totals"]["inputs"]


def test_readers_refuse_pickled_arrays_and_escaping_member_names(tmp_path):
    """A pack whose arrays were pickled (object dtype: loading them would run code) or whose member
    names are paths is refused, never loaded or extracted."""
    import json
    import tarfile

    import numpy as np

    from curation.core.shards import iter_tar_groups
    from packing.format import iter_packs

    def tar_with(path: Path, members: dict[str, bytes]) -> str:
        with tarfile.open(path, "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return str(path)

    def npy(array, allow_pickle=False) -> bytes:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=allow_pickle)
        return buf.getvalue()

    meta = json.dumps({"segments": [], "images": []}).encode()
    pickled = tar_with(tmp_path / "pickled.tar", {
        "p0.json": meta, "p0.input_ids.npy": npy(np.array([{"evil": 1}], dtype=object), allow_pickle=True),
        "p0.labels.npy": npy(np.zeros(1, np.int32))})
    with pytest.raises(ValueError, match="allow_pickle"):
        list(iter_packs(pickled))
    escaping = tar_with(tmp_path / "escape.tar", {"../../evil.json": meta, "p0.input_ids.npy": npy(np.zeros(1, np.int32))})
    with pytest.raises(ValueError, match="is a path"):
        list(iter_tar_groups(escaping, strict=True))
    with pytest.raises(ValueError, match="is a path"):
        list(iter_packs(escaping))  # the pack reader is strict
    assert not (tmp_path.parent.parent / "evil.json").exists()


def test_a_tar_member_over_the_cap_is_refused_before_it_is_read():
    """A member whose header says 10 GB (a sparse file, or a lie) is a clear error from its header
    alone: nothing is read into memory. Tested on a real tar stream cut after the header."""
    import tarfile

    from curation.core.shards import ShardFormatError, iter_tar_groups

    info = tarfile.TarInfo("abc.jpg")
    info.size = 10 << 30
    stream = io.BytesIO(info.tobuf(tarfile.PAX_FORMAT) + b"\0" * 4096)
    with pytest.raises(ShardFormatError, match=r"'abc.jpg' is 10,737,418,240 bytes, over the 268,435,456-byte cap"):
        list(iter_tar_groups(stream))
    small = tarfile.TarInfo("abc.txt")
    small.size = 3
    ok = io.BytesIO(small.tobuf(tarfile.PAX_FORMAT) + b"hey" + b"\0" * 509 + b"\0" * 1024)
    assert list(iter_tar_groups(ok, max_member_bytes=3)) == [("abc", {"txt": b"hey"})]


@pytest.mark.parametrize("name", ["/etc/passwd", "../other/x.tar", "..", "sub/x.tar", "c:x.tar", "", None])
def test_index_names_that_leave_the_folder_are_refused(tmp_path, name):
    """An `_index.json` naming an absolute path, `..` or a sub-path is refused by every reader: the
    pair-shard stages, inspect / check / train (ShardSet) and the conversation builder."""
    import json

    from curation.core.shardset import InspectError, ShardSet
    from curation.core.shards import ShardFormatError
    from curation.samples.dups import planted_captions, write_pair_folder
    from pipelines.sharded_input import input_shards

    folder = write_pair_folder(tmp_path / "in", planted_captions(3, seed=2), samples_per_shard=100)
    index = json.loads((folder / "_index.json").read_text())
    assert input_shards([str(folder)], "dedup")[1] == index["totals"]["inputs"]  # sound as written
    index["shards"][0]["tar"] = name
    (folder / "_index.json").write_text(json.dumps(index))
    with pytest.raises(ShardFormatError, match="refused"):
        input_shards([str(folder)], "dedup")
    with pytest.raises(InspectError, match="refused"):
        ShardSet.open(str(folder))
