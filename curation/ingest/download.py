"""Download + image processing for one pair, and bounded concurrency for a worker.

`Downloader(pair)` turns a Pair into a Sample or a Rejection (fetch, decode, pixel filters, resize,
encode). `InFlight` keeps up to N such calls running on threads and hands results back as they
finish, so a worker keeps many requests in flight without waiting for the slowest of a batch.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Generic, TypeVar

from curation.ingest.config import DownloadConfig, ImageConfig, SourceConfig
from curation.ingest.fetch import Fetcher, read_local
from curation.ingest.images import process_image
from curation.core.records import ImageInfo, Pair, Rejection, Sample

T = TypeVar("T")
R = TypeVar("R")


class Downloader:
    """Pair -> Sample | Rejection. Thread-safe; build one per worker."""

    def __init__(self, download: DownloadConfig, image: ImageConfig, source: SourceConfig, pixel_filters=()) -> None:
        self.fetcher = Fetcher(download)
        self.download_cfg = download
        self.image_cfg = image
        self.source_cfg = source
        self.pixel_filters = tuple(pixel_filters)

    def __call__(self, pair: Pair) -> Sample | Rejection:
        if pair.image_path is not None and not pair.url.startswith(("http://", "https://")):
            fetched = read_local(pair.image_path, self.source_cfg.image_root, self.download_cfg.max_bytes)
        else:
            fetched = self.fetcher.fetch(pair.url)
        if fetched.data is None:
            return Rejection(pair, "download", fetched.reason or "connection_error", fetched.detail)
        result = process_image(fetched.data, self.image_cfg, self.pixel_filters)
        if isinstance(result, ImageInfo):
            result.http_status = fetched.status
            result.mime = fetched.mime
            return Sample(pair, result)
        stage = "image_filter" if result.reason in ("too_small", "too_large", "bad_aspect_ratio") else "image"
        return Rejection(pair, stage, result.reason or "decode_error", result.detail)

    def close(self) -> None:
        self.fetcher.close()


class InFlight(Generic[T, R]):
    """Run `fn` on up to `threads` items at once; `submit` returns whatever has finished."""

    def __init__(self, fn: Callable[[T], R], threads: int) -> None:
        self.fn = fn
        self.limit = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch")
        self.pending: set[Future] = set()

    def _collect(self, block: bool) -> list[R]:
        if not self.pending:
            return []
        done, self.pending = wait(self.pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        return [f.result() for f in done]

    def submit(self, item: T) -> list[R]:
        """Queue `item`; block only while `threads` calls are already running."""
        out: list[R] = []
        while len(self.pending) >= self.limit:
            out.extend(self._collect(block=True))
        self.pending.add(self.pool.submit(self.fn, item))
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
