"""Pair shards: deterministic webdataset tars, parquet manifests, shard reports and the index.

Pure builders over file objects; `pipelines/` opens the files (any Beam filesystem), writes to a
temp name and renames. Contents depend only on the records, never on arrival order: members are
sorted by uid, tar headers carry fixed times and owners, the manifest has a fixed schema.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.records import (ImageInfo, Pair, Rejection, Sample, first_kept_per_uid, frame_member,
                                   is_frame_member, record_pair)
from curation.core.manifests import PAIR_MANIFEST

TAR_MTIME = 1_577_836_800  # 2020-01-01: fixed, so tars are byte-identical across runs
INDEX_NAME = "_index.json"
PROGRESS_DIR = "_progress"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# The largest tar member any reader holds in memory: a stored image is capped far below (the
# download's max_bytes), so a bigger member (a sparse 10 GB one, say) is hostile, not data.
MAX_MEMBER_BYTES = 256 << 20



def stable_hash(key: str) -> int:
    """64-bit hash that is the same in every process and Python version (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def shard_of(uid: str, num_shards: int) -> int:
    return stable_hash(uid) % num_shards


def num_shards_for(rows: int, samples_per_shard: int) -> int:
    return max(1, -(-rows // samples_per_shard))


def shard_name(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}"


class HashingWriter(io.RawIOBase):
    """Write-through wrapper that counts bytes and computes sha256 on the way."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def write_tar(f: IO[bytes], members: Iterable[tuple[str, bytes]],
              where: dict[str, tuple[int, int]] | None = None) -> dict[str, tuple[int, int]]:
    """A tar with fixed headers (mtime, owner, mode) in the given member order; streams. Returns
    each member's (offset, size) of its bytes in the tar, for readers that fetch one by range;
    `where`, when given, is filled as the members are written, so a lazy `members` can name the
    byte ranges of the members before it."""
    where = {} if where is None else where
    with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = TAR_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
            padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            where[name] = (tar.offset - padded, len(data))  # the data ends the entry, padded to a block
    return where


def safe_member_name(name: str) -> str | None:
    """Why a tar member name is not acceptable, or None: no folders, no absolute paths, no `..`,
    and a webdataset key (before the first dot) of safe characters only."""
    if name.startswith("/") or "\\" in name or posixpath.normpath(name) != name or "/" in name or name in (".", ".."):
        return f"member name {name!r} is a path (folders, '..' or absolute); refused"
    key, dot, suffix = name.partition(".")
    if not dot or not suffix or not _SAFE_KEY.match(key):
        return f"member name {name!r} is not `key.suffix` with a safe key"
    return None


def iter_tar_groups(tar_path_or_file: str | IO[bytes], strict: bool = False,
                    max_member_bytes: int = MAX_MEMBER_BYTES,
                    lazy: Callable[[str], bool] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {suffix: bytes}) per webdataset sample, in file order: members sharing the name before
    the first dot are one sample (they are written contiguously). Reads the tar as a stream (any
    readable file object) and extracts nothing to disk. A member over `max_member_bytes` is a
    ShardFormatError before a byte of it is read. `strict` raises ValueError on a member that
    is not a regular file, has an unsafe name (`safe_member_name`) or repeats within its sample;
    otherwise non-file members are skipped. Members whose suffix `lazy` accepts are not read: their
    value is the (offset, size) of their bytes in the tar, for a reader that fetches them later."""
    if isinstance(tar_path_or_file, str):
        opened = tarfile.open(tar_path_or_file, "r|")
    else:
        opened = tarfile.open(fileobj=tar_path_or_file, mode="r|")
    with opened as tar:
        key, group = None, {}
        for info in tar:
            if not info.isfile():
                if strict:
                    raise ValueError(f"member {info.name!r} is not a regular file (type {info.type!r})")
                continue
            if strict and (problem := safe_member_name(info.name)):
                raise ValueError(problem)
            if info.size > max_member_bytes:
                raise ShardFormatError(f"member {info.name!r} is {info.size:,} bytes, over the "
                                       f"{max_member_bytes:,}-byte cap on one member; refused")
            k, _, suffix = info.name.partition(".")
            if key is not None and k != key:
                yield key, group
                group = {}
            if strict and suffix in group:
                raise ValueError(f"member {info.name!r} appears twice")
            key = k
            group[suffix] = (info.offset_data, info.size) if lazy and lazy(suffix) else tar.extractfile(info).read()
        if key is not None:
            yield key, group


def sample_members(sample: Sample) -> list[tuple[str, bytes]]:
    """`{uid}.jpg|webp`, a video's `{uid}.frame00.jpg`..., `{uid}.json`, `{uid}.txt`: webdataset
    groups them by the key before the first dot."""
    uid = sample.pair.uid
    if sample.stored is not None:
        return [(f"{uid}.{suffix}", data) for suffix, data in sample.stored.items()]
    meta = json.dumps(sample.metadata(), ensure_ascii=False, sort_keys=True, allow_nan=False).encode()
    frames = [(f"{uid}.{frame_member(k)}", data) for k, data in enumerate(sample.video.frames)] if sample.video else []
    return [
        (f"{uid}.{sample.image.ext}", sample.image.data),
        *frames,
        (f"{uid}.json", meta),
        (f"{uid}.txt", sample.pair.caption.encode("utf-8", "replace")),
    ]


def resolve_uid_collisions(records: Iterable[Sample | Rejection]) -> list[Sample | Rejection]:
    """Keep the first kept sample per uid in source order; later kept ones become `dup_uid`."""
    return first_kept_per_uid(
        records, order_key=lambda r: record_pair(r).order_key, uid=lambda r: record_pair(r).uid,
        kept=lambda r: isinstance(r, Sample),
        dup=lambda r, first: Rejection(r.pair, "write", "dup_uid",
                                       f"uid already kept from {first.pair.source_file}:{first.pair.source_row}"))


def manifest_row(rec: Sample | Rejection) -> dict[str, Any]:
    p = record_pair(rec)
    row = {
        "uid": p.uid, "url": p.url, "caption": p.caption, "source": p.source, "source_file": p.source_file,
        "source_row": p.source_row, "declared_width": p.declared_width, "declared_height": p.declared_height,
        "clip_similarity": p.clip_similarity, "nsfw_score": p.nsfw_score, "watermark_score": p.watermark_score,
        "aesthetic_score": p.aesthetic_score,
    }
    if isinstance(rec, Sample):
        im = rec.image
        row.update(status="kept", width=im.width, height=im.height, original_width=im.original_width,
                   original_height=im.original_height, sha256=im.sha256, phash=im.phash,
                   source_sha256=im.source_sha256, nsfw_pixels=im.nsfw_pixels,
                   faces=None if im.faces is None else len(im.faces), clip_pixel_similarity=im.clip_pixel_similarity,
                   aesthetic_pixels=im.aesthetic_pixels)
    else:
        row.update(status="rejected", stage=rec.stage, reason=rec.reason, detail=rec.detail)
    return row


_PAIR_FIELDS = frozenset(Pair.__slots__)  # type: ignore[attr-defined]
_IMAGE_FIELDS = frozenset(ImageInfo.__slots__) - {"data"}  # type: ignore[attr-defined]


class ShardFormatError(ValueError):
    """A pair shard does not match its manifest or its index entry."""


def _image_suffix(group: dict[str, Any]) -> str | None:
    """The suffix of a sample's image member: its json's `ext`, else the first jpg / webp / png."""
    meta = json.loads(group["json"]) if "json" in group else {}
    return meta.get("ext") or next((s for s in group if s in ("jpg", "webp", "png")), None)


def sample_from_members(group: dict[str, bytes]) -> Sample:
    """A kept sample back from its webdataset members (`jpg|webp|png`, `json`, `txt`)."""
    meta = json.loads(group["json"])
    ext = _image_suffix(group)
    pair = Pair(**{k: v for k, v in meta.items() if k in _PAIR_FIELDS})
    image = ImageInfo(data=group[ext], **{k: v for k, v in meta.items() if k in _IMAGE_FIELDS})
    return Sample(pair, image, stored=dict(group))


def _pair_from_row(row: dict[str, Any]) -> Pair:
    fields = {k: row.get(k) for k in ("declared_width", "declared_height", "clip_similarity", "nsfw_score",
                                      "watermark_score", "aesthetic_score")}
    return Pair(uid=row["uid"], url=row["url"] or "", caption=row["caption"] or "", source=row["source"] or "",
                source_file=row["source_file"] or "", source_row=row["source_row"] or 0, **fields)


def read_pair_shard(tar_file: IO[bytes], manifest_file: IO[bytes]) -> Iterator[Sample | Rejection]:
    """Every manifest row of one shard back as a record: kept rows with their stored members,
    rejected rows as Rejections (stage, reason and detail as written)."""
    yield from _shard_records(dict(iter_tar_groups(tar_file, strict=True)), manifest_file)


_SMALL_MEMBERS = frozenset({"json", "txt"})  # read at once by a lazy reader; the image and video frames wait


def read_pair_shard_lazy(tar_file: IO[bytes], manifest_file: IO[bytes]
                         ) -> tuple[list[Sample | Rejection], Callable[[Sample], None]]:
    """One shard's records without their image bytes, and `load(sample)`, which reads a kept
    sample's image back from `tar_file` (seekable: a local file) into `image.data` and its stored
    member: what a writer that re-reads its input shard streams with (`write_pair_shard(load=)`),
    one image in memory instead of the shard."""
    groups = dict(iter_tar_groups(tar_file, strict=True, lazy=lambda suffix: suffix not in _SMALL_MEMBERS))
    where: dict[str, list[tuple[str, int, int]]] = {}
    for key, group in groups.items():
        image = _image_suffix(group)
        for suffix, value in group.items():
            if suffix in _SMALL_MEMBERS:
                continue
            if suffix == image or is_frame_member(suffix):  # left for `load` (the image first)
                where.setdefault(key, []).insert(0 if suffix == image else len(where.get(key, [])), (suffix, *value))
                group[suffix] = b""
            else:  # another member a stage stored beside the image: small, read now
                tar_file.seek(value[0])
                group[suffix] = tar_file.read(value[1])

    def load(sample: Sample) -> None:
        if sample.pair.uid not in where:
            raise ShardFormatError(f"{sample.pair.uid}: no image member in the tar")
        for k, (suffix, offset, size) in enumerate(where[sample.pair.uid]):
            tar_file.seek(offset)
            data = tar_file.read(size)
            if len(data) != size:
                raise ShardFormatError(f"{sample.pair.uid}.{suffix}: {len(data)} of {size} bytes in the tar")
            if k == 0:
                sample.image.data = data
            if sample.stored is not None:
                sample.stored[suffix] = data

    return list(_shard_records(groups, manifest_file)), load


def _shard_records(groups: dict[str, dict[str, Any]], manifest_file: IO[bytes]) -> Iterator[Sample | Rejection]:
    """Manifest rows in order, kept ones built from their tar members (`groups`)."""
    table = pq.read_table(manifest_file)
    kept = 0
    for row in table.to_pylist():
        if row["status"] == "kept":
            group = groups.get(row["uid"])
            if group is None or "json" not in group:
                raise ShardFormatError(f"manifest keeps {row['uid']} but the tar has no such sample")
            kept += 1
            yield sample_from_members(group)
        else:
            yield Rejection(_pair_from_row(row), row["stage"] or "", row["reason"], row["detail"] or "")
    if kept != len(groups):
        raise ShardFormatError(f"the tar holds {len(groups)} samples, the manifest keeps {kept}")


def write_rows(rows: list[dict[str, Any]], schema: pa.Schema, f: IO[bytes]) -> None:
    """Rows -> one zstd parquet file with this schema (an empty table when there are none): every
    shard writer's manifest."""
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    pq.write_table(table, f, compression="zstd")


def rejection_counts(rejected: Iterable[Any]) -> dict[str, dict[str, int]]:
    """`reasons` and `stages` of a shard's rejected records (anything with .reason and .stage),
    sorted, as a ShardReport takes them."""
    rejected = list(rejected)
    return {"reasons": dict(sorted(Counter(r.reason for r in rejected).items())),
            "stages": dict(sorted(Counter(r.stage for r in rejected).items()))}


def write_manifest(f: IO[bytes], records: list[Sample | Rejection]) -> None:
    write_rows([manifest_row(r) for r in records], PAIR_MANIFEST, f)


@dataclass
class ShardReport:
    """What one written shard holds; the index is built from these."""

    shard: int
    name: str
    kept: int
    rows: int
    tar_sha256: str
    manifest_sha256: str
    tar_bytes: int
    reasons: dict[str, int] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)  # stage-specific totals (packs, tokens, ...)
    extra_files: dict[str, str] = field(default_factory=dict)  # file name -> sha256, written beside the tar

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "ShardReport":
        return ShardReport(**json.loads(text))


def write_pair_shard(shard: int, name: str, records: Iterable[Sample | Rejection],
                     tar_file: IO[bytes], manifest_file: IO[bytes],
                     load: Callable[[Sample], None] | None = None,
                     members: dict[str, tuple[int, int]] | None = None) -> ShardReport:
    """Write one shard's tar and manifest from all its records (kept and rejected). With `load`,
    kept samples arrive without their image bytes: `load(sample)` fills them just before the
    sample's members stream into the tar, and they are dropped right after (one image in memory).
    `members`, if given, receives each tar member's (offset, size)."""
    resolved = resolve_uid_collisions(records)
    kept = [r for r in resolved if isinstance(r, Sample)]
    kept.sort(key=lambda s: s.pair.uid)
    tar_out = HashingWriter(tar_file)

    def stream():
        for s in kept:
            fill = load is not None and not s.image.data
            if fill:
                load(s)
            yield from sample_members(s)
            if fill:  # dropped again: one image (or one video's frames) in memory at a time
                s.image.data = b""
                for suffix in list(s.stored or ()):
                    if suffix == s.image.ext or is_frame_member(suffix):
                        s.stored[suffix] = b""

    where = write_tar(tar_out, stream())
    if members is not None:
        members.update(where)
    man_out = HashingWriter(manifest_file)
    write_manifest(man_out, resolved)
    rejected = [r for r in resolved if isinstance(r, Rejection)]
    return ShardReport(
        shard=shard, name=name, kept=len(kept), rows=len(resolved),
        tar_sha256=tar_out.hexdigest(), manifest_sha256=man_out.hexdigest(), tar_bytes=tar_out.size,
        **rejection_counts(rejected),
    )


def index_name_problem(name: object) -> str | None:
    """Why a file name in an `_index.json` is not one a reader may open beside it (or None): a
    plain name in the folder, never a path, never `..`, never absolute."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name or "\x00" in name or ":" in name:
        return f"{name!r} is a path, not a name in the folder"
    return None


def check_index_names(index: dict[str, Any], where: str) -> None:
    """Every file an index names (tars, manifests, files written beside them) is a plain name in
    its folder: a hostile `_index.json` cannot send a reader elsewhere. ShardFormatError if not."""
    for entry in index.get("shards") or []:
        if not isinstance(entry, dict):
            raise ShardFormatError(f"{where}: a shard entry is not an object")
        names = [entry.get("name"), entry.get("tar"), entry.get("manifest"), *(entry.get("files") or {})]
        for name in names:
            if (problem := index_name_problem(name)) is not None:
                raise ShardFormatError(f"{where}: {problem}; refused")


def build_index(reports: Iterable[ShardReport], *, kind: str, prefix: str, num_shards: int,
                fingerprint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `_index.json` document: every shard with its counts and hashes, totals per reason."""
    reports = sorted(reports, key=lambda r: r.shard)
    reasons: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for r in reports:
        reasons.update(r.reasons)
        stages.update(r.stages)
    kept = sum(r.kept for r in reports)
    inputs = sum(r.rows for r in reports)
    stats: Counter[str] = Counter()
    for r in reports:
        stats.update(r.stats)
    index = {
        "kind": kind, "format_version": 1, "prefix": prefix, "num_shards": num_shards,
        "config_fingerprint": fingerprint,
        "totals": {"inputs": inputs, "kept": kept, "rejected": inputs - kept},
        "reasons": dict(sorted(reasons.items())), "stages": dict(sorted(stages.items())),
        "shards": [
            {"name": r.name, "tar": f"{r.name}.tar", "manifest": f"{r.name}.parquet", "count": r.kept,
             "rows": r.rows, "tar_sha256": r.tar_sha256, "manifest_sha256": r.manifest_sha256,
             "tar_bytes": r.tar_bytes, **({"stats": r.stats} if r.stats else {}),
             **({"files": r.extra_files} if r.extra_files else {})}
            for r in reports
        ],
    }
    if stats:
        index["stats"] = dict(sorted(stats.items()))
    if extra:
        index.update(extra)
    return index
