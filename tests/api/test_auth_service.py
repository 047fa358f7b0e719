from __future__ import annotations

import time
from typing import Any

import jwt
from cnop.core.tokens import TokenService
from cnop.services.auth.main import Settings, create_app

from tests.conftest import TEST_SECRET, assert_no_leak, running


async def test_valid_token_returns_user_context(service_env: dict[str, Any]) -> None:
    app = create_app(Settings(**service_env))
    async with running(app) as client:
        tokens: TokenService = app.state.ctx.tokens
        issued = tokens.issue("alice_trader")
        r = await client.post("/validate", headers={"Authorization": f"Bearer {issued.token}"})
        assert r.status_code == 200
        assert r.json()["user"]["username"] == "alice_trader"


async def test_refused_tokens_are_401_problems(service_env: dict[str, Any]) -> None:
    app = create_app(Settings(**service_env))
    async with running(app) as client:
        tokens: TokenService = app.state.ctx.tokens
        good = tokens.issue("alice_trader")
        claims = jwt.decode(good.token, TEST_SECRET, algorithms=["HS256"], audience="cnop-api")
        expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, TEST_SECRET, "HS256")
        none_alg = jwt.encode(claims, None, algorithm="none")
        tampered = good.token[:-4] + ("AAAA" if not good.token.endswith("AAAA") else "BBBB")
        forged = jwt.encode(claims, "another-secret-" + "y" * 40, "HS256")
        await tokens.revoke(good.jti, good.expires_in + int(time.time()))
        cases = {
            "missing": None,
            "malformed": "Bearer",
            "not-bearer": f"Basic {good.token}",
            "expired": f"Bearer {expired}",
            "none": f"Bearer {none_alg}",
            "tampered": f"Bearer {tampered}",
            "forged": f"Bearer {forged}",
            "revoked": f"Bearer {good.token}",
        }
        for name, header in cases.items():
            headers = {"Authorization": header} if header else {}
            r = await client.post("/validate", headers=headers)
            assert r.status_code == 401, name
            assert r.headers["content-type"] == "application/problem+json", name
            body = r.json()
            assert body["status"] == 401 and body["request_id"], name
            assert_no_leak(r.text)


async def test_validate_fails_closed_without_redis_unless_the_gateway_names_a_safe_method(
    service_env: dict[str, Any],
) -> None:
    """The auth service judges the token for the method it is presented with: a read may fail
    open without Redis, a state-changing request (or an unnamed one) may not."""
    env = {**service_env, "redis_url": "redis://127.0.0.1:1/0", "redis_timeout_seconds": 0.2}
    app = create_app(Settings(**env, redis_fail_open_reads=True))
    async with running(app) as client:
        token = app.state.ctx.tokens.issue("ivan_trader").token
        auth = {"Authorization": f"Bearer {token}"}
        unnamed = await client.post("/validate", headers=auth)
        assert unnamed.status_code == 503
        post = await client.post("/validate", headers={**auth, "X-CNOP-Original-Method": "POST"})
        assert post.status_code == 503
        get = await client.post("/validate", headers={**auth, "X-CNOP-Original-Method": "GET"})
        assert get.status_code == 200 and get.json()["user"]["username"] == "ivan_trader"
