"""Who the client is: the socket peer, unless that peer is a proxy we were told to trust.

``X-Forwarded-For`` is a list each proxy appends to, so only its right-hand end is written by
machines we trust; everything left of the first untrusted address is whatever the client
claimed. Walking from the right and stopping at the first untrusted address gives the real
client, and a client that forges the header only forges entries we never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The address rate limits and blocks key on; ``forwarded_for`` is every XFF header value."""
    if not peer:
        return "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    nearest = peer
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return nearest  # garbage where an address should be: trust the hop that sent it
        if not _trusted(address, trusted):
            return address
        nearest = address
    return nearest  # every hop is a trusted proxy: the left-most one is the origin
