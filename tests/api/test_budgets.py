"""Timeout budgets nest: the gateway's attempt deadline covers its own queueing, every backend
answers before the deadline it was given, and one user's burst is capped before it can time out
(and trip the breaker) for everyone.

Real HTTP wherever the finding is about it: the gateway's upstreams, and for the burst test the
gateway itself, the real auth and order services (Redis, moto) and a stand-in inventory.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cnop.core.locks import LOCK_PREFIX
from cnop.services.gateway.main import Settings as GatewaySettings
from cnop.services.gateway.main import create_app as create_gateway_app
from cnop.services.insights.main import Settings as InsightsSettings
from cnop.services.insights.main import create_app as create_insights_app
from cnop.services.order.main import Settings as OrderSettings
from cnop.services.order.main import create_app as create_order_app
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY
from pydantic import ValidationError
from redis import Redis

from tests.api.test_gateway import Platform, ServerThread, assert_problem, gateway
from tests.api.test_gateway import platform as platform
from tests.api.test_insights_service import PORTFOLIO
from tests.api.test_order_service import _inventory_app, auth, fund, order_service
from tests.conftest import (
    TEST_INTERNAL_SECRET,
    TEST_SECRET,
    eventually,
    free_port,
    running,
    serve_in_thread,
)

DEADLINE = "x-cnop-deadline-ms"
INFLIGHT_PREFIX = "cnop:inflight:user:"  # the documented key (docs/settings.md, "Deadlines")
# How late an answer may be on a busy 2-core machine and still count as "on time": CI has
# seen hundreds of ms of scheduling delay, so the budgets under test are long enough that this
# slack stays well short of the value each bound is there to rule out.
SLACK = 1.0


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def sleep_unless_gone(request: Request, seconds: float) -> None:
    """Sleep as asked, but stop once the caller has hung up: the stand-in's shutdown waits for
    every handler, and the long sleeps here would only make the tests slower."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)


