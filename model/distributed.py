"""Multi-process training under `torchrun`: the process group, the DDP-wrapped packed forward and
the few collectives the trainer needs (global sums for the loss normalisers, logging, evaluation).

One process (no WORLD_SIZE in the environment) runs exactly as before: `world` 1, every collective
the identity. CPU ranks talk over gloo, CUDA ranks over NCCL, one GPU per rank (LOCAL_RANK).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from model.batches import PackedBatch
from model.build import Loaded
from model.forward import TokenLogps, forward_logps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; `world` 1 when not launched by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks, in float64 (the loss normalisers must agree to the bit)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (small python objects only)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def from_env() -> Dist:
    """The rank layout torchrun exported (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def setup(device: torch.device, timeout_s: int = 1800) -> tuple[Dist, torch.device]:
    """Join the process group (if launched by torchrun) and pick this rank's device: cuda:LOCAL_RANK
    on GPU hosts; on CPU, the host's cores split between its ranks (oversubscribed OpenMP threads
    would make every rank slower than one)."""
    dist = from_env()
    if not dist.active:
        return dist, device
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.local_world))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                             timeout=datetime.timedelta(seconds=timeout_s))
    log.info("rank %d of %d on %s", dist.rank, dist.world, device)
    return dist, device


def teardown(dist: Dist) -> None:
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class PackedLogps(torch.nn.Module):
    """`forward_logps` as a module of its own, so DistributedDataParallel can wrap it: DDP's
    gradient hooks are prepared in its forward, which the trainer must therefore call."""

    def __init__(self, loaded: Loaded) -> None:
        super().__init__()
        self.model = loaded.model
        self._loaded = loaded

    def forward(self, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tl = forward_logps(self._loaded, batch)
        return tl.logps, tl.positions, tl.segments


class Forward:
    """The policy's packed forward: plain on one process, through DDP on several (gradients averaged
    over ranks at the last micro-batch of an optimizer step; `no_sync` before it)."""

    def __init__(self, loaded: Loaded, dist: Dist) -> None:
        self.loaded = loaded
        self.module = PackedLogps(loaded)
        self.ddp = None
        if dist.active:
            ids = [loaded.device.index] if loaded.device.type == "cuda" else None
            # text-only packs leave the vision tower without gradients on some ranks
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.module, device_ids=ids,
                                                                 find_unused_parameters=True)

    def __call__(self, batch: PackedBatch) -> TokenLogps:
        logps, positions, segments = (self.ddp or self.module)(batch)
        return TokenLogps(logps, positions, segments, len(batch.segments))

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """Skip DDP's gradient all-reduce for every micro-batch but the step's last."""
        if self.ddp is None or last:
            yield
        else:
            with self.ddp.no_sync():
                yield
