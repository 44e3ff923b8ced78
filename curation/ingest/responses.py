"""One response, checked and read: opt-out headers (X-Robots-Tag, TDM-Rep), content type and
declared length before the body; the body capped at `max_bytes` and read against a hard deadline
(the socket timeout shrinks to what is left, so a server trickling a byte a second cannot hold a
thread); the connection given back for keep-alive only when that is safe."""

from __future__ import annotations

import time

from curation.ingest.config import DownloadConfig
from curation.ingest.http_errors import Refused
from curation.ingest.politeness import robots_disallows

_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/xhtml")
CHUNK = 1 << 16


def check_headers(headers, cfg: DownloadConfig, directives: frozenset[str]) -> None:
    """Refused when the headers opt out, name a non-image type or declare more than `max_bytes`."""
    robots = headers.getlist("X-Robots-Tag") if hasattr(headers, "getlist") else []
    if robots and robots_disallows(robots, cfg.user_agent_token, directives):
        raise Refused("robots_noai", "; ".join(robots)[:120])
    if (headers.get("tdm-reservation") or "").strip() == "1":  # W3C TDM Reservation Protocol
        policy = headers.get("tdm-policy")
        raise Refused("tdm_reserved", "tdm-reservation: 1" + (f" (tdm-policy {policy[:80]})" if policy else ""))
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if cfg.check_content_type and ctype.startswith(_NOT_IMAGE_TYPES):
        raise Refused("not_an_image", f"content-type {ctype}")
    length = headers.get("Content-Length")
    if length and length.isdigit() and int(length) > cfg.max_bytes:
        raise Refused("body_too_large", f"content-length {length} > {cfg.max_bytes}")


def read_body(resp, deadline: float, max_bytes: int, cfg: DownloadConfig) -> bytes:
    """Read what arrives, one socket read at a time, with the socket timeout set to the time
    left before the deadline: a trickling or stalled server ends as `timeout` on time."""
    conn = getattr(resp, "connection", None)
    sock = getattr(conn, "sock", None)
    chunks, total = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused("timeout", f"body not complete within the {cfg.deadline_s:g}s deadline")
        if sock is not None:
            sock.settimeout(min(remaining, cfg.timeout_s))
        chunk = resp.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise Refused("body_too_large", f"more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def release(resp, complete: bool) -> None:
    """Give the connection back for keep-alive only when its body was consumed: a small error page
    or redirect body is drained, anything else (a refused or stalled 200) closes the connection. Reusing a
    connection with unread bytes would corrupt the next request on it."""
    try:
        if not complete:
            length = resp.headers.get("Content-Length")
            if resp.status != 200 and length is not None and length.isdigit() and int(length) <= CHUNK:
                resp.drain_conn()
            else:
                resp.close()
    except Exception:  # noqa: BLE001 - the connection is unusable either way
        resp.close()
    finally:
        resp.release_conn()
