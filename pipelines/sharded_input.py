"""Reading what a stage starts from, counted: input files read (split reads included) with the rows
read beside them, and the pair shards of earlier stages (each input folder's `_index.json` names
its shards; a shard's tar is streamed into a local spill file and read from there, its rows in
order, images loaded only where a step needs them)."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.progress import worker_bar


class ReadAndCount(beam.PTransform):
    """Input file paths -> (records read by `read`, a singleton PCollection of the shard count from
    the number of records, one of the number itself: the rows read, which the writers must get),
    the shared front of every stage that reads files. With `split`, each file is first cut into
    work items (path -> (path, piece)) spread over the workers on their own."""

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
        count = rows | "CountRows" >> beam.combiners.Count.Globally()
        num_shards = count | "NumShards" >> beam.Map(num_shards_for, self.samples_per_shard)
        return rows, num_shards, count



@contextmanager
def opened_shard(shard: "InputShard") -> Iterator[tuple[list, Callable]]:
    """One input pair shard, checked against the sha256 its index lists: its tar is streamed into
    a local spill file (one sequential read of the object), its records come back without their
    image bytes (`read_pair_shard_lazy`) with `load(sample)` to fetch one from the spill. The
    spill is removed on exit. What a stage's first read and a writer that re-reads its input
    shard share."""
    import io
    import tempfile

    from curation.core.shards import ShardFormatError, read_pair_shard_lazy
    from pipelines import fsio

    folder, entry = shard.folder, shard.entry
    with tempfile.TemporaryFile(prefix="curate-shard-") as spill:
        if fsio.copy_into(fsio.join(folder, entry["tar"]), spill) != entry["tar_sha256"]:
            raise ShardFormatError(f"{folder}/{entry['tar']}: sha256 differs from the index (changed or corrupt)")
        manifest = fsio.read_bytes(fsio.join(folder, entry["manifest"]))
        if hashlib.sha256(manifest).hexdigest() != entry["manifest_sha256"]:
            raise ShardFormatError(f"{folder}/{entry['manifest']}: sha256 differs from the index (changed or corrupt)")
        spill.seek(0)
        records, load = read_pair_shard_lazy(spill, io.BytesIO(manifest))
        if len(records) != entry["rows"]:
            raise ShardFormatError(f"{folder}/{entry['manifest']}: {len(records)} rows, the index lists {entry['rows']}")
        yield records, load


class ReadShard(beam.DoFn):
    """InputShard -> every manifest row of the shard as Sample or Rejection (`opened_shard`); with
    `origin`, each as ((output shard, position), record), what tells apart rows repeated across
    inputs and names the shard their writer re-reads; with `lazy`, kept samples come without their
    image bytes (what dedup's keys need: none of them)."""

    def __init__(self, progress: bool, namespace: str, stage: str, origin: bool = False, lazy: bool = False) -> None:
        self.progress = progress
        self.namespace = namespace
        self.stage = stage
        self.origin = origin
        self.lazy = lazy

    def setup(self) -> None:
        self.bar = worker_bar(f"{self.stage} read", "row") if self.progress else None

    def process(self, shard):
        from curation.core.records import Sample

        inputs = Metrics.counter(self.namespace, "inputs")
        with opened_shard(shard) as (records, load):
            for position, rec in enumerate(records):
                if not self.lazy and isinstance(rec, Sample):
                    load(rec)
                inputs.inc()
                if self.bar is not None:
                    self.bar.update(1)
                records[position] = None  # handed on: the list no longer holds it
                yield ((shard.number, position), rec) if self.origin else rec

    def teardown(self) -> None:
        if self.bar is not None:
            self.bar.close()


class InputShard(NamedTuple):
    """One shard of an input pair-shard folder: which input (its position on the command line, so
    a folder given twice is two inputs), the folder, its index entry, and its number among all the
    inputs' shards (inputs in order, each in its index's order): the output shard a stage that
    writes one shard per input shard (dedup) gives its rows."""

    input_no: int
    folder: str
    entry: dict
    number: int = 0


def shard_rows(element: object) -> int:
    """Rows an element bound for a shard writer stands for: an InputShard its writer re-reads, all
    of its rows; anything else (a row, a decision), one."""
    return int(element.entry["rows"]) if isinstance(element, InputShard) else 1



def folder_shards(input_no: int, folder: str, stage: str, offset: int = 0) -> tuple[list[InputShard], int, str]:
    """One pair-shard folder -> (its InputShards, numbered from `offset`, its input rows, its source
    name), from its `_index.json` (readers trust only the index)."""
    from curation.core.shards import INDEX_NAME, check_index_names
    from pipelines import fsio

    folder = folder.rstrip("/")
    path = fsio.join(folder, INDEX_NAME)
    if not fsio.exists(path):
        raise FileNotFoundError(f"{folder}: no {INDEX_NAME}; not a finished pair-shard output (run ingest first)")
    index = fsio.read_json(path)
    if index.get("kind") != "pairs":
        raise ValueError(f"{path}: kind {index.get('kind')!r}, {stage} reads pair shards")
    check_index_names(index, path)
    shards = [InputShard(input_no, folder, entry, offset + i) for i, entry in enumerate(index["shards"])]
    return shards, index["totals"]["inputs"], str(index.get("source", os.path.basename(folder)))



def input_shards(inputs: list[str], stage: str) -> tuple[list[InputShard], int, list[str]]:
    """Pair-shard folders -> (their InputShards, total input rows, source names)."""
    shards, rows, sources = [], 0, []
    for input_no, folder in enumerate(inputs):
        found, n, source = folder_shards(input_no, folder, stage, len(shards))
        shards += found
        rows += n
        sources.append(source)
    return shards, rows, sources



def _read_folder_shards(item: tuple[int, str, int], stage: str) -> list[InputShard]:
    return folder_shards(item[0], item[1], stage, item[2])[0]



class ReadInputShards(beam.PTransform):
    """p -> the InputShards of pair-shard folders, each folder's index read on a worker: the job
    graph holds the folder names, not one entry per shard (585,000 at LAION-5B). `rows`: what the
    indexes list in all, `shards`: each folder's shard count (the launcher reads the indexes once
    for the job's identity), which numbers the shards across folders."""

    def __init__(self, folders: list[str], rows: int, stage: str, shards: list[int]) -> None:
        super().__init__()
        self.folders = folders
        self.rows = rows
        self.stage = stage
        self.offsets = [sum(shards[:i]) for i in range(len(folders))]
        self.total = sum(shards)

    def expand(self, p):
        return (
            p
            | "InputFolders" >> beam.Create([(i, f, o) for i, (f, o) in enumerate(zip(self.folders, self.offsets))])
            | "ReadIndexes" >> beam.FlatMap(_read_folder_shards, self.stage)
            | "SpreadShards" >> beam.Reshuffle()
        )
