"""HTTP image fetching with the politeness and safety rules of a public crawler.

One `Fetcher` per worker holds keep-alive connection pools. Each request: URL and scheme checked,
host resolved and every address vetted (private, loopback, link-local, metadata and other
non-global addresses refused unless allowed), the connection made to a vetted address (so DNS
rebinding cannot slip past the check), every address tried in Happy Eyeballs order (RFC 8305:
families interleaved, IPv4 first once IPv6 proved unreachable, the address that answered last
first), redirects followed by hand with each hop re-vetted, the body capped at max_bytes and read
against a hard deadline (the socket timeout shrinks to what is left, so a server trickling a byte
a second cannot hold a thread), X-Robots-Tag and TDM-Rep opt-outs and robots.txt honoured, per-host
concurrency, rate and circuit breaker (`politeness.py`), retries with backoff on timeouts, resets
and 5xx, `Retry-After` on 429 / 503 up to a cap. Outcomes are a `FetchResult` with a reason code,
never an error.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
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

from curation.core.reasons import http_reason
from curation.ingest.addresses import address_refusal, happy_eyeballs_order
from curation.ingest.config import DownloadConfig
from curation.ingest.politeness import HostGate, RobotsCache, RobotsRules, retry_after_s, robots_disallows, rules_from_response

VERSION = "0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/xhtml")
_CHUNK = 1 << 16
_MAX_HOSTS = 100_000  # DNS answers and Happy Eyeballs winners kept per worker


@dataclass(slots=True)
class FetchResult:
    """What one URL gave: bytes on success, else a reason code and a short detail."""

    data: bytes | None
    reason: str | None = None
    detail: str = ""
    status: int | None = None
    mime: str | None = None
    retry_after: float | None = None  # seconds, from a 429 / 503 answer's Retry-After


class Refused(Exception):
    """A request we will not make or finish; carries the reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def user_agent(token: str) -> str:
    return f"Mozilla/5.0 (compatible; {token}/{VERSION}; image-text dataset curation; honours X-Robots-Tag noai)"


