"""What every RunInference step shares (annotate's OCR and LLM, mmpr's policy, translate, ingest's
CLIP, dedup's caption embeddings): fixed batches, a metrics namespace, the accelerator hint, one
model per worker VM when shared across processes, and a marker per model copy loaded."""

from __future__ import annotations

from typing import Any

from apache_beam.ml.inference.base import ModelHandler


def record_load(step: str) -> None:
    """With CURATE_MODEL_LOAD_DIR set, one marker file per model copy loaded (process, time): how
    many copies a job really loaded, which no per-bundle metric can see for a shared model."""
    import os
    import time
    import uuid

    folder = os.environ.get("CURATE_MODEL_LOAD_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{step}-{os.getpid()}-{uuid.uuid4().hex[:8]}"), "w") as f:
            f.write(f"{time.time():.3f}\n")


class Serialized:
    """One call at a time into a model that several SDK processes share: Beam's manager server runs
    each client's calls on its own thread, and neither vLLM, transformers generation nor PaddleX is
    thread-safe. Methods only (what a proxy can call)."""

    def __init__(self, model: Any) -> None:
        import threading

        self._model = model
        self._lock = threading.Lock()

    def _call(self, name: str, *args, **kwargs):
        with self._lock:
            return getattr(self._model, name)(*args, **kwargs)

    def info(self):
        return self._call("info")

    def recognize(self, *args, **kwargs):
        return self._call("recognize", *args, **kwargs)

    def score(self, *args, **kwargs):
        return self._call("score", *args, **kwargs)

    def generate(self, *args, **kwargs):
        return self._call("generate", *args, **kwargs)

    def embed(self, *args, **kwargs):
        return self._call("embed", *args, **kwargs)


class BatchedHandler(ModelHandler):
    """What the model steps share: fixed batches, a metrics namespace, the accelerator hint, and
    `share_across_processes`: one model per worker VM, served to every SDK process of the VM through
    Beam's multi_process_shared (a GPU worker runs several SDK processes; each would load its own
    copy of a 7B rater at gpu_memory_utilization 0.85). Shared models are proxies: only methods."""

    def __init__(self, batch_size: int, accelerator: str | None, namespace: str, share: bool = False) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.accelerator = accelerator
        self.namespace = namespace
        self.share = share

    def share_model_across_processes(self) -> bool:
        return self.share

    def served(self, model: Any) -> Any:
        """The loaded model, behind a lock when several processes will call it."""
        return Serialized(model) if self.share else model

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def get_resource_hints(self) -> dict[str, Any]:
        return {"accelerator": self.accelerator} if self.accelerator else {}
