"""Deterministic sharded output with resumption, shared by every stage that writes shards (the
reading side: pipelines/sharded_input.py).

key -> shard (stable hash of uid, shard count from the input row count) -> GroupByKey -> sort ->
write tar + manifest to temp names -> rename -> a per-shard progress marker -> `_index.json` last.
A rerun skips shards whose marker exists; a rerun of a finished job does nothing at all.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import apache_beam as beam
from apache_beam.metrics import Metrics

from curation.core.accounting import RowAccount, RowsLost, ShardStateError
from curation.core.jobstate import JobState, input_identity as files_identity, job_fingerprint
from curation.core.shards import INDEX_NAME, PROGRESS_DIR, ShardReport, build_index, shard_name
from pipelines import fsio
from pipelines import local_runner
from pipelines.progress import group_size
from pipelines.sharded_input import ReadInputShards, input_shards

log = logging.getLogger(__name__)


class AssignShard(beam.DoFn):
    """record -> (shard, record), with the shard count from a side input."""

    def process(self, record, num_shards: int, uid_of: Callable[[Any], str]):
        from curation.core.shards import shard_of

        yield shard_of(uid_of(record), num_shards), record


def not_done(prefix: str) -> Callable[[tuple[int, Any], int, dict], bool]:
    """Predicate for Filter: keep elements whose shard no previous run finished (`done`: a side
    input of `DoneShards`)."""

    def keep(element: tuple[int, Any], num_shards: int, done: dict) -> bool:
        return shard_name(prefix, element[0], num_shards) not in done

    return keep


def _done_reports(output: str, fingerprint: str):
    from curation.core.jobstate import JobState
    from pipelines import fsio

    yield from JobState(output, fingerprint, fsio).done_reports().items()


class DoneShards(beam.PTransform):
    """p -> (shard name, ShardReport) of every shard a previous run of this job finished, listed
    on a worker as the job starts: resume state read inside the pipeline, never pickled into its
    graph (585,000 reports at LAION-5B would outgrow Dataflow's job request). Side input of the
    skip filters and the index writer, so it is read before any shard is written."""

    def __init__(self, output: str, fingerprint: str) -> None:
        super().__init__()
        self.output = output
        self.fingerprint = fingerprint

    def expand(self, p):
        return p | "OutputFolder" >> beam.Create([self.output]) | "ListDone" >> beam.FlatMap(_done_reports,
                                                                                            self.fingerprint)


class WriteShard(beam.DoFn):
    """(shard, records) -> ShardReport, writing tar + manifest atomically, then the marker."""

    def __init__(self, output: str, prefix: str, write: Callable, namespace: str,
                 rows_of: Callable[[Any], int] | None = None) -> None:
        self.output = output
        self.prefix = prefix
        self.write = write
        self.namespace = namespace
        self.rows_of = rows_of

    def process(self, element, num_shards: int):
        """-> (its report, the elements the group held: rows, and decisions where they travel too;
        an element that stands for several rows, as an input shard a writer re-reads, counts by
        `rows_of`)."""
        shard, records = element
        records = list(records)
        report = write_one_shard(self.output, self.prefix, shard, num_shards, records, self.write, self.namespace)
        group_size(self.namespace, "write_shard", report.rows)
        yield report, sum(map(self.rows_of, records)) if self.rows_of else len(records)


def marker_path(output: str, name: str) -> str:
    """Where a finished shard's progress marker (its report) lives."""
    return fsio.join(output, PROGRESS_DIR, f"{name}.json")


def write_one_shard(output: str, prefix: str, shard: int, num_shards: int, records: list,
                    write: Callable, namespace: str) -> ShardReport:
    """Write one shard atomically. `write` returns a ShardReport, or (report, {file name: bytes})
    for stage-specific files written beside the tar (a pack index, say), recorded in the report."""
    import hashlib

    name = shard_name(prefix, shard, num_shards)
    marker = marker_path(output, name)
    if fsio.exists(marker):  # a retried bundle: a finished shard is never written twice
        log.warning("%s is already written (a retried bundle?); its marker's report stands", name)
        return ShardReport.from_json(fsio.read_bytes(marker).decode())
    tar_path = fsio.join(output, f"{name}.tar")
    man_path = fsio.join(output, f"{name}.parquet")
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
    fsio.write_json(marker, json.loads(report.to_json()))
    Metrics.counter(namespace, "shards_written").inc()
    Metrics.counter(namespace, "kept").inc(report.kept)
    for reason, count in report.reasons.items():
        Metrics.counter(namespace, f"rejected_{reason}").inc(count)
    for stat, count in report.stats.items():
        Metrics.counter(namespace, stat).inc(count)
    return report


class WriteIndex(beam.DoFn):
    """All reports -> checks -> `_index.json`, written last.

    Never rewrites a shard: a shard that got no rows (and has no marker) is written empty here so
    names stay contiguous; a marker without a report, or a report without a marker, is a
    `ShardStateError` naming the shard. Then the rows: each shard's writer must have got the rows
    assigned to it (`assigned`, per shard name) and all of them the rows read (`rows_read`), else
    `RowsLost` names the shards, and their markers are removed so a rerun writes them again."""

    def __init__(self, output: str, prefix: str, kind: str, fingerprint: str, write: Callable, namespace: str,
                 extra: dict[str, Any] | None = None) -> None:
        self.output = output
        self.prefix = prefix
        self.kind = kind
        self.fingerprint = fingerprint
        self.write = write
        self.namespace = namespace
        self.extra = extra

    def process(self, written: list[tuple[ShardReport, int]], num_shards: int, assigned: dict[int, int] | None = None,
                decisions: dict[int, int] | None = None, rows_read: int | None = None,
                previous: dict[str, ShardReport] | None = None, extra_side: dict[str, Any] | None = None):
        stage = self.namespace.rsplit(".", 1)[-1]
        suffix = f"-of-{num_shards:05d}.json"
        markers = {p.rsplit("/", 1)[-1][:-5] for p in fsio.listdir(fsio.join(self.output, PROGRESS_DIR), suffix)}
        this_run = {r.name: r for r, _ in written}
        by_name = {r.name: r for r in (previous or {}).values() if r.name.endswith(suffix[:-5])}
        by_name.update(this_run)

        def per_name(counts: dict[int, int] | None) -> dict[str, int]:
            return {shard_name(self.prefix, s, num_shards): c for s, c in (counts or {}).items()}

        expected = None if assigned is None else per_name(assigned)
        problems = [f"{name}: a report but no progress marker" for name in sorted(set(this_run) - markers)]
        for shard in range(num_shards):
            name = shard_name(self.prefix, shard, num_shards)
            if name in by_name:
                continue
            if name in markers:
                problems.append(f"{name}: a progress marker but no report reached the index")
            elif not (expected or {}).get(name):  # no row hashed here: an empty shard keeps names contiguous
                by_name[name] = write_one_shard(self.output, self.prefix, shard, num_shards, [], self.write,
                                                self.namespace)
        if problems:
            raise ShardStateError(f"{stage}: {self.output}: " + "; ".join(problems))
        account = RowAccount(stage, self.output, rows_read, expected, {n: r.rows for n, r in by_name.items()},
                             decisions=per_name(decisions), elements_got={r.name: n for r, n in written})
        problem = account.problem()
        if problem is not None:
            for name in account.redo(set(this_run)):
                if fsio.exists(marker_path(self.output, name)):
                    fsio.delete(marker_path(self.output, name))
            raise RowsLost(problem)
        index = build_index(by_name.values(), kind=self.kind, prefix=self.prefix, num_shards=num_shards,
                            fingerprint=self.fingerprint,
                            extra={**(self.extra or {}), **(extra_side or {}), "rows": account.totals()})
        fsio.write_json(fsio.join(self.output, INDEX_NAME), index)
        yield index


class WriteShards(beam.PTransform):
    """(shard, record) elements -> shards + `_index.json`; returns a PCollection of the index.

    `previous`: `DoneShards` of this job (what earlier runs finished);
    `assigned`: the (shard, row) elements as first assigned, before finished shards are skipped or
    any step runs, counted per shard; `decisions`: the (shard, Decision) elements that go to the
    writers beside the rows, counted where they are keyed; `rows_read`: the rows the stage read (an
    int, or a singleton PCollection); `rows_of`: the rows an element stands for, where not one
    (an input shard that its writer re-reads); `extra_side`: a singleton PCollection of index
    fields the job computes (annotate's calibration). The index is written only if every shard's
    writer got exactly its rows (and decisions)."""

    def __init__(self, output: str, prefix: str, kind: str, fingerprint: str, write: Callable,
                 num_shards, previous: beam.PCollection, namespace: str, extra=None,
                 assigned=None, rows_read=None, decisions=None, rows_of: Callable[[Any], int] | None = None,
                 extra_side: beam.PCollection | None = None) -> None:
        super().__init__()
        self.args = (output, prefix, kind, fingerprint, write, previous, namespace, extra)
        self.num_shards = num_shards
        self.assigned = assigned
        self.decisions = decisions
        self.rows_read = rows_read
        self.rows_of = rows_of
        self.extra_side = extra_side

    def expand(self, keyed):
        output, prefix, kind, fingerprint, write, previous, namespace, extra = self.args
        n = beam.pvalue.AsSingleton(self.num_shards)
        side = {"previous": beam.pvalue.AsDict(previous)}
        rows_of = self.rows_of or (lambda e: 1)
        for name, keyed_elements in (("assigned", self.assigned), ("decisions", self.decisions)):
            if keyed_elements is not None:
                side[name] = beam.pvalue.AsDict(
                    keyed_elements
                    | f"{name.title()}ShardOnly" >> beam.Map(lambda e: (e[0], rows_of(e[1])))
                    | f"{name.title()}PerShard" >> beam.CombinePerKey(sum))
        if self.extra_side is not None:
            side["extra_side"] = beam.pvalue.AsSingleton(self.extra_side)
        if isinstance(self.rows_read, beam.PCollection):
            side["rows_read"] = beam.pvalue.AsSingleton(self.rows_read)
        elif self.rows_read is not None:
            side["rows_read"] = self.rows_read
        reports = (
            keyed
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(output, prefix, write, namespace, self.rows_of), num_shards=n)
        )
        return (
            reports
            | "AllReports" >> beam.combiners.ToList()
            | "WriteIndex" >> beam.ParDo(WriteIndex(output, prefix, kind, fingerprint, write, namespace, extra),
                                         num_shards=n, **side)
        )


