"""The gateway against real HTTP upstreams: stand-in user/order/inventory/insights servers and
the real auth service, each served by uvicorn in a thread on a free port."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from cnop.core.logging import request_id_var
from cnop.core.problems import PROBLEM_MEDIA_TYPE, problem_response
from cnop.services.auth.main import Settings as AuthSettings
from cnop.services.auth.main import create_app as create_auth_app
from cnop.services.gateway.main import Settings, create_app
from cnop.services.gateway.published import load_document
from cnop.services.gateway.routes import ROUTES, RouteMatch, WrongMethod, match
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import REGISTRY
from redis import Redis

from tests.conftest import TEST_INTERNAL_SECRET, TEST_SECRET, assert_no_leak, free_port

GOOD_PASSWORD = "Correct-Pass1!"
BAD_PASSWORD = "Wrong-Pass12!"
ClientFactory = Callable[..., httpx.AsyncClient]


class ServerThread:
    """uvicorn in a daemon thread: a real socket, so the gateway's real HTTP client is used."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def wait_started(self) -> None:
        assert self.server is not None and self.thread is not None
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("stand-in server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.signal_stop()
        self.join()

    def signal_stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(10)
        self.server = self.thread = None


@dataclass
class StandIn:
    """A fake upstream that records every request and answers as told."""

    name: str
    hits: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    status: int | None = None  # answer every request with this status
    plain_error: bool = False  # ... as a text body with a trace instead of a problem

    def __post_init__(self) -> None:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        async def anything(request: Request, path: str) -> Response:
            body = await request.body()
            # Like a real backend: problems carry the request id the gateway forwarded.
            request_id_var.set(request.headers.get("x-request-id"))
            self.hits.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "raw_path": request.scope["raw_path"].decode("latin-1"),
                    "query": request.url.query,
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status is not None:
                if self.plain_error:
                    return PlainTextResponse(
                        'Traceback (most recent call last):\n  File "/work/x.py"\nKeyError: 1',
                        status_code=self.status,
                    )
                return problem_response(self.status, "Upstream says no", request.url.path)
            if request.url.path == "/auth/login":
                return self._login(body, request.url.path)
            return JSONResponse(
                {"upstream": self.name, "path": request.url.path},
                status_code=201 if request.method == "POST" else 200,
                headers={"X-Upstream": self.name, "Server": "stand-in"},
            )

        self.app = app
        self.server = ServerThread(app)

    def _login(self, body: bytes, path: str) -> Response:
        try:
            doc = json.loads(body)
            password = doc["password"]
        except (ValueError, KeyError, TypeError):
            return problem_response(422, "Invalid input: password", path)
        if len(password) < 12:
            return problem_response(422, "Invalid input: password", path)
        if password != GOOD_PASSWORD:
            return problem_response(401, "Invalid username or password", path)
        return JSONResponse({"access_token": "t", "token_type": "bearer", "expires_in": 3600})

    def paths(self) -> list[str]:
        return [h["path"] for h in self.hits]


@dataclass
class Platform:
    env: dict[str, Any]
    upstreams: dict[str, StandIn]
    auth: ServerThread
    auth_app: FastAPI

    def token(self, username: str = "alice_trader") -> str:
        return self.auth_app.state.ctx.tokens.issue(username).token

    def bearer(self, username: str = "alice_trader") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **self.env,
            "auth_url": self.auth.url,
            "upstream_retry_backoff_seconds": 0.01,
            **{f"{name}_url": s.server.url for name, s in self.upstreams.items()},
        }
        values.update(overrides)
        return Settings(**values)


@pytest.fixture
def platform(redis_url: str, redis_sync: Redis) -> Iterator[Platform]:
    env = {
        "jwt_secret": TEST_SECRET,
        "internal_secret": TEST_INTERNAL_SECRET,
        "redis_url": redis_url,
        "fault_refresh_seconds": 0,
        "log_level": "WARNING",
    }
    auth_app = create_auth_app(AuthSettings(**env))
    auth = ServerThread(auth_app)
    upstreams = {name: StandIn(name) for name in ("user", "inventory", "order", "insights")}
    servers = [auth, *(s.server for s in upstreams.values())]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_started()
        yield Platform(env, upstreams, auth, auth_app)
    finally:
        for server in servers:
            server.signal_stop()
        for server in servers:
            server.join()


