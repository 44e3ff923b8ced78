"""Ingest's CLIP step: every downloaded sample's stored image scored against its caption by a
CLIP / SigLIP model (filters/quality/clip.py) in a RunInference step: loaded once per worker,
batched, its own metrics namespace, the recipe's accelerator hint (behind a Reshuffle then, so
only this step needs GPU workers). Staged images are read back by byte range, a batch at a time;
only the scores go on with the record. Rejections pass by untouched."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from curation.core.records import Sample
from filters.quality.clip import ClipConfig, PixelScore
from pipelines import fsio
from pipelines.model_handlers import BatchedHandler, record_load

NS = "curate.ingest.clip"


def batch_images(samples: Sequence[Sample]) -> list[bytes]:
    """The stored bytes of each sample: its own, or read back from staging (one ranged read per
    bundle file)."""
    data: list[bytes | None] = [s.image.data or None for s in samples]
    by_bundle: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if data[i] is None and s.staged:
            by_bundle[s.staged[0]].append(i)
    for path, idx in sorted(by_bundle.items()):
        idx.sort(key=lambda i: samples[i].staged[1])
        for i, got in zip(idx, fsio.read_ranges(path, [(samples[i].staged[1], samples[i].staged[2]) for i in idx])):
            data[i] = got
    return [d or b"" for d in data]


class ClipHandler(BatchedHandler):
    """(shard, Sample) -> PredictionResult((shard, sample), PixelScore, model name)."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__(cfg.batch_size, cfg.accelerator, NS, cfg.share_across_processes)
        self.cfg = cfg

    def load_model(self):
        from filters.quality.clip import ClipScorer

        record_load("clip")
        return self.served(ClipScorer(self.cfg))

    def run_inference(self, batch: Sequence[tuple[int, Sample]], model, inference_args=None) -> Iterable[PredictionResult]:
        from PIL import Image

        samples = [s for _, s in batch]
        scores: list[PixelScore | None] = [None] * len(batch)
        images, captions, at = [], [], []
        for i, data in enumerate(batch_images(samples)):
            try:
                with Image.open(io.BytesIO(data)) as im:
                    images.append(im.convert("RGB"))
            except Exception as e:  # noqa: BLE001 - the element's reason; the batch goes on
                scores[i] = PixelScore(error=f"stored image unreadable: {type(e).__name__}: {e}"[:300])
                continue
            captions.append(samples[i].pair.caption or "")
            at.append(i)
        if images:
            for i, score in zip(at, model.score(images, captions)):
                scores[i] = score
        errors = sum(1 for s in scores if s is not None and s.error)
        Metrics.counter(NS, "scored").inc(len(batch) - errors)
        if errors:
            Metrics.counter(NS, "errors").inc(errors)
        name = model.info()["name"]
        return [PredictionResult(e, s, name) for e, s in zip(batch, scores)]


def _judged(result: PredictionResult, cfg: ClipConfig, enforced: bool, aesthetic_enforced: bool):
    from filters.quality.clip import judge

    shard, sample = result.example
    return shard, judge(sample, result.inference, result.model_id, cfg, enforced, aesthetic_enforced)


class ClipScores(beam.PTransform):
    """(shard, Sample | Rejection) -> the same, each Sample scored (or rejected for its scores)."""

    def __init__(self, cfg: ClipConfig, enforced: bool, aesthetic_enforced: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.enforced = enforced
        self.aesthetic_enforced = aesthetic_enforced

    def expand(self, records):
        parts = records | "SamplesApart" >> beam.Partition(lambda e, n: 0 if isinstance(e[1], Sample) else 1, 2)
        samples = parts[0]
        if self.cfg.accelerator:  # the GPU workers are another stage: the records travel to them
            samples = samples | "ToAccelerator" >> beam.Reshuffle()
        scored = (
            samples
            | "Clip" >> RunInference(ClipHandler(self.cfg))
            | "Judge" >> beam.Map(_judged, self.cfg, self.enforced, self.aesthetic_enforced)
        )
        return (scored, parts[1]) | "WithRejected" >> beam.Flatten()