def run_pair_shard_job(cfg: Any, inputs: list[str], output: str, beam_args: list[str] | None, stage: str,
                       namespace: str, build: Callable, one_to_one: bool = False,
                       semantic_of: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a stage that reads pair-shard folders and writes pair
    shards (dedup, annotate). `build(p, shards, num_shards, output, fingerprint, previous, sources)`
    wires the graph. The job is its config plus the exact input shards (their hashes), not file
    names and sizes. `one_to_one`: one output shard per input shard (a stage whose writers re-read
    their input shard), else as many as `shards.samples_per_shard` asks. `semantic_of`: the config
    with the knobs that do not change the output normalised, for the job's fingerprint."""
    import dataclasses
    from collections import Counter

    from curation.core.shards import INDEX_NAME, num_shards_for

    local_runner.pipeline_options(beam_args)  # first: the launcher's FileSystems get the job's stores
    shards, rows, sources = input_shards(inputs, stage)
    num_shards = len(shards) if one_to_one else num_shards_for(rows, cfg.shards.samples_per_shard)
    per_folder = Counter(s.input_no for s in shards)
    counts = [per_folder[i] for i in range(len(inputs))]
    semantic = (semantic_of or (lambda c: c))(dataclasses.replace(cfg, progress=True))
    index_paths = [f"{folder.rstrip('/')}/{INDEX_NAME}" for folder in inputs]
    identity = sorted((s.entry["tar_sha256"], s.entry["manifest_sha256"]) for s in shards)
    return run_sharded_job(
        index_paths, output, semantic,
        lambda p, files, out, fp, prev: build(p, ReadInputShards(inputs, rows, stage, counts), num_shards, out, fp, prev,
                                              sources),
        namespace, beam_args, input_identity=identity)


def run_sharded_job(inputs: list[str], output: str, semantic_cfg: Any, build: Callable, namespace: str,
                    beam_args: list[str] | None = None, preflight: Callable[[], None] | None = None,
                    input_identity: Any = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a sharded-output job; returns the index document.

    `build(p, files, output, fingerprint, previous)` wires the graph; `preflight` runs only when
    there is work to do, before the output folder is claimed. The job's identity is its config plus
    the input files' full paths, sizes and modification times (and the root they are named relative
    to), or `input_identity` when the caller knows better (shard hashes)."""
    from curation.core.rows import input_root

    options = local_runner.pipeline_options(beam_args)  # first: the launcher's FileSystems get the job's stores
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
    with local_runner.pipeline(options) as p:
        build(p, [f.path for f in matched], output, fingerprint, p | "DoneShards" >> DoneShards(output, fingerprint))
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
