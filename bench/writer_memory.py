"""Shard writer memory: ingest's, dedup's, annotate's and MMPR's writers over one shard of large images, peak
RSS over the process's RSS just before the write.

`--samples` images of `--image-mb` MB each (random bytes: the writer copies images, it never
decodes them) are staged into bundle files the way ingest's Download step stages them
(pipelines/staging.BundleStager), then one shard is written by the real path
(sharded_output.write_one_shard with ingest.write_staged_shard: tar, parquet manifest, marker) to
a local folder. Each measurement runs in its own child process; the peak is the kernel's VmHWM
after a reset (/proc/self/clear_refs), so it is what the write itself added. Prints one JSON line
per mode with `rss_over_baseline_mb`:
- `streamed`: ingest's writer (images spilled to local disk bundle by bundle, one in memory);
- `dedup` / `annotate`: that shard re-read and rewritten by the stage's own writer, as the
  pipeline runs it (`dedup_shard_writer` with a decision for every tenth row,
  `write_annotated_shard` with every row as it arrives from the shuffle, without its image): the
  input tar spilled to local disk, one image in memory;
- `mmpr`: MMPR's writer over one question per image, each naming its image by path (here a member
  of ingest's shard by byte range, so no second copy of the images is staged), as the stage's
  shuffle delivers them: paths, no bytes; each question's image read again as it is streamed;
- `in_memory` (`--in-memory-samples`, 0 to skip): every image read back first, as the writer did
  before, at a size this machine can hold.

    python bench/writer_memory.py --samples 10000 --image-mb 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status(field: str) -> int:
    """A /proc/self/status field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(samples: int, image_mb: float, mode: str, workdir: str) -> dict:
    from curation.core.records import ImageInfo, Pair, Sample
    from pipelines.ingest import NS, write_staged_shard
    from pipelines.sharded_output import write_one_shard
    from pipelines.staging import BundleStager, Unstaged

    size = int(image_mb * 2**20)
    stager = BundleStager(workdir, 64 * 2**20)
    staged = []
    t0 = time.perf_counter()
    for i in range(samples):
        pair = Pair(uid=f"{i:08x}", url=f"http://bench.example/{i}.jpg", caption=f"image {i}", source="bench",
                    source_file="bench.parquet", source_row=i)
        image = ImageInfo(os.urandom(size), "jpg", 2048, 2048, 2048, 2048, "JPEG", f"{i:064x}", f"{i:016x}")
        staged += [s for _, s in stager.add(0, Sample(pair, image))]
    staged += [s for _, s in stager.flush()]
    stage_s = time.perf_counter() - t0

    def write_in_memory(shard, name, records, tar_f, man_f):
        from curation.core.shards import write_pair_shard

        records = list(records)
        with tempfile.TemporaryFile() as spill:
            unstaged = Unstaged(records, spill)
            for rec in records:
                unstaged.load(rec)  # every image in memory at once
        return write_pair_shard(shard, name, records, tar_f, man_f)

    out = Path(workdir) / "out"
    out.mkdir()
    ingest_write = write_in_memory if mode == "in_memory" else write_staged_shard
    if mode in ("dedup", "annotate", "mmpr"):  # ingest's shard first, then the stage's writer re-reads it
        report = write_one_shard(str(out), "bench", 0, 1, staged, ingest_write, NS)
        del staged
        return _measure(mode, samples, image_mb, stage_s, _stage_writer(mode, out, report))
    return _measure(mode, samples, image_mb, stage_s, lambda: write_one_shard(str(out), "bench", 0, 1, staged, ingest_write, NS))


