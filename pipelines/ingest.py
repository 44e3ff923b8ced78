"""Ingest: metadata files -> filters -> metadata dedup (URL, captions) -> download -> pixel filters -> pair shards.

Only wiring: the readers, filters, downloader and shard writer live in curation/ and filters/.
Every input row ends in exactly one manifest row, kept or rejected with a reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from curation.ingest.config import IngestConfig
from curation.core.records import Rejection, record_uid
from curation.core.heartbeat import Heartbeat
from curation.core.shards import write_pair_shard
from pipelines.sharded_output import AssignShard, WriteShards, not_done, run_sharded_job
from pipelines.progress import worker_bar
from pipelines.sharded_input import ReadAndCount
from pipelines.staging import STAGING, BundleStager

NS = "curate.ingest"


class SplitFile(beam.DoFn):
    """path -> (path, Split) per work item of the file (parquet row groups, line-format byte ranges)."""

    def __init__(self, cfg: IngestConfig, namespace: str = NS) -> None:
        self.cfg = cfg
        self.namespace = namespace

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        from curation.core.rows import detect_format, plan_splits

        fmt = detect_format(path, self.cfg.source.format)
        with FileSystems.open(path) as f:
            splits = plan_splits(f, fmt, path, self.cfg.source.split_rows)
        Metrics.counter(self.namespace, "read_splits").inc(len(splits))
        for split in splits:
            yield path, split


class ReadFile(beam.DoFn):
    """path, or (path, Split) -> every row (of that split) as Pair or Rejection (malformed rows
    included), its `source_file` the path relative to `root` (the input globs' fixed prefix,
    rows.input_root), its `source_row` the row's index in the file."""

    def __init__(self, cfg: IngestConfig, namespace: str = NS, root: str = "") -> None:
        self.cfg = cfg
        self.namespace = namespace
        self.root = root

    def process(self, element):
        from apache_beam.io.filesystems import FileSystems

        from curation.core.rows import WHOLE, relative_name
        from curation.ingest.sources import read_pairs

        path, split = element if isinstance(element, tuple) else (element, WHOLE)
        inputs = Metrics.counter(self.namespace, "inputs")
        with FileSystems.open(path) as f:
            for rec in read_pairs(f, self.cfg.source, path, relative_name(path, self.root), split):
                inputs.inc()
                yield rec


class MetadataFilters(beam.DoFn):
    """(shard, Pair) -> main output if every metadata filter keeps it, else a tagged Rejection."""

    REJECTED = "rejected"

    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        from filters.registry import build_filters

        self.filters = build_filters(self.cfg.metadata_filters, "metadata_filters")

    def process(self, element):
        shard, rec = element
        if isinstance(rec, Rejection):
            yield beam.pvalue.TaggedOutput(self.REJECTED, element)
            return
        for f in self.filters:
            verdict = f(rec)
            if not verdict.ok:
                yield beam.pvalue.TaggedOutput(self.REJECTED, (shard, Rejection(rec, f.stage, verdict.reason, verdict.detail)))
                return
        yield element


def _dup_key_of(element, score_field: str | None):
    from filters.dedup.keys import dup_key

    return dup_key(element[1], score_field)


def _by_node(element, score_field: str | None):
    """(shard, Pair) -> (its dedup node, (shard, Pair)): the node a Decision names."""
    return _dup_key_of(element, score_field).node, element


def _apply_decision(item):
    """CoGroup by node of (shard, Pair) and its Decision, if any -> kept, or a tagged Rejection."""
    _, groups = item
    decisions = list(groups["decisions"])
    for shard, pair in groups["pairs"]:
        if decisions:
            d = decisions[0]
            yield beam.pvalue.TaggedOutput("rejected", (shard, Rejection(pair, "dedup", d.reason, d.detail)))
        else:
            yield shard, pair


