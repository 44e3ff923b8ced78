"""Exact-duplicate keys: URL normalisation, and the deterministic choice of a representative."""

from __future__ import annotations

from typing import Iterable, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

T = TypeVar("T")

_TRACKING_PARAMS = frozenset({"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "fbclid", "gclid"})


def normalize_url(url: str) -> str:
    """Canonical form for exact URL dedup: lowercase scheme/host, default port and fragment dropped,
    tracking parameters removed, remaining query parameters sorted."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _TRACKING_PARAMS))
    return urlunsplit((scheme, host, parts.path or "/", query, ""))


def pick_representative(items: Iterable[T], key) -> tuple[T, list[T]]:
    """Split a duplicate group into (representative, others); the smallest `key` wins, so the
    choice does not depend on arrival order."""
    ordered = sorted(items, key=key)
    return ordered[0], ordered[1:]
