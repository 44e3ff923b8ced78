"""Download throughput: `curate ingest` vs img2dataset's own `download()` on the same URL list.

Both fetch the same images from one local server (its own process), resize with the same settings
(keep_ratio 256, only if bigger, JPEG q95) and write webdataset shards. img2dataset runs from
.venv-img2dataset (bench/setup_img2dataset.sh: its pins conflict with ours) with processes_count=2
(one per core, as its README advises) and its default thread_count; ours runs on DirectRunner
multi_processing with 2 workers, with its politeness on (robots.txt fetched per host, the
per-host circuit breaker, Retry-After, the hard deadline) at settings that do not bind on one
local host (per-host concurrency = threads, no per-host rate limit). Wall time includes each
tool's start-up; each side runs `--repeats` times, best time kept. Prints one JSON line.

    python bench/ingest.py --images 4000 --repeats 2
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.samples.data import render  # noqa: E402

I2D_DRIVER = """
import json, sys, time
from img2dataset import download
args = json.loads(sys.argv[1])
t0 = time.time()
download(url_list=args["urls"], input_format="parquet", url_col="url", caption_col="caption",
         output_format="webdataset", output_folder=args["out"], image_size=256, resize_mode="keep_ratio",
         resize_only_if_bigger=True, encode_format="jpg", encode_quality=95, processes_count=2,
         number_sample_per_shard=1000, timeout=10, retries=0, compute_hash="sha256",
         distributor="multiprocessing", enable_wandb=False)
print(json.dumps({"seconds": time.time() - t0}))
"""


def distinct_images(k: int) -> list[bytes]:
    """k different photos-like JPEGs (640x480 .. 1300x800) at quality 90."""
    out = []
    for i in range(k):
        img, _ = render(2024, i)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _serve_forever(images: dict[str, bytes], port_q) -> None:
    from curation.samples.image_server import serve

    with serve(images) as base:
        port_q.put(base)
        while True:
            time.sleep(3600)


def start_server(images: dict[str, bytes]):
    """The local image server in its own process (so it does not compete for our GIL); returns
    (process, base URL)."""
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    server = ctx.Process(target=_serve_forever, args=(images, port_q), daemon=True)
    server.start()
    return server, port_q.get(timeout=120)


def count_tar_samples(folder: Path) -> int:
    import tarfile

    n = 0
    for tar_path in folder.rglob("*.tar"):
        with tarfile.open(tar_path) as tar:
            n += sum(1 for m in tar.getmembers() if m.name.endswith(".jpg"))
    return n


POLITENESS = {"robots_txt": True, "per_host_concurrency": 64, "per_host_rps": 0.0, "host_failures": 5,
              "deadline_s": 30.0, "retry_after_max_s": 30.0}


def run_ours(urls: Path, work: Path) -> tuple[float, int]:
    recipe = yaml.safe_load((ROOT / "configs" / "laion.yaml").read_text())
    recipe["source"] = {"name": "bench", "columns": {"url": "url", "caption": "caption"}}
    recipe["metadata_filters"] = []
    recipe["pixel_filters"] = []
    recipe["download"].update(allow_private_addresses=True, retries=0, threads=64, **POLITENESS)
    recipe["image"].update(resize_mode="keep_ratio", image_size=256, resize_only_if_bigger=True, encode_quality=95)
    recipe["shards"] = {"prefix": "bench", "samples_per_shard": 1000}
    recipe["progress"] = False
    cfg = work / "bench.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "curation.cli", "ingest", "--config", str(cfg), "--input", str(urls),
                    "--output", str(out), "--no-progress", "--", "--direct_running_mode=multi_processing",
                    "--direct_num_workers=2"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.time() - t0, count_tar_samples(out)


def run_img2dataset(urls: Path, work: Path, python: str) -> tuple[float, int]:
    out = work / "i2d"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    subprocess.run([python, "-c", I2D_DRIVER, json.dumps({"urls": str(urls), "out": str(out)})], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0, count_tar_samples(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--distinct", type=int, default=200, help="distinct pictures served under many URLs")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool, alternating; the best of each is kept")
    ap.add_argument("--img2dataset-python", default=str(ROOT / ".venv-img2dataset" / "bin" / "python"))
    args = ap.parse_args()
    if not os.path.exists(args.img2dataset_python):
        sys.exit(f"no img2dataset interpreter at {args.img2dataset_python}: run bench/setup_img2dataset.sh")

    pictures = distinct_images(args.distinct)
    images = {f"{i:06d}.jpg": pictures[i % len(pictures)] for i in range(args.images)}
    server, base = start_server(images)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            urls = work / "urls.parquet"
            pq.write_table(pa.table({"url": [f"{base}/img/{name}" for name in images],
                                     "caption": [f"a picture number {i}" for i in range(args.images)]}), urls)
            # img2dataset first, then ours, alternating; each on a cold output folder
            i2d, ours = [], []
            for _ in range(args.repeats):
                i2d.append(run_img2dataset(urls, work, args.img2dataset_python))
                ours.append(run_ours(urls, work))
            i2d_s, i2d_n = min(i2d)
            ours_s, ours_n = min(ours)
    finally:
        server.terminate()
    print(json.dumps({
        "ours_images_per_s": round(ours_n / ours_s, 1),
        "img2dataset_images_per_s": round(i2d_n / i2d_s, 1),
        "ratio": round((ours_n / ours_s) / (i2d_n / i2d_s), 3),
        "images": args.images, "ours_ok": ours_n, "img2dataset_ok": i2d_n,
        "ours_s": round(ours_s, 1), "img2dataset_s": round(i2d_s, 1),
        "mean_image_bytes": int(sum(len(p) for p in pictures) / len(pictures)), "cores": os.cpu_count(),
        "repeats": args.repeats, "ours_politeness": POLITENESS,
    }))


if __name__ == "__main__":
    main()
