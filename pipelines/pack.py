"""Pack: conversation / preference jsonl -> tile + tokenize -> shard by uid -> sort -> pack -> write.

Only wiring: parsing lives in curation/core/conversations.py, tiling and tokens in packing/, the packer
and the packed-shard format in packing/. Every input row ends in one manifest row, kept (with its
pack) or rejected with a reason. A recipe with a `target_ratio` runs a counting pass over its meta
datasets first (each row encoded once more) to choose the per-dataset weights.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from packing.config import PackConfig
from curation.core.records import Rejection, RowRef
from pipelines import fsio
from pipelines.sharded_output import AssignShard, WriteShards, not_done, run_sharded_job
from pipelines.progress import worker_bar
from pipelines.sharded_input import ReadAndCount

NS = "curate.pack"


class ReadConversations(beam.DoFn):
    """path -> every row as Conversation, PreferencePair or Rejection, image paths resolved; images
    a row carries as bytes (HF parquet, data URIs) are staged under `{output}/_embedded/`."""

    def __init__(self, cfg: PackConfig, output: str, root: str = "") -> None:
        self.cfg = cfg
        self.output = output
        self.root = root  # --input files are named relative to it (rows.input_root)
        self.datasets = {_file_key(d.annotation): d for d in cfg.datasets}

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        from curation.core.conversations import read_conversations
        from curation.core.rows import relative_name
        from packing.meta import dataset_rows

        ds = self.datasets.get(_file_key(path))
        name = posixpath.basename(path) if ds else relative_name(path, self.root)
        root = ds.root if ds else self.cfg.image_root or posixpath.dirname(path)
        inputs = Metrics.counter(NS, "inputs")
        with FileSystems.open(path) as f:
            for rec in read_conversations(f, path, source_file=name, uid=self.cfg.uid, source=ds.name if ds else ""):
                inputs.inc()
                if ds is None:
                    yield self._resolved(rec, root)
                else:
                    yield from dataset_rows(rec, ds, self.cfg.tiling, lambda r: self._resolved(r, root))

    def _resolved(self, rec, root: str):
        """Image paths resolved under `root`, embedded images staged; a bad one rejects the row."""
        from packing.tokens import EncodeError
        from packing.units import resolve_image

        if isinstance(rec, Rejection):
            return rec
        try:
            rec.images = [self._stage(rec, k, rec.embedded[k]) if k < len(rec.embedded) and rec.embedded[k]
                          else resolve_image(root, p) for k, p in enumerate(rec.images)]
            rec.embedded = []
        except EncodeError as err:
            return Rejection(RowRef(rec.uid, rec.source_file, rec.source_row), "read", err.reason, err.detail)
        return rec

    def _stage(self, rec, k: int, data: bytes) -> str:
        """An embedded image written once to a stable file name; its path from then on."""
        import io

        from curation.core.image_refs import embedded_name
        from packing.units import read_header

        _, _, ext = read_header(io.BytesIO(data), self.cfg.max_pixels)  # EncodeError: the row's rejection
        path = fsio.join(self.output, "_embedded", embedded_name(rec.uid, k, data, ext))
        fsio.write_atomic(path, lambda f: f.write(data))
        return path


def _file_key(path: str) -> str:
    import os

    return path if "://" in path else os.path.abspath(path)


class Encode(beam.DoFn):
    """(shard, record) -> (shard, PackUnit | Rejection): image headers, tiling, tokens, limits.

    The tokenizer loads once per worker; a failure is a rejection for that row only."""

    def __init__(self, cfg: PackConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        from packing.tokens import ChatEncoder
        from packing.tokenizer import load_tokenizer
        from packing.units import UnitBuilder, UnitLimits

        cfg = self.cfg
        encoder = ChatEncoder.from_recipe(load_tokenizer(cfg.tokenizer), cfg.template, cfg.system_prompt, cfg.bos, cfg.tokenizer)
        limits = UnitLimits(cfg.l_max, cfg.t_max, cfg.tiling.max_num, cfg.tiling.min_num, cfg.tiling.use_thumbnail, cfg.truncate,
                            cfg.text_only_blank_tile)
        self.builder = UnitBuilder(encoder, limits)
        self.units = Metrics.counter(NS, "units")
        self.rejected = Metrics.counter(NS, "encode_rejected")
        self.tokens = Metrics.distribution(NS, "unit_tokens")
        self.bar = worker_bar("encode", "sample") if cfg.progress else None

    def _header(self, path: str, by_content: bool):
        from apache_beam.io.filesystems import FileSystems

        from packing.units import look_image

        return look_image(path, self.cfg.max_pixels, by_content,
                          lambda p: FileSystems.open(p, compression_type="uncompressed"), fsio.read_image)

    def process(self, element):
        from packing.tokens import EncodeError

        shard, rec = element
        if self.bar is not None:
            self.bar.update(1)
        if isinstance(rec, Rejection):
            yield element
            return
        try:
            looked = [self._header(p, len(rec.images) > 1) for p in rec.images]
            unit = self.builder.build(rec, [h for h, _ in looked], [k for _, k in looked])
        except EncodeError as err:
            self.rejected.inc()
            yield shard, Rejection(RowRef(rec.uid, rec.source_file, rec.source_row), "encode", err.reason, err.detail)
            return
        self.units.inc()
        self.tokens.update(unit.tokens)
        yield shard, unit

    def teardown(self) -> None:
        if self.bar is not None:
            self.bar.close()


def uid_of(rec) -> str:
    return rec.uid


def _sides(element):
    _, unit = element
    if isinstance(unit, Rejection):
        return
    from packing.meta import token_sides

    side = token_sides(unit)
    if side is not None:
        yield (side[0], side[1]), side[2]


def count_dataset_tokens(cfg: PackConfig, output: str, beam_args: list[str] | None = None) -> dict[str, dict[str, int]]:
    """The target ratio's counting pass: every meta dataset read, encoded once per row (repeat_time
    1) and summed into {dataset: {text, multimodal}} tokens; kept in `{output}/_dataset_tokens.json`
    under the pass's own fingerprint, so a rerun (or a resumed job) counts nothing again."""
    from curation.core.jobstate import input_identity, job_fingerprint
    from pipelines import local_runner

    options = local_runner.pipeline_options(beam_args)  # first: the launcher's FileSystems get the job's stores
    once = dataclasses.replace(cfg, progress=False, target_ratio=None,
                               datasets=[dataclasses.replace(d, repeat_time=1.0, ratio_weight=1.0) for d in cfg.datasets])
    path = fsio.join(output, "_dataset_tokens.json")
    key = job_fingerprint(once, input_identity(fsio.match([d.annotation for d in cfg.datasets])))
    if fsio.exists(path) and fsio.read_json(path).get("fingerprint") == key:
        return fsio.read_json(path)["counts"]

    def write(pairs):
        counts: dict[str, dict[str, int]] = {d.name: {"text": 0, "multimodal": 0} for d in cfg.datasets}
        for (name, side), n in pairs:
            counts[name][side] = int(n)
        fsio.write_json(path, {"fingerprint": key, "counts": counts})

    with local_runner.pipeline(options) as p:
        _ = (
            p
            | "InputFiles" >> beam.Create([d.annotation for d in cfg.datasets])
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(ReadConversations(once, output))
            | "Key" >> beam.Map(lambda rec: (0, rec))
            | "SpreadEncode" >> beam.Reshuffle()
            | "Encode" >> beam.ParDo(Encode(once))
            | "Sides" >> beam.FlatMap(_sides)
            | "Sum" >> beam.CombinePerKey(sum)
            | "All" >> beam.combiners.ToList()
            | "Write" >> beam.Map(write)
        )
    return fsio.read_json(path)["counts"]


