"""A real dask.distributed cluster for tests and benches: `dask scheduler` and `dask worker`
processes (N worker processes, one thread each) on free loopback ports, stopped by pid.

The workers unpickle the pipeline's DoFns, so they import this project (and, for the tests' own
DoFns, the `tests` package): they run with the repository on PYTHONPATH."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

from curation.samples.processes import free_ports, script

ROOT = Path(__file__).resolve().parents[2]


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int = 2, threads: int = 1, timeout_s: float = 60.0,
                 env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a scheduler and `workers` worker processes (`env` added to theirs); yields the
    scheduler address."""
    port, dashboard = free_ports(2)
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "DASK_DISTRIBUTED__WORKER__DAEMON": "False",  # workers may start processes (Beam's own pools)
           **(env or {})}
    folder.mkdir(parents=True, exist_ok=True)
    logs = [open(folder / name, "wb") for name in ("scheduler.log", "workers.log")]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([script("dask", "pip install distributed (the [dask] extra)"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--dashboard-address", f"127.0.0.1:{dashboard}"],
                                      stdout=logs[0], stderr=subprocess.STDOUT, env=env, cwd=folder,
                                      start_new_session=True))
        procs.append(subprocess.Popen([script("dask", "pip install distributed (the [dask] extra)"), "worker", address, "--nworkers", str(workers), "--nthreads",
                                       str(threads), "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0",
                                       "--local-directory", str(folder / "workers")],
                                      stdout=logs[1], stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                      start_new_session=True))
        from distributed import Client

        deadline = time.monotonic() + timeout_s
        with Client(address, timeout=timeout_s) as client:
            while len(client.scheduler_info()["workers"]) < workers:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"dask cluster did not start: see {folder}/*.log")
                time.sleep(0.2)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for f in logs:
            f.close()
