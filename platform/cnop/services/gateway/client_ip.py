"""Who the client is: the socket peer, unless that peer is a proxy we were told to trust.

``X-Forwarded-For`` is a list each proxy appends to, so only its right-hand end is written by
machines we trust; everything left of the first untrusted address is whatever the client
claimed. Walking from the right and stopping at the first untrusted address gives the real
client, and a client that forges the header only forges entries we never read.

Who the client is and what its limits are keyed on differ for IPv6: a single subscriber is
handed a whole /64 (18 quintillion addresses) and can pick a fresh source address for every
request, so a per-address limit or block would never bite. :func:`client_key` keys an IPv6
client by its /64 (``2001:db8:1:2::/64``) and an IPv4 client by its address; an IPv4-mapped
IPv6 address (``::ffff:192.0.2.7``, what a dual-stack socket reports for an IPv4 peer) is that
IPv4 address everywhere, so one client cannot hold two budgets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = ["IPV6_KEY_PREFIX", "Network", "client_ip", "client_key", "parse_networks"]

IPV6_KEY_PREFIX = 64  # the smallest block an ISP hands a subscriber (RFC 6177)


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _address(text: str) -> Address | None:
    """The address ``text`` names, an IPv4-mapped IPv6 address as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address, trusted: Sequence[Network]) -> bool:
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's full address (for logs and the upstream's X-Forwarded-For);
    ``forwarded_for`` is every XFF header value. Limits key on :func:`client_key` of it."""
    if not peer:
        return "unknown"
    peer_ip = _address(peer)
    if peer_ip is None:
        return peer  # not an address (an in-process test client's name): use it as it is
    if not trusted or not _trusted(peer_ip, trusted):
        return str(peer_ip)
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    nearest = peer_ip
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return str(nearest)  # garbage where an address should be: trust the hop that sent it
        if not _trusted(address, trusted):
            return str(address)
        nearest = address
    return str(nearest)  # every hop is a trusted proxy: the left-most one is the origin


def client_key(client: str) -> str:
    """What rate limits and login blocks key on: an IPv4 address itself, an IPv6 address's
    /64 (``2001:db8:1:2::/64``); anything that is not an address is returned unchanged."""
    ip = _address(client)
    if ip is None:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        # The tuple form drops a zone id (fe80::1%eth0): one interface, one client.
        return str(ipaddress.IPv6Network((int(ip), IPV6_KEY_PREFIX), strict=False))
    return str(ip)