class SlowUpstream:
    """An upstream whose every request sleeps ``?delay=`` seconds; records what it was sent."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.app = FastAPI()

        @self.app.get("/inventory/assets")
        async def assets(request: Request, delay: float = 0.0) -> JSONResponse:
            self.seen.append(dict(request.headers))
            await sleep_unless_gone(request, delay)
            return JSONResponse({"data": [], "delay": delay})


@pytest.fixture
def slow_upstream() -> Iterator[tuple[SlowUpstream, str]]:
    upstream = SlowUpstream()
    with serve_in_thread(upstream.app) as url:
        yield upstream, url


def gateway_settings(redis_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "jwt_secret": TEST_SECRET,
        "internal_secret": TEST_INTERNAL_SECRET,
        "redis_url": redis_url,
        "log_level": "WARNING",
        "upstream_retries": 0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


async def timed_get(client: httpx.AsyncClient, delay: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = await client.get(f"/api/v1/inventory/assets?delay={delay}")
    return r, time.monotonic() - started


async def holding_the_only_connection(
    client: httpx.AsyncClient, upstream: SlowUpstream, delay: float
) -> asyncio.Task[tuple[httpx.Response, float]]:
    """A request that has reached the upstream (so it holds the connection) for ``delay`` s."""
    task = asyncio.create_task(timed_get(client, delay))
    for _ in range(500):
        if upstream.seen:
            return task
        await asyncio.sleep(0.005)
    raise AssertionError("the first request never reached the upstream")


# -- the gateway: one deadline per attempt, its own queue is its own 503 ------------------------


async def test_a_hung_upstream_is_504_at_the_timeout_counting_the_wait_for_a_connection(
    redis_sync: Redis, redis_url: str, slow_upstream: tuple[SlowUpstream, str]
) -> None:
    upstream, url = slow_upstream
    # A 3 s deadline and 2 s of queueing: the wrong answer (a fresh deadline after the queue)
    # would take 5 s, far enough from the right one (3 s) for a loaded machine's noise.
    settings = gateway_settings(
        redis_url,
        inventory_url=url,
        upstream_timeout_seconds=3.0,
        upstream_pool_wait_seconds=2.8,
        upstream_max_connections=1,
    )
    async with gateway(settings) as client:
        c = client()
        # The first holds the only connection for 2 s; the second waits for it, then hangs.
        holder = await holding_the_only_connection(c, upstream, 2.0)
        second, took = await timed_get(c, 6)  # past both 3 s and 5 s
        first, _ = await holder
    assert first.status_code == 200, first.text
    body = assert_problem(second, 504)
    assert "did not answer in time" in body["detail"]
    # One deadline: ~2 s of queueing plus the rest of the 3 s, not 2 s + a fresh 3 s.
    assert 3.0 - 0.05 <= took <= 3.0 + SLACK, took
    # The upstream was told how long the gateway would still wait: what the queue left.
    granted = [int(h[DEADLINE]) for h in upstream.seen]
    assert 2500 <= granted[0] <= 3000, granted
    assert granted[1] <= 3000 - 1000, granted  # it queued for most of the first one's 2 s


async def test_a_full_connection_pool_is_the_gateways_own_503_not_an_upstream_failure(
    redis_sync: Redis, redis_url: str, slow_upstream: tuple[SlowUpstream, str]
) -> None:
    upstream, url = slow_upstream
    labels = {"upstream": "inventory"}
    before = {
        outcome: metric("cnop_upstream_requests_total", **labels, outcome=outcome)
        for outcome in ("pool_full", "timeout", "failure")
    }
    opened = metric(
        "cnop_circuit_breaker_transitions_total", **labels, from_state="closed", to_state="open"
    )
    settings = gateway_settings(
        redis_url,
        inventory_url=url,
        upstream_timeout_seconds=4.0,
        upstream_pool_wait_seconds=0.3,
        upstream_max_connections=1,
        breaker_consecutive_failures=1,  # a single failure recorded would open it
    )
    async with gateway(settings) as client:
        c = client()
        # The first holds the only connection for 2.5 s, far past the second's pool wait: a
        # second that queued for the connection instead would take 2.5 s or more.
        holder = await holding_the_only_connection(c, upstream, 2.5)
        second, took = await timed_get(c, 3)
        first, _ = await holder
        health = (await c.get("/health")).json()
    assert first.status_code == 200, first.text
    body = assert_problem(second, 503)
    assert body["type"].endswith("/gateway-busy")
    assert second.headers["retry-after"] == "1"
    assert took <= 0.3 + SLACK, took  # the 0.3 s pool wait, not the 2.5 s hold
    assert len(upstream.seen) == 1  # the second request never left the gateway
    assert health["upstreams"]["inventory"] == "closed"
    assert metric("cnop_upstream_requests_total", **labels, outcome="pool_full") == (
        before["pool_full"] + 1
    )
    for outcome in ("timeout", "failure"):
        assert metric("cnop_upstream_requests_total", **labels, outcome=outcome) == before[outcome]
    assert (
        metric(
            "cnop_circuit_breaker_transitions_total",
            **labels,
            from_state="closed",
            to_state="open",
        )
        == opened
    )


async def test_a_client_cannot_send_the_deadline_header_through_the_gateway(
    redis_sync: Redis, redis_url: str, slow_upstream: tuple[SlowUpstream, str]
) -> None:
    upstream, url = slow_upstream
    # Not a timing test: 5 s, so the stand-in in this process's thread is never too slow.
    settings = gateway_settings(redis_url, inventory_url=url, upstream_timeout_seconds=5.0)
    async with gateway(settings) as client:
        r = await client().get("/api/v1/inventory/assets", headers={"X-CNOP-Deadline-Ms": "999999"})
    assert r.status_code == 200
    assert int(upstream.seen[-1][DEADLINE]) <= 5000  # the gateway's own, not the client's


# -- backends answer before the deadline they were given ---------------------------------------


async def test_a_held_lock_is_409_with_retry_after_within_the_lock_wait(
    service_env: dict[str, Any], redis_sync: Redis
) -> None:
    order = {"order_type": "market_buy", "asset_id": "BTC", "quantity": "0.001"}
    # The lock wait is the service's setting (its 1 s default is asserted below, in
    # test_the_defaults_nest...): timed here at 3 s with a 0.5 s margin, so a loaded machine's
    # scheduling delay stays small next to both (at 1 s and 0.1 s, 0.1 s of it flaked).
    waits = {"lock_wait_seconds": 3.0, "deadline_margin_seconds": 0.5}
    with serve_in_thread(_inventory_app()) as inventory_url:
        async with order_service(service_env, inventory_url, **waits) as (app, client):
            fund(app, "lock_waiter", "1000")
            # Someone else holds the user's lock, far longer than anyone waits for it.
            redis_sync.set(LOCK_PREFIX + "lock_waiter", "another-owner", px=30_000)
            headers = auth(app, "lock_waiter")
            started = time.monotonic()
            r = await client.post("/orders", json=order, headers=headers)
            took = time.monotonic() - started
            assert r.status_code == 409, r.text
            assert r.headers["retry-after"] == "1"
            # The configured lock wait: not the lock's 30 s, nor the 30 s request budget.
            assert 3.0 - 0.05 <= took <= 3.0 + SLACK, took

            # A caller that will wait less is answered sooner: the lock wait (3 s) fits its
            # deadline of 1.5 s less the 0.5 s margin, so it is answered before it gives up.
            started = time.monotonic()
            r = await client.post(
                "/orders", json=order, headers={**headers, "X-CNOP-Deadline-Ms": "1500"}
            )
            took = time.monotonic() - started
            assert r.status_code == 409, r.text
            assert 1.0 - 0.05 <= took <= 1.5, took


async def test_a_slow_llm_gives_the_fallback_within_the_budget(
    service_env: dict[str, Any],
) -> None:
    seen: dict[str, list[dict[str, str]]] = {"gemini": [], "user": []}
    stand_in = FastAPI()

    @stand_in.post("/v1beta/models/{model}:generateContent")
    async def generate(model: str, request: Request) -> Any:
        seen["gemini"].append(dict(request.headers))
        await sleep_unless_gone(request, 5)  # past any budget here (the LLM's 3 s cap and more)
        return {}

    @stand_in.get("/portfolio")
    async def portfolio(request: Request) -> Any:
        seen["user"].append(dict(request.headers))
        return PORTFOLIO

    with serve_in_thread(stand_in) as url:
        # The production waits scaled up (LLM cap 3 s, not 2; margin 0.5 s, not 0.1; the user
        # service call 2 s, not 1) so that a loaded machine's scheduling delay stays small next
        # to the differences asserted: at 2 s, 1.2 s and 0.1 s, 0.1 s of delay was enough to fail.
        settings = InsightsSettings(
            **service_env,
            user_url=url,
            gemini_api_key="test-gemini-key",
            gemini_base_url=url,
            insights_cache_ttl_seconds=0,
            request_budget_seconds=10,
            llm_timeout_seconds=3.0,
            internal_timeout_seconds=2.0,
            deadline_margin_seconds=0.5,
        )
        app = create_insights_app(settings)
        token = app.state.ctx.tokens.issue("alice_trader").token
        async with running(app) as client:
            # No header: the service's own 10 s budget, so the LLM's 3 s cap applies (not the
            # 5 s answer); a header of 2 s leaves the LLM what is left of it, less the margin,
            # and the fallback is served before that caller gives up (not at the 3 s cap).
            for granted, budget in ((None, 3.0 + SLACK), ("2000", 2.0)):
                headers = {"Authorization": f"Bearer {token}"}
                if granted is not None:
                    headers["X-CNOP-Deadline-Ms"] = granted
                started = time.monotonic()
                r = await client.get("/insights/portfolio", headers=headers)
                took = time.monotonic() - started
                assert r.status_code == 200, r.text
                assert r.json()["data"]["source"] == "fallback"
                assert took <= budget, (granted, took)
    assert len(seen["gemini"]) == 2
    # The call to the user service was given min(2 s, time left - margin), and told so.
    granted_to_user = [int(h[DEADLINE]) for h in seen["user"]]
    assert len(granted_to_user) == 2, granted_to_user
    assert 1500 <= granted_to_user[0] <= 2000, granted_to_user  # its own 2 s
    assert 1000 <= granted_to_user[1] <= 1500, granted_to_user  # the 2 s header, less 0.5 s


# -- start-up refuses budgets that do not nest --------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "values", "named"),
    [
        (OrderSettings, {"lock_wait_seconds": 3.0}, "CNOP_LOCK_WAIT_SECONDS"),
        (OrderSettings, {"internal_timeout_seconds": 2.95}, "CNOP_INTERNAL_TIMEOUT_SECONDS"),
        (InsightsSettings, {"llm_timeout_seconds": 10.0}, "CNOP_LLM_TIMEOUT_SECONDS"),
        (OrderSettings, {"deadline_margin_seconds": 3.0}, "CNOP_DEADLINE_MARGIN_SECONDS"),
        (
            GatewaySettings,
            {"upstream_timeout_seconds": 1.0, "upstream_pool_wait_seconds": 1.0},
            "CNOP_UPSTREAM_POOL_WAIT_SECONDS",
        ),
        (
            GatewaySettings,
            {"upstream_timeout_seconds": 0.5, "upstream_retry_backoff_max_seconds": 1.0},
            "CNOP_UPSTREAM_RETRY_BACKOFF_MAX_SECONDS",
        ),
        (GatewaySettings, {"upstream_timeout_seconds": 0.1}, "CNOP_UPSTREAM_TIMEOUT_SECONDS"),
    ],
)
def test_start_up_refuses_budgets_that_do_not_nest(
    factory: type[OrderSettings | InsightsSettings | GatewaySettings],
    values: dict[str, Any],
    named: str,
) -> None:
    with pytest.raises(ValidationError, match=named):
        factory(dev_mode=True, **values)


def test_the_defaults_nest_and_a_bigger_budget_allows_longer_waits() -> None:
    order = OrderSettings(dev_mode=True)
    assert (order.lock_wait_seconds, order.internal_timeout_seconds) == (1.0, 1.0)
    assert order.request_budget_seconds == GatewaySettings(dev_mode=True).upstream_timeout_seconds
    assert InsightsSettings(dev_mode=True).llm_timeout_seconds == 2.0
    OrderSettings(dev_mode=True, request_budget_seconds=20, internal_timeout_seconds=15)
    OrderSettings(dev_mode=True, locks_enabled=False, lock_wait_seconds=30)  # no lock, no wait


# -- the per-user in-flight cap -----------------------------------------------------------------


async def test_the_21st_concurrent_request_of_one_user_is_429_and_another_user_is_unaffected(
    platform: Platform, redis_sync: Redis
) -> None:
    user = platform.upstreams["user"]
    # The twenty hold their slots 4 s, so a 21st that queued for one would take seconds: the
    # "at once" bound below can leave a loaded machine plenty of room and still tell them apart.
    user.delay = 4.0
    limited = metric("cnop_rate_limit_decisions_total", policy="user_inflight", decision="limited")
    settings = platform.settings(upstream_max_connections=64, upstream_timeout_seconds=10.0)
    alice, bob = platform.bearer("alice_trader"), platform.bearer("bob_trader")
    async with gateway(settings) as client:
        c = client()
        twenty = [asyncio.create_task(c.get("/api/v1/balance", headers=alice)) for _ in range(20)]
        # Until all twenty are at the upstream.
        assert await eventually(lambda: len(user.hits) >= 20)
        assert len(user.hits) == 20
        started = time.monotonic()
        r = await c.get("/api/v1/balance", headers=alice)
        assert time.monotonic() - started < 2.0  # refused at once, not queued (>= ~3.5 s)
        assert_problem(r, 429)
        assert r.headers["retry-after"] == "1"
        user.delay = 0.0  # the twenty are asleep already; the requests below need not wait
        assert (await c.get("/api/v1/balance", headers=bob)).status_code == 200
        assert [t.status_code for t in await asyncio.gather(*twenty)] == [200] * 20
        # Every slot was given back.
        assert redis_sync.zcard(INFLIGHT_PREFIX + "alice_trader") == 0
        assert (await c.get("/api/v1/balance", headers=alice)).status_code == 200
    after = metric("cnop_rate_limit_decisions_total", policy="user_inflight", decision="limited")
    assert after == limited + 1
    assert len(user.hits) == 22


async def test_slots_of_a_crashed_gateway_expire(platform: Platform, redis_sync: Redis) -> None:
    settings = platform.settings(rate_limit_user_inflight=2)
    key = INFLIGHT_PREFIX + "alice_trader"
    # Two slots taken long ago by a gateway that never gave them back.
    redis_sync.zadd(key, {"crashed-1": 1_000, "crashed-2": 2_000})
    async with gateway(settings) as client:
        r = await client().get("/api/v1/balance", headers=platform.bearer("alice_trader"))
        assert r.status_code == 200
    assert redis_sync.zcard(key) == 0


# -- one user's burst, end to end ---------------------------------------------------------------


@contextmanager
def service_process(service: str, tmp_path: Path, **settings: Any) -> Iterator[str]:
    """A service as its own process (``python -m cnop.run``), as the lab runs it: the burst test
    would otherwise measure four servers fighting over one interpreter lock."""
    port = free_port()
    env = {**os.environ, "CNOP_HOST": "127.0.0.1", "CNOP_PORT": str(port)}
    env.update({f"CNOP_{k.upper()}": str(v) for k, v in settings.items()})
    log = tmp_path / f"{service}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnop.run", service], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{service} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


async def test_150_concurrent_orders_from_one_user_never_open_the_order_breaker(
    service_env: dict[str, Any], redis_sync: Redis, tmp_path: Path
) -> None:
    common = {
        k: service_env[k] for k in ("jwt_secret", "internal_secret", "redis_url", "log_level")
    }
    transitions = metric(
        "cnop_circuit_breaker_transitions_total",
        upstream="order",
        from_state="closed",
        to_state="open",
    )
    with (
        serve_in_thread(_inventory_app()) as inventory_url,
        service_process("auth", tmp_path, **common) as auth_url,
        service_process("order", tmp_path, **service_env, inventory_url=inventory_url) as order_url,
    ):
        # In-process only for its tables and token issuer; the order service runs above.
        order_app = create_order_app(OrderSettings(**service_env, inventory_url=inventory_url))
        fund(order_app, "burst_trader", "100000")
        headers = auth(order_app, "burst_trader")
        # The gateway runs in this process, sharing its GIL with the 150-request client, so a
        # Redis reply can wait past the 0.5 s default for the event loop (1 run in 4 got 503
        # "rate limiting is unavailable"). This test is about the order breaker, not that.
        gw = ServerThread(
            create_gateway_app(
                GatewaySettings(
                    **common, order_url=order_url, auth_url=auth_url, redis_timeout_seconds=2.0
                )
            )
        )
        gw.start()
        try:
            body = {"order_type": "market_buy", "asset_id": "BTC", "quantity": "0.001"}
            async with httpx.AsyncClient(
                base_url=gw.url, timeout=30, limits=httpx.Limits(max_connections=200)
            ) as client:
                replies = await asyncio.gather(
                    *(client.post("/api/v1/orders", json=body, headers=headers) for _ in range(150))
                )
                health = (await client.get("/health")).json()
        finally:
            gw.stop()
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {201, 409, 422, 429}, [
        r.json()["detail"] for r in replies if r.status_code >= 500
    ]
    assert 201 in statuses and 429 in statuses
    assert health["upstreams"]["order"] == "closed"
    assert (
        metric(
            "cnop_circuit_breaker_transitions_total",
            upstream="order",
            from_state="closed",
            to_state="open",
        )
        == transitions
    )
