"""pipelines/dask_runner.py on a real dask.distributed cluster (a scheduler and 2 worker processes
of one thread each, started here): each of Beam 2.77 DaskRunner's five defects as a plain-Beam
pipeline that comes out wrong on the stock runner and right on ours, plus what ours refuses.

Written so each test can go upstream: plain Beam, outputs written by a DoFn to files and read back."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

pytest.importorskip("distributed")

STOCK = "apache_beam.runners.dask.dask_runner.DaskRunner"
OURS = "pipelines.dask_runner.DaskRunner"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from curation.samples.dask_cluster import dask_cluster

    with dask_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address


class Record(beam.DoFn):
    """Each element written to its own file under `folder` (workers share this machine's disk)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def process(self, element):
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(self.folder, f"{uuid.uuid4().hex}.json"), "w") as f:
            json.dump(element, f)


def recorded(folder: Path) -> list:
    return sorted(json.loads(p.read_text()) for p in folder.glob("*.json")) if folder.exists() else []


def run(runner: str, cluster: str, build, *extra: str) -> None:
    opts = PipelineOptions(["--runner", runner, "--dask_client_address", cluster, *extra])
    with beam.Pipeline(options=opts) as p:
        build(p)


class EvenOdd(beam.DoFn):
    def process(self, n):
        yield n if n % 2 == 0 else beam.pvalue.TaggedOutput("odd", n)


@pytest.mark.parametrize("runner, right", [(STOCK, False), (OURS, True)], ids=["stock", "ours"])
def test_each_tag_of_a_multi_output_step_gets_its_own_elements(cluster, tmp_path, runner, right):
    def build(p):
        out = p | beam.Create(range(10)) | beam.ParDo(EvenOdd()).with_outputs("odd", main="even")
        _ = out.even | "Even" >> beam.ParDo(Record(str(tmp_path / "even")))
        _ = out.odd | "Odd" >> beam.ParDo(Record(str(tmp_path / "odd")))

    run(runner, cluster, build)
    got = (recorded(tmp_path / "even"), recorded(tmp_path / "odd"))
    assert (got == ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])) is right, got


class Buffer(beam.DoFn):
    """Emits nothing in process: everything in finish_bundle (as BatchElements' last batch)."""

    def start_bundle(self):
        self.held = []

    def process(self, n):
        self.held.append(n)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        for n in self.held:
            yield GlobalWindows.windowed_value(n)


@pytest.mark.parametrize("runner, right", [(STOCK, False), (OURS, True)], ids=["stock", "ours"])
def test_what_finish_bundle_emits_is_kept(cluster, tmp_path, runner, right):
    def build(p):
        rows = p | beam.Create(range(7))
        _ = rows | beam.ParDo(Buffer()) | beam.ParDo(Record(str(tmp_path / "out")))
        _ = (rows | "Batches" >> beam.BatchElements(min_batch_size=3, max_batch_size=3)
             | "Sizes" >> beam.Map(len) | "RecordBatches" >> beam.ParDo(Record(str(tmp_path / "batches"))))

    run(runner, cluster, build)
    got = (recorded(tmp_path / "out"), sum(recorded(tmp_path / "batches")))
    assert (got == (list(range(7)), 7)) is right, got


@pytest.mark.parametrize("runner, right", [(STOCK, False), (OURS, True)], ids=["stock", "ours"])
def test_rows_are_not_duplicated_across_partitions(cluster, tmp_path, runner, right):
    def build(p):
        rows = p | beam.Create(range(30)) | "Double" >> beam.Map(lambda n: 2 * n)
        count = rows | beam.combiners.Count.Globally()
        _ = (p | "One" >> beam.Create([0]) | "Read" >> beam.Map(lambda _, n: n, beam.pvalue.AsSingleton(count))
             | "RecordCount" >> beam.ParDo(Record(str(tmp_path / "count"))))
        _ = rows | "RecordRows" >> beam.ParDo(Record(str(tmp_path / "rows")))

    run(runner, cluster, build, "--dask_npartitions", "4")
    got = (recorded(tmp_path / "count"), recorded(tmp_path / "rows"))
    assert (got == ([30], sorted(2 * n for n in range(30)))) is right, got


