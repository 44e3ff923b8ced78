"""Which job owns an output folder, and what a previous run of it already finished.

A job is its config (stripped of knobs that do not change output) plus its inputs (full path, size
and modification time of each file), hashed into a fingerprint. The first run writes `_job.json`
with it; a rerun with the same fingerprint resumes (skips shards with a progress marker) or, once
`_index.json` carries the fingerprint, does nothing; a different fingerprint is an `OutputConflict`.

No filesystem of its own: `JobState` reads and writes through the `JobFiles` it is given (Beam's
FileSystems in pipelines, via `pipelines/fsio.py`, whose module satisfies the protocol as it is).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from curation.core.shards import INDEX_NAME, PROGRESS_DIR, ShardReport

JOB_NAME = "_job.json"


class OutputConflict(RuntimeError):
    """The output folder holds another job's results."""


class JobFiles(Protocol):
    """The file operations JobState needs, on whatever filesystem the output lives on."""

    def join(self, base: str, *parts: str) -> str: ...

    def exists(self, path: str) -> bool: ...

    def mkdirs(self, path: str) -> None: ...

    def read_bytes(self, path: str) -> bytes: ...

    def write_json(self, path: str, doc: object) -> None:
        """Write `doc` as JSON, atomically (readers never see a partial file)."""

    def listdir(self, directory: str, suffix: str = "") -> list[str]:
        """Paths directly under `directory` ending with `suffix`, sorted; [] if it does not exist."""


class InputFile(NamedTuple):
    """An input file as a glob matched it: path, size and modification time (seconds; None where
    the filesystem does not say)."""

    path: str
    size: int
    mtime: float | None


def input_identity(files: list[InputFile], root: str = "") -> dict[str, Any]:
    """What makes two runs' inputs the same: each file's full path (local paths made absolute),
    size and modification time, so an input edited in place (same size or not) is another job; and
    the input root the files are named relative to (it names `source_file` and file-scoped uids)."""
    import os

    paths = sorted((f.path if "://" in f.path else os.path.abspath(f.path), f.size, f.mtime) for f in files)
    return {"root": root, "files": paths}


def job_fingerprint(semantic_cfg: Any, files: Any) -> str:
    """Config (already stripped of knobs that do not change output) + the inputs' identity
    (`input_identity`, or what a stage knows better: the hashes of its input shards)."""
    from curation.core.config import config_fingerprint

    blob = json.dumps({"config": config_fingerprint(semantic_cfg), "inputs": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JobState:
    """What an output folder already holds for this job (same config and inputs)."""

    output: str
    fingerprint: str
    files: JobFiles

    def index_path(self) -> str:
        return self.files.join(self.output, INDEX_NAME)

    def _read_json(self, path: str) -> Any:
        return json.loads(self.files.read_bytes(path))

    def finished(self) -> dict[str, Any] | None:
        """The index of a finished run of this same job, or None; a foreign job is an error."""
        self._check_owner()
        if self.files.exists(self.index_path()):
            index = self._read_json(self.index_path())
            if index.get("config_fingerprint") == self.fingerprint:
                return index
        return None

    def _check_owner(self) -> None:
        job_path = self.files.join(self.output, JOB_NAME)
        if self.files.exists(job_path):
            owner = self._read_json(job_path).get("fingerprint")
            if owner != self.fingerprint:
                raise OutputConflict(
                    f"{self.output} holds the output of another job (fingerprint {owner}, this job "
                    f"{self.fingerprint}: config or inputs differ); write to a new folder or remove it")

    def claim(self) -> None:
        """Record which job owns the folder (first run), so resumes can check it."""
        self.files.mkdirs(self.output)
        self.files.mkdirs(self.files.join(self.output, PROGRESS_DIR))
        job_path = self.files.join(self.output, JOB_NAME)
        if not self.files.exists(job_path):
            self.files.write_json(job_path, {"fingerprint": self.fingerprint})

    def done_reports(self) -> dict[str, ShardReport]:
        """Shard name -> report for shards a previous run of this job finished."""
        done = {}
        for path in self.files.listdir(self.files.join(self.output, PROGRESS_DIR), ".json"):
            if path.rsplit("/", 1)[-1] == "calibration.json":  # annotate's probe scores, not a shard's report
                continue
            try:
                report = ShardReport.from_json(self.files.read_bytes(path).decode())
            except (ValueError, TypeError, KeyError):
                continue  # a torn marker: redo that shard
            done[report.name] = report
        return done
