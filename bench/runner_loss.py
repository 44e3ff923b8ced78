"""Beam's local runner losing rows, with Beam transforms only: the upstream reproducer.

`--elements` 1 KB elements (default 10^6) through a multi-input Flatten (which the FnApiRunner
always materialises) into a global count, on DirectRunner `multi_processing` with 2 workers, once
with the runner's data-plane flush as Beam ships it (`DATA_BUFFER_TIME_LIMIT_MS` = 1000) and once as
`curate` sets it (0: `pipelines.local_runner.keep_rows`). Each run is its own process (the limit is
read when the runner's gRPC server is built). `--limit-ms 1` shows the loss at 10^5 elements in
seconds. One JSON line per setting: elements expected, counted, lost.

    python bench/runner_loss.py                       # 10^6 x 1 KB: Beam's default loses ~15%, 0 loses none
    python bench/runner_loss.py --elements 100000 --limit-ms 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run_one(elements: int, size: int, limit_ms: int | None, workers: int) -> dict:
    """Run the pipeline once in this process; `limit_ms` None keeps Beam's default."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

    if limit_ms is not None:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = limit_ms
    items, per = 100, elements // 100
    opts = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                            f"--direct_num_workers={workers}"])
    t = time.perf_counter()
    # the FnApiRunner named: Beam's DirectRunner would first try Prism where it can download it
    p = beam.Pipeline(runner=fn_runner.FnApiRunner(), options=opts)
    big = (p
           | "Items" >> beam.Create(range(items))
           | "Spread" >> beam.Reshuffle()
           | "Expand" >> beam.FlatMap(lambda i: ((j % 100, b"x" * size) for j in range(i * per, (i + 1) * per))))
    small = p | "One" >> beam.Create([(0, b"")])
    total = ((big, small)
             | "Flatten" >> beam.Flatten()
             | "Ones" >> beam.Map(lambda kv: 1)
             | "Count" >> beam.CombineGlobally(sum))
    path = f"/tmp/runner_loss_{time.time_ns()}.txt"
    total | "Save" >> beam.Map(lambda n: open(path, "w").write(str(n)))
    p.run().wait_until_finish()
    with open(path) as f:
        counted = int(f.read())
    os.remove(path)
    expected = items * per + 1
    return {"bench": "runner_loss", "elements": expected, "element_bytes": size, "workers": workers,
            "data_buffer_time_limit_ms": worker_handlers.DATA_BUFFER_TIME_LIMIT_MS, "counted": counted,
            "lost": expected - counted, "seconds": round(time.perf_counter() - t, 1),
            "beam": beam.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--elements", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1000, help="bytes per element")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit-ms", type=int, default=None, help="the flush interval to show against 0 (default: Beam's)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child run
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.elements, args.size, args.limit_ms, args.workers)))
        return
    base = [sys.executable, __file__, "--one", "--elements", str(args.elements), "--size", str(args.size),
            "--workers", str(args.workers)]
    for limit in (args.limit_ms, 0):
        cmd = base + ([] if limit is None else ["--limit-ms", str(limit)])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
