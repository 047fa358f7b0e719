"""Drill client addresses on Docker's edge network: the layout, allocation and the probe.

The Docker part (adding the addresses, a forged X-Forwarded-For being ignored) is in
tests/docker/test_docker_runtime.py.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from scenarios.engine import drill_addresses
from scenarios.runtime.base import ClientAddresses
from scenarios.runtime.edge import EdgeLayout, add_addresses_run, allocate, connect_from, peers
from scenarios.schema import find, load_scenario


def test_layout_keeps_clients_apart_from_containers() -> None:
    layout = EdgeLayout.of("172.31.250.0/24")
    assert (layout.host, layout.gateway) == ("172.31.250.1", "172.31.250.2")
    assert layout.container_range == "172.31.250.64/26"
    assert layout.client_pool[0] == "172.31.250.128"
    assert layout.client_pool[-1] == "172.31.250.254"
    assert layout.compose_vars()["EDGE_GATEWAY_ADDRESS"] == "172.31.250.2"
    with pytest.raises(ValueError):
        EdgeLayout.of("172.31.0.0/16")


def test_a_drill_address_keeps_its_client_address() -> None:
    layout = EdgeLayout.of("172.31.250.0/24")
    first = allocate(layout, {}, ["127.0.0.21", "127.0.0.2"])
    assert first == {"127.0.0.2": "172.31.250.128", "127.0.0.21": "172.31.250.129"}
    again = allocate(layout, first, ["127.0.3.1", "127.0.0.21"])
    assert again["127.0.0.21"] == "172.31.250.129"
    assert again["127.0.3.1"] == "172.31.250.130"
    assert len(set(again.values())) == len(again)


def test_running_out_of_client_addresses_is_one_clear_error() -> None:
    layout = EdgeLayout.of("172.31.250.0/24")
    many = [f"127.0.{i // 200}.{i % 200 + 1}" for i in range(len(layout.client_pool) + 1)]
    with pytest.raises(ValueError, match="no client address left"):
        allocate(layout, {}, many)


def test_the_address_helper_holds_only_net_admin() -> None:
    run = add_addresses_run("alpine:3.20", "br-0123456789ab", ["172.31.250.128"], {"x": "y"})
    assert run["remove"] is True and run["networks"] == ["host"] and run["read_only"] is True
    assert run["cap_drop"] == ["ALL"]
    assert run["cap_add"] == ["NET_ADMIN"]
    assert run["command"][-2:] == ["br-0123456789ab", "172.31.250.128"]


def test_probe_tells_an_address_the_host_lacks_from_one_it_has() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = connect_from("127.0.0.5", "127.0.0.1", port)
        assert probe is not None
        with probe:
            seen = peers(Path("/proc/net/tcp").read_text(), port)
        assert "127.0.0.5" in seen
        # 192.0.2.0/24 is for documentation: never an address of this host.
        assert connect_from("192.0.2.10", "127.0.0.1", port) is None


def _proc_hex(address: str) -> str:
    """An IPv4 address as /proc/net/tcp writes it: the 32-bit value in host byte order."""
    raw = socket.inet_aton(address)
    return (raw[::-1] if sys.byteorder == "little" else raw).hex().upper()


def test_peers_reads_the_remote_addresses_of_one_port() -> None:
    gw, c1, c2 = _proc_hex("172.31.254.2"), _proc_hex("172.31.254.128"), _proc_hex("172.31.254.129")
    table = (
        "  sl  local_address rem_address   st\n"
        f"   0: {gw}:1F90 {c1}:A1B2 01 00000000:00000000\n"  # 172.31.254.128 -> :8080
        f"   1: {gw}:1F90 00000000:0000 0A 00000000:00000000\n"  # the listening socket
        f"   2: {gw}:2382 {c2}:A1B3 01 00000000:00000000\n"  # another port
    )
    assert peers(table, 8080) == {"172.31.254.128", "0.0.0.0"}


def test_the_local_runtime_binds_drill_addresses_as_named() -> None:
    net = ClientAddresses(gateway="http://127.0.0.1:8080")
    assert net.source("127.0.0.21") == "127.0.0.21"
    assert net.source(None) is None
    shared = ClientAddresses(gateway="http://127.0.0.1:8080", sources={"127.0.0.21": None})
    assert shared.source("127.0.0.21") is None


def test_login_flood_plays_eighteen_clients_and_setup() -> None:
    addresses = drill_addresses(load_scenario(find("login-flood")))
    assert "127.0.0.2" in addresses  # setup and steady-state probes
    assert {"127.0.0.21", "127.0.0.22", "127.0.0.23"} <= set(addresses)
    assert sum(a.startswith("127.0.3.") for a in addresses) == 15
