"""Deterministic sharded output with resumption, shared by every stage that writes pair shards (and
the pair-shard reader every stage after ingest starts from).

key -> shard (stable hash of uid, shard count from the input row count) -> GroupByKey -> sort ->
write tar + manifest to temp names -> rename -> a per-shard progress marker -> `_index.json` last.
A rerun skips shards whose marker exists; a rerun of a finished job does nothing at all.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from curation.core.jobstate import JobState, input_identity as files_identity, job_fingerprint
from curation.core.shards import INDEX_NAME, PROGRESS_DIR, ShardReport, build_index, shard_name
from pipelines import fsio

log = logging.getLogger(__name__)


class ReadAndCount(beam.PTransform):
    """Input file paths -> (records read by `read`, a singleton PCollection of the shard count from
    the number of records), the shared front of every stage that reads files. With `split`, each
    file is first cut into work items (path -> (path, piece)) spread over the workers on their own."""

    def __init__(self, files: list[str], read: beam.DoFn, samples_per_shard: int, split: beam.DoFn | None = None) -> None:
        super().__init__()
        self.files = files
        self.read = read
        self.samples_per_shard = samples_per_shard
        self.split = split

    def expand(self, p):
        from curation.core.shards import num_shards_for

        items = p | "InputFiles" >> beam.Create(self.files) | "SpreadFiles" >> beam.Reshuffle()
        if self.split is not None:
            items = items | "SplitFiles" >> beam.ParDo(self.split) | "SpreadSplits" >> beam.Reshuffle()
        rows = items | "ReadRows" >> beam.ParDo(self.read)
        num_shards = (
            rows
            | "CountRows" >> beam.combiners.Count.Globally()
            | "NumShards" >> beam.Map(num_shards_for, self.samples_per_shard)
        )
        return rows, num_shards


class ReadShard(beam.DoFn):
    """(folder, index entry) -> every manifest row of the shard as Sample or Rejection, after
    checking the tar and manifest against the sha256 the index lists."""

    def __init__(self, progress: bool, namespace: str, stage: str) -> None:
        self.progress = progress
        self.namespace = namespace
        self.stage = stage

    def setup(self) -> None:
        self.bar = worker_bar(f"{self.stage} read", "row") if self.progress else None

    def process(self, element):
        import hashlib
        import io

        from curation.core.shards import ShardFormatError, read_pair_shard
        from pipelines import fsio

        folder, entry = element
        blobs = {}
        for part in ("tar", "manifest"):
            data = fsio.read_bytes(fsio.join(folder, entry[part]))
            if hashlib.sha256(data).hexdigest() != entry[f"{part}_sha256"]:
                raise ShardFormatError(f"{folder}/{entry[part]}: sha256 differs from the index (changed or corrupt)")
            blobs[part] = data
        inputs = Metrics.counter(self.namespace, "inputs")
        for rec in read_pair_shard(io.BytesIO(blobs["tar"]), io.BytesIO(blobs["manifest"])):
            inputs.inc()
            if self.bar is not None:
                self.bar.update(1)
            yield rec

    def teardown(self) -> None:
        if self.bar is not None:
            self.bar.close()


class AssignShard(beam.DoFn):
    """record -> (shard, record), with the shard count from a side input."""

    def process(self, record, num_shards: int, uid_of: Callable[[Any], str]):
        from curation.core.shards import shard_of

        yield shard_of(uid_of(record), num_shards), record


def not_done(prefix: str, done: frozenset[str]) -> Callable[[tuple[int, Any], int], bool]:
    """Predicate for Filter: keep elements whose shard no previous run finished."""

    def keep(element: tuple[int, Any], num_shards: int) -> bool:
        return shard_name(prefix, element[0], num_shards) not in done

    return keep


def worker_bar(desc: str, unit: str):
    """A worker's progress bar on stderr, named with its pid (workers run side by side), redrawn at
    most once a second and cleared when done."""
    from tqdm import tqdm

    return tqdm(desc=f"{desc}[{os.getpid()}]", unit=unit, mininterval=1.0, file=sys.stderr, dynamic_ncols=True,
                leave=False)


def group_size(namespace: str, step: str, n: int) -> None:
    """Record how many elements one GroupByKey group handed a worker at `step` (a distribution:
    its max is the largest group, which each step keeps under a configured bound)."""
    Metrics.distribution(namespace, f"group_size_{step}").update(n)


class WriteShard(beam.DoFn):
    """(shard, records) -> ShardReport, writing tar + manifest atomically, then the marker."""

    def __init__(self, output: str, prefix: str, write: Callable, namespace: str) -> None:
        self.output = output
        self.prefix = prefix
        self.write = write
        self.namespace = namespace

    def process(self, element, num_shards: int):
        shard, records = element
        report = write_one_shard(self.output, self.prefix, shard, num_shards, records, self.write, self.namespace)
        group_size(self.namespace, "write_shard", report.rows)
        yield report


def write_one_shard(output: str, prefix: str, shard: int, num_shards: int, records: Iterable,
                    write: Callable, namespace: str) -> ShardReport:
    """Write one shard atomically. `write` returns a ShardReport, or (report, {file name: bytes})
    for stage-specific files written beside the tar (a pack index, say), recorded in the report."""
    import hashlib

    name = shard_name(prefix, shard, num_shards)
    tar_path = fsio.join(output, f"{name}.tar")
    man_path = fsio.join(output, f"{name}.parquet")
    records = list(records)
    holder: dict[str, Any] = {}

    def fill_tar(tar_f):
        def fill_manifest(man_f):
            holder["result"] = write(shard, name, records, tar_f, man_f)

        fsio.write_atomic(man_path, fill_manifest)

    fsio.write_atomic(tar_path, fill_tar)
    result = holder["result"]
    report, extras = result if isinstance(result, tuple) else (result, {})
    for file_name, data in sorted(extras.items()):
        fsio.write_atomic(fsio.join(output, file_name), lambda f, data=data: f.write(data))
        report.extra_files[file_name] = hashlib.sha256(data).hexdigest()
    fsio.write_json(fsio.join(output, PROGRESS_DIR, f"{name}.json"), json.loads(report.to_json()))
    Metrics.counter(namespace, "shards_written").inc()
    Metrics.counter(namespace, "kept").inc(report.kept)
    for reason, count in report.reasons.items():
        Metrics.counter(namespace, f"rejected_{reason}").inc(count)
    for stat, count in report.stats.items():
        Metrics.counter(namespace, stat).inc(count)
    return report


class RowsLost(RuntimeError):
    """The shard writers got fewer (or more) rows than the stage read: the index is not written."""


class WriteIndex(beam.DoFn):
    """All reports -> fill in shards that got no records -> `_index.json`, written last. A stage
    that maps rows one to one (dedup) passes `expected_rows`: if the shards' rows differ,
    the runner lost (or repeated) rows and the job fails instead of finishing with them missing."""

    def __init__(self, output: str, prefix: str, kind: str, fingerprint: str, write: Callable,
                 previous: dict[str, ShardReport], namespace: str, extra: dict[str, Any] | None = None,
                 expected_rows: int | None = None) -> None:
        self.output = output
        self.prefix = prefix
        self.kind = kind
        self.fingerprint = fingerprint
        self.write = write
        self.previous = previous
        self.namespace = namespace
        self.extra = extra
        self.expected_rows = expected_rows

    def process(self, reports: list[ShardReport], num_shards: int):
        by_name = {r.name: r for r in self.previous.values() if r.name.endswith(f"-of-{num_shards:05d}")}
        by_name.update({r.name: r for r in reports})
        for shard in range(num_shards):
            name = shard_name(self.prefix, shard, num_shards)
            if name not in by_name:  # no input row hashed here: an empty shard keeps names contiguous
                by_name[name] = write_one_shard(self.output, self.prefix, shard, num_shards, [], self.write, self.namespace)
        index = build_index(by_name.values(), kind=self.kind, prefix=self.prefix, num_shards=num_shards,
                            fingerprint=self.fingerprint, extra=self.extra)
        got = index["totals"]["inputs"]
        if self.expected_rows is not None and got != self.expected_rows:
            raise RowsLost(
                f"{self.output}: the shard writers got {got} rows, the inputs hold {self.expected_rows} "
                f"({self.expected_rows - got} missing): the runner dropped rows between read and write (seen on "
                f"DirectRunner multi_processing at 10^6 pair records; in_memory kept them). No index written; "
                f"delete the folder and rerun smaller, in_memory, or on a distributed runner.")
        fsio.write_json(fsio.join(self.output, INDEX_NAME), index)
        yield index


class WriteShards(beam.PTransform):
    """(shard, record) elements -> shards + `_index.json`; returns a PCollection of the index."""

    def __init__(self, output: str, prefix: str, kind: str, fingerprint: str, write: Callable,
                 num_shards, previous: dict[str, ShardReport], namespace: str, extra=None,
                 expected_rows: int | None = None) -> None:
        super().__init__()
        self.args = (output, prefix, kind, fingerprint, write, previous, namespace, extra, expected_rows)
        self.num_shards = num_shards

    def expand(self, keyed):
        output, prefix, kind, fingerprint, write, previous, namespace, extra, expected_rows = self.args
        n = beam.pvalue.AsSingleton(self.num_shards)
        reports = (
            keyed
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(output, prefix, write, namespace), num_shards=n)
        )
        return (
            reports
            | "AllReports" >> beam.combiners.ToList()
            | "WriteIndex" >> beam.ParDo(WriteIndex(output, prefix, kind, fingerprint, write, previous, namespace, extra,
                                                    expected_rows), num_shards=n)
        )


def input_shards(inputs: list[str], stage: str) -> tuple[list[tuple[str, dict]], int, list[str]]:
    """Pair-shard folders -> ([(folder, shard entry)], total input rows, source names), from each
    folder's `_index.json` (readers trust only the index)."""
    from curation.core.shards import INDEX_NAME
    from pipelines import fsio

    shards, rows, sources = [], 0, []
    for folder in inputs:
        folder = folder.rstrip("/")
        path = fsio.join(folder, INDEX_NAME)
        if not fsio.exists(path):
            raise FileNotFoundError(f"{folder}: no {INDEX_NAME}; not a finished pair-shard output (run ingest first)")
        index = fsio.read_json(path)
        if index.get("kind") != "pairs":
            raise ValueError(f"{path}: kind {index.get('kind')!r}, {stage} reads pair shards")
        shards += [(folder, entry) for entry in index["shards"]]
        rows += index["totals"]["inputs"]
        sources.append(str(index.get("source", os.path.basename(folder))))
    return shards, rows, sources


