"""The filesystem layer for reads outside `pipelines/`: local paths and any fsspec URL (gs://, s3://,
memory://). Beam pipelines read and write through Beam's own `FileSystems` (`pipelines/fsio.py`);
everything else (inspect, `curate check`, training, the demo's checks) reads through here, so a
folder written on GCS by Dataflow is inspected, checked and trained on with the same code."""

from __future__ import annotations

from typing import IO


def is_url(path: str) -> bool:
    return "://" in path


def open_binary(path: str) -> IO[bytes]:
    """A readable binary file for a local path or an fsspec URL."""
    if is_url(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"
