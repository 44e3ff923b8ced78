"""Beam's DaskRunner, made right for our pipelines (`--runner pipelines.dask_runner.DaskRunner`).

Beam 2.77's runner translates a pipeline into dask bags, with five defects that lose, duplicate or
mix up rows; each is fixed here and has a plain-Beam test (tests/test_dask_runner.py) that fails on
the stock runner:

1. one bag per ParDo: every consumer of one tag of a `with_outputs` step got all tags' elements.
   Here each output PCollection is its own bag, holding its tag's elements only;
2. results were collected before `finish_bundle`, dropping what it emits (`BatchElements`' last
   batch, so RunInference's). Here they are collected after it;
3. one receiver list travelled in the task arguments and was never cleared, so a process running
   two partitions emitted the first one's rows again. Here every partition gets its own;
4. a side input was computed again, upstream and whole, inside every task that read it. Here it is
   a dask dependency, computed once and handed to the tasks;
5. only the last visited leaf was computed, so every other sink was silently skipped. Here every
   PCollection nobody consumes is computed.

Also: a DoFn is set up once per worker thread and reused by every partition it runs (models load
once, not per partition); a Reshuffle and a GroupByKey spread their output over `--dask_partitions`
partitions (the stock runner kept everything read from a few files in one partition, on one
worker), and a Flatten keeps at most that many (concatenating bags adds them up stage after
stage). What it cannot run (user state, timers, `Read`) is refused with the transform named, never
turned into a no-op. Metrics are not collected (`result.metrics()` raises); the stages' counts are
computed in their graphs instead.
"""

from __future__ import annotations

import threading
import typing as t
import uuid

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.runner import PipelineState
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, _Read, _Reshuffle, dask_overrides
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.windowed_value import WindowedValue

_INVOKERS = threading.local()  # per worker thread: the run it serves, ParDo token -> (invoker, its outputs)


class UnsupportedOnDask(ValueError):
    """A pipeline step this runner cannot execute faithfully."""


class DaskPartitionOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--dask_partitions", type=int, default=4,
                            help="partitions a Reshuffle or GroupByKey spreads its output over, and the most a "
                                 "Flatten's output keeps")


class _Collect(Receiver):
    """One partition's outputs of one tag (a fresh list per partition: fix 3)."""

    def __init__(self, tag: str | None, values: list) -> None:
        self.tag = tag
        self.values = values

    def receive(self, windowed_value: WindowedValue) -> None:
        self.values.append((self.tag, windowed_value.value))


class _Receivers(dict):
    def __init__(self, values: list) -> None:
        super().__init__()
        self.values = values

    def __missing__(self, tag):
        self[tag] = _Collect(tag, self.values)
        return self[tag]


def _invoker(token: tuple[str, int], fn: beam.DoFn, label: str, window_fn, specs, side_values, args, kwargs):
    """The DoFn's invoker for this worker thread, set up on first use and reused by the run's later
    partitions (side inputs are the same for all of them); a new run tears the last one's down."""
    run, _ = token
    if getattr(_INVOKERS, "run", None) != run:
        for invoker, _ in getattr(_INVOKERS, "by_token", {}).values():
            invoker.invoke_teardown()
        _INVOKERS.run, _INVOKERS.by_token = run, {}
    cache = _INVOKERS.by_token
    if token in cache:
        invoker, values = cache[token]
        values.clear()
        return invoker, values
    values: list = []
    receivers = _Receivers(values)
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(label, state=None), side_inputs=_side_maps(specs, side_values),
        input_args=list(args), input_kwargs=dict(kwargs), user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    cache[token] = (invoker, values)
    return invoker, values


def _side_maps(specs, concrete) -> list[SideInputMap]:
    return [SideInputMap(view, options, [te.get_windowed_value(v, window_fn) for v in values])
            for (view, options, window_fn), values in zip(specs, concrete)]


def _key(item):
    return item[0]


def _grouped(item):
    key, values = item
    return key, [te.defenestrate(v[1]) for v in values]


def _joined(parts: list[list]) -> list:
    return [x for part in parts for x in part]


def _run_partition(items, token, fn, label, window_fn, specs, args, kwargs, *side_values):
    """One dask partition as one bundle: process every element, then finish the bundle, and only
    then hand over what it emitted (fix 2), each output tagged with its tag."""
    invoker, values = _invoker(token, fn, label, window_fn, specs, side_values, args, kwargs)
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(te.get_windowed_value(item, window_fn))
    invoker.invoke_finish_bundle()
    out = list(values)
    values.clear()
    return out