class Download(beam.DoFn):
    """((gate key, share), [(shard, Pair)]) -> (shard, Sample | Rejection), many requests in
    flight per worker, each site's within its job-wide share of the per-host limits.

    Results are yielded as they complete (kept images once their staging bundle file is written);
    whatever is still in flight or held at the end of a bundle is drained in finish_bundle. Order
    does not matter: the writer sorts."""

    def __init__(self, cfg: IngestConfig, output: str, nsfw_enforced: bool = False) -> None:
        self.cfg = cfg
        self.output = output
        self.nsfw_enforced = nsfw_enforced  # the launcher's NSFW gate: may its score reject

    def setup(self) -> None:
        from curation.ingest.download import Downloader, InFlight
        from filters.registry import build_filters

        pixel = build_filters(self.cfg.pixel_filters, "pixel_filters")
        models = (self.cfg.pixels, self.nsfw_enforced) if self.cfg.pixels.active else None
        if models is not None:  # load here, so a worker without the models fails the job, not every row
            from filters.quality.faces import face_cascade
            from filters.quality.nsfw import nsfw_model

            if self.cfg.pixels.nsfw.enabled:
                nsfw_model(self.cfg.pixels.nsfw.threads)
            if self.cfg.pixels.faces.detect:
                face_cascade()
        self.downloader = Downloader(self.cfg.download, self.cfg.image, self.cfg.source, pixel, models, self.cfg.video)
        self.inflight = InFlight(self._one, self.cfg.download.threads)
        self.kept = Metrics.counter(NS, "downloaded")
        self.failed = Metrics.counter(NS, "download_failed")
        self.bytes = Metrics.counter(NS, "image_bytes_written")
        self.internal = Metrics.counter(NS, "internal_error")
        self.stager = BundleStager(self.output, int(self.cfg.staging_bundle_mb * 2**20)) if self.cfg.stage_images else None
        self.bar = worker_bar("download", "img") if self.cfg.progress else None
        self.heartbeat = None if self.bar is not None else Heartbeat("download", self.cfg.progress_every_s).start()

    def _one(self, element):
        shard, pair, gate = element
        return shard, self.downloader(pair, gate)

    def _count(self, results):
        for shard, rec in results:
            if self.heartbeat is not None:
                self.heartbeat.done(rec.reason if isinstance(rec, Rejection) else None)
            if isinstance(rec, Rejection):
                self.failed.inc()
                if rec.reason == "internal_error":
                    self.internal.inc()
            else:
                self.kept.inc()
                self.bytes.inc(len(rec.image.data))
            if self.bar is not None:
                self.bar.update(1)
            if self.stager is not None and not isinstance(rec, Rejection):
                yield from self.stager.add(shard, rec)  # released when its bundle file is written
            else:
                yield shard, rec

    def process(self, element):
        """((gate key, share), the site's (shard, Pair) rows): one group per key in the whole job."""
        from curation.ingest.hosts import key_slots

        (key, share), rows = element
        gate, cap = key_slots(key, share, self.cfg.download.per_host_concurrency)
        for shard, pair in rows:
            if self.heartbeat is not None:
                self.heartbeat.started()
            yield from self._count(self.inflight.submit((shard, pair, gate), key, cap))

    def finish_bundle(self):
        for result in self._count(self.inflight.drain()):
            yield GlobalWindows.windowed_value(result)
        for result in self.stager.flush() if self.stager is not None else []:
            yield GlobalWindows.windowed_value(result)

    def teardown(self) -> None:
        self.inflight.close()
        self.downloader.close()
        if self.bar is not None:
            self.bar.close()
        if self.heartbeat is not None:
            self.heartbeat.stop()


def _site(element) -> str:
    from curation.ingest.hosts import site_of

    return site_of(element[1])


def _by_gate(element, hot: dict[str, int]):
    """(shard, Pair) -> ((gate key, share), (shard, Pair))."""
    from curation.ingest.hosts import download_key

    return download_key(element[1], hot), element


class SiteGroups(beam.PTransform):
    """(shard, Pair) -> ((gate key, share), [(shard, Pair)]): the rows counted per site, the hot
    sites split into sub-keys, and every key's rows grouped, so each key is downloaded by one
    worker at a time: per-host limits hold for the whole job."""

    def __init__(self, cfg: IngestConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, rows):
        from curation.ingest.hosts import HostBudget

        d = self.cfg.download
        budget = HostBudget(d.hot_host_rows, d.max_host_subkeys, d.per_host_concurrency)
        hot = (
            rows
            | "SiteOf" >> beam.Map(_site)
            | "RowsPerSite" >> beam.combiners.Count.PerElement()
            | "HotSites" >> beam.Map(lambda kv, b: (kv[0], b.subkeys(kv[1])), b=budget)
            | "SplitOnly" >> beam.Filter(lambda kv: bool(kv[0]) and kv[1] > 1)
        )
        return (
            rows
            | "KeyBySite" >> beam.Map(_by_gate, hot=beam.pvalue.AsDict(hot))
            | "GroupBySite" >> beam.GroupByKey()
        )


def write_staged_shard(shard: int, name: str, records, tar_file, manifest_file):
    """The pair-shard writer over staged images: fetched into a local spill file bundle by bundle,
    then streamed into the tar one at a time (bounded memory, whatever the shard's size)."""
    import tempfile

    from pipelines.staging import Unstaged

    records = list(records)
    with tempfile.TemporaryFile() as spill:
        return write_pair_shard(shard, name, records, tar_file, manifest_file, Unstaged(records, spill).load)


class MetadataDecisions(beam.PTransform):
    """(shard, Pair | Rejection) -> (filtered (shard, Pair), rejected (shard, Rejection), Decisions):
    the metadata filters, then the recipe's URL / caption dedup (exact and near) as one Decision per
    duplicate, not yet applied to the rows."""

    def __init__(self, cfg: IngestConfig, namespace: str = NS) -> None:
        super().__init__()
        self.cfg = cfg
        self.namespace = namespace

    def expand(self, keyed):
        filtered = keyed | "MetadataFilters" >> beam.ParDo(MetadataFilters(self.cfg)).with_outputs(MetadataFilters.REJECTED, main="kept")
        dedup = self.cfg.metadata_dedup()
        if dedup is None:
            return filtered.kept, filtered.rejected, keyed.pipeline | "NoDecisions" >> beam.Create([])
        from pipelines.dedup.decisions import DedupDecisions

        decisions = (
            filtered.kept
            | "DupKeys" >> beam.Map(_dup_key_of, dedup.score_field)
            | "Dedup" >> DedupDecisions(dedup, self.namespace, images=False)
        )
        return filtered.kept, filtered.rejected, decisions


