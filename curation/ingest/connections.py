"""Connections for one worker: every address of a host vetted before it is used (private,
loopback, link-local, metadata and other non-global addresses refused unless allowed), DNS answers
cached, the connection made to a vetted address (so DNS rebinding cannot slip past the check), each
address tried in Happy Eyeballs order (RFC 8305: families interleaved, IPv4 first once IPv6 proved
unreachable, the address that answered last first), keep-alive pools kept per (host, address)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict

import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from curation.ingest.addresses import address_refusal, happy_eyeballs_order
from curation.ingest.config import DownloadConfig
from curation.ingest.http_errors import Refused, network_unreachable

_MAX_HOSTS = 100_000  # DNS answers and Happy Eyeballs winners kept per worker


class Connections:
    """Thread-safe: resolve, vet and connect for every thread of a worker. `resolver` is
    `socket.getaddrinfo`'s shape (tests give it unreachable addresses)."""

    def __init__(self, cfg: DownloadConfig, max_pools: int = 512, resolver=None) -> None:
        self.cfg = cfg
        self.timeout = urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s)
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._max_pools = max_pools
        self._lock = threading.Lock()
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._resolver = resolver or socket.getaddrinfo
        self._answered: dict[str, str] = {}  # host -> the address that answered last: tried first next time
        self._ipv6_reachable = True

    def resolve(self, host: str, port: int) -> list[str]:
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

    def pool(self, scheme: str, host: str, addr: str, port: int) -> urllib3.HTTPConnectionPool:
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

    def connect(self, scheme: str, host: str, port: int, path: str, headers: dict, deadline: float):
        """Send the GET over the first address that connects (Happy Eyeballs order: each address but
        the last gets `connect_attempt_s`); the response, or the last connect error raised."""
        addrs = self.resolve(host, port)
        last: BaseException | None = None
        for i, addr in enumerate(addrs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connect = min(self.cfg.timeout_s if i == len(addrs) - 1 else self.cfg.connect_attempt_s, remaining)
            timeout = urllib3.Timeout(connect=connect, read=min(self.cfg.timeout_s, remaining))
            pool = self.pool(scheme, host, addr, port)
            try:
                resp = pool.urlopen("GET", path, headers=headers, redirect=False, retries=False, preload_content=False,
                                    timeout=timeout, assert_same_host=False)
            except (NewConnectionError, ConnectTimeoutError) as err:
                if ":" in addr and network_unreachable(err):
                    self._ipv6_reachable = False  # this worker has no IPv6 route: IPv4 first from now on
                last = err
                continue
            self._answered[host] = addr
            return resp
        if last is None:
            raise Refused("timeout", f"deadline of {self.cfg.deadline_s:g}s passed")
        raise last

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
