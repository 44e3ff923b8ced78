"""Ingest's image staging: downloaded images wait in a few large bundle files under
`{output}/_staging/` while only their metadata crosses the shuffle; each shard writer reads its
images back by byte range. One object per bundle (up to `bundle_bytes`), never one per image."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import IO, Any

from pipelines import fsio

STAGING = "_staging"


class BundleStager:
    """Holds (shard, Sample) pairs with their image bytes until `bundle_bytes` are held, then writes
    them as one file and hands the pairs back with `sample.staged = (path, offset, length)` and the
    bytes dropped. A retried bundle writes a new file (a fresh name); the launcher deletes the
    whole staging folder once every shard is written."""

    def __init__(self, output: str, bundle_bytes: int) -> None:
        self.folder = fsio.join(output, STAGING)
        self.bundle_bytes = bundle_bytes
        self.held: list[tuple[int, Any]] = []
        self.held_bytes = 0

    def add(self, shard: int, sample) -> list[tuple[int, Any]]:
        """Hold one sample; returns the pairs a full bundle released (usually none)."""
        self.held.append((shard, sample))
        self.held_bytes += len(sample.image.data)
        return self.flush() if self.held_bytes >= self.bundle_bytes else []

    def flush(self) -> list[tuple[int, Any]]:
        """Write what is held as one bundle file; returns the pairs, now pointing into it."""
        if not self.held:
            return []
        path = fsio.join(self.folder, f"{uuid.uuid4().hex}.bundle")
        data = b"".join(sample.image.data for _, sample in self.held)
        fsio.write_atomic(path, lambda f: f.write(data))
        offset = 0
        for _, sample in self.held:
            length = len(sample.image.data)
            sample.staged = (path, offset, length)
            sample.image.data = b""
            offset += length
        released, self.held, self.held_bytes = self.held, [], 0
        return released


class Unstaged:
    """A shard's staged images fetched bundle by bundle (one open per bundle file, a ranged read
    per image, in file order) into a local spill file, then handed out one at a time by `load` in
    whatever order the writer needs: a shard's memory is one image, not the shard."""

    def __init__(self, records: list, spill: IO[bytes]) -> None:
        self.spill = spill
        self.where: dict[int, tuple[int, int]] = {}
        by_bundle: dict[str, list] = defaultdict(list)
        for rec in records:
            if getattr(rec, "staged", None):
                by_bundle[rec.staged[0]].append(rec)
        for path, recs in sorted(by_bundle.items()):
            recs.sort(key=lambda r: r.staged[1])
            for rec, data in zip(recs, fsio.read_ranges(path, [(r.staged[1], r.staged[2]) for r in recs])):
                self.where[id(rec)] = (spill.tell(), len(data))
                spill.write(data)
                rec.staged = None

    def load(self, rec) -> None:
        """Fill one sample's `image.data` from the spill (a sample that was never staged is left as is)."""
        if (at := self.where.get(id(rec))) is not None:
            self.spill.seek(at[0])
            rec.image.data = self.spill.read(at[1])
