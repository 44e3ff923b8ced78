"""Scale simulation, no network: metadata-only ingest + dedup + pack (`curate plan`) over generated
LAION-schema rows on DirectRunner multi_processing, with peak RSS per process and group bounds.

1. Generates `--rows` rows (curation/samples/laion.py: LAION-5B columns, planted URL / caption /
   near-caption duplicates, a hot templated caption family, rows each metadata filter rejects) as
   parquet parts, in a child process so it does not count towards the runner's memory.
2. Runs `pipelines.plan.run_plan` with `configs/plan.yaml` (LAION recipe filters, URL + caption +
   near-caption MinHash LSH dedup, declared-size tiling, SmolLM2 tokenizer, the greedy packer) on
   `--workers` SDK harness processes, polling every process's peak RSS (VmHWM) meanwhile.
3. Checks every row is accounted for, and that every step that hands one worker a whole group
   stays under its configured bound (write_shard: 1.1 x samples_per_shard; LSH verify tiles:
   max_bucket; one-worker union-find: components.max_local_edges; star rounds: max_local_edges). Exact
   URL / caption groups stream through in two passes and are reported, not bounded.

Prints one JSON line: rows, rows_per_s, peak_rss_mb (the largest SDK worker), max_group_size,
workers, then the runner process's peak (DirectRunner buffers and groups every stage's output in
it: on Dataflow, Flink or Spark that is the shuffle service's job, not a worker's), per-step group
maxima and bounds, reasons, packs.

    python bench/scale.py --rows 1000000 [--workers 2] [--part-rows 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB_MB = 2048


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(root: int) -> list[int]:
    """Every live descendant of `root` (from /proc's parent links)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class PeakRss:
    """Polls the peak RSS (VmHWM, so nothing between polls is missed) of this process's descendants."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.peaks: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for pid in _children(me):
                hwm = _status_kb(pid, "VmHWM")
                if hwm is None:
                    continue
                if pid not in self.kinds:
                    try:
                        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
                    except OSError:
                        argv = []
                    # the harness itself, not the `sh -c` that starts it
                    self.kinds[pid] = "sdk_worker" if "apache_beam.runners.worker.sdk_worker_main" in argv else "other"
                self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def workers_mb(self) -> list[float]:
        return sorted((round(kb / 1024, 1) for pid, kb in self.peaks.items() if self.kinds.get(pid) == "sdk_worker"),
                      reverse=True)


def bounds(cfg) -> dict[str, int]:
    """group_size step -> the configured bound on what one worker holds of one group."""
    dedup = cfg.ingest.metadata_dedup()
    out = {"write_shard": int(cfg.shards.samples_per_shard * 1.1)}
    if dedup is not None:
        out.update(caption_verify=dedup.max_bucket, union_find_edges=dedup.components.max_local_edges,
                   star=dedup.components.max_local_edges)
    return out


def shuffle_bytes_per_row(cfg, files: list[Path], sample: int = 2000) -> dict[str, float]:
    """Encoded bytes per input row through each GroupByKey of the plan graph, with the coder Beam
    picks for these elements, over a sample of the generated rows (what Dataflow's shuffle moves)."""
    from apache_beam.coders import registry

    from curation.plan.planner import UnitPlanner
    from curation.core.records import Pair
    from curation.ingest.sources import read_pairs
    from filters.dedup.keys import EXACT_KEYS, dup_key
    from filters.dedup.caption_lsh import member_id
    from filters.dedup.minhash import MinHasher, band_keys, shingles

    coder = registry.get_coder(object)
    dedup = cfg.ingest.metadata_dedup()
    with open(files[0], "rb") as f:
        pairs = [p for _, p in zip(range(sample), read_pairs(f, cfg.ingest.source, str(files[0]))) if isinstance(p, Pair)]
    planner = UnitPlanner(cfg)
    nc = dedup.near_caption
    hasher = MinHasher(nc.num_perm, nc.seed)
    bands, rows = nc.lsh()
    keys = [dup_key(p, dedup.score_field) for p in pairs]
    sigs = hasher.signatures([shingles(k.caption, nc.shingle, nc.ngram) for k in keys])
    total: dict[str, int] = {"exact": 0, "bands": 0, "captions": 0, "write": 0}
    for pair, key, sig in zip(pairs, keys, sigs):
        for kind in ("url", "caption"):
            value = EXACT_KEYS[kind][1](key)
            total["exact"] += len(coder.encode((value, key))) if value is not None else 0
        mid = member_id(key.node)
        total["bands"] += sum(len(coder.encode((band, mid))) for band in band_keys(sig, bands, rows))
        total["captions"] += len(coder.encode((mid, (key.node, key.caption))))
        total["write"] += len(coder.encode((0, planner(pair))))
    out = {k: round(v / len(pairs), 1) for k, v in total.items()}
    out["total"] = round(sum(total.values()) / len(pairs), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--part-rows", type=int, default=100_000)
    ap.add_argument("--samples-per-shard", type=int, default=10_000)
    ap.add_argument("--max-bucket", type=int, default=None, help="override the recipe's max_bucket")
    ap.add_argument("--config", default=str(ROOT / "configs" / "plan.yaml"))
    ap.add_argument("--keep", help="write inputs and output here and keep them (default: a temp folder)")
    ap.add_argument("--generate", help=argparse.SUPPRESS)  # internal: generate into this folder and exit
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.generate:
        from curation.samples.laion import generate_laion

        g = generate_laion(args.generate, args.rows, args.part_rows, args.seed)
        print(json.dumps(g.injected))
        return

    from curation.plan.config import load_plan_config
    from pipelines.plan import run_plan

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="scale-"))
    try:
        inputs, output = work / "input", work / "plan"
        t0 = time.perf_counter()
        gen = subprocess.run([sys.executable, __file__, "--generate", str(inputs), "--rows", str(args.rows),
                              "--part-rows", str(args.part_rows), "--seed", str(args.seed)],
                             check=True, capture_output=True, text=True)
        injected = json.loads(gen.stdout.strip().splitlines()[-1])
        generate_s = time.perf_counter() - t0
        overrides = {"progress": False, "ingest": {"progress": False}, "pack": {"progress": False},
                     "shards": {"samples_per_shard": args.samples_per_shard}}
        if args.max_bucket is not None:
            overrides["ingest"]["dedup"] = {"max_bucket": args.max_bucket}
        cfg = load_plan_config(args.config, overrides)
        beam_args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
        if output.exists():
            shutil.rmtree(output)
        t0 = time.perf_counter()
        with PeakRss() as rss:
            index = run_plan(cfg, [str(inputs / "*.parquet")], str(output), beam_args)
        seconds = time.perf_counter() - t0
        runner_mb = round(_status_kb(os.getpid(), "VmHWM") / 1024, 1)
        metrics = index.get("_metrics", {})
        groups = {k[len("group_size_"):-len("_max")]: v for k, v in metrics.items()
                  if k.startswith("group_size_") and k.endswith("_max")}
        limit = bounds(cfg)
        bounded = {k: v for k, v in groups.items() if k in limit}
        over = {k: [v, limit[k]] for k, v in bounded.items() if v > limit[k]}
        totals = index["totals"]
        workers_mb = rss.workers_mb()
        shuffle = shuffle_bytes_per_row(cfg, sorted(inputs.glob("*.parquet")))
        print(json.dumps({
            "rows": totals["inputs"], "rows_per_s": round(totals["inputs"] / seconds, 1),
            "peak_rss_mb": workers_mb[0] if workers_mb else None,
            "max_group_size": max(bounded.values(), default=0), "workers": args.workers,
            "worker_peak_rss_mb": workers_mb, "runner_peak_rss_mb": runner_mb,
            "workers_under_2gib": bool(workers_mb) and workers_mb[0] < GiB_MB,
            "group_max": groups, "group_bounds": limit, "groups_over_bound": over,
            "accounted": totals["inputs"] == args.rows == totals["kept"] + sum(index["reasons"].values()),
            "kept": totals["kept"], "reasons": index["reasons"], "injected": injected,
            "packs": index.get("stats", {}).get("packs", 0), "tokens": index.get("stats", {}).get("tokens", 0),
            "tiles": index.get("stats", {}).get("tiles", 0),
            "hot_buckets": metrics.get("caption_hot_buckets", 0), "shards": index["num_shards"],
            "shuffle_bytes_per_row": shuffle,
            "seconds": round(seconds, 1), "generate_s": round(generate_s, 1), "cores": os.cpu_count(),
        }))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
