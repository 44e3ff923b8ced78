"""The Dask runner against DirectRunner multi_processing: one stage, the same inputs, 2 workers each.

Generates `--rows` LAION-schema rows (curation/samples/laion.py: planted URL / caption duplicates),
starts a dask.distributed cluster (a scheduler and 2 worker processes of one thread,
curation/samples/dask_cluster.py), and runs `curate plan` (the metadata-only dry run: filters, dedup
and the packer's counts for every row, no network) on DirectRunner multi_processing with 2 workers
and on the cluster with `--runner pipelines.dask_runner.DaskRunner`, `--repeat` times each,
interleaved, the best wall time kept. Checks that both wrote the same bytes.

Prints one JSON line per runner: rows, wall_s (best), rows_per_s, identical (output bytes equal to
DirectRunner's). `--partitions` runs the Dask side with each `--dask_partitions` value given.

    python bench/dask.py --rows 20000 [--repeat 2] [--partitions 2 4 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this script's folder is sys.path[0], where it (dask.py) and bench/distributed.py would shadow the
# dask and distributed packages: the repository root takes its place
sys.path[0] = str(ROOT)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "_job.json" and "_progress" not in p.parts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--partitions", type=int, nargs="+", default=[4], help="--dask_partitions values to run")
    args = parser.parse_args()

    from curation.plan.config import load_plan_config
    from curation.samples.dask_cluster import dask_cluster
    from curation.samples.laion import generate_laion
    from pipelines.plan import run_plan

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_laion(work / "meta", args.rows, part_rows=max(1, args.rows // 4), seed=3)
        cfg = load_plan_config(ROOT / "configs" / "plan.yaml", {"progress": False, "ingest": {"progress": False},
                                                                "pack": {"progress": False}})
        inputs = [str(work / "meta" / "*.parquet")]
        with dask_cluster(work / "cluster", workers=2, threads=1) as address:
            runners = {"direct_multi_processing_2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}
            for n in args.partitions:
                runners[f"dask_2_workers_{n}_partitions"] = ["--runner", "pipelines.dask_runner.DaskRunner",
                                                             "--dask_client_address", address, "--dask_partitions", str(n)]
            best: dict[str, float] = {}
            outputs: dict[str, dict[str, bytes]] = {}
            for _ in range(args.repeat):
                for name, beam_args in runners.items():
                    out = work / name
                    shutil.rmtree(out, ignore_errors=True)
                    start = time.perf_counter()
                    index = run_plan(cfg, inputs, str(out), beam_args)
                    wall = time.perf_counter() - start
                    assert index["totals"]["inputs"] == args.rows, index["totals"]
                    best[name] = min(best.get(name, wall), wall)
                    outputs[name] = files(out)
        reference = outputs["direct_multi_processing_2"]
        for name, wall in best.items():
            print(json.dumps({"bench": "dask", "stage": "plan", "runner": name, "rows": args.rows,
                              "wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall, 1),
                              "identical": outputs[name] == reference}))


if __name__ == "__main__":
    main()
