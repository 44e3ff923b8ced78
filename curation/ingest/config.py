"""The ingest recipe: how to read a metadata source, download, decode and shard its pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from curation.core.config import ConfigError, ShardConfig
from curation.core.records import MAPPABLE_FIELDS, UidConfig
from filters.dedup.config import DedupConfig, ExactDedupConfig, NearCaptionConfig, NearImageConfig
from curation.ingest.video import VideoConfig
from filters.quality.pixel_models import PixelModelsConfig


@dataclass(frozen=True)
class SourceConfig:
    """How to read one metadata source and map its columns onto canonical fields."""

    name: str  # each row's `source` field; uids from an id column are namespaced by it (see uid)
    columns: dict[str, str]  # canonical field -> the source's column name; url or image_path is required
    # the metadata files' format; auto: from each file's extension (a .gz / .zst suffix looked through)
    format: Literal["auto", "parquet", "csv", "tsv", "jsonl", "json"] = "auto"
    keep_extra_columns: bool = True  # unmapped columns kept in each record's `extra` (JSON-safe values)
    image_root: str | None = None  # for jsonl with local image paths
    caption_from_conversation: bool = False  # InternVL/LLaVA jsonl: first gpt turn is the caption
    uid: UidConfig = field(default_factory=UidConfig)  # where the id column's ids are unique: file | source | none
    # rows per read work item: parquet row groups / csv and jsonl byte ranges gathered up to it, so one
    # big file keeps many workers busy (output unchanged; 0: one work item per file)
    split_rows: int = 250_000

    def __post_init__(self) -> None:
        bad = sorted(set(self.columns) - set(MAPPABLE_FIELDS))
        if bad:
            raise ConfigError(f"columns.{bad[0]}: unknown canonical field (expected one of: {', '.join(MAPPABLE_FIELDS)})")
        if "url" not in self.columns and "image_path" not in self.columns:
            raise ConfigError("columns: map `url` or `image_path` to a column")
        if self.split_rows < 0:
            raise ConfigError("split_rows: must be >= 0 (0: one read work item per file)")


@dataclass(frozen=True)
class DownloadConfig:
    """HTTP fetching: limits, retries, politeness and the SSRF guard."""

    timeout_s: float = 10.0  # seconds per attempt: its connect, redirects and body (also robots.txt's fetch)
    retries: int = 2  # attempts after the first, on a timeout, connection error or HTTP 429/500/502/503/504
    backoff_s: float = 0.5  # seconds before retry n: backoff_s * 2^(n-1) (a Retry-After replaces it)
    max_bytes: int = 20_000_000  # bytes one image may have (Content-Length or body read; local files too)
    max_redirects: int = 5  # redirects followed per attempt; more: too_many_redirects
    threads: int = 64  # downloads in flight per worker (its thread pool); not in the fingerprint
    user_agent_token: str = "curate"  # our name in the User-Agent, and the agent robots rules are read for
    # X-Robots-Tag directives (bare or scoped to user_agent_token) that refuse an image as robots_noai
    disallowed_robots: list[str] = field(default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"])
    allow_private_addresses: bool = False  # fetch from addresses not globally routable (else private_address)
    check_content_type: bool = True  # refuse a text / JSON / XML / JS Content-Type as not_an_image
    # A hard limit per URL, over every attempt, redirect and Retry-After wait (timeout_s bounds one
    # attempt's connect and each read): a server trickling a byte a second ends as `timeout` on time.
    deadline_s: float = 30.0
    connect_attempt_s: float = 2.0  # Happy Eyeballs: connect timeout of each address before the last
    retry_after_max_s: float = 30.0  # honour a 429 / 503 Retry-After up to this; longer: give up
    # Per host and worker (this and the next three limits): requests in flight (0: no limit)
    per_host_concurrency: int = 16
    per_host_rps: float = 0.0  # requests per second, a token bucket of per_host_burst; 0: no rate limit
    per_host_burst: int = 10  # the token bucket's size: requests per_host_rps lets through at once (>= 1)
    # circuit breaker: after this many connection failures in a row, the host's remaining URLs
    # fail fast as host_unreachable; 0: off
    host_failures: int = 5
    # The limits above hold for the whole job: downloads are grouped by the URL's registrable
    # domain (curation/ingest/hosts.py), and a host with more than hot_host_rows rows is spread over
    # up to max_host_subkeys sub-keys (never more than per_host_concurrency) that share its budget.
    hot_host_rows: int = 10_000
    max_host_subkeys: int = 16  # sub-keys a hot host is spread over at most; not in the fingerprint
    robots_txt: bool = False  # fetch robots.txt once per host (RFC 9309) and obey it for user_agent_token
    robots_max_bytes: int = 500_000  # bytes a robots.txt body may have (with robots_txt)
    # Verification against the source's own hashes: DataComp's sha256 of the bytes (source_hash)
    verify_sha256: bool = True
    phash_tolerance: int | None = None  # bits our pHash may differ from COYO's image_phash (0..64); null: not checked

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s: must be > 0")
        if self.deadline_s <= 0 or self.connect_attempt_s <= 0:
            raise ConfigError("deadline_s, connect_attempt_s: must be > 0")
        if self.retries < 0 or self.max_redirects < 0 or self.threads < 1 or self.max_bytes < 1:
            raise ConfigError("retries/max_redirects must be >= 0; threads, max_bytes >= 1")
        if self.per_host_concurrency < 0 or self.per_host_rps < 0 or self.per_host_burst < 1 or self.host_failures < 0:
            raise ConfigError("per_host_concurrency, per_host_rps, host_failures >= 0; per_host_burst >= 1")
        if self.hot_host_rows < 1 or self.max_host_subkeys < 1:
            raise ConfigError("hot_host_rows, max_host_subkeys: >= 1")
        if self.retry_after_max_s < 0 or self.robots_max_bytes < 1 or (self.phash_tolerance is not None and not 0 <= self.phash_tolerance <= 64):
            raise ConfigError("retry_after_max_s >= 0, robots_max_bytes >= 1, phash_tolerance in 0..64")


@dataclass(frozen=True)
class ImageConfig:
    """Decode, resize and re-encode settings (img2dataset's resize modes)."""

    # no: as decoded; keep_ratio: shorter side to image_size; keep_ratio_largest: longer side to it;
    # center_crop: keep_ratio, then the centre square; border: keep_ratio_largest, white-padded square
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "keep_ratio"
    image_size: int = 512  # pixels: the side resize_mode scales to (>= 1)
    resize_only_if_bigger: bool = True  # never upscale: an image whose side is <= image_size keeps its size
    # img2dataset's defaults: area averaging when shrinking (Pillow BOX == cv2 INTER_AREA), lanczos when growing
    downscale_interpolation: Literal["area", "bilinear", "bicubic", "lanczos"] = "area"
    # resampling when growing an image (resize_only_if_bigger: false)
    upscale_interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "lanczos"
    encode_format: Literal["jpg", "webp"] = "jpg"  # the stored image's format (JPEG or WebP)
    encode_quality: int = 95  # Pillow quality of the re-encode, 1..100
    max_pixels: int = 89_478_485  # Pillow's default decompression-bomb limit

    def __post_init__(self) -> None:
        if self.image_size < 1 or not 1 <= self.encode_quality <= 100 or self.max_pixels < 1:
            raise ConfigError("image_size >= 1, encode_quality in 1..100, max_pixels >= 1")



@dataclass(frozen=True)
class IngestConfig:
    """The whole ingest recipe."""

    source: SourceConfig
    # rules on metadata before download, in order, the first failing one rejects: [{name: {params}}]
    # (caption_length, placeholder_caption, declared_size, nsfw, watermark, clip_similarity, language)
    metadata_filters: list[dict[str, Any]] = field(default_factory=list)
    # rules on each decoded image's original size, same form (min_side, aspect_ratio, max_area; blank_image
    # also on its pixels); plan applies them to declared sizes
    pixel_filters: list[dict[str, Any]] = field(default_factory=list)
    # models on the image to be stored: Open-NSFW's score (nsfw), face detection, blurring, max_faces (faces)
    pixels: PixelModelsConfig = field(default_factory=PixelModelsConfig)
    # every row is a video (local path or URL in the image_path / url column): frames sampled with PyAV and
    # stored beside a poster frame (curation/ingest/video.py); null: images
    video: VideoConfig | None = None
    dedup_urls: bool = True  # shorthand for `dedup: {exact: {url: true, caption: false}, near_caption: {enabled: false}}`
    # URL and caption dedup before any download; image keys only exist after it (`curate dedup`).
    dedup: DedupConfig | None = None
    download: DownloadConfig = field(default_factory=DownloadConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    # Downloaded images wait under {output}/_staging/ in bundle files of about `staging_bundle_mb`
    # (one object each, never one per image) and only their metadata crosses the shuffle to the
    # shard writers: flat memory on DirectRunner (whose runner process buffers every stage's
    # output). false: the bytes ride through the shuffle (fine on Dataflow's shuffle service).
    stage_images: bool = True
    staging_bundle_mb: float = 64.0  # MiB per staging bundle file (> 0; with stage_images)
    progress: bool = True  # a progress bar per download worker on stderr; false (--no-progress): heartbeat lines
    progress_every_s: float = 30.0  # without a progress bar (--no-progress, workers): a heartbeat log line this often

    def __post_init__(self) -> None:
        # Build the filters once so a bad filter spec fails at load time, with its path.
        from filters.registry import build_filters

        build_filters(self.metadata_filters, "metadata_filters")
        build_filters(self.pixel_filters, "pixel_filters")
        if self.staging_bundle_mb <= 0:
            raise ConfigError("staging_bundle_mb: must be > 0")
        if self.video is not None and (self.pixels.active or self.pixels.clip.enabled):
            raise ConfigError("pixels: the pixel models look at images, not at video frames; turn them off in a video recipe")

    def metadata_dedup(self) -> DedupConfig | None:
        """The dedup ingest runs before download (URL / caption keys only), or None."""
        if self.dedup is not None:
            return self.dedup
        if self.dedup_urls:
            return DedupConfig(exact=ExactDedupConfig(url=True, caption=False, image=False),
                               near_caption=NearCaptionConfig(enabled=False), near_image=NearImageConfig(enabled=False))
        return None
