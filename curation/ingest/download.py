"""Download + image processing for one pair, and bounded concurrency for a worker.

`Downloader(pair)` turns a Pair into a Sample or a Rejection (fetch, decode, pixel filters, resize,
encode). `InFlight` keeps up to N such calls running on threads and hands results back as they
finish, so a worker keeps many requests in flight without waiting for the slowest of a batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Generic, TypeVar

from curation.ingest.config import DownloadConfig, ImageConfig, SourceConfig
from curation.ingest.fetch import Fetcher, FetchResult
from curation.core.images import hamming
from curation.ingest.images import process_image
from curation.ingest.video import VideoConfig, sample_frames
from curation.core.records import ImageInfo, Pair, Rejection, Sample, Verdict, VideoInfo
from filters.dedup.phash import parse_phash

T = TypeVar("T")
R = TypeVar("R")


IMAGE_FILTER_REASONS = frozenset({"too_small", "too_large", "bad_aspect_ratio", "nsfw_pixels", "too_many_faces"})


class Downloader:
    """Pair -> Sample | Rejection. Thread-safe; build one per worker."""

    def __init__(self, download: DownloadConfig, image: ImageConfig, source: SourceConfig, pixel_filters=(),
                 models=None, video=None) -> None:
        self.video = video  # a VideoConfig: every row is a video, sampled into frames (curation/ingest/video.py)
        if video is not None:  # videos are bigger than images: their own cap
            download = dataclasses.replace(download, max_bytes=video.max_bytes)
        self.fetcher = Fetcher(download)
        self.download_cfg = download
        self.image_cfg = image
        self.source_cfg = source
        self.pixel_filters = tuple(pixel_filters)
        self.models = models  # (PixelModelsConfig, NSFW gate enforced) or None: no model looks

    def __call__(self, pair: Pair, gate: tuple[str, int] | None = None) -> Sample | Rejection:
        """Never raises: an unexpected exception is this row's `internal_error` (its type in the
        detail), at the stage where it happened, and the run goes on. `gate`: the URL's job-wide
        politeness key and share (curation/ingest/hosts.py)."""
        stage = "download"
        try:
            if pair.image_path is not None and not pair.url.startswith(("http://", "https://")):
                fetched = read_local(pair.image_path, self.source_cfg.image_root, self.download_cfg.max_bytes)
            else:
                fetched = self.fetcher.fetch(pair.url, gate)
            if fetched.data is None:
                return Rejection(pair, "download", fetched.reason or "connection_error", fetched.detail)
            mismatch = self._sha256_mismatch(pair, fetched.data)
            if mismatch:
                return Rejection(pair, "download", "hash_mismatch", mismatch)
            if self.video is not None:
                stage = "video"
                got = process_video(fetched.data, self.video, self.image_cfg, self.pixel_filters)
                if isinstance(got, tuple):
                    got[0].http_status, got[0].mime = fetched.status, fetched.mime
                    return Sample(pair, got[0], video=got[1])
                stage = "image_filter" if got.reason in IMAGE_FILTER_REASONS else "video"
                return Rejection(pair, stage, got.reason or "video_corrupt", got.detail)
            stage = "image"
            result = process_image(fetched.data, self.image_cfg, self.pixel_filters, self.models, pair.face_bboxes)
            if isinstance(result, ImageInfo):
                mismatch = self._phash_mismatch(pair, result.phash)
                if mismatch:
                    return Rejection(pair, "image", "phash_mismatch", mismatch)
                result.http_status = fetched.status
                result.mime = fetched.mime
                return Sample(pair, result)
            stage = "image_filter" if result.reason in IMAGE_FILTER_REASONS else "image"
            return Rejection(pair, stage, result.reason or "decode_error", result.detail)
        except Exception as err:  # noqa: BLE001 - one row's surprise is that row's rejection, never the bundle's
            return Rejection(pair, stage, "internal_error", f"{type(err).__name__}: {str(err)[:200]}")

    def _sha256_mismatch(self, pair: Pair, data: bytes) -> str:
        """DataComp-style `sha256` of the original bytes (mapped to source_hash); '' when it matches or is absent."""
        want = (pair.source_hash or "").strip().lower()
        if not self.download_cfg.verify_sha256 or len(want) != 64:
            return ""
        got = hashlib.sha256(data).hexdigest()
        return "" if got == want else f"sha256 {got[:16]}... != source {want[:16]}..."

    def _phash_mismatch(self, pair: Pair, phash: str) -> str:
        """COYO-style `image_phash` (imagehash's pHash, hex) within phash_tolerance bits; '' when close or unchecked."""
        tol = self.download_cfg.phash_tolerance
        want = (pair.image_phash or "").strip().lower()
        if tol is None or len(want) != 16 or parse_phash(want) is None:
            return ""
        bits = hamming(phash, want)
        return "" if bits <= tol else f"pHash {phash} is {bits} bits from the source's {want} (tolerance {tol})"

    def close(self) -> None:
        self.fetcher.close()


class InFlight(Generic[T, R]):
    """Run `fn` on up to `threads` items at once; `submit` returns whatever has finished. Items
    submitted under a `key` with a `cap` never have more than `cap` of that key running: a
    host's URLs beyond its request slots wait here, not on a thread whose deadline is running."""

    def __init__(self, fn: Callable[[T], R], threads: int) -> None:
        self.fn = fn
        self.limit = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch")
        self.pending: set[Future] = set()
        self.keys: dict[Future, object] = {}
        self.per_key: dict[object, int] = {}

    def _collect(self, block: bool) -> list[R]:
        if not self.pending:
            return []
        done, self.pending = wait(self.pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for f in done:
            key = self.keys.pop(f, None)
            if key is not None:
                self.per_key[key] -= 1
                if not self.per_key[key]:
                    del self.per_key[key]
        return [f.result() for f in done]

    def submit(self, item: T, key: object = None, cap: int = 0) -> list[R]:
        """Queue `item`; block only while `threads` calls (or `cap` of `key`'s) are already running."""
        out: list[R] = []
        while len(self.pending) >= self.limit or (key is not None and cap > 0 and self.per_key.get(key, 0) >= cap):
            out.extend(self._collect(block=True))
        future = self.pool.submit(self.fn, item)
        self.pending.add(future)
        if key is not None:
            self.keys[future] = key
            self.per_key[key] = self.per_key.get(key, 0) + 1
        out.extend(self._collect(block=False))
        return out

    def drain(self) -> list[R]:
        """Wait for everything still running."""
        out: list[R] = []
        while self.pending:
            out.extend(self._collect(block=True))
        return out

    def close(self) -> None:
        self.drain()
        self.pool.shutdown(wait=True)


def process_video(data: bytes, cfg: VideoConfig, image_cfg: ImageConfig,
                  pixel_filters=()) -> tuple[ImageInfo, VideoInfo] | Verdict:
    """Video bytes -> (the poster frame as the stored image, through ingest's image step and pixel
    filters; the sampled frames), or a rejecting Verdict. `source_sha256` is the video file's."""
    frames = sample_frames(data, cfg)
    if isinstance(frames, Verdict):
        return frames
    info = process_image(frames.jpegs[len(frames.jpegs) // 2], image_cfg, pixel_filters)
    if not isinstance(info, ImageInfo):
        return info
    info.original_width, info.original_height = frames.source_width, frames.source_height
    info.original_format = frames.container.split(",")[0]
    info.source_sha256 = hashlib.sha256(data).hexdigest()
    return info, VideoInfo(frames.jpegs, frames.timestamps, frames.duration_s, frames.source_fps, frames.codec,
                           frames.container, cfg.sampling, frames.truncated_at_s)


def read_local(path: str, image_root: str | None, max_bytes: int) -> FetchResult:
    """Read a local image referenced by a jsonl row, refusing paths that escape `image_root`."""
    if image_root is None:
        return FetchResult(None, "local_file_error", "rows with local image paths need source.image_root")
    root = Path(image_root).resolve()
    target = (root / path).resolve()
    if os.path.commonpath([root, target]) != str(root):
        return FetchResult(None, "local_file_error", f"{path!r} is outside image_root")
    try:
        size = target.stat().st_size
        if size > max_bytes:
            return FetchResult(None, "body_too_large", f"{size} bytes > {max_bytes}")
        data = target.read_bytes()
    except OSError as err:
        return FetchResult(None, "local_file_error", f"{path}: {err.strerror or type(err).__name__}")
    return FetchResult(data, None, "") if data else FetchResult(None, "empty_body", "0 bytes")
