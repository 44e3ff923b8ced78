"""Record types at the ingest stage boundaries, declared once.

`Pair` is one metadata row mapped to canonical fields; `ImageInfo` is what download + image
processing add; `Rejection` is every stage's dead-letter record. `Verdict` is what a filter returns.
Field names follow DESIGN.md's interchange formats.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Literal, Protocol, TypeVar

from curation.core.reasons import check_reason

# Canonical metadata fields a source profile may map a column onto, with their types.
NUMERIC_FIELDS: dict[str, type] = {
    "declared_width": int,
    "declared_height": int,
    "clip_similarity": float,
    "clip_similarity_l14": float,
    "nsfw_score": float,
    "nsfw_score_gantman": float,
    "watermark_score": float,
    "aesthetic_score": float,
}
TEXT_FIELDS = ("nsfw_tag", "license", "source_hash", "image_phash")
BOX_FIELDS = ("face_bboxes",)  # lists of relative [x0, y0, x1, y1] boxes (DataComp's face_bboxes)
MAPPABLE_FIELDS = ("uid", "url", "caption", "image_path", *NUMERIC_FIELDS, *TEXT_FIELDS, *BOX_FIELDS)

_UID_SAFE = re.compile(r"[A-Za-z0-9_]+")
UID_MAX = 128  # characters; a longer uid keeps a prefix and a hash of the whole


def _uid_key(text: str) -> str:
    """`text` as webdataset-key characters, injectively: [A-Za-z0-9_] as they are, every other
    character as `-xx` per UTF-8 byte (no dots, no path characters; `a.b` and `a_b` stay apart)."""
    out, pos = [], 0
    for m in _UID_SAFE.finditer(text):
        out += [f"-{b:02x}" for b in text[pos:m.start()].encode("utf-8", "surrogatepass")]
        out.append(m.group())
        pos = m.end()
    out += [f"-{b:02x}" for b in text[pos:].encode("utf-8", "surrogatepass")]
    return "".join(out)


def _limited(uid: str, whole: str) -> str:
    """A uid over UID_MAX: its prefix, `-z` (no escape makes it) and a hash of `whole`, still injective."""
    if len(uid) <= UID_MAX:
        return uid
    digest = hashlib.blake2b(whole.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{uid[:UID_MAX - 34]}-z{digest}"


def clean_uid(raw: str) -> str:
    """A source id as a webdataset key (no dots: webdataset splits keys at the first one), and
    injective: two different ids never become one uid."""
    return _limited(_uid_key(raw), raw)


@dataclass(frozen=True)
class UidConfig:
    """Where a row's own id is unique, so rows of files or sources read together never collide as
    `dup_uid`: `file` (ids numbered per file, as InternVL / LLaVA jsonl: 0..N in each), `source`
    (ids unique across the dataset's files, as COYO's `id`), `none` (ids already global). Rows
    without an id get a hash of url + caption (or of the row), global by itself, in every mode."""

    # where a row's id is unique: file (numbered per file), source (across its files), none (global)
    namespace: Literal["file", "source", "none"] = "file"

    def uid(self, raw_id: str, source: str, source_file: str) -> str:
        """The uid of a row whose id is `raw_id`: `{namespace}--{id}` (`--` is in no key, so the split
        is unique), the namespace a 12-hex hash of the source and the file's name (relative to the
        input root), or the source's name; the id alone under `none` or when the source has no name."""
        if self.namespace == "file":
            where = f"{source}\x00{source_file}".encode("utf-8", "surrogatepass")
            head = hashlib.blake2b(where, digest_size=6).hexdigest()
        elif self.namespace == "source" and source:
            head = _uid_key(source)
        else:
            return clean_uid(raw_id)
        return _limited(f"{head}--{_uid_key(raw_id)}", f"{head}\x00{raw_id}")


R = TypeVar("R")