def with_target_ratio(cfg: PackConfig, output: str, beam_args: list[str] | None = None) -> tuple[PackConfig, dict | None]:
    """The recipe with each meta dataset's ratio weight set (a counting pass first), and the
    `_index.json` record of the weights; the recipe unchanged without a target ratio."""
    if cfg.target_ratio is None:
        return cfg, None
    if not cfg.datasets:
        raise ValueError("target_ratio weights meta datasets: give a --meta file")
    from packing.meta import ratio_weights

    counts = count_dataset_tokens(cfg, output, beam_args)
    plan = ratio_weights(counts, cfg.datasets, cfg.target_ratio, cfg.ratio_by)
    datasets = [dataclasses.replace(d, ratio_weight=plan.weights[d.name]) for d in cfg.datasets]
    return dataclasses.replace(cfg, datasets=datasets), {**plan.record(), "by": cfg.ratio_by, "counts": counts}


def build_pack(p: beam.Pipeline, cfg: PackConfig, files: list[str], output: str, fingerprint: str,
               previous: beam.PCollection, root: str = "", ratio: dict[str, Any] | None = None) -> beam.PCollection:
    """Wire the pack graph on `p`; returns the PCollection holding the written index."""
    from packing.format import PackPlan, write_pack_shard
    from packing.tokens import ChatEncoder

    prefix = cfg.shards.prefix
    rows, num_shards, read = p | "Read" >> ReadAndCount(files, ReadConversations(cfg, output, root), cfg.shards.samples_per_shard)
    n = beam.pvalue.AsSingleton(num_shards)
    write = functools.partial(write_pack_shard, plan=PackPlan(cfg.l_max, cfg.t_max, cfg.buffer), read_image=fsio.read_image)
    assigned = rows | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=uid_of)
    return (
        assigned
        | "SkipDoneShards" >> beam.Filter(not_done(prefix), num_shards=n, done=beam.pvalue.AsDict(previous))
        | "SpreadEncode" >> beam.Reshuffle()
        | "Encode" >> beam.ParDo(Encode(cfg))
        | "Write" >> WriteShards(output, prefix, "packs", fingerprint, write, num_shards, previous, NS,
                                 extra={"l_max": cfg.l_max, "t_max": cfg.t_max, "tokenizer": cfg.tokenizer,
                                        "template": ChatEncoder.resolve(cfg.template, cfg.tokenizer), **({"ratio": ratio} if ratio else {})},
                                 assigned=assigned, rows_read=read)
    )


def run_pack(cfg: PackConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a pack job; returns the index document. The recipe's
    meta datasets (`cfg.datasets`) are read beside `inputs`."""
    from packing.tokenizer import load_tokenizer

    from curation.core.rows import input_root

    root = input_root(list(inputs)) if inputs else ""
    inputs = [d.annotation for d in cfg.datasets] + list(inputs)
    if not inputs:
        raise ValueError("nothing to pack: give --input files or a --meta file")
    cfg, ratio = with_target_ratio(cfg, output, beam_args)  # a counting pass first, when the recipe has a target ratio
    return run_sharded_job(
        inputs, output, dataclasses.replace(cfg, progress=True),
        lambda p, files, out, fp, prev: build_pack(p, cfg, files, out, fp, prev, root, ratio), NS, beam_args,
        # fail before the pipeline starts; this also builds the builtin tokenizer once, not per worker
        preflight=lambda: load_tokenizer(cfg.tokenizer))