def _refuse_unsupported(node: AppliedPTransform) -> None:
    transform = node.transform
    if isinstance(transform, _Read):
        raise UnsupportedOnDask(f"{node.full_label}: Read is not supported by the Dask runner (use Create + a "
                                "reading ParDo, as every curate stage does)")
    if isinstance(transform, beam.ParDo):
        signature = DoFnSignature(transform.fn)
        if signature.is_stateful_dofn() or signature.has_timers():
            raise UnsupportedOnDask(f"{node.full_label}: user state and timers are not supported by the Dask runner")


class _BagVisitor(PipelineVisitor):
    """Beam primitives -> one dask bag per PCollection."""

    def __init__(self, bag_kwargs: dict, partitions: int) -> None:
        self.run = uuid.uuid4().hex
        self.pardos = 0
        self.bag_kwargs = bag_kwargs
        self.partitions = partitions
        self.bags: dict[pvalue.PValue, t.Any] = {}
        self.consumed: set[pvalue.PValue] = set()

    def visit_transform(self, node: AppliedPTransform) -> None:
        import dask

        _refuse_unsupported(node)
        transform = node.transform
        inputs = [v for v in node.inputs if not isinstance(v, pvalue.PBegin)]
        self.consumed.update(inputs)
        self.consumed.update(si.pvalue for si in node.side_inputs)
        bags = [self.bags[v] for v in inputs]
        outputs = list(node.outputs.items())
        if isinstance(transform, _Create):
            out = te.Create(node, bag_kwargs=self.bag_kwargs).apply(None)
        elif isinstance(transform, _Flatten):
            out = te.Flatten(node).apply(bags)
            if out.npartitions > self.partitions:
                out = out.repartition(npartitions=self.partitions)
        elif isinstance(transform, _GroupByKeyOnly):
            # a task-based shuffle: the stock one picks partd files on each worker's local disk
            # when the graph is built before a client exists, which only works on one machine
            out = bags[0].groupby(_key, shuffle="tasks", npartitions=max(bags[0].npartitions, self.partitions))
            out = out.map(_grouped)
        elif isinstance(transform, _Reshuffle):  # Beam's hint to spread the work: here, more partitions
            out = bags[0]
            if out.npartitions < self.partitions:
                out = out.repartition(npartitions=self.partitions)
        elif type(transform) is beam.ParDo:
            main = next(iter(node.main_inputs.values()))
            window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
            specs = [(type(si), si._view_options(), si._window_mapping_fn) for si in node.side_inputs]
            # each side input one task over the bag's own partition keys (not re-optimized under new
            # names), so it is computed once, with the rest of the graph
            side_values = [dask.delayed(_joined)(self.bags[si.pvalue].to_delayed(optimize_graph=False))
                           for si in node.side_inputs]
            args, kwargs = transform.args, transform.kwargs  # side inputs as placeholders, filled per run
            self.pardos += 1
            tagged = bags[0].map_partitions(_run_partition, (self.run, self.pardos), transform.fn, node.full_label,
                                            window_fn, specs, list(args), dict(kwargs), *side_values)
            for tag, pcoll in outputs:
                wanted = None if tag in (None, "None") else tag
                self.bags[pcoll] = tagged.filter(lambda x, w=wanted: x[0] == w).map(lambda x: x[1])
            return
        else:  # identities: GroupAlsoByWindow (a GroupByKey's grouping is done above)
            out = bags[0] if bags else None
        for _, pcoll in outputs:
            self.bags[pcoll] = out

    def sinks(self) -> list:
        """Every PCollection nobody consumes: all of them are computed (fix 5)."""
        return [bag for pcoll, bag in self.bags.items() if pcoll not in self.consumed and bag is not None]


class DaskResult(beam_dask.DaskRunnerResult):
    """The stock result, closing its client once the job is over (else it outlives the job,
    reconnecting to a scheduler that may be gone)."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner with the fixes above (`--runner pipelines.dask_runner.DaskRunner`)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        cap = options.view_as(DaskPartitionOptions).dask_partitions
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(bag_kwargs, cap)
        pipeline.visit(visitor)
        client = ddist.Client(**dask_options)
        # unoptimized: fusing renames keys per collection, and a step shared by two sinks (or a side
        # input and a sink) would then run once for each
        futures = client.compute(visitor.sinks(), optimize_graph=False)
        return DaskResult(client, futures)
