"""HTTP image fetching with the politeness and safety rules of a public crawler.

One `Fetcher` per worker holds keep-alive connection pools. Each request: URL and scheme checked,
host resolved and every address vetted (private, loopback, link-local, metadata and other
non-global addresses refused unless allowed), the connection made to the vetted address (so DNS
rebinding cannot slip past the check), redirects followed by hand with each hop re-vetted, the body
capped at max_bytes and an overall deadline, X-Robots-Tag opt-outs honoured, retries with backoff
on timeouts, resets, 429 and 5xx. Outcomes are a `FetchResult` with a reason code, never an error.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from curation.ingest.config import DownloadConfig
from curation.core.reasons import http_reason

VERSION = "0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/xhtml")
_CHUNK = 1 << 16


@dataclass(slots=True)
class FetchResult:
    """What one URL gave: bytes on success, else a reason code and a short detail."""

    data: bytes | None
    reason: str | None = None
    detail: str = ""
    status: int | None = None
    mime: str | None = None


class Refused(Exception):
    """A request we will not make or finish; carries the reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def user_agent(token: str) -> str:
    return f"Mozilla/5.0 (compatible; {token}/{VERSION}; image-text dataset curation; honours X-Robots-Tag noai)"


_COLON_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def robots_disallows(values: list[str], token: str, directives: frozenset[str]) -> bool:
    """X-Robots-Tag opt-out as img2dataset reads it: `noai`, or `ourtoken: noai`; a value scoped
    to another user agent (`otherbot: noai`) does not bind us."""
    token = token.lower()
    for value in values:
        scope, sep, rest = value.partition(":")
        scope = scope.strip().lower()
        if sep and scope and "," not in scope and " " not in scope and scope not in _COLON_DIRECTIVES:
            if scope != token:
                continue  # scoped to another crawler
            value = rest
        if any(d.strip().lower() in directives for d in value.split(",")):
            return True
    return False


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address must not be fetched from (or None): anything not globally routable."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata lives here)"
    if ip.is_private:
        return "private"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not globally routable"
    return None


