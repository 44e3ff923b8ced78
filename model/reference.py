"""MPO's frozen reference: a second model kept in memory, or its per-segment log-prob sums scored
once into `reference_logps.json` in the train output (so training holds one model).

The file names the reference model (recipe, checkpoint file sizes and mtimes), the input settings
that change what it sees, and each packed shard's sha256 from the data's `_index.json`;
its own sha256 sits beside it in `reference_logps.json.sha256`. Both are checked before use: a
changed pack or model, or an edited file, means scoring again, never training on stale numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from curation.core.shardset import ShardSet
from model.batches import PackedBatch, PackedDataset, loader
from model.build import Loaded, load_model
from model.config import TrainConfig
from model.distributed import Dist
from model.forward import forward_logps

log = logging.getLogger(__name__)

FILE = "reference_logps.json"


class ReferenceError(RuntimeError):
    """The stored reference log-probs do not cover a pack the trainer reads."""


class ReferenceLogps:
    """Per-segment log-prob sums of the frozen reference for a packed row."""

    def __init__(self, loaded: Loaded | None = None, table: dict[str, list[float]] | None = None) -> None:
        self.loaded = loaded
        self.table = table

    def __call__(self, batch: PackedBatch) -> torch.Tensor:
        if self.loaded is not None:
            with torch.no_grad():
                return forward_logps(self.loaded, batch).per_segment()[0]
        assert self.table is not None
        key = f"{batch.shard}/{batch.index}"
        if key not in self.table:
            raise ReferenceError(f"{FILE} has no reference log-probs for pack {key} ({batch.key})")
        return torch.tensor(self.table[key], dtype=torch.float32, device=batch.input_ids.device)

    @classmethod
    def prepare(cls, cfg: TrainConfig, data: str, dist: Dist, device: torch.device) -> "ReferenceLogps":
        """The live reference model, or (mpo.reference_logps) the stored sums, scored first when the
        file is missing or stale: every rank scores its share of the packs, rank 0 writes."""
        if not cfg.mpo.reference_logps:
            loaded = load_model(cfg.model, device)
            loaded.model.eval().requires_grad_(False)
            return cls(loaded)
        path = Path(cfg.output) / FILE
        identity = _identity(cfg, data)
        table = _read(path, identity)
        if table is None:
            table = _score(cfg, data, dist, device)
            if dist.main:
                _write(path, identity, table)
            dist.barrier()
            table = _read(path, identity)
            if table is None:
                raise ReferenceError(f"{path} did not verify right after it was written")
        return cls(table=table)


def _identity(cfg: TrainConfig, data: str) -> dict[str, Any]:
    """What the numbers depend on: the reference model recipe (and its checkpoint file's size and
    mtime), the input settings that change what it sees (positions, normalisation), and every
    shard's sha256."""
    shards = {e["name"]: e.get("sha256") for e in ShardSet.open(data).shards}
    weights = None
    if cfg.model.checkpoint:
        files = sorted(Path(cfg.model.checkpoint).glob("*.safetensors"))
        weights = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    inputs = {k: getattr(cfg.data, k) for k in ("v2pe_delta", "mean", "std", "max_pixels")}
    return {"model": dataclasses.asdict(cfg.model), "weights": weights, "inputs": inputs, "shards": shards}


def _score(cfg: TrainConfig, data: str, dist: Dist, device: torch.device) -> dict[str, list[float]]:
    loaded = load_model(cfg.model, device)
    loaded.model.eval()
    dataset = PackedDataset(data, loaded.token_ids, dataclasses.replace(cfg.data, shuffle_shards=False),
                            rank=dist.rank, world=dist.world, multiple=None)
    mine: dict[str, list[float]] = {}
    autocast = device.type == "cuda" and cfg.model.dtype == "float32"  # as the policy trains
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        for batch in loader(dataset, 0):
            mine[f"{batch.shard}/{batch.index}"] = forward_logps(loaded, batch.to(device)).per_segment()[0].float().tolist()
    log.info("scored %d packs with the frozen reference", len(mine))
    table: dict[str, list[float]] = {}
    for part in dist.gather(mine):
        table.update(part)
    del loaded
    return table


def _write(path: Path, identity: dict[str, Any], table: dict[str, list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"identity": identity, "logps": table}, sort_keys=True).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    Path(f"{path}.sha256").write_text(hashlib.sha256(body).hexdigest() + "\n")
    os.replace(tmp, path)


def _read(path: Path, identity: dict[str, Any]) -> dict[str, list[float]] | None:
    """The stored table if the file is intact (sha256) and was scored for this model and these packs."""
    digest = Path(f"{path}.sha256")
    if not path.exists() or not digest.exists():
        return None
    body = path.read_bytes()
    if hashlib.sha256(body).hexdigest() != digest.read_text().strip():
        log.warning("%s does not match its sha256: scoring the reference again", path)
        return None
    doc = json.loads(body)
    if doc["identity"] != json.loads(json.dumps(identity, sort_keys=True)):
        log.info("%s was scored for another model or other packs: scoring again", path)
        return None
    return doc["logps"]
