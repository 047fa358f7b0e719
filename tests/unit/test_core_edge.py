"""The shared core at the edge of every service: a 500 that still happens is a decorated problem,
backends answer the platform only, and the internal credential is a required, separate secret."""

from __future__ import annotations

from typing import Any

import pytest
from cnop.core.app import create_service_app
from cnop.core.auth import Ctx
from cnop.core.body_guard import JsonDepthCounter
from cnop.core.internal import INTERNAL_TOKEN_HEADER
from cnop.core.middleware import SECURITY_HEADERS
from cnop.core.problems import PROBLEM_MEDIA_TYPE
from cnop.core.settings import ServiceSettings
from fastapi import APIRouter, FastAPI, Request
from pydantic import ValidationError

from tests.conftest import TEST_INTERNAL_SECRET, assert_no_leak, running, serve_in_thread

ORIGIN = "http://localhost:3000"
router = APIRouter()


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internal state at db-host-7")


@router.get("/items/{item_id}")
async def item(item_id: str) -> dict[str, str]:
    return {"id": item_id}


@router.get("/ask")
async def ask(url: str, ctx: Ctx) -> dict[str, Any]:
    reply = await ctx.call_service("peer", "GET", url)
    return reply.json()


def make_app(env: dict[str, Any], **overrides: Any) -> FastAPI:
    settings = ServiceSettings(service_name="edgetest", **{**env, **overrides})
    return create_service_app(
        settings, title="edge test", routers=[router], uses_dynamodb=False, cors=True
    )


def assert_decorated(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value, name
    assert r.headers["x-request-id"] == r.json()["request_id"]
    assert_no_leak(r.text)


async def test_a_500_still_carries_every_security_header_the_request_id_and_cors(
    service_env: dict[str, Any],
) -> None:
    async with running(make_app(service_env)) as client:
        r = await client.get("/boom", headers={"Origin": ORIGIN, "X-Request-ID": "trace-500-abc"})
    assert_decorated(r, 500)
    assert r.headers["x-request-id"] == "trace-500-abc"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.json()["detail"] == "An unexpected error occurred"
    assert "db-host-7" not in r.text


async def test_a_direct_call_without_the_internal_token_is_403_and_health_stays_open(
    service_env: dict[str, Any],
) -> None:
    app = make_app(service_env)
    async with running(app, internal=False) as stranger:
        for headers in (
            {},
            {INTERNAL_TOKEN_HEADER: "wrong-" + "w" * 40},
            {INTERNAL_TOKEN_HEADER: TEST_INTERNAL_SECRET[:-1]},
            {INTERNAL_TOKEN_HEADER: service_env["jwt_secret"]},
        ):
            r = await stranger.get("/items/1", headers={"Origin": ORIGIN, **headers})
            assert_decorated(r, 403)
            assert r.headers["access-control-allow-origin"] == ORIGIN
        for probe in ("/health", "/health/ready"):
            assert (await stranger.get(probe)).status_code == 200
        assert (await stranger.get("/healthz")).status_code == 403  # only the probes are open
        good = {INTERNAL_TOKEN_HEADER: TEST_INTERNAL_SECRET}
        assert (await stranger.get("/items/1", headers=good)).status_code == 200
    async with running(app) as platform_client:  # speaks as the platform by default
        assert (await platform_client.get("/items/1")).status_code == 200


async def test_the_internal_check_is_a_switch_a_lab_may_turn_off(
    service_env: dict[str, Any],
) -> None:
    async with running(make_app(service_env, internal_auth_enabled=False), internal=False) as c:
        assert (await c.get("/items/1")).status_code == 200


async def test_service_calls_carry_the_internal_token(service_env: dict[str, Any]) -> None:
    seen: list[dict[str, str]] = []
    peer = FastAPI()

    @peer.get("/peer")
    async def answer(request: Request) -> dict[str, str]:
        seen.append(dict(request.headers))
        return {"ok": "yes"}

    with serve_in_thread(peer) as url:
        async with running(make_app(service_env)) as client:
            r = await client.get("/ask", params={"url": f"{url}/peer"})
    assert r.status_code == 200, r.text
    assert seen[-1][INTERNAL_TOKEN_HEADER.lower()] == TEST_INTERNAL_SECRET


def test_settings_require_an_internal_secret_apart_from_the_jwt_secret() -> None:
    jwt = "j" * 40
    with pytest.raises(ValidationError, match="CNOP_INTERNAL_SECRET"):
        ServiceSettings(jwt_secret=jwt)
    with pytest.raises(ValidationError, match="at least 32"):
        ServiceSettings(jwt_secret=jwt, internal_secret="short")
    with pytest.raises(ValidationError, match="must differ"):
        ServiceSettings(jwt_secret=jwt, internal_secret=jwt)
    settings = ServiceSettings(jwt_secret=jwt, internal_secret="i" * 32)
    assert settings.internal_token == "i" * 32 and "iiii" not in repr(settings)
    dev = ServiceSettings(dev_mode=True)
    assert len(dev.internal_token) >= 32 and dev.internal_token != dev.secret
    assert ServiceSettings(jwt_secret=jwt, internal_secret="i" * 32).internal_auth_enabled


@pytest.mark.parametrize(
    ("pieces", "deepest_ok"),
    [
        ([b'{"a": [1, {"b": [2]}]}'], True),
        ([b"[" * 5], False),
        ([b'"[[[[[[[["'], True),  # brackets inside a string do not count
        ([b'["\\"[[[[[[[["]'], True),  # nor after an escaped quote
        ([b'["\\', b'"[[[[[["]'], True),  # an escape split across two pieces
        ([b'["\\\\"', b",[[[[]]]]]"], False),  # an escaped backslash ends the escape
        ([b"[[]]" * 100], True),
    ],
)
def test_json_depth_is_counted_across_pieces_outside_strings(
    pieces: list[bytes], deepest_ok: bool
) -> None:
    counter = JsonDepthCounter(limit=4)
    assert all([counter.feed(piece) for piece in pieces]) is deepest_ok
