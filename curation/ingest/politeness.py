"""Politeness for one worker's fetcher: X-Robots-Tag opt-outs, `Retry-After`, robots.txt (RFC
9309) fetched once per host and cached, and per host a concurrency limit, a request rate (token
bucket) and a circuit breaker for hosts that stopped answering. Thread-safe; the `Fetcher` owns
one `HostGate` and one `RobotsCache`.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator
from urllib.robotparser import RobotFileParser

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


@dataclass
class _Host:
    slots: threading.BoundedSemaphore | None
    tokens: float
    stamp: float
    rate: float  # this key's requests per second (the host's, divided by its share)
    burst: float
    failures: int = 0  # consecutive connection failures
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class HostGate:
    """At most `concurrency` requests in flight per host, at most `rate` requests per second per
    host (bursts of `burst`), and a breaker: after `max_failures` consecutive connection failures
    the host is `tripped` and its remaining URLs fail fast. 0 turns a limit off. A key held with
    `share` n (one of a hot host's n sub-keys, curation/ingest/hosts.py) gets 1/n of each limit."""

    def __init__(self, concurrency: int, rate: float, burst: int, max_failures: int,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 max_hosts: int = 100_000) -> None:
        self.concurrency, self.rate, self.burst, self.max_failures = concurrency, rate, max(1, burst), max_failures
        self.clock, self.sleep, self.max_hosts = clock, sleep, max_hosts
        self._hosts: OrderedDict[str, _Host] = OrderedDict()
        self._lock = threading.Lock()

    def _host(self, host: str, share: int = 1) -> _Host:
        """The host's state; a worker that met more than `max_hosts` hosts forgets the least
        recently used idle ones (LAION has millions of hosts: the state must stay bounded)."""
        with self._lock:
            h = self._hosts.get(host)
            if h is not None:
                self._hosts.move_to_end(host)
                return h
            share = max(1, share)
            slots = threading.BoundedSemaphore(max(1, self.concurrency // share)) if self.concurrency > 0 else None
            burst = max(1.0, self.burst / share)
            h = self._hosts[host] = _Host(slots, burst, self.clock(), self.rate / share, burst)
            if len(self._hosts) > self.max_hosts:
                idle = [k for k, v in self._hosts.items() if v.in_flight == 0][: len(self._hosts) - self.max_hosts]
                for k in idle:
                    del self._hosts[k]
            return h

    def _wait_for_token(self, h: _Host) -> None:
        if h.rate <= 0:
            return
        while True:
            with h.lock:
                now = self.clock()
                h.tokens = min(h.burst, h.tokens + (now - h.stamp) * h.rate)
                h.stamp = now
                if h.tokens >= 1.0:
                    h.tokens -= 1.0
                    return
                wait = (1.0 - h.tokens) / h.rate
            self.sleep(wait)

    @contextmanager
    def slot(self, host: str, share: int = 1) -> Iterator[None]:
        """Hold one of the key's request slots (waiting for a slot and a rate token)."""
        h = self._host(host, share)
        with h.lock:
            h.in_flight += 1
        if h.slots is not None:
            h.slots.acquire()
        try:
            self._wait_for_token(h)
            yield
        finally:
            if h.slots is not None:
                h.slots.release()
            with h.lock:
                h.in_flight -= 1

    def tripped(self, host: str) -> bool:
        return self.max_failures > 0 and self._host(host).failures >= self.max_failures

    def record(self, host: str, connected: bool) -> None:
        """A request reached the host (any HTTP answer) or failed to connect / timed out."""
        h = self._host(host)
        with h.lock:
            h.failures = 0 if connected else h.failures + 1


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RobotsRules:
    """One host's robots.txt verdict source: parsed rules, or everything allowed / disallowed."""

    parser: RobotFileParser | None = None
    allow_all: bool = True
    why: str = ""  # for a disallow-all: the status or failure that made it one
    reason: str = "robots_disallowed"  # the rejection of a disallowed URL (a network failure keeps its own)
    transient: bool = False  # from a network failure: asked again after RobotsCache.retry_s

    def allows(self, token: str, url: str) -> bool:
        if self.parser is not None:
            return self.parser.can_fetch(token, url)
        return self.allow_all


def rules_from_response(status: int | None, body: bytes | None, failure: str = "",
                        failure_reason: str = "connection_error") -> RobotsRules:
    """RFC 9309 section 2.3.1: 2xx -> parse; 4xx (incl. 404) -> no rules, all allowed; 5xx or an
    unreachable host -> complete disallow (the crawler may not assume it is welcome). A network
    failure rejects with its own reason (`failure_reason`: the host is down, not opting out) and
    is asked again later."""
    if status is not None and 200 <= status < 300:
        parser = RobotFileParser()
        parser.parse((body or b"").decode("utf-8", "replace").splitlines())
        return RobotsRules(parser)
    if status is not None and 400 <= status < 500:
        return RobotsRules(allow_all=True)
    if status is not None:
        return RobotsRules(allow_all=False, why=f"HTTP {status}")
    return RobotsRules(allow_all=False, why=f"robots.txt unreachable ({failure or 'no answer'})", reason=failure_reason,
                       transient=True)


class RobotsCache:
    """robots.txt per origin (scheme, host, port), fetched once by `load(origin)` and shared by
    every thread of the worker; threads asking for the same origin meanwhile wait for that fetch."""

    def __init__(self, load: Callable[[str], RobotsRules], max_entries: int = 100_000, retry_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.load = load
        self.max_entries = max_entries
        self.retry_s = retry_s
        self.clock = clock
        self._rules: dict[str, tuple[RobotsRules, float]] = {}
        self._loading: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def rules(self, origin: str) -> RobotsRules:
        while True:
            with self._lock:
                got = self._rules.get(origin)
                if got is not None and got[1] > self.clock():
                    return got[0]
                event = self._loading.get(origin)
                if event is None:
                    event = self._loading[origin] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:
                event.wait()
                continue
            try:
                rules = self.load(origin)
            except Exception as err:  # noqa: BLE001 - a robots failure is a verdict, never a crash
                rules = RobotsRules(allow_all=False, why=f"robots.txt check failed: {type(err).__name__}", transient=True)
            with self._lock:
                if len(self._rules) >= self.max_entries:
                    self._rules.pop(next(iter(self._rules)))
                self._rules[origin] = (rules, self.clock() + self.retry_s if rules.transient else float("inf"))
                self.fetches += 1
                del self._loading[origin]
            event.set()
            return rules
