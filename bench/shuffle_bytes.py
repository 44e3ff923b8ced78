"""Bytes each stage sends through its shuffles, per row: dedup and annotate on the demo's data.

Every GroupByKey of the stage's graph (Reshuffle and CoGroupByKey included: they expand to one;
combiners' excluded, as runners lift them) is measured where it is fed: before the job runs, a branch is added beside each GroupByKey that
encodes every element of its input with that input's own coder (what a runner writes to its
shuffle) and counts the bytes. The measured graph itself is unchanged. Rows: the rows the stage
read. Runs `curate demo` first (or takes `--demo-out` of an earlier one), then dedup and annotate
again on its ingest and dedup outputs with the demo's recipes, on DirectRunner in_memory.

Prints one JSON line per stage: `stage`, `rows`, `shuffled_bytes`, `shuffled_bytes_per_row`,
`input_bytes_per_row` (the input shards' tar bytes: what moving the payload would cost) and the
steps that shuffle most.

    python bench/shuffle_bytes.py [--demo-out demo-out]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NS = "bench.shuffle_bytes"
TOP = 5
_RESULTS: list = []


class _CountEncoded(beam.DoFn):
    """Encode each element with the coder of the PCollection it came from; count the bytes."""

    def __init__(self, coder: beam.coders.Coder, step: str) -> None:
        self.coder = coder
        self.step = step

    def setup(self) -> None:
        self.counter = Metrics.counter(NS, self.step)

    def process(self, element):
        self.counter.inc(len(self.coder.encode(element)))


def _gbk_inputs(pipeline: beam.Pipeline) -> list[tuple[str, beam.PCollection]]:
    """(full label, input PCollection) of every GroupByKey in the graph, except those a combiner
    wraps (`CombinePerKey`, `CombineGlobally`: every runner lifts the combine before the shuffle,
    which then carries one accumulator per key and bundle, not the elements)."""
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node) -> None:
            if isinstance(node.transform, beam.GroupByKey) and "/CombinePerKey/" not in node.full_label + "/":
                found.append((node.full_label, node.main_inputs[None] if None in node.main_inputs
                              else next(iter(node.main_inputs.values()))))

    pipeline.visit(Visitor())
    return found


def _measuring_run(original):
    def run(self, *args, **kwargs):
        if not getattr(self, "_shuffle_measured", False):
            self._shuffle_measured = True
            for i, (label, pcoll) in enumerate(_gbk_inputs(self)):
                coder = beam.coders.registry.get_coder(pcoll.element_type)
                pcoll | f"MeasureShuffle{i}" >> beam.ParDo(_CountEncoded(coder, label))
        result = original(self, *args, **kwargs)
        _RESULTS.append(result)
        return result

    return run


def _measured(result) -> dict[str, int]:
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(NS))["counters"]
    out: dict[str, int] = {}
    for c in found:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    return out


def _line(stage: str, index: dict, inputs: list[Path], steps: dict[str, int]) -> dict:
    rows = index["rows"]["rows_read"]
    tar_bytes = sum(s["tar_bytes"] for folder in inputs
                    for s in json.loads((folder / "_index.json").read_text())["shards"])
    total = sum(steps.values())
    top = dict(sorted(steps.items(), key=lambda kv: -kv[1])[:TOP])
    return {"stage": stage, "rows": rows, "shuffled_bytes": total, "shuffled_bytes_per_row": round(total / rows, 1),
            "input_bytes_per_row": round(tar_bytes / rows, 1), "top_steps": top}


def main() -> None:
    from curation.annotate.config import AnnotateConfig
    from curation.cli.common import find_config
    from curation.cli.demo import DemoConfig
    from curation.core.config import build, deep_merge, load_config, load_yaml
    from filters.dedup.config import DedupConfig
    from pipelines.annotate import run_annotate
    from pipelines.dedup.stage import run_dedup

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", type=Path, help="an earlier `curate demo --output` (default: run it now)")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        demo_out = args.demo_out
        if demo_out is None:
            demo_out = Path(tmp) / "demo"
            subprocess.run([sys.executable, "-m", "curation.cli", "demo", "--output", str(demo_out), "--no-progress"],
                           check=True, stdout=subprocess.DEVNULL)
        demo = build(DemoConfig, load_yaml(find_config("demo.yaml")), "")
        beam.Pipeline.run = _measuring_run(beam.Pipeline.run)
        in_memory = ["--direct_running_mode=in_memory"]

        def recipe(name: str, cls: type, overrides: dict):
            return load_config(find_config(name), cls, deep_merge(overrides, {"progress": False}))

        inputs = [demo_out / "ingest" / s for s in demo.dedup.sources]
        index = run_dedup(recipe(demo.dedup.recipe, DedupConfig, demo.dedup.overrides), [str(p) for p in inputs],
                          str(Path(tmp) / "dedup"), in_memory)
        print(json.dumps(_line("dedup", index, inputs, _measured(_RESULTS[-1]))), flush=True)
        inputs = [demo_out / "dedup"]
        index = run_annotate(recipe(demo.annotate.recipe, AnnotateConfig, demo.annotate.overrides),
                             [str(p) for p in inputs], str(Path(tmp) / "annotate"), in_memory)
        print(json.dumps(_line("annotate", index, inputs, _measured(_RESULTS[-1]))), flush=True)


if __name__ == "__main__":
    main()
