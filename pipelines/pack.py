"""Pack: conversation / preference jsonl -> tile + tokenize -> shard by uid -> sort -> pack -> write.

Only wiring: parsing lives in curation/core/conversations.py, tiling and tokens in packing/, the packer
and the packed-shard format in packing/. Every input row ends in one manifest row, kept (with its
pack) or rejected with a reason.
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
from pipelines.sharded_output import AssignShard, ReadAndCount, WriteShards, not_done, run_sharded_job, worker_bar

NS = "curate.pack"


class ReadConversations(beam.DoFn):
    """path -> every row as Conversation, PreferencePair or Rejection, image paths resolved; images
    a row carries as bytes (HF parquet, data URIs) are staged under `{output}/_embedded/`."""

    def __init__(self, cfg: PackConfig, output: str) -> None:
        self.cfg = cfg
        self.output = output
        self.datasets = {_file_key(d.annotation): d for d in cfg.datasets}

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        from curation.core.conversations import read_conversations
        from packing.meta import dataset_rows

        ds = self.datasets.get(_file_key(path))
        root = ds.root if ds else self.cfg.image_root or posixpath.dirname(path)
        inputs = Metrics.counter(NS, "inputs")
        with FileSystems.open(path) as f:
            for rec in read_conversations(f, path):
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
        from packing.tokens import ChatEncoder, load_tokenizer, resolve_system_prompt
        from packing.units import UnitBuilder, UnitLimits

        cfg = self.cfg
        encoder = ChatEncoder(load_tokenizer(cfg.tokenizer), cfg.template, resolve_system_prompt(cfg.template, cfg.system_prompt))
        limits = UnitLimits(cfg.l_max, cfg.t_max, cfg.tiling.max_num, cfg.tiling.min_num, cfg.tiling.use_thumbnail, cfg.truncate)
        self.builder = UnitBuilder(encoder, limits)
        self.units = Metrics.counter(NS, "units")
        self.rejected = Metrics.counter(NS, "encode_rejected")
        self.tokens = Metrics.distribution(NS, "unit_tokens")
        self.bar = worker_bar("encode", "sample") if cfg.progress else None

    def _header(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        from packing.tokens import EncodeError
        from packing.units import read_header

        try:
            with FileSystems.open(path, compression_type="uncompressed") as f:
                return read_header(f, self.cfg.max_pixels)
        except EncodeError:
            raise
        except Exception as err:  # noqa: BLE001 - missing or unreadable file: that row's problem
            raise EncodeError("local_file_error", f"{posixpath.basename(path)}: {type(err).__name__}") from None

    def process(self, element):
        from packing.tokens import EncodeError

        shard, rec = element
        if self.bar is not None:
            self.bar.update(1)
        if isinstance(rec, Rejection):
            yield element
            return
        try:
            unit = self.builder.build(rec, [self._header(p) for p in rec.images])
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


def build_pack(p: beam.Pipeline, cfg: PackConfig, files: list[str], output: str, fingerprint: str,
               previous: dict[str, Any]) -> beam.PCollection:
    """Wire the pack graph on `p`; returns the PCollection holding the written index."""
    from packing.format import PackPlan, write_pack_shard

    prefix = cfg.shards.prefix
    rows, num_shards = p | "Read" >> ReadAndCount(files, ReadConversations(cfg, output), cfg.shards.samples_per_shard)
    n = beam.pvalue.AsSingleton(num_shards)
    write = functools.partial(write_pack_shard, plan=PackPlan(cfg.l_max, cfg.t_max, cfg.buffer), read_image=fsio.read_bytes)
    return (
        rows
        | "AssignShard" >> beam.ParDo(AssignShard(), num_shards=n, uid_of=uid_of)
        | "SkipDoneShards" >> beam.Filter(not_done(prefix, frozenset(previous)), num_shards=n)
        | "SpreadEncode" >> beam.Reshuffle()
        | "Encode" >> beam.ParDo(Encode(cfg))
        | "Write" >> WriteShards(output, prefix, "packs", fingerprint, write, num_shards, previous, NS,
                                 extra={"l_max": cfg.l_max, "t_max": cfg.t_max, "tokenizer": cfg.tokenizer,
                                        "template": cfg.template})
    )


def run_pack(cfg: PackConfig, inputs: list[str], output: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) a pack job; returns the index document. The recipe's
    meta datasets (`cfg.datasets`) are read beside `inputs`."""
    from packing.tokens import load_tokenizer

    inputs = [d.annotation for d in cfg.datasets] + list(inputs)
    if not inputs:
        raise ValueError("nothing to pack: give --input files or a --meta file")
    return run_sharded_job(
        inputs, output, dataclasses.replace(cfg, progress=True),
        lambda p, files, out, fp, prev: build_pack(p, cfg, files, out, fp, prev), NS, beam_args,
        # fail before the pipeline starts; this also builds the builtin tokenizer once, not per worker
        preflight=lambda: load_tokenizer(cfg.tokenizer))
