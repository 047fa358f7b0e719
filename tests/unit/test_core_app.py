"""The shared core, exercised through a small service built with the real app factory."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from cnop.core.app import create_service_app
from cnop.core.auth import Ctx, CurrentUser
from cnop.core.faults import fault_key
from cnop.core.json_body import api_router
from cnop.core.locks import LOCK_PREFIX
from cnop.core.settings import ServiceSettings
from prometheus_client import REGISTRY
from pydantic import BaseModel
from redis import Redis

from tests.conftest import assert_no_leak, eventually, running

router = api_router()


class Body(BaseModel):
    name: str
    count: int


@router.get("/items/{item_id}")
async def get_item(item_id: str) -> dict[str, str]:
    return {"id": item_id}


@router.post("/items")
async def post_item(body: Body) -> dict[str, Any]:
    return body.model_dump()


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internal state at db-host-7")


@router.post("/locked/{user}")
async def locked(user: str, ctx: Ctx, hold: float = 0.0) -> dict[str, str]:
    async with ctx.locks.hold(user, "test"):
        await asyncio.sleep(hold)
    return {"ok": user}


@router.get("/me")
async def me(user: CurrentUser) -> dict[str, str]:
    return {"username": user.username}


@router.post("/me/spend")
async def spend(user: CurrentUser) -> dict[str, str]:
    return {"spent_by": user.username}


def make_app(env: dict[str, Any], **overrides: Any) -> Any:
    settings = ServiceSettings(service_name="coretest", **{**env, **overrides})
    return create_service_app(settings, title="core test", routers=[router], uses_dynamodb=False)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_use_route_templates_and_errors_are_problems(
    service_env: dict[str, Any],
) -> None:
    app = make_app(service_env)
    labels = {"service": "coretest", "route": "/items/{item_id}", "method": "GET", "status": "200"}
    before = sample("cnop_http_requests_total", labels)
    async with running(app) as client:
        for i in range(3):
            assert (await client.get(f"/items/x{i}")).status_code == 200
        assert sample("cnop_http_requests_total", labels) == before + 3

        r = await client.get("/nope")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert sample(
            "cnop_http_requests_total",
            {"service": "coretest", "route": "unmatched", "method": "GET", "status": "404"},
        )

        r = await client.post("/items", json={"name": "a", "count": "many"})
        assert r.status_code == 422
        body = r.json()
        assert body["errors"][0]["field"] == "count" and "count" in body["detail"]

        r = await client.post(
            "/items", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422

        r = await client.get("/boom")
        assert r.status_code == 500
        assert r.json()["detail"] == "An unexpected error occurred"
        assert "db-host-7" not in r.text and "RuntimeError" not in r.text
        assert_no_leak(r.text)


async def test_a_json_body_that_is_not_utf8_is_a_422_like_any_malformed_json(
    service_env: dict[str, Any],
) -> None:
    app = make_app(service_env)
    async with running(app) as client:
        r = await client.post(
            "/items", content=b"\xff\xfe{", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"] == [{"field": "body", "message": "not valid JSON (UTF-8 text)"}]


async def test_every_response_has_security_headers_and_a_request_id(
    service_env: dict[str, Any],
) -> None:
    async with running(make_app(service_env)) as client:
        for r in (await client.get("/items/1"), await client.get("/nope")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-store"
            assert "strict-transport-security" in r.headers
            assert "content-security-policy" in r.headers
            assert len(r.headers["x-request-id"]) >= 8
        r = await client.get("/items/1", headers={"X-Request-ID": "trace-abcdef12"})
        assert r.headers["x-request-id"] == "trace-abcdef12"
        # A forged, log-breaking id is replaced, not echoed.
        r = await client.get("/items/1", headers={"X-Request-ID": "x\u0000\n{evil}"})
        assert r.headers["x-request-id"] != "x\u0000\n{evil}"


async def test_lock_serialises_and_contention_is_409_never_5xx(
    service_env: dict[str, Any], redis_sync: Redis
) -> None:
    app = make_app(service_env, lock_wait_seconds=0.3, lock_ttl_seconds=5)
    async with running(app) as client:
        first = asyncio.create_task(client.post("/locked/bob?hold=3.0"))
        assert await eventually(lambda: redis_sync.exists(LOCK_PREFIX + "bob"))
        second = await client.post("/locked/bob")
        assert second.status_code == 409 and second.headers["retry-after"] == "1"
        assert (await first).status_code == 200
        assert not redis_sync.exists(LOCK_PREFIX + "bob")  # released by compare-and-delete
        assert (await client.post("/locked/bob")).status_code == 200


async def test_lock_release_never_deletes_someone_elses_lock(
    service_env: dict[str, Any], redis_sync: Redis
) -> None:
    app = make_app(service_env, lock_ttl_seconds=1.0, lock_wait_seconds=0.1)
    async with running(app) as client:
        task = asyncio.create_task(client.post("/locked/carol?hold=4.0"))
        assert await eventually(lambda: redis_sync.exists(LOCK_PREFIX + "carol"))
        # Our TTL runs out while we still hold on: another owner takes the key.
        assert await eventually(lambda: not redis_sync.exists(LOCK_PREFIX + "carol"))
        redis_sync.set(LOCK_PREFIX + "carol", "another-owner", px=10_000)
        assert not task.done()
        assert (await task).status_code == 200
        assert redis_sync.get(LOCK_PREFIX + "carol") == "another-owner"


async def test_redis_down_makes_locked_operations_503_not_500(
    service_env: dict[str, Any],
) -> None:
    app = make_app(service_env, redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    async with running(app) as client:
        r = await client.post("/locked/dave")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert_no_leak(r.text)
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unavailable"
        assert (await client.get("/health")).status_code == 200


async def test_fault_flags_apply_expire_and_show_in_metrics(
    service_env: dict[str, Any], redis_sync: Redis
) -> None:
    async with running(make_app(service_env)) as client:
        redis_sync.set(fault_key("coretest", "latency"), json.dumps({"ms": 2000}), px=4000)
        started = time.perf_counter()
        assert (await client.get("/items/1")).status_code == 200
        assert time.perf_counter() - started >= 2.0
        labels = {"service": "coretest", "fault": "latency"}
        assert sample("cnop_fault_active", labels) == 1
        assert (await client.get("/health")).status_code == 200  # probes are never slowed

        redis_sync.set(fault_key("coretest", "error_rate"), json.dumps({"rate": 1.0}), px=2000)
        r = await client.get("/items/1")
        assert r.status_code == 500 and r.json()["type"].endswith("injected-fault")

        # Both TTLs run out: the platform heals by itself.
        assert await eventually(lambda: not redis_sync.keys(fault_key("coretest", "*")))
        started = time.perf_counter()
        assert (await client.get("/items/1")).status_code == 200
        assert time.perf_counter() - started < 1.5  # the 2 s latency is gone
        assert sample("cnop_fault_active", labels) == 0


async def test_hang_fault_answers_504_after_its_time(
    service_env: dict[str, Any], redis_sync: Redis
) -> None:
    async with running(make_app(service_env)) as client:
        redis_sync.set(fault_key("coretest", "hang"), json.dumps({"seconds": 0.5}), px=3000)
        started = time.perf_counter()
        r = await client.get("/items/1")
        assert r.status_code == 504 and time.perf_counter() - started >= 0.5


async def test_current_user_dependency(service_env: dict[str, Any]) -> None:
    app = make_app(service_env)
    async with running(app) as client:
        issued = app.state.ctx.tokens.issue("erin_trader")
        ok = await client.get("/me", headers={"Authorization": f"Bearer {issued.token}"})
        assert ok.json() == {"username": "erin_trader"}
        assert (await client.get("/me")).status_code == 401
        await app.state.ctx.tokens.revoke(issued.jti, int(time.time()) + 60)
        r = await client.get("/me", headers={"Authorization": f"Bearer {issued.token}"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("fail_open", [True, False])
async def test_revocation_check_without_redis_follows_the_fail_open_setting(
    service_env: dict[str, Any], fail_open: bool
) -> None:
    app = make_app(
        service_env,
        redis_url="redis://127.0.0.1:1/0",
        redis_timeout_seconds=0.2,
        redis_fail_open_reads=fail_open,
    )
    async with running(app) as client:
        token = app.state.ctx.tokens.issue("frank_trader").token
        r = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == (200 if fail_open else 503)


async def test_revocation_fails_closed_for_state_changing_requests_even_when_reads_fail_open(
    service_env: dict[str, Any],
) -> None:
    """A logged-out token must never move money: without Redis the revocation list cannot be
    read, so a POST is refused (503) although reads are set to fail open."""
    app = make_app(
        service_env,
        redis_url="redis://127.0.0.1:1/0",
        redis_timeout_seconds=0.2,
        redis_fail_open_reads=True,
    )
    async with running(app) as client:
        token = app.state.ctx.tokens.issue("grace_trader").token
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/me", headers=headers)).status_code == 200
        r = await client.post("/me/spend", headers=headers)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.headers["content-type"] == "application/problem+json"


async def test_revocation_outlives_the_token_by_the_jwt_leeway(
    service_env: dict[str, Any], redis_sync: Redis
) -> None:
    """The verifier accepts a token up to ``leeway`` seconds past its expiry, so the revocation
    must last that long too, or a logged-out token comes back for the leeway."""
    app = make_app(service_env, jwt_leeway_seconds=120)
    async with running(app):
        tokens = app.state.ctx.tokens
        issued = tokens.issue("heidi_trader")
        expires_at = int(time.time()) + issued.expires_in
        await tokens.revoke(issued.jti, expires_at)
        ttl = redis_sync.ttl(f"cnop:revoked:{issued.jti}")
        assert ttl >= issued.expires_in + 120 - 2