class Mark(beam.DoFn):
    """Passes elements on and leaves one file per element processed: how often a step ran."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def process(self, n):
        os.makedirs(self.folder, exist_ok=True)
        Path(self.folder, uuid.uuid4().hex).touch()
        yield n


@pytest.mark.parametrize("runner, right", [(STOCK, False), (OURS, True)], ids=["stock", "ours"])
def test_a_side_input_is_computed_once(cluster, tmp_path, runner, right):
    """The side collection is written out and read by two steps over 4 partitions each: its step
    runs once per element, not again inside every task that reads it."""
    marks = tmp_path / "marks"

    def build(p):
        side = p | "Side" >> beam.Create(range(5)) | "Mark" >> beam.ParDo(Mark(str(marks)))
        _ = side | "RecordSide" >> beam.ParDo(Record(str(tmp_path / "side")))
        main = p | "Main" >> beam.Create(range(40))
        for name in ("Plus", "Minus"):
            sign = 1 if name == "Plus" else -1
            _ = (main | name >> beam.Map(lambda n, s, k=sign: n + k * sum(s), beam.pvalue.AsList(side))
                 | f"Record{name}" >> beam.ParDo(Record(str(tmp_path / name))))

    run(runner, cluster, build, "--dask_npartitions", "4")
    runs = len(list(marks.iterdir())) if marks.exists() else 0
    got = (runs, recorded(tmp_path / "Plus"), recorded(tmp_path / "Minus"))
    assert (got == (5, [n + 10 for n in range(40)], [n - 10 for n in range(40)])) is right, got


@pytest.mark.parametrize("runner, right", [(STOCK, False), (OURS, True)], ids=["stock", "ours"])
def test_every_sink_is_computed(cluster, tmp_path, runner, right):
    def build(p):
        _ = p | "A" >> beam.Create(["a"]) | "RecordA" >> beam.ParDo(Record(str(tmp_path / "a")))
        _ = p | "B" >> beam.Create(["b"]) | "RecordB" >> beam.ParDo(Record(str(tmp_path / "b")))

    run(runner, cluster, build)
    got = (recorded(tmp_path / "a"), recorded(tmp_path / "b"))
    assert (got == (["a"], ["b"])) is right, got


class Setups(beam.DoFn):
    """Leaves one file per setup, named by the process: how often a model would load."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def setup(self):
        os.makedirs(self.folder, exist_ok=True)
        Path(self.folder, f"{os.getpid()}-{uuid.uuid4().hex}").touch()

    def process(self, n):
        yield n


def test_a_dofn_is_set_up_once_per_worker_process_not_per_partition(cluster, tmp_path):
    folder = tmp_path / "setups"

    def build(p):
        _ = (p | beam.Create(range(64)) | beam.ParDo(Setups(str(folder)))
             | beam.ParDo(Record(str(tmp_path / "out"))))

    run(OURS, cluster, build, "--dask_npartitions", "16")
    setups = [p.name.split("-")[0] for p in folder.iterdir()]
    assert len(setups) == len(set(setups)) <= 2  # one per worker process, for 16 partitions
    assert recorded(tmp_path / "out") == list(range(64))


class Stateful(beam.DoFn):
    from apache_beam.transforms.userstate import CombiningValueStateSpec

    COUNT = CombiningValueStateSpec("count", sum)

    def process(self, kv, count=beam.DoFn.StateParam(COUNT)):
        count.add(1)
        yield kv


def test_what_it_cannot_run_is_refused_with_the_transform_named(cluster, tmp_path):
    from pipelines.dask_runner import UnsupportedOnDask

    with pytest.raises(UnsupportedOnDask, match="CountPerKey.*user state"):
        run(OURS, cluster, lambda p: p | beam.Create([("a", 1)]) | "CountPerKey" >> beam.ParDo(Stateful()))
    src = tmp_path / "lines.txt"
    src.write_text("x\n")
    with pytest.raises(UnsupportedOnDask, match="ReadLines.*Read is not supported"):
        run(OURS, cluster, lambda p: p | "ReadLines" >> beam.io.ReadFromText(str(src)))