class MetadataSteps(beam.PTransform):
    """(shard, Pair | Rejection) -> (kept (shard, Pair), rejected (shard, Rejection)): the metadata
    filters and dedup, with each duplicate's Decision joined back onto its row before any download."""

    def __init__(self, cfg: IngestConfig, namespace: str = NS) -> None:
        super().__init__()
        self.cfg = cfg
        self.namespace = namespace

    def expand(self, keyed):
        kept, rejected, decisions = keyed | "Decisions" >> MetadataDecisions(self.cfg, self.namespace)
        dedup = self.cfg.metadata_dedup()
        if dedup is None:
            return kept, rejected
        deduped = (
            {"pairs": kept | "PairsByNode" >> beam.Map(_by_node, dedup.score_field),
             "decisions": decisions | "DecisionsByNode" >> beam.Map(lambda d: (d.node, d))}
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "ApplyDecisions" >> beam.FlatMap(_apply_decision).with_outputs("rejected", main="kept")
        )
        return deduped.kept, (rejected, deduped.rejected) | "AllRejected" >> beam.Flatten()


def build_ingest(p: beam.Pipeline, cfg: IngestConfig, files: list[str], output: str, fingerprint: str,
                 previous: beam.PCollection, root: str = "") -> beam.PCollection:
    """Wire the ingest graph on `p` (file names recorded relative to `root`); returns the
    PCollection holding the written index. With NSFW or CLIP scoring on, its gate is measured
    here, on the launcher (`nsfw_gate`, `clip_gate`), and goes into the index."""
    from filters.quality.clip import clip_gate
    from filters.quality.nsfw import nsfw_gate

    prefix = cfg.shards.prefix
    gate = nsfw_gate(cfg.pixels.nsfw) if cfg.pixels.nsfw.enabled else None
    clip = clip_gate(cfg.pixels.clip) if cfg.pixels.clip.enabled else None
    rows, num_shards, read = p | "Read" >> ReadAndCount(files, ReadFile(cfg, NS, root), cfg.shards.samples_per_shard,
                                                      SplitFile(cfg))
    n = beam.pvalue.AsSingleton(num_shards)
    keyed = rows | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=record_uid)
    kept, rejected = keyed | "Metadata" >> MetadataSteps(cfg)
    todo, done = not_done(prefix), beam.pvalue.AsDict(previous)
    downloaded = (
        kept
        | "SkipDoneShards" >> beam.Filter(todo, num_shards=n, done=done)
        | "BySite" >> SiteGroups(cfg)
        | "Download" >> beam.ParDo(Download(cfg, output, bool(gate and gate["enforced"])))
    )
    if clip is not None:
        from pipelines.pixel_scores import ClipScores

        downloaded = downloaded | "PixelScores" >> ClipScores(cfg.pixels.clip, bool(clip["enforced"]),
                                                              bool(clip.get("aesthetic", {}).get("enforced")))
    rejected_todo = rejected | "SkipDoneRejected" >> beam.Filter(todo, num_shards=n, done=done)
    return (
        (downloaded, rejected_todo)
        | "Records" >> beam.Flatten()
        | "Write" >> WriteShards(output, prefix, "pairs", fingerprint, write_staged_shard, num_shards, previous, NS,
                                 extra={"source": cfg.source.name, **({"nsfw_gate": gate} if gate else {}),
                                        **({"clip_gate": clip} if clip else {})},
                                 assigned=keyed, rows_read=read)
    )


def run_ingest(cfg: IngestConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) an ingest job; returns the index document."""
    from curation.core.rows import input_root
    from pipelines import fsio

    # Progress bars, staging, read splits, the thread counts, the hot-host split and where and in
    # what batches the CLIP model runs do not change the output: not in the fingerprint.
    clip = dataclasses.replace(cfg.pixels.clip, batch_size=32, accelerator=None, share_across_processes=False)
    semantic = dataclasses.replace(cfg, progress=True, stage_images=True, staging_bundle_mb=64.0,
                                   pixels=dataclasses.replace(cfg.pixels, nsfw=dataclasses.replace(cfg.pixels.nsfw, threads=1),
                                                              clip=clip),
                                   source=dataclasses.replace(cfg.source, split_rows=0),
                                   download=dataclasses.replace(cfg.download, threads=1, hot_host_rows=10_000,
                                                                max_host_subkeys=16))
    root = input_root(inputs)
    index = run_sharded_job(inputs, output, semantic,
                            lambda p, files, out, fp, prev: build_ingest(p, cfg, files, out, fp, prev, root), NS, beam_args)
    fsio.delete_tree(fsio.join(output, STAGING))  # every shard is written: the staged copies are no longer needed
    return index
