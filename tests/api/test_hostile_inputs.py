"""Every backend at its edge: no client input produces a 5xx on any route (odd path characters,
deeply nested or non-UTF-8 JSON, absurd numbers in queries and bodies), an oversized chunked body
is refused while it streams, and a call without the platform's internal credential is a 403.

Routes are read from each app's own OpenAPI document, so a route added later is probed too.
Every 4xx must be a problem document carrying the request id and the security headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cnop.core.internal import INTERNAL_TOKEN_HEADER
from cnop.core.problems import PROBLEM_MEDIA_TYPE
from cnop.services.auth.main import Settings as AuthSettings
from cnop.services.auth.main import create_app as create_auth
from cnop.services.insights.main import Settings as InsightsSettings
from cnop.services.insights.main import create_app as create_insights
from cnop.services.inventory.main import Settings as InventorySettings
from cnop.services.inventory.main import create_app as create_inventory
from cnop.services.order.main import Settings as OrderSettings
from cnop.services.order.main import create_app as create_order
from cnop.services.user.main import Settings as UserSettings
from cnop.services.user.main import create_app as create_user
from fastapi import FastAPI

from tests.conftest import (
    TEST_INTERNAL_SECRET,
    TEST_SECRET,
    assert_no_leak,
    running,
    serve_in_thread,
)

MIB = 1_048_576

# Path parameters a client may send: encoded "?", NUL, "#", a double-encoded "A", an encoded
# slash, invalid UTF-8, a dot segment, an overlong UTF-8 dot, a very long segment.
PATH_VALUES = ["BTC%3F", "%00", "%23", "%2541", "a%2Fb", "%FF%FE", "..", "%C0%AE", "A" * 5000]
QUERIES = [
    "limit=1e400",
    "limit=" + "9" * 5000,
    "offset=-" + "9" * 100,
    "offset=" + "9" * 5000,
    "active_only=maybe",
    "asset_id=%00",
    "order_type=%FF",
]
DEEP = b"[" * 50_000
BODIES: list[bytes] = [
    DEEP,
    b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'\xff\xfe{"username": "\xc3\x28"}',
    b'{"username": "a\xffb", "password": "x"}',
    b'{"amount": 1e400, "quantity": 1e400, "price": 1e400}',
    b'{"amount": NaN, "quantity": Infinity, "price": -Infinity}',
    b'{"amount": 1' + b"0" * 5000 + b', "quantity": 1' + b"0" * 5000 + b"}",
    b'{"amount": "1e999999999", "quantity": "1e-999999999", "asset_id": "BTC"}',
    b'{"order_type": "market_buy", "asset_id": "BTC", "quantity": "9' + b"9" * 400 + b'"}',
    b'{"username": "\\u0000\\ud800", "email": "\\ud800@x.y"}',
    b"[]",
    b"null",
]


@pytest.fixture(scope="module")
def inventory_url(module_env: dict[str, Any]) -> Iterator[str]:
    with serve_in_thread(create_inventory(InventorySettings(**module_env)), lifespan="on") as url:
        yield url


@pytest.fixture(scope="module")
def user_url() -> Iterator[str]:
    """The user service as insights sees it: an empty portfolio."""
    app = FastAPI()

    @app.get("/portfolio")
    async def portfolio() -> dict[str, Any]:
        return {"assets": [], "usd_balance": "0.00", "total_value": "0.00"}

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def module_env(redis_url: str, dynamodb_endpoint: str) -> dict[str, Any]:
    return {
        "jwt_secret": TEST_SECRET,
        "internal_secret": TEST_INTERNAL_SECRET,
        "redis_url": redis_url,
        "dynamodb_endpoint": dynamodb_endpoint,
        "table_prefix": "hostile",
        "fault_refresh_seconds": 0,
        "log_level": "CRITICAL",
    }


Factory = Callable[[dict[str, Any], dict[str, str]], FastAPI]
SERVICES: dict[str, Factory] = {
    "auth": lambda env, urls: create_auth(AuthSettings(**env)),
    "inventory": lambda env, urls: create_inventory(InventorySettings(**env)),
    "user": lambda env, urls: create_user(
        UserSettings(**env, **urls, argon2_time_cost=1, argon2_memory_cost_kib=8192)
    ),
    "order": lambda env, urls: create_order(OrderSettings(**env, **urls)),
    "insights": lambda env, urls: create_insights(InsightsSettings(**env, **urls)),
}


@asynccontextmanager
async def started(
    name: str, env: dict[str, Any], urls: dict[str, str]
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = SERVICES[name](env, urls)
    async with running(app) as client:
        token = app.state.ctx.tokens.issue("hostile_user").token
        client.headers["Authorization"] = f"Bearer {token}"
        yield app, client


@pytest.fixture(params=sorted(SERVICES))
async def service(
    request: pytest.FixtureRequest, module_env: dict[str, Any], inventory_url: str, user_url: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    urls = {"inventory_url": inventory_url, "user_url": user_url}
    async with started(request.param, module_env, urls) as pair:
        yield pair


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if not path.startswith("/health")
        for method in operations
    ]
    assert found, "the app has no routes to probe"
    return found


def _fill(template: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, template)


def _check(r: httpx.Response, what: str) -> None:
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE, what
        assert r.headers["x-content-type-options"] == "nosniff", what
        assert r.headers["x-request-id"] == r.json()["request_id"], what
        assert_no_leak(r.text)


async def test_hostile_paths_queries_and_bodies_never_produce_a_5xx(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = service
    for method, template in _routes(app):
        for value in PATH_VALUES if "{" in template else ["x"]:
            path = _fill(template, value)
            _check(await client.request(method, path), f"{method} {path}")
        path = _fill(template, "BTC")
        for query in QUERIES:
            _check(await client.request(method, f"{path}?{query}"), f"{method} {path}?{query}")
        if method in ("POST", "PUT"):
            for body in BODIES:
                r = await client.request(
                    method, path, content=body, headers={"Content-Type": "application/json"}
                )
                _check(r, f"{method} {path} {body[:40]!r}")


@pytest.mark.parametrize(("name", "path"), [("user", "/auth/register"), ("order", "/orders")])
async def test_a_chunked_body_is_refused_at_the_limit_without_being_read(
    name: str, path: str, module_env: dict[str, Any], inventory_url: str
) -> None:
    chunk = b" " * 65536
    sent = 0

    async def five_mib() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(80):
            sent += 1
            yield chunk

    async with started(name, module_env, {"inventory_url": inventory_url}) as (_, client):
        r = await client.post(
            path, content=five_mib(), headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 413, r.text
    _check(r, "chunked")
    # Read up to the limit plus the chunk that passed it, never the other 3.9 MiB.
    assert sent <= MIB // len(chunk) + 2, sent


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_every_backend_refuses_direct_calls_without_the_internal_token(
    name: str, module_env: dict[str, Any]
) -> None:
    app = SERVICES[name](module_env, {})  # refused before any call to another service
    bearer = {"Authorization": f"Bearer {app.state.ctx.tokens.issue('direct_caller').token}"}
    wrong = {**bearer, INTERNAL_TOKEN_HEADER: TEST_SECRET}  # the JWT secret is not the key
    async with running(app, internal=False) as stranger:
        for method, template in _routes(app):
            path = _fill(template, "BTC")
            for headers in (bearer, wrong, {**bearer, INTERNAL_TOKEN_HEADER: ""}):
                r = await stranger.request(method, path, headers=headers, json={})
                _check(r, f"{method} {path}")
                assert r.status_code == 403, f"{method} {path}: {r.status_code}"
        assert (await stranger.get("/health")).status_code == 200
        # Readiness is open too (it may say 503 while moto is slow on a loaded machine).
        assert (await stranger.get("/health/ready")).status_code in (200, 503)