class Fetcher:
    """Thread-safe fetcher for one worker; create once (in DoFn.setup) and share across threads.
    `resolver` is `socket.getaddrinfo`'s shape (tests give it unreachable addresses)."""

    def __init__(self, cfg: DownloadConfig, max_pools: int = 512, resolver=None) -> None:
        self.cfg = cfg
        self.directives = frozenset(d.lower() for d in cfg.disallowed_robots)
        self.headers = {"User-Agent": user_agent(cfg.user_agent_token), "Accept": "image/*,*/*;q=0.5"}
        self.timeout = urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s)
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._max_pools = max_pools
        self._lock = threading.Lock()
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._resolver = resolver or socket.getaddrinfo
        self._answered: dict[str, str] = {}  # host -> the address that answered last: tried first next time
        self._ipv6_reachable = True
        self.gate = HostGate(cfg.per_host_concurrency, cfg.per_host_rps, cfg.per_host_burst, cfg.host_failures)
        self._current = threading.local()  # the gate key of the download this thread is fetching
        self.robots = RobotsCache(self._load_robots) if cfg.robots_txt else None

    # -- address vetting ------------------------------------------------------------------------
    def _resolve(self, host: str, port: int) -> list[str]:
        """Resolve `host`: every address vetted, in the order to try them; or raise Refused."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            addrs = [str(literal)]
        except ValueError:
            cached = self._dns.get(host)
            if cached and cached[0] > time.monotonic():
                addrs = cached[1]
            else:
                try:
                    infos = self._resolver(host, port, type=socket.SOCK_STREAM)
                except (socket.gaierror, UnicodeError) as err:
                    raise Refused("dns_error", f"{host}: {err}") from None
                addrs = list(dict.fromkeys(info[4][0] for info in infos))  # the resolver's (RFC 6724) order
                if len(self._dns) > _MAX_HOSTS:  # bounded per worker: forget everything, re-resolve on demand
                    self._dns.clear()
                    self._answered.clear()
                self._dns[host] = (time.monotonic() + 300.0, addrs)
        if not addrs:
            raise Refused("dns_error", f"{host}: no addresses")
        if not self.cfg.allow_private_addresses:
            for addr in addrs:  # all must pass: a host with one internal address is refused
                why = address_refusal(ipaddress.ip_address(addr))
                if why:
                    raise Refused("private_address", f"{host} -> {addr} ({why}; download.allow_private_addresses "
                                                      "allows it)")
        return happy_eyeballs_order(addrs, self._ipv6_reachable, self._answered.get(host))

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
    def _connect(self, scheme: str, host: str, port: int, path: str, headers: dict, deadline: float):
        """Send the GET over the first address that connects (Happy Eyeballs order: each address but
        the last gets `connect_attempt_s`); the response, or the last connect error raised."""
        addrs = self._resolve(host, port)
        last: BaseException | None = None
        for i, addr in enumerate(addrs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connect = min(self.cfg.timeout_s if i == len(addrs) - 1 else self.cfg.connect_attempt_s, remaining)
            timeout = urllib3.Timeout(connect=connect, read=min(self.cfg.timeout_s, remaining))
            pool = self._pool(scheme, host, addr, port)
            try:
                resp = pool.urlopen("GET", path, headers=headers, redirect=False, retries=False, preload_content=False,
                                    timeout=timeout, assert_same_host=False)
            except (NewConnectionError, ConnectTimeoutError) as err:
                if ":" in addr and _network_unreachable(err):
                    self._ipv6_reachable = False  # this worker has no IPv6 route: IPv4 first from now on
                last = err
                continue
            self._answered[host] = addr
            return resp
        if last is None:
            raise Refused("timeout", f"deadline of {self.cfg.deadline_s:g}s passed")
        raise last

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
                resp = self._connect(scheme, host, port, path, {**self.headers, "Host": host_header}, deadline)
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
                    self._check_headers(headers)
                body = self._read_body(resp, deadline, self.cfg.max_bytes if image else self.cfg.robots_max_bytes)
                complete = True
                return status, headers, body, None
            finally:
                _release(resp, complete)

    def _check_headers(self, headers) -> None:
        robots = headers.getlist("X-Robots-Tag") if hasattr(headers, "getlist") else []
        if robots and robots_disallows(robots, self.cfg.user_agent_token, self.directives):
            raise Refused("robots_noai", "; ".join(robots)[:120])
        if (headers.get("tdm-reservation") or "").strip() == "1":  # W3C TDM Reservation Protocol
            policy = headers.get("tdm-policy")
            raise Refused("tdm_reserved", "tdm-reservation: 1" + (f" (tdm-policy {policy[:80]})" if policy else ""))
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.cfg.check_content_type and ctype.startswith(_NOT_IMAGE_TYPES):
            raise Refused("not_an_image", f"content-type {ctype}")
        length = headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.cfg.max_bytes:
            raise Refused("body_too_large", f"content-length {length} > {self.cfg.max_bytes}")

    def _read_body(self, resp, deadline: float, max_bytes: int) -> bytes:
        """Read what arrives, one socket read at a time, with the socket timeout set to the time
        left before the deadline: a trickling or stalled server ends as `timeout` on time."""
        conn = getattr(resp, "connection", None)
        sock = getattr(conn, "sock", None)
        chunks, total = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Refused("timeout", f"body not complete within the {self.cfg.deadline_s:g}s deadline")
            if sock is not None:
                sock.settimeout(min(remaining, self.cfg.timeout_s))
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise Refused("body_too_large", f"more than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

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
            return rules_from_response(None, None, _short(err), "timeout" if _is_timeout(err) else "connection_error")
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
                                   f"no connection within {self.cfg.timeout_s:g}s" if timed_out else _short(err))
                continue
            except (ConnectTimeoutError, ReadTimeoutError, socket.timeout, TimeoutError):
                last = FetchResult(None, "timeout", f"no response within {self.cfg.timeout_s:g}s")
                continue
            except SSLError as err:
                return FetchResult(None, "connection_error", f"TLS: {str(err)[:120]}")
            except (ProtocolError, ConnectionError, OSError) as err:
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


def _causes(err: BaseException | None):
    """`err` and the exceptions it wraps (cause, context, or one in its args), at most 5 deep."""
    for _ in range(5):
        if err is None:
            return
        yield err
        wrapped = next((a for a in err.args if isinstance(a, BaseException)), None)
        err = err.__cause__ or err.__context__ or wrapped  # ProtocolError keeps its cause in args


def _is_timeout(err: BaseException | None) -> bool:
    """True when `err` or an exception it wraps is a timeout."""
    return any(isinstance(e, (ReadTimeoutError, ConnectTimeoutError, socket.timeout, TimeoutError)) for e in _causes(err))


_UNREACHABLE_ERRNO = frozenset({101, 113, 99, 97})  # ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT


def _network_unreachable(err: BaseException) -> bool:
    """True when the connect failed because this machine has no route for the address's family."""
    return any(isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNO for e in _causes(err))


def _short(err: BaseException) -> str:
    """A detail without addresses or object ids, so reruns give the same manifest bytes."""
    name = type(err).__name__
    text = str(err)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "Remote end closed",
                   "IncompleteRead", "Broken pipe", "Name or service not known"):
        if marker.lower() in text.lower():
            return f"{name}: {marker}"
    return name
