"""HTTP image fetching with the politeness and safety rules of a public crawler.

One `Fetcher` per worker. Each request: URL and scheme checked, host resolved, vetted and connected
(`connections.py`: SSRF rules, DNS cache, Happy Eyeballs, keep-alive pools), redirects followed by
hand with each hop re-vetted, the response checked and read (`responses.py`: X-Robots-Tag and
TDM-Rep opt-outs, content type, size cap, deadline), robots.txt honoured, per-host concurrency,
rate and circuit breaker (`politeness.py`), retries with backoff on timeouts, resets and 5xx,
`Retry-After` on 429 / 503 up to a cap. Outcomes are a `FetchResult` with a reason code, never an
error (`http_errors.py` classifies what urllib3 raises).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from curation.core.reasons import http_reason
from curation.ingest.config import DownloadConfig
from curation.ingest.connections import Connections
from curation.ingest.http_errors import Refused, is_timeout, short
from curation.ingest.politeness import HostGate, RobotsCache, RobotsRules, retry_after_s, rules_from_response
from curation.ingest.responses import check_headers, read_body, release

VERSION = "0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class FetchResult:
    """What one URL gave: bytes on success, else a reason code and a short detail."""

    data: bytes | None
    reason: str | None = None
    detail: str = ""
    status: int | None = None
    mime: str | None = None
    retry_after: float | None = None  # seconds, from a 429 / 503 answer's Retry-After


def user_agent(token: str) -> str:
    return f"Mozilla/5.0 (compatible; {token}/{VERSION}; image-text dataset curation; honours X-Robots-Tag noai)"


class Fetcher:
    """Thread-safe fetcher for one worker; create once (in DoFn.setup) and share across threads.
    `resolver` is `socket.getaddrinfo`'s shape (tests give it unreachable addresses)."""

    def __init__(self, cfg: DownloadConfig, max_pools: int = 512, resolver=None) -> None:
        self.cfg = cfg
        self.directives = frozenset(d.lower() for d in cfg.disallowed_robots)
        self.headers = {"User-Agent": user_agent(cfg.user_agent_token), "Accept": "image/*,*/*;q=0.5"}
        self.connections = Connections(cfg, max_pools, resolver)
        self.gate = HostGate(cfg.per_host_concurrency, cfg.per_host_rps, cfg.per_host_burst, cfg.host_failures)
        self._current = threading.local()  # the gate key of the download this thread is fetching
        self.robots = RobotsCache(self._load_robots) if cfg.robots_txt else None

    # -- one request ----------------------------------------------------------------------------
    def _get_once(self, url: str, deadline: float, image: bool = True) -> tuple[int, dict, bytes | None, str | None]:
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
        if self.gate.tripped(host):
            raise Refused("host_unreachable", f"{host}: {self.cfg.host_failures} connection failures in a row")
        if image and self.robots is not None:
            self._check_robots(scheme, host, port, url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        bracketed = f"[{host}]" if ":" in host else host  # IPv6 literal
        host_header = bracketed if port in (80, 443) else f"{bracketed}:{port}"
        with self.gate.slot(*self._gate_key(host)):
            try:
                resp = self.connections.connect(scheme, host, port, path, {**self.headers, "Host": host_header}, deadline)
            except (NewConnectionError, ConnectTimeoutError):
                self.gate.record(host, connected=False)
                raise
            self.gate.record(host, connected=True)
            complete = False
            try:
                status = resp.status
                headers = resp.headers
                if status in _REDIRECTS:
                    return status, headers, None, headers.get("Location")
                if status != 200:
                    return status, headers, None, None
                if image:
                    check_headers(headers, self.cfg, self.directives)
                body = read_body(resp, deadline, self.cfg.max_bytes if image else self.cfg.robots_max_bytes, self.cfg)
                complete = True
                return status, headers, body, None
            finally:
                release(resp, complete)

    # -- robots.txt -------------------------------------------------------------------------------
    def _check_robots(self, scheme: str, host: str, port: int, url: str) -> None:
        default = 443 if scheme == "https" else 80
        origin = f"{scheme}://{host if ':' not in host else f'[{host}]'}" + ("" if port == default else f":{port}")
        rules = self.robots.rules(origin)  # type: ignore[union-attr]
        if not rules.allows(self.cfg.user_agent_token, url):
            raise Refused(rules.reason, f"{origin}: {rules.why}" if rules.why else
                          f"{origin}/robots.txt disallows it for {self.cfg.user_agent_token}")

    def _load_robots(self, origin: str) -> RobotsRules:
        """GET {origin}/robots.txt through the same vetted path (SSRF rules, redirects, deadline)."""
        try:
            result = self._follow(f"{origin}/robots.txt", time.monotonic() + self.cfg.timeout_s, image=False)
        except Refused as err:
            return rules_from_response(None, None, err.detail, err.reason)
        except (HTTPError, OSError) as err:
            return rules_from_response(None, None, short(err), "timeout" if is_timeout(err) else "connection_error")
        return rules_from_response(result.status, result.data, result.detail)

    # -- redirects and retries --------------------------------------------------------------------
    def _follow(self, url: str, deadline: float, image: bool = True) -> FetchResult:
        """One attempt: GET and follow redirects, every hop vetted, all before `deadline`."""
        seen = {url}
        for _ in range(self.cfg.max_redirects + 1):
            status, headers, body, location = self._get_once(url, deadline, image)
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
                wait = retry_after_s(headers.get("Retry-After")) if status in (429, 503) else None
                return FetchResult(None, http_reason(status), f"HTTP {status}", status, retry_after=wait)
            mime = (headers.get("Content-Type") or "").split(";")[0].strip().lower() or None
            if not body and image:
                return FetchResult(None, "empty_body", "0 bytes", status, mime)
            return FetchResult(body, None, "", status, mime)
        return FetchResult(None, "too_many_redirects", f"more than {self.cfg.max_redirects} redirects")

    def _gate_key(self, host: str) -> tuple[str, int]:
        """What a request to `host` is gated by: the download's group key and its share where the
        host belongs to that key's site (redirect hops elsewhere, robots.txt included, are gated by
        their own host name), else the host name alone."""
        gate = getattr(self._current, "gate", None)
        if gate is not None:
            from curation.ingest.hosts import registrable_domain

            key, share = gate
            if registrable_domain(host) == key.split("#", 1)[0]:
                return key, share
        return host, 1

    def fetch(self, url: str, gate: tuple[str, int] | None = None) -> FetchResult:
        """GET `url` with retries, all within `deadline_s`; always returns a FetchResult. `gate`:
        (key, share) from curation/ingest/hosts.py, the job-wide politeness key of the URL's site."""
        self._current.gate = gate
        try:
            return self._fetch(url)
        finally:
            self._current.gate = None

    def _fetch(self, url: str) -> FetchResult:
        start = time.monotonic()
        url_deadline = start + self.cfg.deadline_s
        last = FetchResult(None, "connection_error", "no attempt")
        wait = 0.0
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                if time.monotonic() + wait >= url_deadline:
                    break
                time.sleep(wait)
            wait = self.cfg.backoff_s * (2 ** attempt)
            deadline = min(time.monotonic() + self.cfg.timeout_s, url_deadline)
            try:
                result = self._follow(url, deadline)
            except Refused as err:
                if err.reason == "timeout":
                    last = FetchResult(None, "timeout", err.detail)
                    continue
                return FetchResult(None, err.reason, err.detail)
            except NewConnectionError as err:  # urllib3 makes it a ConnectTimeoutError subclass: refused is not a timeout
                cause = err.__cause__ or err.__context__
                timed_out = isinstance(cause, (socket.timeout, TimeoutError))
                last = FetchResult(None, "timeout" if timed_out else "connection_error",
                                   f"no connection within {self.cfg.timeout_s:g}s" if timed_out else short(err))
                continue
            except (ConnectTimeoutError, ReadTimeoutError, socket.timeout, TimeoutError):
                last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                continue
            except SSLError as err:
                return FetchResult(None, "connection_error", f"TLS: {str(err)[:120]}")
            except (ProtocolError, ConnectionError, OSError) as err:
                if is_timeout(err):
                    last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                else:
                    last = FetchResult(None, "connection_error", short(err))
                continue
            except LocationParseError as err:
                return FetchResult(None, "invalid_url", str(err)[:120])
            except HTTPError as err:
                if is_timeout(err):
                    last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                else:
                    last = FetchResult(None, "connection_error", short(err))
                continue
            if result.status in _RETRY_STATUS and result.data is None and result.reason and result.reason.startswith("http_"):
                last = result
                if result.retry_after is not None:  # the server said when: honour it, up to the cap
                    if result.retry_after > self.cfg.retry_after_max_s:
                        return FetchResult(None, result.reason, f"HTTP {result.status}, Retry-After "
                                           f"{result.retry_after:g}s > retry_after_max_s {self.cfg.retry_after_max_s:g}",
                                           result.status)
                    wait = result.retry_after
                continue
            return result
        return last

    def close(self) -> None:
        self.connections.close()


