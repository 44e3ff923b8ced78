"""Load: `curate ingest` of 20,000 local URLs with 10% failures of mixed kinds, on DirectRunner
multi_processing with 2 workers. Samples the RSS of every process of the run (psutil, every 0.2 s)
and checks that every row ends kept or rejected with the reason its URL was built to produce.
Prints one JSON line.

    python bench/load.py --urls 20000 --fail 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import distinct_images, start_server  # noqa: E402

# route -> the reason it must end with
FAILURES = {
    "/status/404": "http_404", "/status/500": "http_500", "/status/403": "http_403", "/html/{}": "not_an_image",
    "/json/{}": "not_an_image", "/reset": "connection_error", "/empty": "empty_body", "/big": "body_too_large",
    "/loop/a": "redirect_loop", "/truncated/{}": "truncated_image", "/corrupt/{}": "decode_error",
    "/slow/{}": "timeout", "/stall/{}": "timeout",
}


def build_urls(base: str, names: list[str], fail: float, seed: int) -> tuple[list[str], Counter]:
    rng = random.Random(seed)
    routes = sorted(FAILURES)
    urls, expected = [], Counter()
    for i, name in enumerate(names):
        if rng.random() < fail:
            route = routes[i % len(routes)]
            urls.append(base + route.format(name) + f"?n={i}")
            expected[FAILURES[route]] += 1
        else:
            urls.append(f"{base}/img/{name}")
            expected["kept"] += 1
    return urls, expected


class RssSampler(threading.Thread):
    """Peak RSS per process of a process tree, and the tree's total over time."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.every = every
        self.peak: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.totals: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.time()
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    self.names.setdefault(p.pid, " ".join(p.cmdline()[1:4])[:80])
                except psutil.Error:
                    continue
                total += rss
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
            self.totals.append((time.time() - t0, total))
            self.stop.wait(self.every)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=int, default=20_000)
    ap.add_argument("--fail", type=float, default=0.1)
    ap.add_argument("--distinct", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    pictures = distinct_images(args.distinct)
    names = [f"{i:06d}.jpg" for i in range(args.urls)]
    server, base = start_server({name: pictures[i % len(pictures)] for i, name in enumerate(names)})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            urls, expected = build_urls(base, names, args.fail, args.seed)
            pq.write_table(pa.table({"url": urls, "caption": [f"a picture number {i}" for i in range(len(urls))]}),
                           work / "urls.parquet")
            recipe = yaml.safe_load((ROOT / "configs" / "laion.yaml").read_text())
            recipe["source"] = {"name": "load", "columns": {"url": "url", "caption": "caption"}}
            recipe["metadata_filters"] = []
            recipe["pixel_filters"] = []
            recipe["download"].update(allow_private_addresses=True, retries=0, threads=64, timeout_s=1.0,
                                      max_bytes=1_000_000)
            recipe["image"].update(image_size=256)
            recipe["shards"] = {"prefix": "load", "samples_per_shard": 1000}
            recipe["progress"] = False
            (work / "load.yaml").write_text(yaml.safe_dump(recipe))
            out = work / "out"
            t0 = time.time()
            proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "ingest", "--config", str(work / "load.yaml"),
                                     "--input", str(work / "urls.parquet"), "--output", str(out), "--no-progress", "--",
                                     "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            sampler = RssSampler(proc.pid)
            sampler.start()
            _, err = proc.communicate()
            sampler.stop.set()
            sampler.join()
            seconds = time.time() - t0
            if proc.returncode != 0:
                sys.exit(err.decode()[-3000:])
            index = json.loads((out / "_index.json").read_text())
    finally:
        server.terminate()
    got = Counter({"kept": index["totals"]["kept"], **index["reasons"]})
    mb = 1 << 20
    workers = {pid: rss for pid, rss in sampler.peak.items() if pid != proc.pid}
    totals = [t for _, t in sampler.totals]
    half = len(totals) // 2
    print(json.dumps({
        "urls": args.urls, "seconds": round(seconds, 1), "urls_per_s": round(args.urls / seconds, 1),
        "inputs": index["totals"]["inputs"], "kept": index["totals"]["kept"],
        "rows_lost": args.urls - index["totals"]["inputs"],
        "outcomes_as_built": got == expected, "reasons": dict(sorted(index["reasons"].items())),
        "peak_rss_mb_launcher": round(sampler.peak.get(proc.pid, 0) / mb, 1),
        "peak_rss_mb_per_worker": round(max(workers.values(), default=0) / mb, 1),
        "peak_rss_mb_total": round(max(totals, default=0) / mb, 1),
        "rss_mb_total_first_half_max": round(max(totals[:half], default=0) / mb, 1),
        "rss_mb_total_second_half_max": round(max(totals[half:], default=0) / mb, 1),
        "processes": len(sampler.peak), "workers": 2, "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