def run_pair_shard_job(cfg: Any, inputs: list[str], output: str, beam_args: list[str] | None, stage: str,
                       namespace: str, build: Callable) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a stage that reads pair-shard folders and writes pair
    shards (dedup, annotate). `build(p, shards, num_shards, output, fingerprint, previous, sources)`
    wires the graph. The job is its config plus the exact input shards (their hashes), not file
    names and sizes."""
    import dataclasses

    from curation.core.shards import INDEX_NAME, num_shards_for

    shards, rows, sources = input_shards(inputs, stage)
    num_shards = num_shards_for(rows, cfg.shards.samples_per_shard)
    semantic = dataclasses.replace(cfg, progress=True)
    index_paths = [f"{folder.rstrip('/')}/{INDEX_NAME}" for folder in inputs]
    identity = sorted((entry["tar_sha256"], entry["manifest_sha256"]) for _, entry in shards)
    return run_sharded_job(
        index_paths, output, semantic,
        lambda p, files, out, fp, prev: build(p, shards, num_shards, out, fp, prev, sources),
        namespace, beam_args, input_identity=identity)


def run_sharded_job(inputs: list[str], output: str, semantic_cfg: Any, build: Callable, namespace: str,
                    beam_args: list[str] | None = None, preflight: Callable[[], None] | None = None,
                    input_identity: Any = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a sharded-output job; returns the index document.

    `build(p, files, output, fingerprint, previous)` wires the graph; `preflight` runs only when
    there is work to do, before the output folder is claimed. The job's identity is its config plus
    the input files' full paths, sizes and modification times (and the root they are named relative
    to), or `input_identity` when the caller knows better (shard hashes)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from curation.core.rows import input_root

    matched = fsio.match(inputs)
    identity = input_identity if input_identity is not None else files_identity(matched, input_root(inputs))
    fingerprint = job_fingerprint(semantic_cfg, identity)
    state = JobState(output, fingerprint, fsio)
    finished = state.finished()
    if finished is not None:
        log.info("%s already holds this finished job; nothing to do", output)
        return finished
    if preflight is not None:
        preflight()
    state.claim()
    removed = fsio.remove_stale_temps(output)
    if removed:
        log.warning("%s: removed %d temporary files a killed run left behind", output, removed)
    previous = state.done_reports()
    options = PipelineOptions(beam_args or [])
    if not any(a.startswith("--runner") for a in beam_args or []):
        options.view_as(StandardOptions).runner = "DirectRunner"
    with beam.Pipeline(options=options) as p:
        build(p, [f.path for f in matched], output, fingerprint, previous)
    index = fsio.read_json(state.index_path())
    index["_metrics"] = job_metrics(p.result, namespace)
    return index


def job_metrics(result, namespace: str) -> dict[str, int]:
    """Counters of this run in one namespace, for the end-of-run report."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))
    except Exception:  # noqa: BLE001 - some runners report no metrics
        return {}
    out: dict[str, int] = {}
    for c in found["counters"]:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    for d in found.get("distributions", []):  # group sizes: the largest one is what bounds a worker
        value = d.committed or d.attempted
        if value is not None and value.count:
            name = f"{d.key.metric.name}_max"
            out[name] = max(out.get(name, 0), int(value.max))
    return dict(sorted(out.items()))
