"""Politeness that holds for the whole job: every URL is keyed by its host's registrable domain
(`cdn1.example.co.uk` and `www.example.co.uk` are one site), and a host with more than
`hot_host_rows` rows is split into a bounded number of sub-keys that divide its budget. Ingest
groups the downloads by key, so each (domain, sub-key) is fetched by one worker at a time with its
share of `per_host_concurrency` and `per_host_rps`: the limits hold across threads, processes
and workers, and robots.txt is fetched once per sub-key."""

from __future__ import annotations

import functools
import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from curation.core.shards import stable_hash


@functools.lru_cache(maxsize=1)
def _extractor():
    import tldextract

    # the public suffix list snapshot the wheel ships (no download, no cache folder), private
    # suffixes included: each `*.s3.amazonaws.com` bucket and `*.cloudfront.net` distribution is its
    # own site, not one amazonaws.com sharing a single budget
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


@functools.lru_cache(maxsize=65_536)
def registrable_domain(host: str) -> str:
    """`cdn1.example.co.uk` -> `example.co.uk`; an IP address or a name with no public suffix
    (`localhost`) is its own key."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    parts = _extractor()(host)
    return parts.top_domain_under_public_suffix or host


def host_key(url: str) -> str:
    """The politeness key of a URL: its host's registrable domain ("" for a URL without a host,
    or a local image path: those are not fetched from anyone)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return ""
    return registrable_domain(host) if host else ""


@dataclass(frozen=True)
class HostBudget:
    """How many sub-keys a host's URLs are spread over, and each one's share of the limits."""

    hot_host_rows: int
    max_subkeys: int
    concurrency: int  # per_host_concurrency (0: no limit)

    def subkeys(self, rows: int) -> int:
        """ceil(rows / hot_host_rows), at most max_subkeys, and never more than the concurrency
        limit (each sub-key keeps at least one request slot)."""
        n = max(1, math.ceil(rows / self.hot_host_rows)) if self.hot_host_rows > 0 else 1
        n = min(n, self.max_subkeys)
        return min(n, self.concurrency) if self.concurrency > 0 else n


def gate_key(domain: str, url: str, subkeys: int) -> tuple[str, int]:
    """(the key a download is grouped and gated by, how many ways its host's budget is shared):
    `domain` alone, or `domain#k` with k from the URL's stable hash."""
    if subkeys <= 1:
        return domain, 1
    return f"{domain}#{stable_hash(url) % subkeys}", subkeys


LOCAL_KEY = "local#"  # rows read from local image paths: no host to be polite to, spread over 256 keys


def site_of(pair) -> str:
    """The registrable domain of a Pair's URL; "" for a local image path."""
    return host_key(pair.url) if pair.url.startswith(("http://", "https://")) else ""


def download_key(pair, hot: dict[str, int]) -> tuple[str, int]:
    """(the key a Pair's download is grouped by, its share of the host's budget): its site, a hot
    site's sub-key from the URL's hash, or one of 256 local keys for a local path."""
    domain = site_of(pair)
    if not domain:
        return f"{LOCAL_KEY}{stable_hash(f'{pair.source_file}{chr(0)}{pair.source_row}') % 256}", 1
    return gate_key(domain, pair.url, hot.get(domain, 1))


def key_slots(key: str, share: int, per_host_concurrency: int) -> tuple[tuple[str, int] | None, int]:
    """What a download key gates: (key, share) for a site (None for local paths) and its request
    slots, its share of `per_host_concurrency` (0: no limit)."""
    gate = (key, share) if key and not key.startswith(LOCAL_KEY) else None
    cap = max(1, per_host_concurrency // share) if gate is not None and per_host_concurrency > 0 else 0
    return gate, cap