class Fetcher:
    """Thread-safe fetcher for one worker; create once (in DoFn.setup) and share across threads."""

    def __init__(self, cfg: DownloadConfig, max_pools: int = 512) -> None:
        self.cfg = cfg
        self.directives = frozenset(d.lower() for d in cfg.disallowed_robots)
        self.headers = {"User-Agent": user_agent(cfg.user_agent_token), "Accept": "image/*,*/*;q=0.5"}
        self.timeout = urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s)
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._max_pools = max_pools
        self._lock = threading.Lock()
        self._dns: dict[str, tuple[float, list[str]]] = {}

    # -- address vetting ------------------------------------------------------------------------
    def _resolve(self, host: str, port: int) -> str:
        """Resolve `host` and return one vetted address, or raise Refused."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            addrs = [str(literal)]
        except ValueError:
            cached = self._dns.get(host)
            if cached and cached[0] > time.monotonic():
                addrs = cached[1]
            else:
                try:
                    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except (socket.gaierror, UnicodeError) as err:
                    raise Refused("dns_error", f"{host}: {err}") from None
                addrs = sorted({info[4][0] for info in infos})
                self._dns[host] = (time.monotonic() + 300.0, addrs)
        if not addrs:
            raise Refused("dns_error", f"{host}: no addresses")
        if not self.cfg.allow_private_addresses:
            for addr in addrs:  # all must pass: a host with one internal address is refused
                why = address_refusal(ipaddress.ip_address(addr))
                if why:
                    raise Refused("private_address", f"{host} -> {addr} ({why})")
        return addrs[0]

    def _pool(self, scheme: str, host: str, addr: str, port: int) -> urllib3.HTTPConnectionPool:
        key = (scheme, host, addr, port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            kw = dict(maxsize=max(4, self.cfg.threads), block=False, timeout=self.timeout, retries=False)
            if scheme == "https":
                import certifi

                pool = urllib3.HTTPSConnectionPool(addr, port, server_hostname=host, assert_hostname=host,
                                                   cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), **kw)
            else:
                pool = urllib3.HTTPConnectionPool(addr, port, **kw)
            self._pools[key] = pool
            while len(self._pools) > self._max_pools:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    # -- one request ----------------------------------------------------------------------------
    def _get_once(self, url: str, deadline: float) -> tuple[int, dict, bytes | None, str | None]:
        """One GET without following redirects: (status, headers, body or None, location)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise Refused("invalid_url", str(err)) from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise Refused("unsupported_scheme", f"{scheme or 'no'} scheme")
        host = parts.hostname
        if not host:
            raise Refused("invalid_url", "no host")
        port = port or (443 if scheme == "https" else 80)
        addr = self._resolve(host, port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        bracketed = f"[{host}]" if ":" in host else host  # IPv6 literal
        host_header = bracketed if port in (80, 443) else f"{bracketed}:{port}"
        pool = self._pool(scheme, host, addr, port)
        resp = pool.urlopen("GET", path, headers={**self.headers, "Host": host_header}, redirect=False,
                            retries=False, preload_content=False, timeout=self.timeout, assert_same_host=False)
        complete = False
        try:
            status = resp.status
            headers = resp.headers
            if status in _REDIRECTS:
                return status, headers, None, headers.get("Location")
            if status != 200:
                return status, headers, None, None
            self._check_headers(headers)
            body = self._read_body(resp, deadline)
            complete = True
            return status, headers, body, None
        finally:
            _release(resp, complete)

    def _check_headers(self, headers) -> None:
        robots = headers.getlist("X-Robots-Tag") if hasattr(headers, "getlist") else []
        if robots and robots_disallows(robots, self.cfg.user_agent_token, self.directives):
            raise Refused("robots_noai", "; ".join(robots)[:120])
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.cfg.check_content_type and ctype.startswith(_NOT_IMAGE_TYPES):
            raise Refused("not_an_image", f"content-type {ctype}")
        length = headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.cfg.max_bytes:
            raise Refused("body_too_large", f"content-length {length} > {self.cfg.max_bytes}")

    def _read_body(self, resp, deadline: float) -> bytes:
        chunks, total = [], 0
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > self.cfg.max_bytes:
                raise Refused("body_too_large", f"more than {self.cfg.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise Refused("timeout", f"body not complete after {self.cfg.timeout_s:g}s")
            chunks.append(chunk)
        return b"".join(chunks)

    def _follow(self, url: str) -> FetchResult:
        """One attempt: GET and follow redirects, every hop vetted."""
        deadline = time.monotonic() + self.cfg.timeout_s
        seen = {url}
        for _ in range(self.cfg.max_redirects + 1):
            status, headers, body, location = self._get_once(url, deadline)
            if location is None and status in _REDIRECTS:
                return FetchResult(None, "http_5xx", f"{status} without Location", status)
            if location is not None:
                nxt = urljoin(url, location)
                if nxt in seen:
                    return FetchResult(None, "redirect_loop", f"{status} back to an URL already visited", status)
                seen.add(nxt)
                url = nxt
                continue
            if status != 200:
                return FetchResult(None, http_reason(status), f"HTTP {status}", status)
            mime = (headers.get("Content-Type") or "").split(";")[0].strip().lower() or None
            if not body:
                return FetchResult(None, "empty_body", "0 bytes", status, mime)
            return FetchResult(body, None, "", status, mime)
        return FetchResult(None, "too_many_redirects", f"more than {self.cfg.max_redirects} redirects")

    def fetch(self, url: str) -> FetchResult:
        """GET `url` with retries; always returns a FetchResult."""
        last = FetchResult(None, "connection_error", "no attempt")
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * (2 ** (attempt - 1)))
            try:
                result = self._follow(url)
            except Refused as err:
                return FetchResult(None, err.reason, err.detail)
            except (ConnectTimeoutError, ReadTimeoutError, socket.timeout, TimeoutError):
                last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                continue
            except SSLError as err:
                return FetchResult(None, "connection_error", f"TLS: {str(err)[:120]}")
            except (NewConnectionError, ProtocolError, ConnectionError, OSError) as err:
                if _is_timeout(err):
                    last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                else:
                    last = FetchResult(None, "connection_error", _short(err))
                continue
            except LocationParseError as err:
                return FetchResult(None, "invalid_url", str(err)[:120])
            except HTTPError as err:
                if _is_timeout(err):
                    last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                else:
                    last = FetchResult(None, "connection_error", _short(err))
                continue
            if result.status in _RETRY_STATUS and result.data is None and result.reason and result.reason.startswith("http_"):
                last = result
                continue
            return result
        return last

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


def _release(resp, complete: bool) -> None:
    """Give the connection back for keep-alive only when its body was consumed: a small error page
    or redirect body is drained, anything else (a refused or stalled 200) closes the connection. Reusing a
    connection with unread bytes would corrupt the next request on it."""
    try:
        if not complete:
            length = resp.headers.get("Content-Length")
            if resp.status != 200 and length is not None and length.isdigit() and int(length) <= _CHUNK:
                resp.drain_conn()
            else:
                resp.close()
    except Exception:  # noqa: BLE001 - the connection is unusable either way
        resp.close()
    finally:
        resp.release_conn()


def _is_timeout(err: BaseException | None) -> bool:
    """True when `err` or an exception it wraps is a timeout."""
    for _ in range(5):
        if err is None:
            return False
        if isinstance(err, (ReadTimeoutError, ConnectTimeoutError, socket.timeout, TimeoutError)):
            return True
        wrapped = next((a for a in err.args if isinstance(a, BaseException)), None)
        err = err.__cause__ or err.__context__ or wrapped  # ProtocolError keeps its cause in args
    return False


def _short(err: BaseException) -> str:
    """A detail without addresses or object ids, so reruns give the same manifest bytes."""
    name = type(err).__name__
    text = str(err)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "Remote end closed",
                   "IncompleteRead", "Broken pipe", "Name or service not known"):
        if marker.lower() in text.lower():
            return f"{name}: {marker}"
    return name


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
