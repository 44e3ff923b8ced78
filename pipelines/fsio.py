"""File helpers over Beam's FileSystems (local, gs://, s3://, hdfs://): atomic writes and listing."""

from __future__ import annotations

import json
import uuid
from typing import IO, Callable, TypeVar

from apache_beam.io.filesystems import FileSystems

from curation.core.jobstate import InputFile

T = TypeVar("T")
OBJECT_STORES = ("s3", "gs")  # whole-object writes, no rename
PART_BYTES = 64 << 20  # an object store upload's part: Beam's S3 writer sends a part per 5 MiB it holds


class PartWriter:
    """Hand `f` large writes only: small writes (tar members, parquet pages) are held until
    PART_BYTES, so an upload is a few large parts (a PUT each), not one per 5 MiB."""

    def __init__(self, f: IO[bytes], part_bytes: int = PART_BYTES) -> None:
        self.f = f
        self.part_bytes = part_bytes
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.position = 0
        self.closed = False

    def write(self, data) -> int:
        n = len(data)
        self.held.append(bytes(data))
        self.held_bytes += n
        self.position += n
        if self.held_bytes >= self.part_bytes:
            self._send()
        return n

    def _send(self) -> None:
        if self.held:
            self.f.write(b"".join(self.held))
            self.held, self.held_bytes = [], 0

    def tell(self) -> int:
        return self.position

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:  # parts go out at PART_BYTES or on close, never smaller in between
        pass

    def close(self) -> None:
        if not self.closed:
            self._send()
            self.closed = True


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def mkdirs(path: str) -> None:
    if not FileSystems.exists(path):
        try:
            FileSystems.mkdirs(path)
        except OSError:
            if not FileSystems.exists(path):  # lost a race with another worker: fine
                raise


def _send_empty_part(f: IO[bytes]) -> None:
    """An empty object on S3: Beam's uploader completes a multipart upload with no part at all,
    which S3 refuses (NoSuchUpload / MalformedXML), so an empty file (a shard's jsonl with no kept
    row) could not be written. One empty part makes it valid: S3 has no minimum for the last part."""
    uploader = getattr(getattr(f, "raw", None), "_uploader", None)
    if type(uploader).__name__ == "S3Uploader" and not uploader.parts and not uploader.buffer:
        uploader._write_to_s3(b"")


def write_atomic(path: str, fill: Callable[[IO[bytes]], T]) -> T:
    """Write through `fill(f)` so readers never see a partial file. On local disk (and HDFS): a
    unique temp name, then a rename onto `path` (a retried bundle never clobbers another attempt's
    temp file). On an object store the final name is written once: an object appears whole when
    its upload completes, and a rename there is a copy and a delete (4 requests a file, not 1)."""
    if FileSystems.get_scheme(path) in OBJECT_STORES:
        f = FileSystems.create(path, mime_type="application/octet-stream")
        parts = PartWriter(f)
        try:
            result = fill(parts)
            parts.close()
            if parts.position == 0:
                _send_empty_part(f)
        except BaseException:
            f.close()  # the upload cannot be abandoned through Beam's writer: remove what it left
            FileSystems.delete([path])
            raise
        f.close()
        return result
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = join(directory, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    f = FileSystems.create(tmp, mime_type="application/octet-stream")
    try:
        result = fill(f)
    finally:
        f.close()
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return result


def delete(path: str) -> None:
    """Delete a file or a folder with everything under it."""
    FileSystems.delete([path])


def delete_tree(directory: str) -> None:
    """Delete everything under `directory`, if anything: a local folder, or every key under the
    prefix on an object store (where a folder never "exists" to be checked first)."""
    from apache_beam.io.filesystem import BeamIOError

    local = FileSystems.get_scheme(directory) in (None, "file")
    try:
        FileSystems.delete([directory if local else directory.rstrip("/") + "/"])
    except BeamIOError:
        if FileSystems.exists(directory):
            raise


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


def copy_into(path: str, out: IO[bytes], chunk: int = 8 << 20) -> str:
    """Stream a file's bytes into `out` (a local spill file) a chunk at a time; returns their
    sha256: one sequential read of an object, never the whole of it in memory."""
    import hashlib

    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type="uncompressed") as f:
        while block := f.read(chunk):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


class RawReader:
    """A file opened for reading past Beam's read-ahead buffer: on an object store each read after
    a seek is one ranged GET of what it asks for, not 16 MiB. Holds the buffered file it came from
    (closing that closes this)."""

    def __init__(self, path: str) -> None:
        self.f = FileSystems.open(path, compression_type="uncompressed")
        self.raw = getattr(self.f, "raw", self.f)

    def seek(self, offset: int) -> int:
        return self.raw.seek(offset)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def __enter__(self) -> "RawReader":
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def read_image(path: str, limit: int = -1) -> bytes:
    """An image's bytes (at most `limit`, -1: all): a file, or a member of a shard's tar named by
    its byte range (`shard.tar!/uid.jpg@offset:size`, curation/core/image_refs.py) read with one
    ranged read."""
    from curation.core.image_refs import read_image_bytes

    return read_image_bytes(path, RawReader, limit)


def read_ranges(path: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes at each (offset, length) of one file, read through one open handle: a ranged GET
    per run of adjacent ranges on an object store (past Beam's 16 MiB read buffer), seeks locally."""
    from curation.core.image_refs import read_range

    with RawReader(path) as raw:
        return [read_range(raw, offset, length, path) for offset, length in ranges]


def write_json(path: str, doc: object) -> None:
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    write_atomic(path, lambda f: f.write(data))


def read_json(path: str) -> object:
    return json.loads(read_bytes(path))


def match(patterns: list[str]) -> list[InputFile]:
    """(path, size, modification time) for every file matching the globs, sorted by path; error if
    a glob matches nothing."""
    files: dict[str, InputFile] = {}
    for pattern, result in zip(patterns, FileSystems.match(patterns)):
        if not result.metadata_list:
            raise FileNotFoundError(f"no input files match {pattern!r}")
        for meta in result.metadata_list:
            files[meta.path] = InputFile(meta.path, meta.size_in_bytes, getattr(meta, "last_updated_in_seconds", None))
    return [files[path] for path in sorted(files)]


def listdir(directory: str, suffix: str = "") -> list[str]:
    """Paths directly under `directory` ending with `suffix` (empty list if it does not exist).
    One listing, no existence check first: an object store has no folders to check, only keys."""
    from apache_beam.io.filesystem import BeamIOError

    base = directory.rstrip("/") + "/"
    try:
        result = FileSystems.match([join(directory, f"*{suffix}")])[0]
    except BeamIOError:  # a local folder that is not there
        return []
    return sorted(m.path for m in result.metadata_list if "/" not in m.path[len(base):])


def remove_stale_temps(directory: str, depth: int = 2) -> int:
    """Delete `.tmp-*` files a killed run left under `directory` (and `depth` folders down, where
    stages write images); a job owns its folder, so none belongs to a live writer. Returns the count.
    On an object store there are none (the final name is written once): nothing is listed there."""
    if FileSystems.get_scheme(directory) in OBJECT_STORES:
        return 0
    patterns = [join(directory, *(["*"] * d), ".tmp-*") for d in range(depth + 1)]
    stale = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if stale:
        FileSystems.delete(stale)
    return len(stale)
