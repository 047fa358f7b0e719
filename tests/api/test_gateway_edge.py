"""The gateway at its edge, against an attacker: bodies refused while they stream, odd paths and
deep JSON answered with a 4xx (never a 5xx), paths forwarded raw, and the platform's internal
credential sent to every upstream while a client's own is never passed on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api.test_gateway import Platform, assert_problem, gateway
from tests.api.test_gateway import platform as platform  # the fixture
from tests.conftest import TEST_INTERNAL_SECRET

MIB = 1_048_576


async def test_a_chunked_body_is_refused_at_the_limit_not_after_reading_it(
    platform: Platform,
) -> None:
    chunk = b" " * 65536
    sent = 0

    async def five_mib() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(80):
            sent += 1
            yield chunk

    async with gateway(platform.settings()) as client:
        r = await client().post("/api/v1/auth/register", content=five_mib())
        assert_problem(r, 413)
    assert sent <= MIB // len(chunk) + 2, f"read {sent} chunks of 64 KiB before answering"
    assert not platform.upstreams["user"].hits


@pytest.mark.parametrize("segment", ["BTC%3F", "%00", "%23", "BTC%3Fx=1%23y", "%FF%FE", "%0A"])
async def test_odd_characters_in_a_path_are_forwarded_not_a_500(
    platform: Platform, segment: str
) -> None:
    inventory = platform.upstreams["inventory"]
    async with gateway(platform.settings()) as client:
        r = await client().get(f"/api/v1/inventory/assets/{segment}")
        assert r.status_code == 200, r.text
    assert inventory.hits[-1]["raw_path"] == f"/inventory/assets/{segment}"


async def test_deeply_nested_or_broken_login_bodies_are_4xx_not_500(platform: Platform) -> None:
    user = platform.upstreams["user"]
    async with gateway(platform.settings()) as client:
        c = client()
        for body in (b"[" * 50_000, b'{"username": ' + b"[" * 5000 + b"}", b"{" * 40_000):
            r = await c.post(
                "/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"}
            )
            assert_problem(r, 422)
        # Not JSON, or not UTF-8: the upstream says what is wrong (a 4xx), never a 500.
        for body in (b"\xff\xfe\x00{", b'{"username": "a\xffb"}', b"9" * 5000):
            r = await c.post("/api/v1/auth/login", content=body)
            assert r.status_code < 500, r.text
    assert len(user.hits) == 3  # the nested bodies never left the gateway


async def test_paths_are_forwarded_raw_and_never_decoded_twice(platform: Platform) -> None:
    inventory, order = platform.upstreams["inventory"], platform.upstreams["order"]
    async with gateway(platform.settings()) as client:
        c = client()
        r = await c.get("/api/v1/inventory/assets/%2541")
        assert r.status_code == 200
        assert inventory.hits[-1]["raw_path"] == "/inventory/assets/%2541"
        assert inventory.hits[-1]["path"] == "/inventory/assets/%41"  # decoded once, upstream
        r = await c.get("/api/v1/inventory/assets/%252E%252E", headers={"X-Request-ID": "x" * 9})
        assert r.status_code == 200
        assert inventory.hits[-1]["raw_path"] == "/inventory/assets/%252E%252E"
        # The prefix may be spelt encoded too: it is matched decoded, the rest is sent raw.
        r = await c.get("/%61pi/v1/inventory/assets/%42TC")
        assert r.status_code == 200 and inventory.hits[-1]["raw_path"] == "/inventory/assets/%42TC"
        hits = len(inventory.hits) + len(order.hits)
        # An encoded slash never makes a new segment, and no dot segment climbs, encoded or not.
        for path in (
            "/api/v1/inventory/assets/a%2Fb",
            "/api/v1/inventory/assets/%2E%2E",
            "/api/v1/inventory/assets/..%2F..%2Fbalance",
            "/api/v1/orders/x%2F..%2F..%2Fbalance",
            "/api/v1/inventory%2Fassets",
            "/api%2Fv1/inventory/assets",
        ):
            assert_problem(await c.get(path, headers=platform.bearer()), 404)
        assert len(inventory.hits) + len(order.hits) == hits


async def test_every_forwarded_request_carries_the_internal_credential_never_the_clients(
    platform: Platform,
) -> None:
    async with gateway(platform.settings()) as client:
        c = client()
        forged = {"X-CNOP-Internal-Token": "forged-by-the-client-" + "z" * 20}
        r = await c.get("/api/v1/inventory/assets", headers=forged)
        assert r.status_code == 200
        r = await c.get("/api/v1/balance", headers={**platform.bearer(), **forged})
        assert r.status_code == 200  # the real auth service accepted the gateway's /validate
    for name in ("inventory", "user"):
        sent = platform.upstreams[name].hits[-1]["headers"]
        assert sent["x-cnop-internal-token"] == TEST_INTERNAL_SECRET