@asynccontextmanager
async def gateway(
    settings: Settings, caplog: pytest.LogCaptureFixture | None = None
) -> AsyncIterator[ClientFactory]:
    """Run the gateway's lifespan; yield a factory of clients, one per client address."""
    app = create_app(settings)
    if caplog is not None:
        # create_app installs the JSON handler on the root logger; keep capturing too.
        logging.getLogger().addHandler(caplog.handler)
        caplog.set_level(logging.INFO)
    clients: list[httpx.AsyncClient] = []

    def client(ip: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 123))
        c = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(c)
        return c

    async with app.router.lifespan_context(app):
        try:
            yield client
        finally:
            for c in clients:
                await c.aclose()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = r.json()
    assert body["status"] == status and body["request_id"] == r.headers["x-request-id"]
    assert_no_leak(r.text)
    return body


def login_body(username: str, password: str = BAD_PASSWORD) -> dict[str, str]:
    return {"username": username, "password": password}


# -- the route table -------------------------------------------------------------------------


def test_route_table_matches_templates_and_refuses_dot_segments() -> None:
    found = match("GET", "/api/v1/orders/ord_123")
    assert isinstance(found, RouteMatch)
    assert found.route.template == "/api/v1/orders/{order_id}"
    assert found.upstream_path == "/orders/ord_123"
    wrong = match("DELETE", "/api/v1/orders")
    assert isinstance(wrong, WrongMethod) and wrong.allowed == {"GET", "POST"}
    for path in ("/api/v1/orders/..", "/api/v1/orders/./x", "/orders", "/api/v1", "/api/v1/x"):
        assert match("GET", path) is None, path
    public = {(m, r.path) for r in ROUTES if not r.auth for m in r.methods}
    assert public == {
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("GET", "/inventory/assets"),
        ("GET", "/inventory/assets/{asset_id}"),
    }


# -- routing and forwarding ------------------------------------------------------------------


async def test_routes_strip_the_prefix_and_forward_only_safe_headers(platform: Platform) -> None:
    inventory, order = platform.upstreams["inventory"], platform.upstreams["order"]
    async with gateway(platform.settings()) as client:
        c = client()
        r = await c.get(
            "/api/v1/inventory/assets?active_only=false&limit=5",
            headers={
                "X-Request-ID": "req-forwarded-1",
                "X-User-Id": "admin",
                "X-User-Role": "admin",
                "X-Forwarded-For": "6.6.6.6",
                "X-Forwarded-Host": "evil.example",
                "Cookie": "session=1",
                "Proxy-Authorization": "Basic eA==",
            },
        )
        assert r.status_code == 200
        assert r.json() == {"upstream": "inventory", "path": "/inventory/assets"}
        assert r.headers["x-upstream"] == "inventory"
        assert r.headers["x-request-id"] == "req-forwarded-1"
        assert r.headers["ratelimit-limit"] == "1000"
        assert "stand-in" not in r.headers.get("server", "")
        hit = inventory.hits[-1]
        assert hit["path"] == "/inventory/assets"
        assert hit["query"] == "active_only=false&limit=5"
        sent = hit["headers"]
        assert sent["x-request-id"] == "req-forwarded-1"
        assert sent["x-forwarded-for"] == "127.0.0.1"  # the socket peer, not the client's claim
        for dropped in ("x-user-id", "x-user-role", "x-forwarded-host", "cookie"):
            assert dropped not in sent
        assert "proxy-authorization" not in sent

        r = await c.get("/api/v1/inventory/assets/btc")
        assert r.status_code == 200 and inventory.hits[-1]["path"] == "/inventory/assets/btc"

        auth = platform.bearer()
        payload = b'{"order_type":"market_buy","asset_id":"BTC","quantity":"0.5"}'
        r = await c.post(
            "/api/v1/orders",
            content=payload,
            headers={**auth, "Content-Type": "application/json", "Idempotency-Key": "k-1"},
        )
        assert r.status_code == 201
        hit = order.hits[-1]
        assert (hit["method"], hit["path"], hit["body"]) == ("POST", "/orders", payload)
        assert hit["headers"]["authorization"] == auth["Authorization"]
        assert hit["headers"]["content-type"] == "application/json"
        assert hit["headers"]["idempotency-key"] == "k-1"

        r = await c.get("/api/v1/assets/BTC/transactions", headers=auth)
        assert r.status_code == 200 and order.hits[-1]["path"] == "/assets/BTC/transactions"