def _stage_writer(mode: str, folder: Path, report):
    """A call that writes the stage's shard from ingest's shard in `folder` with the stage's writer
    as the pipeline runs it: its InputShard plus what crosses the shuffle to it, no image bytes."""
    from curation.core.records import record_pair
    from filters.dedup.keys import Decision, pair_node
    from pipelines.sharded_input import InputShard, opened_shard
    from pipelines.sharded_output import write_one_shard

    if mode == "mmpr":
        return _mmpr_writer(folder, report)
    entry = {"name": report.name, "tar": f"{report.name}.tar", "manifest": f"{report.name}.parquet",
             "tar_sha256": report.tar_sha256, "manifest_sha256": report.manifest_sha256, "rows": report.rows}
    shard = InputShard(0, str(folder), entry, 0)
    with opened_shard(shard) as (records, _):  # what the stage's first read sends on: no image bytes
        if mode == "dedup":
            from pipelines.dedup.stage import NS, dedup_shard_writer

            nodes = [pair_node(record_pair(r), None, (0, i)) for i, r in enumerate(records)]
            elements = [shard] + [Decision(nodes[i], "dup_caption", nodes[0]) for i in range(1, len(nodes), 10)]
            write = dedup_shard_writer(None)
        else:
            from pipelines.annotate import NS, write_annotated_shard

            elements = [shard] + [((0, i), r) for i, r in enumerate(records)]
            write = write_annotated_shard
    out = folder / mode
    out.mkdir()
    return lambda: write_one_shard(str(out), mode, 0, 1, elements, write, NS)


def _mmpr_writer(folder: Path, report):
    """MMPR's writer over one kept question per image of ingest's shard, as its shuffle delivers
    them: image paths (the tar member by byte range) and digests, no bytes."""
    from curation.core.image_refs import member_ref
    from curation.core.shards import iter_tar_groups
    from curation.mmpr.pairs import MmprItem
    from curation.mmpr.tasks import MmprTask, image_digest
    from pipelines.mmpr import NS, write_shard
    from pipelines.sharded_output import write_one_shard

    tar = f"{report.name}.tar"
    tasks = []
    with open(folder / tar, "rb") as f:
        for i, (key, group) in enumerate(iter_tar_groups(f)):
            data = group["jpg"]
            item = MmprItem(key, (f"{key}.jpg",), "<image>\nWhat is shown?", "a", "exact")
            tasks.append(MmprTask(key, "bench.jsonl", i, item, image_exts=["jpg"], image_digests=[image_digest(data)],
                                  responses=[{"text": "a", "correct": True}, {"text": "b", "correct": False}],
                                  pairs=[{"id": f"{key}_c0", "method": "correctness", "chosen": "a", "rejected": "b"}]))
    ranges = dict(_offsets(folder / tar))
    for task in tasks:
        task.image_paths = [str(folder / member_ref(tar, f"{task.uid}.jpg", *ranges[f"{task.uid}.jpg"]))]
    out = folder / "mmpr"
    out.mkdir()
    return lambda: write_one_shard(str(out), "mmpr", 0, 1, tasks, write_shard, NS)


def _offsets(tar_path: Path):
    """(member name, (offset, size)) of every image member of a tar, without reading the images."""
    from curation.core.shards import iter_tar_groups

    for key, group in iter_tar_groups(str(tar_path), lazy=lambda suffix: suffix == "jpg"):
        yield f"{key}.jpg", group["jpg"]


def _measure(mode: str, samples: int, image_mb: float, stage_s: float, write) -> dict:
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _status("VmRSS")
    t0 = time.perf_counter()
    report = write()
    write_s = time.perf_counter() - t0
    peak = _status("VmHWM")
    return {"mode": mode, "samples": samples, "image_mb": image_mb, "kept": report.kept,
            "tar_gb": round(report.tar_bytes / 2**30, 2), "baseline_rss_mb": round(baseline / 2**20),
            "rss_over_baseline_mb": round((peak - baseline) / 2**20, 1), "stage_s": round(stage_s, 1),
            "write_s": round(write_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--image-mb", type=float, default=1.0)
    ap.add_argument("--in-memory-samples", type=int, default=1_000)
    ap.add_argument("--modes", nargs="+", default=["streamed", "dedup", "annotate", "mmpr"],
                    choices=["streamed", "dedup", "annotate", "mmpr"])
    ap.add_argument("--child", nargs=2, metavar=("MODE", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.samples, args.image_mb, *args.child)), flush=True)
        return
    runs = [(mode, args.samples) for mode in args.modes] + (
        [("in_memory", args.in_memory_samples)] if args.in_memory_samples else [])
    for mode, samples in runs:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            res = subprocess.run([sys.executable, __file__, "--samples", str(samples), "--image-mb", str(args.image_mb),
                                  "--child", mode, tmp], capture_output=True, text=True)
            if res.returncode:
                sys.exit(res.stderr[-3000:])
            print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
