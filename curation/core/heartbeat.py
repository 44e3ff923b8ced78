"""A heartbeat log line for long runs without a terminal (`--no-progress`, Dataflow workers): every
`every_s` seconds, from a background thread so a stalled step still reports, rows done, rows/s,
rows in flight and failures by reason."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

LOG = logging.getLogger("curate.progress")


class Heartbeat:
    """`done(reason)` per finished row (None: kept); `started()` per row handed out. Thread-safe."""

    def __init__(self, step: str, every_s: float, emit: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.step, self.every_s, self.clock = step, every_s, clock
        self.emit = emit or LOG.info
        self.begun = clock()
        self.rows = self.in_flight = 0
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def done(self, reason: str | None) -> None:
        with self._lock:
            self.rows += 1
            self.in_flight = max(0, self.in_flight - 1)
            if reason is not None:
                self.failures[reason] += 1

    def line(self) -> str:
        with self._lock:
            elapsed = max(self.clock() - self.begun, 1e-9)
            fails = ", ".join(f"{r}={n}" for r, n in self.failures.most_common()) or "none"
            return (f"{self.step}: {self.rows} rows done ({self.rows / elapsed:.1f} rows/s over {elapsed:.0f} s), "
                    f"{self.in_flight} in flight, failures: {fails}")

    def start(self) -> "Heartbeat":
        if self.every_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.step}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.emit(self.line())

    def stop(self) -> None:
        """Stop beating; a started heartbeat logs one last line with the final counts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self.emit(self.line())
