"""Drill client addresses on Docker: real source addresses on the edge network's host side.

The gateway keys limits and blocks on the socket peer and believes ``X-Forwarded-For`` from no
peer that does not write it itself. Docker's port proxy (docker-proxy) is a TCP relay that
writes no header, so everything through the published port comes from one address (the
host's side of the edge network) and a drill's many clients would be one client.

So drill clients skip the port proxy: they connect straight to the gateway's fixed address on
the edge network, from addresses added to the host's side of that network (the edge bridge),
one per client address the drill names (``127.0.0.21`` -> ``172.31.254.128``). Adding an
address to a host interface needs CAP_NET_ADMIN on the host, which a Docker user has without
being root: a short-lived ``--network host --cap-add NET_ADMIN`` container runs ``ip address
add``. The addresses live on the bridge, so they go when ``lab down`` removes the network.

Layout of the edge /24 (docker/compose.yaml): ``.1`` the host's side, ``.2`` the gateway,
``.64-.127`` other containers (``ip_range``), ``.128-.254`` client addresses.

A probe checks that it works: a connection from a client address must reach the gateway and
show up there (in the gateway's ``/proc/net/tcp``) with that address. Where the host cannot reach
container addresses (Docker Desktop on macOS or Windows, rootless Docker: containers live in a
VM or another network namespace), or where the engine rewrites the host's traffic to containers
(``"userland-proxy": false`` masquerades it as the bridge address), every client goes through
the port proxy as one address instead, and the note says so.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MASQUERADED_NOTE",
    "UNREACHABLE_NOTE",
    "EdgeLayout",
    "add_addresses_run",
    "allocate",
    "connect_from",
    "peers",
]

GATEWAY_PORT = 8080
PROBE_TIMEOUT_SECONDS = 3.0
_ONE_CLIENT = (
    ", so every drill client reaches the gateway through the port proxy as one address; drills "
    "that play several clients (login-flood) need Docker Engine on Linux or --runtime local"
)
UNREACHABLE_NOTE = (
    "this Docker engine does not let the host reach container addresses (Docker Desktop, "
    "rootless Docker)" + _ONE_CLIENT
)
MASQUERADED_NOTE = (
    "this Docker engine rewrites the host's traffic to containers to one address (is "
    '"userland-proxy": false set in daemon.json?)' + _ONE_CLIENT
)

# Adds each address to the bridge; one that is already there is fine (a re-run after a crash).
_ADD_SCRIPT = """
dev="$1"; shift
for address in "$@"; do
  out=$(ip address add "$address/32" dev "$dev" 2>&1) && continue
  case "$out" in
    *"File exists"*|*"already assigned"*) ;;
    *) echo "$address: $out" >&2; exit 1 ;;
  esac
done
"""


@dataclass(frozen=True)
class EdgeLayout:
    """Who owns which address of the edge network (a /24)."""

    subnet: ipaddress.IPv4Network

    @classmethod
    def of(cls, subnet: str) -> EdgeLayout:
        network = ipaddress.ip_network(subnet)
        if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen != 24:
            raise ValueError(f"the edge network must be an IPv4 /24, not {subnet}")
        return cls(network)

    def _at(self, offset: int) -> ipaddress.IPv4Address:
        return self.subnet.network_address + offset

    @property
    def host(self) -> str:
        return str(self._at(1))

    @property
    def gateway(self) -> str:
        return str(self._at(2))

    @property
    def container_range(self) -> str:
        return f"{self._at(64)}/26"

    @property
    def client_pool(self) -> list[str]:
        return [str(self._at(offset)) for offset in range(128, 255)]

    def compose_vars(self) -> dict[str, str]:
        return {
            "EDGE_SUBNET": str(self.subnet),
            "EDGE_HOST_ADDRESS": self.host,
            "EDGE_GATEWAY_ADDRESS": self.gateway,
            "EDGE_CONTAINER_RANGE": self.container_range,
        }


def allocate(
    layout: EdgeLayout, known: Mapping[str, str], wanted: Collection[str]
) -> dict[str, str]:
    """``known`` plus an unused client address for each drill address not in it yet.

    A drill address keeps its client address for the sandbox's life, as a loopback address
    does locally: a block on 127.0.0.21 in one run is still on it in the next.
    """
    result = dict(known)
    used = set(result.values())
    free = (address for address in layout.client_pool if address not in used)
    for drill_address in sorted(set(wanted) - set(result), key=ipaddress.ip_address):
        address = next(free, None)
        if address is None:
            raise ValueError(
                f"the edge network has no client address left for {drill_address} "
                f"({len(layout.client_pool)} in all); `lab down` and `lab up` start afresh"
            )
        result[drill_address] = address
    return result


def add_addresses_run(
    image: str, bridge: str, addresses: Collection[str], labels: Mapping[str, str]
) -> dict[str, Any]:
    """Arguments of python-on-whales' ``docker.run`` for a container that adds ``addresses``
    to the host's ``bridge``, then exits; it holds only CAP_NET_ADMIN and nothing of it stays
    behind."""
    return {
        "image": image,
        "entrypoint": "sh",
        "command": ["-c", _ADD_SCRIPT, "sh", bridge, *addresses],
        "remove": True,
        "networks": ["host"],
        "cap_drop": ["ALL"],
        "cap_add": ["NET_ADMIN"],
        "security_options": ["no-new-privileges:true"],
        "read_only": True,
        "labels": dict(labels),
    }


def connect_from(source: str, gateway: str, port: int = GATEWAY_PORT) -> socket.socket | None:
    """An open connection from ``source`` to the gateway's edge address, or None when the
    address is not the host's or nothing answers from there."""
    try:
        return socket.create_connection((gateway, port), PROBE_TIMEOUT_SECONDS, (source, 0))
    except OSError:
        return None


def peers(proc_net_tcp: str, port: int = GATEWAY_PORT) -> set[str]:
    """The remote IPv4 addresses of connections to local ``port`` in a ``/proc/net/tcp`` dump
    (addresses there are hex in the kernel's byte order, the same as ours on a Linux engine)."""
    found = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 3 or ":" not in fields[1] or ":" not in fields[2]:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote = fields[2].rsplit(":", 1)[0]
        if local_port == port and len(remote) == 8:
            raw = bytes.fromhex(remote)
            found.add(str(ipaddress.IPv4Address(raw[::-1] if sys.byteorder == "little" else raw)))
    return found
