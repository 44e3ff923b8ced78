"""Which addresses a crawler may connect to (the SSRF guard) and in which order to try them."""

from __future__ import annotations

import ipaddress


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


def happy_eyeballs_order(addrs: list[str], prefer_ipv6: bool = True, first: str | None = None) -> list[str]:
    """RFC 8305 section 4: alternate address families, starting with the resolver's first family
    (IPv4 first when IPv6 is known unreachable here); `first` (the address that answered last) leads."""
    v6 = [a for a in addrs if ":" in a]
    v4 = [a for a in addrs if ":" not in a]
    lead, other = (v6, v4) if (addrs and ":" in addrs[0] and prefer_ipv6) or not v4 else (v4, v6)
    out = [a for pair in zip(lead, other) for a in pair] + lead[len(other):] + other[len(lead):]
    if first in out:
        out.remove(first)
        out.insert(0, first)
    return out
