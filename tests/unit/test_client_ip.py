"""Who the client is (client_ip) and what its limits key on (client_key)."""

from __future__ import annotations

import pytest
from cnop.services.gateway.client_ip import client_ip, client_key, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("::ffff:cb00:7109", "203.0.113.9"),
        ("testclient", "testclient"),
        ("unknown", "unknown"),
    ],
)
def test_ipv6_clients_are_keyed_by_their_64_and_ipv4_by_the_address(address: str, key: str) -> None:
    assert client_key(address) == key


def test_rotating_through_a_64_keeps_one_key() -> None:
    keys = {client_key(f"2001:db8:aa:bb:{i:x}:{i * 7:x}::{i:x}") for i in range(1, 500)}
    assert keys == {"2001:db8:aa:bb::/64"}
    assert client_key("2001:db8:aa:bc::1") != client_key("2001:db8:aa:bb::1")


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    assert client_ip("::ffff:198.51.100.4", [], ()) == "198.51.100.4"
    # ... also when matching trusted proxies, which are written as IPv4 networks.
    assert client_ip("::ffff:10.0.0.2", ["198.51.100.4"], PROXIES) == "198.51.100.4"
    assert client_ip("10.0.0.2", ["::ffff:198.51.100.4"], PROXIES) == "198.51.100.4"


def test_ipv6_clients_behind_a_trusted_proxy_keep_their_full_address() -> None:
    assert client_ip("fd00::2", ["2001:db8:1:2::abcd"], PROXIES) == "2001:db8:1:2::abcd"
    assert client_ip("2001:db8:1:2::abcd", ["192.0.2.1"], PROXIES) == "2001:db8:1:2::abcd"
    assert client_ip("fd00::2", ["not-an-ip"], PROXIES) == "fd00::2"
    assert client_ip(None, [], PROXIES) == "unknown"
