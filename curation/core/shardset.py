"""A finished shard folder as every reader sees it (inspect, `curate check`, training): its `_index.json`, its kind, and streaming access to manifests,
tars and pack indexes on a local path or any fsspec URL (gs://, s3://, memory://, ...).

Readers trust only the index: every shard is found through it, one at a time, so a million-sample
folder is never loaded whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.fs import join, open_binary
from curation.core.shards import INDEX_NAME, ShardFormatError, check_index_names

KINDS = {"pairs": "pair", "packs": "packed", "mmpr": "preference", "plan": "plan", "translate": "conversation"}  # index kind -> the name users see


class InspectError(RuntimeError):
    """The folder cannot be inspected at all (no index, unknown kind, unreadable)."""


@dataclass
class ShardSet:
    """One output folder of `ingest`, `dedup` or `pack`."""

    folder: str
    index: dict[str, Any]

    @classmethod
    def open(cls, folder: str) -> "ShardSet":
        folder = str(folder)
        try:
            with open_binary(join(folder, INDEX_NAME)) as f:
                index = json.loads(f.read())
        except FileNotFoundError:
            raise InspectError(f"{folder}: no {INDEX_NAME} (not a finished shard folder)") from None
        except (OSError, ValueError) as err:
            raise InspectError(f"{join(folder, INDEX_NAME)}: unreadable: {err}") from None
        if not isinstance(index, dict) or index.get("kind") not in KINDS or not isinstance(index.get("shards"), list):
            raise InspectError(f"{join(folder, INDEX_NAME)}: unknown shard kind {index.get('kind') if isinstance(index, dict) else None!r}")
        try:
            check_index_names(index, join(folder, INDEX_NAME))
        except ShardFormatError as err:
            raise InspectError(str(err)) from None
        return cls(folder, index)

    @property
    def kind(self) -> str:
        return KINDS[self.index["kind"]]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.index["shards"]

    def path(self, name: str) -> str:
        return join(self.folder, name)

    def manifest(self, entry: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
        with open_binary(self.path(entry["manifest"])) as f:
            table = pq.read_table(f, use_threads=False)  # pyarrow pool threads could abort the CLI at exit
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        return table

    def manifests(self, columns: list[str] | None = None) -> Iterator[tuple[dict[str, Any], pa.Table]]:
        for entry in self.shards:
            yield entry, self.manifest(entry, columns)

    def packs_table(self, entry: dict[str, Any]) -> pa.Table | None:
        """The per-shard pack index (`{name}.packs.parquet`), or None for pair shards."""
        name = next((n for n in (entry.get("files") or {}) if n.endswith(".packs.parquet")), None)
        if name is None:
            return None
        with open_binary(self.path(name)) as f:
            return pq.read_table(f, use_threads=False)

    def open_tar(self, entry: dict[str, Any]) -> IO[bytes]:
        return open_binary(self.path(entry["tar"]))
