"""Each flaw's setting (security/flaws.yaml) against the real services: closed by default, open
when set. Real Redis and moto; the order and user services get a stand-in inventory."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cnop.core.app import create_service_app
from cnop.core.settings import ServiceSettings
from cnop.services.gateway.client_ip import client_ip, parse_networks
from cnop.services.gateway.settings import Settings as GatewaySettings
from cnop.services.order.main import Settings as OrderSettings
from cnop.services.order.main import create_app as create_order_app
from cnop.services.user.main import Settings as UserSettings
from cnop.services.user.main import create_app as create_user_app
from fastapi import FastAPI
from jwt.warnings import InsecureKeyLengthWarning

from tests.api.test_order_service import _inventory_app, buy, fund
from tests.api.test_user_service import FAST_ARGON2, signup
from tests.conftest import assert_no_leak, running, serve_in_thread
from tests.unit.test_core_app import router as core_router

EVIL_ORIGIN = "https://evil.example"
SECURITY_HEADERS = ("x-content-type-options", "content-security-policy", "cache-control")


@pytest.fixture(scope="module")
def inventory_url() -> Iterator[str]:
    with serve_in_thread(_inventory_app()) as url:
        yield url


def core_app(env: dict[str, Any], *, cors: bool = False, **overrides: Any) -> FastAPI:
    settings = ServiceSettings(service_name="flawtest", **{**env, **overrides})
    return create_service_app(
        settings, title="flaw test", routers=[core_router], uses_dynamodb=False, cors=cors
    )


def unsigned(token: str) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{header}.{token.split('.')[1]}."


# --- bola: CNOP_ORDER_OWNERSHIP_CHECK_ENABLED --------------------------------------------------


@pytest.mark.parametrize("check", [True, False])
async def test_bola_another_users_order_is_404_unless_the_ownership_check_is_off(
    service_env: dict[str, Any], inventory_url: str, check: bool
) -> None:
    settings = OrderSettings(
        **service_env, inventory_url=inventory_url, order_ownership_check_enabled=check
    )
    app = create_order_app(settings)
    async with running(app) as client:
        fund(app, "alice_owner", "1000")
        alice = {"Authorization": f"Bearer {app.state.ctx.tokens.issue('alice_owner').token}"}
        placed = await buy(client, alice, "BTC", "0.001")
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["data"]["order_id"]
        mallory = {"Authorization": f"Bearer {app.state.ctx.tokens.issue('mallory_x').token}"}
        r = await client.get(f"/orders/{order_id}", headers=mallory)
        if check:
            assert r.status_code == 404
        else:
            assert r.status_code == 200 and r.json()["data"]["order_id"] == order_id
        own = await client.get(f"/orders/{order_id}", headers=alice)
        assert own.status_code == 200  # the owner reads it either way


# --- alg-none: CNOP_JWT_ACCEPT_UNSIGNED; weak-jwt-secret: CNOP_JWT_ALLOW_WEAK_SECRET ------------


@pytest.mark.parametrize("accept", [False, True])
async def test_alg_none_tokens_are_refused_unless_unsigned_tokens_are_accepted(
    service_env: dict[str, Any], accept: bool
) -> None:
    app = core_app(service_env, jwt_accept_unsigned=accept)
    async with running(app) as client:
        forged = unsigned(app.state.ctx.tokens.issue("erin_trader").token)
        r = await client.get("/me", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == (200 if accept else 401), r.text
        if accept:
            assert r.json() == {"username": "erin_trader"}
        # Even with the flaw, an unsigned token must still carry the platform's claims.
        garbage = unsigned(jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256"))
        r = await client.get("/me", headers={"Authorization": f"Bearer {garbage}"})
        assert r.status_code == 401


def test_a_short_jwt_secret_is_refused_unless_weak_secrets_are_allowed(
    service_env: dict[str, Any],
) -> None:
    env = {**service_env, "jwt_secret": "secret"}
    with pytest.raises(ValueError, match="CNOP_JWT_SECRET must be set to at least 32"):
        ServiceSettings(**env)
    assert ServiceSettings(**env, jwt_allow_weak_secret=True).secret == "secret"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the point here
async def test_with_a_weak_secret_a_token_signed_with_the_word_is_accepted(
    service_env: dict[str, Any],
) -> None:
    app = core_app({**service_env, "jwt_secret": "secret"}, jwt_allow_weak_secret=True)
    async with running(app) as client:
        claims = jwt.decode(
            app.state.ctx.tokens.issue("erin_trader").token, options={"verify_signature": False}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            forged = jwt.encode({**claims, "sub": "admin_x"}, "secret", algorithm="HS256")
        r = await client.get("/me", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 200 and r.json() == {"username": "admin_x"}


# --- data-exposure, user-enumeration, page size: the user service ------------------------------


@pytest.mark.parametrize("expose", [False, True])
async def test_the_profile_shows_the_password_hash_only_with_the_exposure_flaw(
    service_env: dict[str, Any], inventory_url: str, expose: bool
) -> None:
    settings = UserSettings(
        **service_env,
        **FAST_ARGON2,
        inventory_url=inventory_url,
        profile_expose_internals=expose,
    )
    async with running(create_user_app(settings)) as client:
        headers = await signup(client, "dora_data")
        r = await client.get("/auth/profile", headers=headers)
        assert r.status_code == 200
        body = r.json()
        assert ("password_hash" in body) is expose
        assert ("role" in body) is expose
        if expose:
            assert body["password_hash"].startswith("$argon2id$")
        assert body["username"] == "dora_data"


@pytest.mark.parametrize("reveal", [False, True])
async def test_login_tells_unknown_users_apart_only_with_the_enumeration_flaw(
    service_env: dict[str, Any], inventory_url: str, reveal: bool
) -> None:
    settings = UserSettings(
        **service_env,
        **FAST_ARGON2,
        inventory_url=inventory_url,
        login_reveal_unknown_user=reveal,
    )
    async with running(create_user_app(settings)) as client:
        await signup(client, "known_user")
        wrong = await client.post(
            "/auth/login", json={"username": "known_user", "password": "Wrong-password-1"}
        )
        unknown = await client.post(
            "/auth/login", json={"username": "nobody_here", "password": "Wrong-password-1"}
        )
        assert wrong.status_code == 401
        assert unknown.status_code == (404 if reveal else 401)
        if not reveal:
            assert unknown.json()["detail"] == wrong.json()["detail"]


@pytest.mark.parametrize("bound", [True, False])
async def test_a_page_larger_than_the_maximum_is_422_unless_the_bound_is_off(
    service_env: dict[str, Any], inventory_url: str, bound: bool
) -> None:
    settings = UserSettings(
        **service_env, **FAST_ARGON2, inventory_url=inventory_url, page_size_bound_enabled=bound
    )
    async with running(create_user_app(settings)) as client:
        headers = await signup(client, "paula_pages")
        r = await client.get("/balance/transactions?limit=100000", headers=headers)
        assert r.status_code == (422 if bound else 200), r.text
        if bound:
            assert r.json()["errors"] == [
                {"field": "limit", "message": "Input should be less than or equal to 100"}
            ]
        assert (
            await client.get("/balance/transactions?limit=0", headers=headers)
        ).status_code == 422


# --- verbose-errors, missing-headers, permissive-cors: every service's app ---------------------


@pytest.mark.parametrize("verbose", [False, True])
async def test_problems_carry_class_names_and_tracebacks_only_with_verbose_errors(
    service_env: dict[str, Any], verbose: bool
) -> None:
    async with running(core_app(service_env, verbose_errors=verbose)) as client:
        crashed = await client.get("/boom")
        invalid = await client.post("/items", json={"name": ["x"]})
    assert crashed.status_code == 500 and invalid.status_code == 422
    for r in (crashed, invalid):
        body = r.json()
        if verbose:
            assert "Traceback" in body["traceback"][0]
            assert body["exception"]
        else:
            assert "exception" not in body and "traceback" not in body
            assert_no_leak(r.text)
    if verbose:
        assert crashed.json()["exception"] == "builtins.RuntimeError"
        assert invalid.json()["exception"] == "fastapi.exceptions.RequestValidationError"


@pytest.mark.parametrize("enabled", [True, False])
async def test_security_headers_are_sent_unless_switched_off(
    service_env: dict[str, Any], enabled: bool
) -> None:
    async with running(core_app(service_env, security_headers_enabled=enabled)) as client:
        r = await client.get("/items/1")
    assert r.status_code == 200
    for name in SECURITY_HEADERS:
        assert (name in r.headers) is enabled, name


@pytest.mark.parametrize("reflect", [False, True])
async def test_cors_allows_a_foreign_origin_with_credentials_only_with_the_flaw(
    service_env: dict[str, Any], reflect: bool
) -> None:
    app = core_app(service_env, cors=True, cors_reflect_any_origin=reflect)
    async with running(app) as client:
        simple = await client.get("/items/1", headers={"Origin": EVIL_ORIGIN})
        preflight = await client.options(
            "/items/1",
            headers={"Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        listed = await client.get("/items/1", headers={"Origin": "http://localhost:3000"})
    if reflect:
        assert simple.headers["access-control-allow-origin"] == EVIL_ORIGIN
        assert simple.headers["access-control-allow-credentials"] == "true"
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == EVIL_ORIGIN
    else:
        assert "access-control-allow-origin" not in simple.headers
        assert preflight.status_code == 400
    assert listed.headers["access-control-allow-origin"] == "http://localhost:3000"


# --- trust-any-xff: CNOP_TRUSTED_PROXIES covering every address --------------------------------


def test_trusting_every_proxy_lets_any_client_pick_its_address(
    monkeypatch: pytest.MonkeyPatch, service_env: dict[str, Any]
) -> None:
    monkeypatch.setenv("CNOP_TRUSTED_PROXIES", json.dumps(["0.0.0.0/0", "::/0"]))
    flawed = GatewaySettings(**service_env)
    shipped = GatewaySettings(**service_env, trusted_proxies=[])
    claimed = ["203.0.113.9"]
    peer = "198.51.100.7"
    assert client_ip(peer, claimed, parse_networks(shipped.trusted_proxies)) == peer
    assert client_ip(peer, claimed, parse_networks(flawed.trusted_proxies)) == "203.0.113.9"
    assert client_ip("2001:db8::1", ["192.0.2.1"], parse_networks(flawed.trusted_proxies)) == (
        "192.0.2.1"
    )