async def test_header_values_outside_ascii_are_forwarded_as_sent_not_a_500(
    platform: Platform,
) -> None:
    order = platform.upstreams["order"]
    async with gateway(platform.settings()) as client:
        c = client()
        key, language = "clé-1".encode(), "fr-ä".encode()
        r = await c.post(
            "/api/v1/orders",
            content=b"{}",
            headers=[
                (b"Authorization", platform.bearer()["Authorization"].encode()),
                (b"Content-Type", b"application/json"),
                (b"Idempotency-Key", key),
                (b"Accept-Language", language),
            ],
        )
        assert r.status_code == 201, r.text
        sent = order.hits[-1]["headers"]
        assert sent["idempotency-key"].encode("latin-1") == key
        assert sent["accept-language"].encode("latin-1") == language
        # No token is ever outside ASCII: refused here, without asking the auth service.
        r = await c.get("/api/v1/balance", headers=[(b"Authorization", "Bearer é".encode())])
        assert_problem(r, 401)


async def test_the_openapi_document_is_public_and_rate_limited(platform: Platform) -> None:
    async with gateway(platform.settings()) as client:
        c = client()
        r = await c.get("/api/v1/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.content == load_document()
        assert r.json()["openapi"].startswith("3.1")
        assert r.headers["ratelimit-limit"] == "1000"
        r = await c.post("/api/v1/openapi.json")
        assert_problem(r, 405)
        assert r.headers["allow"] == "GET"
        assert all(not s.hits for s in platform.upstreams.values())


async def test_unknown_routes_are_404_and_wrong_methods_405_without_calling(
    platform: Platform,
) -> None:
    async with gateway(platform.settings()) as client:
        c = client()
        before = metric(
            "cnop_http_requests_total",
            service="gateway",
            route="/api/v1/orders/{order_id}",
            method="GET",
            status="401",
        )
        for path in ("/api/v1/nothing", "/metrics", "/api/v1/orders/a/b", "/validate", "/"):
            assert_problem(await c.get(path), 404)
        r = await c.delete("/api/v1/orders", headers=platform.bearer())
        assert_problem(r, 405)
        assert r.headers["allow"] == "GET, POST"
        assert_problem(await c.get("/api/v1/auth/login"), 405)
        assert all(not s.hits for s in platform.upstreams.values())
        # Metrics carry the template, never the raw path.
        await c.get("/api/v1/orders/ord_0000000001")
        after = metric(
            "cnop_http_requests_total",
            service="gateway",
            route="/api/v1/orders/{order_id}",
            method="GET",
            status="401",
        )
        assert after == before + 1
        raw = REGISTRY.get_sample_value(
            "cnop_http_requests_total",
            {
                "service": "gateway",
                "route": "/api/v1/orders/ord_0000000001",
                "method": "GET",
                "status": "401",
            },
        )
        assert raw is None


async def test_protected_routes_need_a_token_the_auth_service_accepts(
    platform: Platform,
) -> None:
    user = platform.upstreams["user"]
    async with gateway(platform.settings()) as client:
        c = client()
        for headers in (
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer   "},
            {"Authorization": f"Basic {platform.token()}"},
        ):
            r = await c.get("/api/v1/balance", headers=headers)
            assert_problem(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await c.get("/api/v1/balance", headers={"Authorization": "Bearer not.a.jwt"})
        body = assert_problem(r, 401)
        assert body["instance"] == "/api/v1/balance"  # not the auth service's /validate
        assert not user.hits

        r = await c.get("/api/v1/balance", headers=platform.bearer())
        assert r.status_code == 200 and user.paths() == ["/balance"]
        # Public routes need nothing.
        r = await c.post("/api/v1/auth/register", json={"username": "someone_new"})
        assert r.status_code == 201 and user.paths()[-1] == "/auth/register"
        assert (await c.get("/api/v1/inventory/assets")).status_code == 200


async def test_an_unreachable_auth_service_is_503_for_protected_routes_only(
    platform: Platform,
) -> None:
    settings = platform.settings(auth_url=f"http://127.0.0.1:{free_port()}")
    async with gateway(settings) as client:
        c = client()
        r = await c.get("/api/v1/portfolio", headers=platform.bearer())
        assert_problem(r, 503)
        assert r.headers["retry-after"]
        assert (await c.get("/api/v1/inventory/assets")).status_code == 200
        assert not platform.upstreams["user"].hits


# -- failed-login protection -----------------------------------------------------------------


async def test_five_failed_logins_block_that_ip_only(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    user = platform.upstreams["user"]
    blocks = metric("cnop_ip_blocks_total")
    failures = metric("cnop_login_attempts_total", result="failure")
    blocked = metric("cnop_login_attempts_total", result="blocked")
    async with gateway(platform.settings(), caplog) as client:
        attacker, other = client("10.0.0.5"), client("10.0.0.7")
        for i in range(5):
            r = await attacker.post("/api/v1/auth/login", json=login_body(f"target_{i}_user"))
            assert_problem(r, 401)
        r = await attacker.post("/api/v1/auth/login", json=login_body("honest_user", GOOD_PASSWORD))
        assert_problem(r, 403)
        assert 290 <= int(r.headers["retry-after"]) <= 300
        assert len(user.hits) == 5  # the blocked attempt never reached the user service
        r = await other.post("/api/v1/auth/login", json=login_body("honest_user", GOOD_PASSWORD))
        assert r.status_code == 200
        # The block is on logins only: the same IP may still browse.
        assert (await attacker.get("/api/v1/inventory/assets")).status_code == 200

    assert metric("cnop_ip_blocks_total") == blocks + 1
    assert metric("cnop_login_attempts_total", result="failure") == failures + 5
    assert metric("cnop_login_attempts_total", result="blocked") == blocked + 1
    assert len(events(caplog, "ip_blocked")) == 1
    logged = events(caplog, "login_failed")
    assert len(logged) == 5
    assert logged[0].client_ip == "10.0.0.5"  # type: ignore[attr-defined]
    assert logged[0].username == "target_0_user"  # type: ignore[attr-defined]


async def test_validation_errors_do_not_count_as_failed_logins(platform: Platform) -> None:
    async with gateway(platform.settings()) as client:
        c = client("10.0.0.9")
        for _ in range(8):
            assert_problem(
                await c.post("/api/v1/auth/login", json=login_body("some_user", "short")), 422
            )
        r = await c.post("/api/v1/auth/login", json=login_body("some_user", GOOD_PASSWORD))
        assert r.status_code == 200


async def test_spraying_one_username_from_many_ips_throttles_it(platform: Platform) -> None:
    limited = metric("cnop_rate_limit_decisions_total", policy="login_user", decision="limited")
    async with gateway(platform.settings()) as client:
        for i in range(10):
            name = "Victim_User" if i % 2 else "victim_user"  # one account, any case
            r = await client(f"10.1.0.{i + 1}").post("/api/v1/auth/login", json=login_body(name))
            assert_problem(r, 401)
        r = await client("10.2.0.1").post(
            "/api/v1/auth/login", json=login_body("VICTIM_USER", GOOD_PASSWORD)
        )
        assert_problem(r, 429)
        assert 890 <= int(r.headers["retry-after"]) <= 900
        # Other accounts, from the very same addresses, are unaffected.
        r = await client("10.1.0.1").post(
            "/api/v1/auth/login", json=login_body("another_user", GOOD_PASSWORD)
        )
        assert r.status_code == 200
    after = metric("cnop_rate_limit_decisions_total", policy="login_user", decision="limited")
    assert after == limited + 1
    assert len(platform.upstreams["user"].hits) == 11


async def test_login_protection_can_be_switched_off(platform: Platform) -> None:
    async with gateway(platform.settings(login_protection_enabled=False)) as client:
        c = client("10.3.0.1")
        for _ in range(7):
            assert_problem(await c.post("/api/v1/auth/login", json=login_body("x_user_1")), 401)


# -- rate limits -----------------------------------------------------------------------------


async def test_an_ip_flood_is_429_with_headers(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    limited = metric("cnop_rate_limit_decisions_total", policy="ip", decision="limited")
    async with gateway(platform.settings(rate_limit_ip_limit=5), caplog) as client:
        flood = client("192.0.2.10")
        seen = [await flood.get("/api/v1/inventory/assets") for _ in range(5)]
        assert [r.status_code for r in seen] == [200] * 5
        assert [r.headers["ratelimit-remaining"] for r in seen] == ["4", "3", "2", "1", "0"]
        r = await flood.get("/api/v1/inventory/assets")
        assert_problem(r, 429)
        assert r.headers["ratelimit-limit"] == "5"
        assert r.headers["ratelimit-remaining"] == "0"
        assert int(r.headers["ratelimit-reset"]) == 60
        assert int(r.headers["retry-after"]) == 12  # one slot every 60 s / 5
        # Unknown routes count too; /health never does.
        assert_problem(await flood.get("/api/v1/nothing"), 429)
        for _ in range(3):
            assert (await flood.get("/health")).status_code == 200
        assert (await client("192.0.2.11").get("/api/v1/inventory/assets")).status_code == 200
        assert len(platform.upstreams["inventory"].hits) == 6
    assert metric("cnop_rate_limit_decisions_total", policy="ip", decision="limited") >= limited + 2
    assert events(caplog, "rate_limited")


async def test_each_user_has_their_own_limit(platform: Platform) -> None:
    async with gateway(platform.settings(rate_limit_user_limit=3)) as client:
        alice, bob = platform.bearer("alice_trader"), platform.bearer("bob_trader")
        for i in range(3):
            r = await client(f"10.4.0.{i}").get("/api/v1/balance", headers=alice)
            assert r.status_code == 200
        assert r.headers["ratelimit-limit"] == "3"  # the tighter of the ip and user policies
        r = await client("10.4.0.9").get("/api/v1/balance", headers=alice)
        assert_problem(r, 429)
        assert r.headers["retry-after"] == "20"
        assert (await client("10.4.0.9").get("/api/v1/balance", headers=bob)).status_code == 200


# -- breakers, timeouts, retries -------------------------------------------------------------


async def test_breaker_opens_when_an_upstream_dies_and_recovers_half_open(
    platform: Platform,
) -> None:
    inventory = platform.upstreams["inventory"]
    rejected = metric("cnop_upstream_requests_total", upstream="inventory", outcome="rejected")
    # Open 6 s: restarting the stand-in and twenty refusals fit in it even on a busy machine.
    settings = platform.settings(breaker_open_seconds=6.0, upstream_retries=0)
    async with gateway(settings) as client:
        c = client()
        inventory.server.stop()
        for _ in range(5):
            assert_problem(await c.get("/api/v1/inventory/assets"), 503)
        opened = time.monotonic()  # the fifth failure opened it
        health = (await c.get("/health")).json()
        assert health["upstreams"]["inventory"] == "open"
        assert health["status"] == "degraded"

        inventory.server.start()  # back, but the breaker has not noticed yet
        durations = []
        for _ in range(20):  # the median of 20: one busy moment of the machine is not the rule
            started = time.perf_counter()
            r = await c.get("/api/v1/inventory/assets")
            durations.append(time.perf_counter() - started)
            assert_problem(r, 503)
            assert 1 <= int(r.headers["retry-after"]) <= 6  # what is left of the open 6 s
        # At once: ~1 ms on an idle machine; the bound leaves room for a loaded one, and is
        # still short of any wait (for a connection, a retry, the 3 s upstream timeout).
        assert statistics.median(durations) < 0.1, sorted(durations)
        assert inventory.hits == []  # an open breaker never calls the upstream
        after = metric("cnop_upstream_requests_total", upstream="inventory", outcome="rejected")
        assert after == rejected + 20

        await asyncio.sleep(opened + 6.05 - time.monotonic())  # the open period is over
        for _ in range(3):  # the three half-open trials
            assert (await c.get("/api/v1/inventory/assets")).status_code == 200
        health = (await c.get("/health")).json()
        assert health["upstreams"]["inventory"] == "closed"
        assert health["status"] == "ok"
        assert len(inventory.hits) == 3


async def test_a_dead_upstream_fails_fast_before_the_token_check(platform: Platform) -> None:
    settings = platform.settings(upstream_retries=0)
    async with gateway(settings) as client:
        c = client()
        platform.upstreams["order"].server.stop()
        for _ in range(5):
            assert_problem(await c.get("/api/v1/orders", headers=platform.bearer()), 503)
        # Open now: refused without asking the auth service, even with no token at all.
        r = await c.get("/api/v1/orders")
        assert_problem(r, 503)


async def test_timeouts_are_504_and_count_as_breaker_failures(platform: Platform) -> None:
    inventory = platform.upstreams["inventory"]
    inventory.delay = 0.5
    timeouts = metric("cnop_upstream_requests_total", upstream="inventory", outcome="timeout")
    settings = platform.settings(upstream_timeout_seconds=0.2, upstream_retries=0)
    async with gateway(settings) as client:
        c = client()
        for _ in range(5):
            body = assert_problem(await c.get("/api/v1/inventory/assets"), 504)
            assert "did not answer in time" in body["detail"]
        r = await c.get("/api/v1/inventory/assets")
        assert_problem(r, 503)  # five timeouts in a row opened the breaker
    assert metric("cnop_upstream_requests_total", upstream="inventory", outcome="timeout") == (
        timeouts + 5
    )
    assert len(inventory.hits) == 5


async def test_gets_are_retried_posts_only_with_an_idempotency_key(platform: Platform) -> None:
    user = platform.upstreams["user"]
    user.status = 503
    settings = platform.settings(breaker_consecutive_failures=100, breaker_min_calls=100)
    async with gateway(settings) as client:
        c = client()
        auth = platform.bearer()
        r = await c.get("/api/v1/balance", headers=auth)
        body = assert_problem(r, 503)
        assert body["detail"] == "Upstream says no"  # the backend's problem, passed through
        assert len(user.hits) == 3  # one call and two retries

        user.hits.clear()
        r = await c.post("/api/v1/balance/deposit", json={"amount": "10.00"}, headers=auth)
        assert_problem(r, 503)
        assert len(user.hits) == 1

        user.hits.clear()
        r = await c.post(
            "/api/v1/balance/deposit",
            json={"amount": "10.00"},
            headers={**auth, "Idempotency-Key": "deposit-1"},
        )
        assert_problem(r, 503)
        assert len(user.hits) == 3
        assert {h["headers"]["idempotency-key"] for h in user.hits} == {"deposit-1"}

        user.hits.clear()
        user.status = 404  # a 4xx is an answer, not a failure: never retried
        assert_problem(await c.get("/api/v1/balance/asset/BTC", headers=auth), 404)
        assert len(user.hits) == 1


async def test_posts_are_retried_only_on_routes_that_honour_idempotency_key(
    platform: Platform,
) -> None:
    """A keyed POST to a route that ignores the key (a red-pocket claim, a logout) ran twice when
    its first attempt failed late: a timed-out claim came back as "409 already claimed"."""
    user, order = platform.upstreams["user"], platform.upstreams["order"]
    user.status = order.status = 503
    settings = platform.settings(breaker_consecutive_failures=100, breaker_min_calls=100)
    async with gateway(settings) as client:
        c = client()
        keyed = {**platform.bearer(), "Idempotency-Key": "claim-1"}
        for path in ("/cny/claim", "/auth/logout", "/auth/register"):
            user.hits.clear()
            assert_problem(await c.post(f"/api/v1{path}", json={}, headers=keyed), 503)
            assert len(user.hits) == 1, path
        for upstream, path in ((user, "/balance/withdraw"), (order, "/orders")):
            upstream.hits.clear()
            assert_problem(await c.post(f"/api/v1{path}", json={}, headers=keyed), 503)
            assert len(upstream.hits) == 3, path
            upstream.hits.clear()
            assert_problem(await c.post(f"/api/v1{path}", json={}, headers=platform.bearer()), 503)
            assert len(upstream.hits) == 1, path
    assert {r.path for r in ROUTES if r.idempotent} == {
        "/orders",
        "/balance/deposit",
        "/balance/withdraw",
    }


async def test_upstream_traces_never_reach_the_client(platform: Platform) -> None:
    user = platform.upstreams["user"]
    user.status, user.plain_error = 500, True
    async with gateway(platform.settings()) as client:
        r = await client().get("/api/v1/portfolio", headers=platform.bearer())
        body = assert_problem(r, 502)
        assert "Traceback" not in r.text and body["instance"] == "/api/v1/portfolio"
        assert len(user.hits) == 1  # a 500 is not worth retrying


# -- Redis outage, client ip, headers, health ------------------------------------------------


async def test_redis_down_fails_login_and_writes_closed_and_reads_open(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    closed = metric(
        "cnop_dependency_errors_total",
        service="gateway",
        dependency="redis",
        operation="rate_limit_ip",
        mode="fail_closed",
    )
    settings = platform.settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with gateway(settings, caplog) as client:
        c = client()
        r = await c.post("/api/v1/auth/login", json=login_body("alice_trader", GOOD_PASSWORD))
        assert_problem(r, 503)
        assert not platform.upstreams["user"].hits
        r = await c.get("/api/v1/inventory/assets")
        assert r.status_code == 200
        assert "ratelimit-limit" not in r.headers
        # A state-changing request cannot be limited, so it is refused like a login.
        register = await c.post("/api/v1/auth/register", json={"username": "nobody_here"})
        assert_problem(register, 503)
        assert not platform.upstreams["user"].hits
        health = (await c.get("/health")).json()
        assert health["redis"] == "unavailable"
        assert (await c.get("/health/ready")).status_code == 503
    after = metric(
        "cnop_dependency_errors_total",
        service="gateway",
        dependency="redis",
        operation="rate_limit_ip",
        mode="fail_closed",
    )
    assert after == closed + 2
    modes = {getattr(r, "mode", None) for r in events(caplog, "redis_unavailable")}
    assert modes == {"fail_open", "fail_closed"}


async def test_redis_down_with_fail_open_reads_off_refuses_reads(platform: Platform) -> None:
    settings = platform.settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_fail_open_reads=False
    )
    async with gateway(settings) as client:
        assert_problem(await client().get("/api/v1/inventory/assets"), 503)


async def test_forwarded_for_is_honoured_only_from_trusted_proxies(platform: Platform) -> None:
    inventory = platform.upstreams["inventory"]
    chain = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.0.0.3"}
    async with gateway(platform.settings(rate_limit_ip_limit=2)) as client:
        direct = client("198.51.100.4")
        await direct.get("/api/v1/inventory/assets", headers=chain)
        assert inventory.hits[-1]["headers"]["x-forwarded-for"] == "198.51.100.4"
        # Forging the header does not buy a new allowance.
        await direct.get("/api/v1/inventory/assets", headers={"X-Forwarded-For": "1.1.1.1"})
        r = await direct.get("/api/v1/inventory/assets", headers={"X-Forwarded-For": "2.2.2.2"})
        assert_problem(r, 429)

    settings = platform.settings(trusted_proxies=["10.0.0.0/8"], rate_limit_ip_limit=2)
    async with gateway(settings) as client:
        proxy = client("10.0.0.2")
        await proxy.get("/api/v1/inventory/assets", headers=chain)
        # Right-most untrusted hop: 6.6.6.6 was written by the client and is ignored.
        assert inventory.hits[-1]["headers"]["x-forwarded-for"] == "203.0.113.9"
        await proxy.get("/api/v1/inventory/assets", headers={"X-Forwarded-For": "203.0.113.50"})
        assert inventory.hits[-1]["headers"]["x-forwarded-for"] == "203.0.113.50"
        # Clients behind the proxy are limited one by one, not the proxy as a whole.
        for ip in ("203.0.113.60", "203.0.113.61", "203.0.113.62"):
            r = await proxy.get("/api/v1/inventory/assets", headers={"X-Forwarded-For": ip})
            assert r.status_code == 200


async def test_ipv6_clients_are_limited_and_blocked_by_their_64(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh address from the same /64 for every request buys no new allowance."""
    user, inventory = platform.upstreams["user"], platform.upstreams["inventory"]
    async with gateway(platform.settings(rate_limit_ip_limit=3), caplog) as client:
        for i in range(3):
            r = await client(f"2001:db8:7:1::{i + 1:x}").get("/api/v1/inventory/assets")
            assert r.status_code == 200
        assert inventory.hits[-1]["headers"]["x-forwarded-for"] == "2001:db8:7:1::3"
        assert_problem(await client("2001:db8:7:1:ffff::9").get("/api/v1/inventory/assets"), 429)
        assert (await client("2001:db8:7:2::1").get("/api/v1/inventory/assets")).status_code == 200
        # An IPv4 client seen through a dual-stack socket is its IPv4 address: one allowance.
        for _ in range(3):
            await client("192.0.2.77").get("/api/v1/inventory/assets")
        assert_problem(await client("::ffff:192.0.2.77").get("/api/v1/inventory/assets"), 429)

    async with gateway(platform.settings(), caplog) as client:
        for i in range(5):
            r = await client(f"2001:db8:9:9::{i + 1:x}").post(
                "/api/v1/auth/login", json=login_body(f"target_{i}_user")
            )
            assert_problem(r, 401)
        r = await client("2001:db8:9:9:abcd::1").post(
            "/api/v1/auth/login", json=login_body("honest_user", GOOD_PASSWORD)
        )
        assert_problem(r, 403)
        assert len(user.hits) == 5
        r = await client("2001:db8:9:a::1").post(
            "/api/v1/auth/login", json=login_body("honest_user", GOOD_PASSWORD)
        )
        assert r.status_code == 200
    blocked = events(caplog, "ip_blocked")
    assert len(blocked) == 1
    assert blocked[0].client_ip == "2001:db8:9:9::5"  # type: ignore[attr-defined]
    assert blocked[0].client_key == "2001:db8:9:9::/64"  # type: ignore[attr-defined]


async def test_security_headers_cors_and_oversized_bodies(platform: Platform) -> None:
    async with gateway(platform.settings(max_body_bytes=1000)) as client:
        c = client()
        r = await c.get("/api/v1/inventory/assets", headers={"Origin": "http://localhost:3000"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"

        preflight = {
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type, Idempotency-Key",
        }
        r = await c.options("/api/v1/orders", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "POST" in r.headers["access-control-allow-methods"]
        r = await c.options("/api/v1/orders", headers={**preflight, "Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in r.headers
        r = await c.get("/api/v1/inventory/assets", headers={"Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in r.headers
        assert not platform.upstreams["order"].hits

        r = await c.post("/api/v1/auth/register", content=b"x" * 2000)
        assert_problem(r, 413)


async def test_health_reports_breakers_and_redis(platform: Platform) -> None:
    async with gateway(platform.settings()) as client:
        c = client()
        r = await c.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "service": "gateway",
            "upstreams": {
                "user": "closed",
                "inventory": "closed",
                "order": "closed",
                "insights": "closed",
                "auth": "closed",
            },
            "redis": "ok",
        }
        ready = await c.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok"}
