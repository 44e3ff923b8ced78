"""What a running worker shows: a progress bar per worker process, and group sizes as metrics."""

from __future__ import annotations

import os
import sys

from apache_beam.metrics import Metrics


def worker_bar(desc: str, unit: str):
    """A worker's progress bar on stderr, named with its pid (workers run side by side), redrawn at
    most once a second and cleared when done."""
    from tqdm import tqdm

    return tqdm(desc=f"{desc}[{os.getpid()}]", unit=unit, mininterval=1.0, file=sys.stderr, dynamic_ncols=True,
                leave=False)



def group_size(namespace: str, step: str, n: int) -> None:
    """Record how many elements one GroupByKey group handed a worker at `step` (a distribution:
    its max is the largest group, which each step keeps under a configured bound)."""
    Metrics.distribution(namespace, f"group_size_{step}").update(n)
