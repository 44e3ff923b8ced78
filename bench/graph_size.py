"""Job graph size per stage: what Dataflow receives (its request limit is 10 MB; a bigger graph
needs staging, and hundreds of MB fail), built over a synthetic LAION-5B-sized run.

Each stage's real graph (`build_*` from pipelines/) is wired as a launch would wire it: `--shards`
output shards (585,000: LAION-5B at 10,000 rows a shard), pair-shard stages over input folders
whose indexes list that many shards, file stages over `--files` input files, and a resumed run
(a previous run finished shards). Shard lists and resume state are read inside the pipeline
(`ReadInputShards`, `DoneShards`), so the graph does not grow with them. For comparison, `before`
measures what the previous wiring embedded: one `beam.Create` element per input shard (its index
entry) and every finished shard's report pickled into the index writer, for the same sizes.

Prints one JSON line per stage: `stage`, `shards`, `graph_bytes` (the serialized pipeline proto,
pickled DoFns included), `seconds` to build and serialize.

    python bench/graph_size.py [--shards 585000] [--files 5000]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _graph_bytes(wire) -> tuple[int, float]:
    import apache_beam as beam

    from pipelines.sharded_output import DoneShards

    t0 = time.perf_counter()
    p = beam.Pipeline()
    wire(p, p | "DoneShards" >> DoneShards("gs://bucket/out", "fingerprint"))
    size = len(p.to_runner_api().SerializeToString())
    return size, round(time.perf_counter() - t0, 2)


def stages(shards: int, files: list[str], work: Path) -> dict:
    """stage -> a function wiring its graph on (p, previous)."""
    from curation.annotate.config import AnnotateConfig
    from curation.core.config import load_config
    from curation.ingest.config import IngestConfig
    from curation.mmpr.config import MmprConfig
    from curation.plan.config import load_plan_config
    from curation.annotate.translate import TranslateConfig
    from filters.dedup.config import DedupConfig
    from packing.config import PackConfig
    from pipelines.annotate import build_annotate
    from pipelines.dedup.stage import build_dedup
    from pipelines.ingest import build_ingest
    from pipelines.mmpr import build_mmpr
    from pipelines.pack import build_pack
    from pipelines.plan import build_plan
    from pipelines.sharded_input import ReadInputShards
    from pipelines.translate import build_translate

    cfgs = ROOT / "configs"
    folders = [f"gs://bucket/laion/part-{i}" for i in range(3)]
    rows = shards * 10_000
    per_folder = [shards // 3 + (i < shards % 3) for i in range(3)]
    out = "gs://bucket/out"
    return {
        "ingest": lambda p, prev: build_ingest(p, load_config(cfgs / "laion.yaml", IngestConfig), files, out, "fp", prev),
        "plan": lambda p, prev: build_plan(p, load_plan_config(cfgs / "plan.yaml", None), files, out, "fp", prev),
        "dedup": lambda p, prev: build_dedup(p, load_config(cfgs / "dedup.yaml", DedupConfig),
                                             ReadInputShards(folders, rows, "dedup", per_folder), shards, out, "fp", prev, ["laion"]),
        "annotate": lambda p, prev: build_annotate(p, load_config(cfgs / "annotate.yaml", AnnotateConfig),
                                                   ReadInputShards(folders, rows, "annotate", per_folder), shards, out, "fp", prev,
                                                   ["laion"]),
        "translate": lambda p, prev: build_translate(p, load_config(cfgs / "translate.yaml", TranslateConfig), files, "",
                                                     out, "fp", prev),
        "mmpr": lambda p, prev: build_mmpr(p, load_config(cfgs / "mmpr.yaml", MmprConfig), files, out, "fp", prev),
        "pack": lambda p, prev: build_pack(p, load_config(cfgs / "pack.yaml", PackConfig), files, out, "fp", prev),
    }


def before(shards: int) -> dict:
    """What the previous wiring embedded at this size: the input shard list as Create elements and
    the finished shards' reports pickled into the index writer."""
    import apache_beam as beam

    from curation.core.shards import ShardReport, shard_name
    from pipelines.sharded_input import InputShard

    t0 = time.perf_counter()
    entries = [InputShard(0, "gs://bucket/laion/part-0", {
        "name": shard_name("laion", i, shards), "tar": f"{shard_name('laion', i, shards)}.tar",
        "manifest": f"{shard_name('laion', i, shards)}.parquet", "rows": 10_000, "kept": 6_000,
        "tar_sha256": "0" * 64, "manifest_sha256": "1" * 64, "tar_bytes": 300_000_000}) for i in range(shards)]
    p = beam.Pipeline()
    _ = p | beam.Create(entries)
    created = len(p.to_runner_api().SerializeToString())
    reports = {shard_name("laion", i, shards): ShardReport(i, shard_name("laion", i, shards), 6_000, 10_000, "0" * 64,
                                                           "1" * 64, 300_000_000, {"http_404": 1200, "timeout": 800})
               for i in range(shards)}
    pickled = len(pickle.dumps(reports))
    return {"stage": "before", "shards": shards, "graph_bytes": created + pickled, "create_bytes": created,
            "reports_bytes": pickled, "seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    import logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=585_000)
    ap.add_argument("--files", type=int, default=5_000, help="input files of the file-reading stages")
    ap.add_argument("--skip-before", action="store_true")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    files = [f"gs://bucket/laion2B-en/part-{i:05d}-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.parquet"
             for i in range(args.files)]
    with tempfile.TemporaryDirectory() as tmp:
        for stage, wire in stages(args.shards, files, Path(tmp)).items():
            size, seconds = _graph_bytes(wire)
            print(json.dumps({"stage": stage, "shards": args.shards, "input_files": args.files if stage not in
                              ("dedup", "annotate") else None, "graph_bytes": size, "seconds": seconds}), flush=True)
    if not args.skip_before:
        print(json.dumps(before(args.shards)), flush=True)


if __name__ == "__main__":
    main()