def first_kept_per_uid(records: Iterable[R], *, order_key: Callable[[R], Any], uid: Callable[[R], str],
                       kept: Callable[[R], bool], dup: Callable[[R, R], R]) -> list[R]:
    """Every shard writer's uid rule: records in source order (`order_key`); the first kept record
    per uid wins and a later kept one is replaced by `dup(record, first)`, its `dup_uid` rejection."""
    winners: dict[str, R] = {}
    out: list[R] = []
    for rec in sorted(records, key=order_key):
        if kept(rec):
            first = winners.setdefault(uid(rec), rec)
            if first is not rec:
                rec = dup(rec, first)
        out.append(rec)
    return out


def hash_uid(url: str, caption: str) -> str:
    """Stable uid for sources without an id: a hash of url + caption."""
    return hashlib.blake2b(f"{url}\x00{caption}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(slots=True)
class Pair:
    """One image-text pair from a metadata row, with canonical metadata fields."""

    uid: str
    url: str
    caption: str
    source: str
    source_file: str
    source_row: int
    image_path: str | None = None
    declared_width: int | None = None
    declared_height: int | None = None
    clip_similarity: float | None = None
    clip_similarity_l14: float | None = None
    nsfw_score: float | None = None
    nsfw_score_gantman: float | None = None
    nsfw_tag: str | None = None
    watermark_score: float | None = None
    aesthetic_score: float | None = None
    license: str | None = None
    source_hash: str | None = None
    image_phash: str | None = None
    caption_raw: str | None = None  # the caption as the source wrote it, when ingest decoded HTML references in it
    face_bboxes: list[list[float]] | None = None  # relative face boxes the source names, blurred when asked
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def order_key(self) -> tuple[str, str, int]:
        """Sort key that does not depend on arrival order."""
        return (self.uid, self.source_file, self.source_row)


@dataclass(slots=True)
class ImageInfo:
    """What download + image processing produced for a kept pair."""

    data: bytes
    ext: str  # "jpg" | "webp"
    width: int
    height: int
    original_width: int
    original_height: int
    original_format: str
    sha256: str  # of the stored bytes (`data`, what the tar holds), for exact image dedup
    phash: str  # 64-bit DCT perceptual hash, 16 hex chars
    http_status: int | None = None
    mime: str | None = None
    source_sha256: str | None = None  # of the bytes as downloaded, before decode and re-encode
    nsfw_pixels: float | None = None  # Open-NSFW's P(NSFW) on the pixels, when scored
    faces: list[list[int]] | None = None  # face boxes [x0, y0, x1, y1] in stored pixels (blurred with faces.blur), when looked for
    clip_pixel_similarity: float | None = None  # cosine of the stored image and its caption under clip_model, when scored
    clip_model: str | None = None  # the CLIP / SigLIP model that gave clip_pixel_similarity
    aesthetic_pixels: float | None = None  # LAION's aesthetic predictor v2 on the CLIP image embedding, when scored
    clip_embedding: str | None = None  # the unit CLIP image embedding, float16 little-endian, base64 (store_embedding)


@dataclass(slots=True)
class VideoInfo:
    """A video's sampled frames (JPEG, in time order) and what was read of it; the Sample's image
    is its poster frame (the middle one), so image filters, pHash and dedup see a frame."""

    frames: list[bytes]
    timestamps: list[float]  # seconds from the stream's start, one per frame
    duration_s: float
    source_fps: float | None
    codec: str
    container: str
    sampling: str  # uniform | fps | keyframes
    truncated_at_s: float | None = None  # the stream ended here, before its stated duration

    def metadata(self) -> dict[str, Any]:
        """The json's `video` field: everything but the frame bytes."""
        doc = {"frames": len(self.frames), "timestamps": self.timestamps, "duration_s": self.duration_s,
               "source_fps": self.source_fps, "codec": self.codec, "container": self.container,
               "sampling": self.sampling}
        if self.truncated_at_s is not None:
            doc["truncated_at_s"] = self.truncated_at_s
        return doc


def frame_member(k: int) -> str:
    """A video sample's frame k as a webdataset suffix: `{uid}.frame03.jpg`."""
    return f"frame{k:02d}.jpg"


def is_frame_member(suffix: str) -> bool:
    """Whether a webdataset suffix is a video frame (`frame03.jpg`)."""
    return suffix.startswith("frame") and suffix.endswith(".jpg") and suffix[5:-4].isdigit()


PIXEL_FINDINGS = ("nsfw_pixels", "faces", "clip_pixel_similarity", "clip_model", "aesthetic_pixels", "clip_embedding")


@dataclass(slots=True)
class Sample:
    """A pair that survived download and pixel filters."""

    pair: Pair
    image: ImageInfo
    # The webdataset members as read back from a shard (suffix -> bytes, in file order): a later
    # stage that keeps the sample rewrites exactly these bytes, fields it does not know included.
    stored: dict[str, bytes] | None = None
    # Where the image bytes wait while the record crosses a shuffle (ingest's staging); the writer
    # reads them back, so `image.data` is empty meanwhile.
    staged: str | None = None
    video: VideoInfo | None = None  # a video sample's frames (ingest with a `video:` recipe section)

    def metadata(self) -> dict[str, Any]:
        """The `{uid}.json` content: all metadata except the image bytes."""
        meta = pair_metadata(self.pair)
        info = asdict(self.image)
        del info["data"]
        for name in PIXEL_FINDINGS:  # only where the recipe looks: other shards keep their bytes
            if info[name] is None:
                del info[name]
        meta.update(info)
        if self.video is not None:
            meta["video"] = self.video.metadata()
        meta["status"] = "kept"
        return meta


class RowLike(Protocol):
    """What every stage's rejection must know of its input row."""

    @property
    def uid(self) -> str: ...
    @property
    def source_file(self) -> str: ...
    @property
    def source_row(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RowRef:
    """An input row by identity only: conversation, preference and question rows, whose stages
    keep nothing else of a rejected row."""

    uid: str
    source_file: str
    source_row: int


class FromRow:
    """The identity of a record that holds its input row as `row` (a rejection, a planned unit)."""

    __slots__ = ()
    row: RowLike

    @property
    def uid(self) -> str:
        return self.row.uid

    @property
    def source_file(self) -> str:
        return self.row.source_file

    @property
    def source_row(self) -> int:
        return self.row.source_row


@dataclass(slots=True)
class Rejection(FromRow):
    """The one dead-letter record of every stage: which input row, at which stage, why. `row` is
    what the stage knew of it: a `Pair` in the pair-shard stages (its metadata goes into the
    manifest), the plan's `PlanRow`, or a `RowRef`."""

    row: RowLike
    stage: str
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        check_reason(self.reason)

    @property
    def order_key(self) -> tuple[str, int]:
        return self.row.source_file, self.row.source_row


@dataclass(frozen=True, slots=True)
class Verdict:
    """A filter's answer for one record."""

    ok: bool
    reason: str | None = None
    detail: str = ""

    @staticmethod
    def keep() -> "Verdict":
        return _KEEP

    @staticmethod
    def reject(reason: str, detail: str = "") -> "Verdict":
        return Verdict(False, check_reason(reason), detail)


_KEEP = Verdict(True)


def pair_metadata(pair: Pair) -> dict[str, Any]:
    """Pair fields as a JSON-ready dict, dropping empty optional fields."""
    out: dict[str, Any] = {}
    for name in Pair.__slots__:  # type: ignore[attr-defined]
        value = getattr(pair, name)
        if value is None or (name == "extra" and not value):
            continue
        out[name] = value
    return out


def record_pair(rec: "Sample | Rejection") -> Pair:
    """The pair behind a pair-shard record, kept or rejected."""
    return rec.pair if isinstance(rec, Sample) else rec.row  # type: ignore[return-value]


def record_uid(rec: "Pair | Sample | Rejection") -> str:
    """The uid of any record a pair-shard stage handles (shards are assigned by it)."""
    if isinstance(rec, Sample):
        return rec.pair.uid
    return rec.uid
