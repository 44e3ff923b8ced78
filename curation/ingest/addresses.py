"""Which addresses a crawler may connect to (the SSRF guard) and in which order to try them."""

from __future__ import annotations

import ipaddress


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the IPv4


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries to a gateway that unwraps them: 6to4 (2002::/16),
    Teredo (2001::/32: server and client), NAT64 (64:ff9b::/96)."""
    out = []
    if ip.sixtofour is not None:
        out.append(("6to4", ip.sixtofour))
    if ip.teredo is not None:
        out += [("Teredo", v4) for v4 in ip.teredo]
    if ip in _NAT64:
        out.append(("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return out


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address must not be fetched from (or None): anything not globally routable, and an
    IPv6 address that wraps an IPv4 one that is not (a relay would deliver it inside)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if isinstance(ip, ipaddress.IPv6Address):
        for kind, v4 in embedded_ipv4(ip):
            why = address_refusal(v4)
            if why is not None:
                return f"{kind} address embedding {v4}: {why}"
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
