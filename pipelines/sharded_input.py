"""Reading what a stage starts from, counted: input files read (split reads included) with the rows
read beside them, and the pair shards of earlier stages (each input folder's `_index.json` names
its shards; a shard is read whole, its rows in order)."""

from __future__ import annotations

import os
from typing import NamedTuple

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



class ReadShard(beam.DoFn):
    """InputShard -> every manifest row of the shard as Sample or Rejection, after checking the tar
    and manifest against the sha256 the index lists; with `origin`, each as ((input, shard,
    position), record), what tells apart rows repeated across inputs."""

    def __init__(self, progress: bool, namespace: str, stage: str, origin: bool = False) -> None:
        self.progress = progress
        self.namespace = namespace
        self.stage = stage
        self.origin = origin

    def setup(self) -> None:
        self.bar = worker_bar(f"{self.stage} read", "row") if self.progress else None

    def process(self, element):
        import hashlib
        import io

        from curation.core.shards import ShardFormatError, read_pair_shard
        from pipelines import fsio

        input_no, folder, entry = element
        blobs = {}
        for part in ("tar", "manifest"):
            data = fsio.read_bytes(fsio.join(folder, entry[part]))
            if hashlib.sha256(data).hexdigest() != entry[f"{part}_sha256"]:
                raise ShardFormatError(f"{folder}/{entry[part]}: sha256 differs from the index (changed or corrupt)")
            blobs[part] = data
        inputs = Metrics.counter(self.namespace, "inputs")
        position = -1
        for position, rec in enumerate(read_pair_shard(io.BytesIO(blobs["tar"]), io.BytesIO(blobs["manifest"]))):
            inputs.inc()
            if self.bar is not None:
                self.bar.update(1)
            yield ((input_no, entry["name"], position), rec) if self.origin else rec
        if position + 1 != entry["rows"]:
            raise ShardFormatError(f"{folder}/{entry['manifest']}: {position + 1} rows, the index lists {entry['rows']}")

    def teardown(self) -> None:
        if self.bar is not None:
            self.bar.close()



class InputShard(NamedTuple):
    """One shard of an input pair-shard folder: which input (its position on the command line, so
    a folder given twice is two inputs), the folder and its index entry."""

    input_no: int
    folder: str
    entry: dict



def folder_shards(input_no: int, folder: str, stage: str) -> tuple[list[InputShard], int, str]:
    """One pair-shard folder -> (its InputShards, its input rows, its source name), from its
    `_index.json` (readers trust only the index)."""
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
    shards = [InputShard(input_no, folder, entry) for entry in index["shards"]]
    return shards, index["totals"]["inputs"], str(index.get("source", os.path.basename(folder)))



def input_shards(inputs: list[str], stage: str) -> tuple[list[InputShard], int, list[str]]:
    """Pair-shard folders -> (their InputShards, total input rows, source names)."""
    shards, rows, sources = [], 0, []
    for input_no, folder in enumerate(inputs):
        found, n, source = folder_shards(input_no, folder, stage)
        shards += found
        rows += n
        sources.append(source)
    return shards, rows, sources



def _read_folder_shards(item: tuple[int, str], stage: str) -> list[InputShard]:
    return folder_shards(item[0], item[1], stage)[0]



class ReadInputShards(beam.PTransform):
    """p -> the InputShards of pair-shard folders, each folder's index read on a worker: the job
    graph holds the folder names, not one entry per shard (585,000 at LAION-5B). `rows`: what the
    indexes list in all (the launcher reads them once for the job's identity)."""

    def __init__(self, folders: list[str], rows: int, stage: str) -> None:
        super().__init__()
        self.folders = folders
        self.rows = rows
        self.stage = stage

    def expand(self, p):
        return (
            p
            | "InputFolders" >> beam.Create(list(enumerate(self.folders)))
            | "ReadIndexes" >> beam.FlatMap(_read_folder_shards, self.stage)
            | "SpreadShards" >> beam.Reshuffle()
        )
