"""The user service against real redis and moto, with a stand-in inventory service over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cnop.core.clock import utc_now_iso
from cnop.core.db import Tables
from cnop.services.user.main import Settings, create_app
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.conftest import assert_no_leak, free_port, running, serve_in_thread

PASSWORD = "Str0ng!Passw0rd"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8192, "argon2_parallelism": 1}

# --- stand-in inventory service (contract shape: prices as decimal strings) -----------------

CATALOGUE: dict[str, dict[str, Any]] = {
    "BTC": {"asset_id": "BTC", "name": "Bitcoin", "price_usd": "50000.00", "is_active": True},
    "ETH": {"asset_id": "ETH", "name": "Ethereum", "price_usd": "3000.00", "is_active": True},
    # Only reachable through the detail route, and priced as a JSON number.
    "DOGE": {"asset_id": "DOGE", "name": "Dogecoin", "price_usd": 0.25, "is_active": False},
}


def inventory_app() -> FastAPI:
    app = FastAPI()
    listed = ("BTC", "ETH")

    @app.get("/inventory/assets")
    async def assets(limit: int = 50, active_only: bool = True) -> dict[str, Any]:
        data = [CATALOGUE[a] for a in listed][:limit]
        return {"data": data, "total_count": len(data), "active_count": len(data)}

    @app.get("/inventory/assets/{asset_id}")
    async def asset(asset_id: str) -> Any:
        item = CATALOGUE.get(asset_id.upper())
        if item is None:
            return JSONResponse({"status": 404}, status_code=404)
        return {"data": {**item, "availability_status": "available"}}

    return app


@pytest.fixture(scope="module")
def inventory_url() -> Iterator[str]:
    with serve_in_thread(inventory_app()) as url:
        yield url


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def settings(service_env: dict[str, Any], inventory_url: str) -> Settings:
    return Settings(**service_env, **FAST_ARGON2, inventory_url=inventory_url)


@asynccontextmanager
async def user_service(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Tables]]:
    app = create_app(settings)
    async with running(app) as client:
        yield client, app.state.ctx.tables


def registration(username: str = "alice_trader", **overrides: Any) -> dict[str, Any]:
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "first_name": "Alice",
        "last_name": "O'Neil-Smith",
    }
    body.update(overrides)
    return body


async def signup(client: httpx.AsyncClient, username: str = "alice_trader") -> dict[str, str]:
    r = await client.post("/auth/register", json=registration(username))
    assert r.status_code == 201, r.text
    r = await client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> Decimal:
    r = await client.get("/balance", headers=headers)
    assert r.status_code == 200, r.text
    return Decimal(r.json()["current_balance"])


def ledger_sum(tables: Tables, username: str) -> Decimal:
    return sum((e.amount for e in tables.ledger.query(username)), Decimal(0))


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert_no_leak(r.text)
    body = r.json()
    assert body["status"] == status and body["request_id"]
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


# --- registration and login -----------------------------------------------------------------


async def test_register_login_and_profile(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        body = registration(
            "Alice_Trader",
            email="Alice@Example.com",
            phone="15551234567",
            date_of_birth="1990-05-17",
            marketing_emails_consent=True,
        )
        r = await client.post("/auth/register", json=body)
        assert r.status_code == 201
        assert r.json() == {"message": "User registered successfully"}

        # Stored lower-case: login works in any case.
        r = await client.post(
            "/auth/login", json={"username": "ALICE_trader", "password": PASSWORD}
        )
        assert r.status_code == 200
        token = r.json()
        assert token["token_type"] == "bearer" and token["expires_in"] == 3600
        headers = {"Authorization": f"Bearer {token['access_token']}"}

        r = await client.get("/auth/profile", headers=headers)
        assert r.status_code == 200
        profile = r.json()
        assert profile["username"] == "alice_trader"
        assert profile["email"] == "alice@example.com"
        assert profile["phone"] == "15551234567"
        assert profile["date_of_birth"] == "1990-05-17"
        assert profile["marketing_emails_consent"] is True
        assert profile["first_name"] == "Alice" and profile["last_name"] == "O'Neil-Smith"
        assert profile["created_at"] and profile["updated_at"]
        assert "password_hash" not in r.text and "argon2" not in r.text

        # New users start at 0.00 USD; the password is stored as an argon2id hash.
        r = await client.get("/balance", headers=headers)
        assert r.json()["current_balance"] == "0.00"
        assert tables.users.get("alice_trader").password_hash.startswith("$argon2id$")


async def test_duplicate_username_or_email_is_409(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        assert (await client.post("/auth/register", json=registration())).status_code == 201
        r = await client.post(
            "/auth/register", json=registration("ALICE_TRADER", email="other@example.com")
        )
        assert "username" in error_fields(problem(r, 409))
        r = await client.post(
            "/auth/register", json=registration("bob_trader", email="ALICE_trader@example.COM")
        )
        assert "email" in error_fields(problem(r, 409))
        # The refused registration left nothing behind: bob can register with his own email.
        r = await client.post("/auth/register", json=registration("bob_trader"))
        assert r.status_code == 201


VALIDATION_CASES: list[tuple[str, dict[str, Any]]] = [
    ("username", {"username": "short"}),
    ("username", {"username": "has-dash_x"}),
    ("username", {"username": "x" * 31}),
    ("username", {"username": "alice_trader\n"}),
    ("password", {"password": "Sh0rt!pass"}),
    ("password", {"password": "N0Special1234"}),
    ("password", {"password": "no_upper_123!"}),
    ("password", {"password": "NO_LOWER_123!"}),
    ("password", {"password": "No_Digits_Here!"}),
    ("password", {"password": "Way!Too!Long!Passw0rd"}),
    ("email", {"email": "not-an-email"}),
    ("first_name", {"first_name": "Al1ce"}),
    ("first_name", {"first_name": ""}),
    ("last_name", {"last_name": "x" * 51}),
    ("last_name", {"last_name": "Smith<script>"}),
    ("phone", {"phone": "555-1234567"}),
    ("phone", {"phone": "123456789"}),
    ("phone", {"phone": "1234567890123456"}),
    ("date_of_birth", {"date_of_birth": "17/05/1990"}),
    ("date_of_birth", {"date_of_birth": "1990-02-30"}),
    ("date_of_birth", {"date_of_birth": f"{time.gmtime().tm_year - 5}-01-01"}),
    ("date_of_birth", {"date_of_birth": "1850-01-01"}),
    ("marketing_emails_consent", {"marketing_emails_consent": "maybe"}),
    ("first_name", {"first_name": None}),
]


async def test_registration_validation_names_the_field(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        for field, override in VALIDATION_CASES:
            r = await client.post("/auth/register", json=registration(**override))
            body = problem(r, 422)
            assert field in error_fields(body), (field, override, body)
            assert PASSWORD not in r.text
        for missing in ("username", "email", "password", "first_name", "last_name"):
            body_in = registration()
            del body_in[missing]
            r = await client.post("/auth/register", json=body_in)
            assert missing in error_fields(problem(r, 422))
        problem(await client.post("/auth/register", content=b"not json"), 422)
        # Nothing above created a user.
        r = await client.post("/auth/register", json=registration())
        assert r.status_code == 201


async def test_login_failures_are_identical_401s(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        await signup(client)
        wrong = await client.post(
            "/auth/login", json={"username": "alice_trader", "password": "Wr0ng!Passw0rd"}
        )
        unknown = await client.post(
            "/auth/login", json={"username": "nobody_here", "password": PASSWORD}
        )
        a, b = problem(wrong, 401), problem(unknown, 401)
        a.pop("request_id"), b.pop("request_id")
        assert a == b
        assert "reason" not in wrong.text and "unknown" not in wrong.text
        # A password that breaks the format rules can never be right: 422, not 401.
        r = await client.post("/auth/login", json={"username": "alice_trader", "password": "x"})
        assert "password" in error_fields(problem(r, 422))
        r = await client.post("/auth/login", json={"username": "a!", "password": PASSWORD})
        assert "username" in error_fields(problem(r, 422))


async def test_logins_queued_past_their_deadline_are_429_before_the_caller_gives_up(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    """One hashing slot and a slow hash: forty logins at once cannot all be checked within the
    gateway's 1 s deadline. Those that would finish late are refused (429, not a 5xx that the
    gateway's breaker would count) while the caller still listens, never answered after it."""
    slow = {"argon2_time_cost": 4, "argon2_memory_cost_kib": 8192, "argon2_max_concurrent": 1}
    settings = Settings(**service_env, **slow, inventory_url=inventory_url)
    async with user_service(settings) as (client, _):
        await signup(client)
        wrong = {"username": "alice_trader", "password": "Wr0ng!Passw0rd"}

        async def attempt() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            reply = await client.post(
                "/auth/login", json=wrong, headers={"X-CNOP-Deadline-Ms": "1000"}
            )
            return reply, time.monotonic() - started

        # Forty: at about 40 ms a hash, one slot checks some 25 in the deadline on an idle
        # machine (twenty all fit there, and nothing was refused).
        results = await asyncio.gather(*(attempt() for _ in range(40)))
    statuses = [reply.status_code for reply, _ in results]
    assert set(statuses) == {401, 429}, statuses
    busy = problem(next(reply for reply, _ in results if reply.status_code == 429), 429)
    assert busy["type"].endswith("password-checks-busy")
    assert all(r.headers["Retry-After"] == "1" for r, _ in results if r.status_code == 429)
    # Answered within the deadline, give or take this in-process client's own scheduling.
    assert max(took for _, took in results) < 1.5, sorted(round(t, 2) for _, t in results)


async def test_protected_routes_need_a_token(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        for method, path in [
            ("GET", "/auth/profile"),
            ("GET", "/balance"),
            ("POST", "/balance/deposit"),
            ("GET", "/balance/transactions"),
            ("GET", "/portfolio"),
            ("GET", "/balance/asset/BTC"),
            ("POST", "/cny/claim"),
        ]:
            r = await client.request(
                method, path, json={"amount": "1.00"}, headers={"Authorization": "Bearer x.y.z"}
            )
            problem(r, 401)


# --- logout ---------------------------------------------------------------------------------


async def test_logout_revokes_the_token(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        headers = await signup(client)
        problem(await client.post("/auth/logout", headers=headers), 422)  # no body
        r = await client.post("/auth/logout", headers=headers, content=b"bye")
        problem(r, 422)
        r = await client.post("/auth/logout", headers=headers, json={})
        assert r.status_code == 200
        assert r.json() == {"message": "Logged out successfully"}
        problem(await client.get("/auth/profile", headers=headers), 401)
        problem(await client.post("/auth/logout", headers=headers, json={}), 401)


async def test_logout_can_revoke_a_second_token_of_the_same_user(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        first = await signup(client)
        r = await client.post(
            "/auth/login", json={"username": "alice_trader", "password": PASSWORD}
        )
        second_token = r.json()["access_token"]
        bob = await signup(client, "bob_trader")
        bob_token = bob["Authorization"].removeprefix("Bearer ")

        r = await client.post("/auth/logout", headers=first, json={"access_token": bob_token})
        problem(r, 403)
        r = await client.post("/auth/logout", headers=first, json={"access_token": "garbage"})
        assert "access_token" in error_fields(problem(r, 422))
        # Refused requests revoked nothing.
        assert (await client.get("/auth/profile", headers=first)).status_code == 200
        assert (await client.get("/auth/profile", headers=bob)).status_code == 200

        r = await client.post("/auth/logout", headers=first, json={"access_token": second_token})
        assert r.status_code == 200
        problem(await client.get("/auth/profile", headers=first), 401)
        second = {"Authorization": f"Bearer {second_token}"}
        problem(await client.get("/auth/profile", headers=second), 401)
        assert (await client.get("/auth/profile", headers=bob)).status_code == 200


# --- profile --------------------------------------------------------------------------------


async def test_a_body_that_is_not_an_object_is_422_never_an_empty_update(
    settings: Settings,
) -> None:
    """``0``, ``"x"`` or ``[1]`` is JSON but no object: FastAPI validates a body model from
    attributes, so such a body passed as an update with no fields (200 "Nothing to update")."""
    async with user_service(settings) as (client, _):
        headers = await signup(client)
        for raw in (b"0", b"false", b'""', b"[]", b"null", b"1", b'"x"', b"[1]"):
            r = await client.put(
                "/auth/profile",
                content=raw,
                headers={**headers, "Content-Type": "application/json"},
            )
            assert r.status_code == 422, (raw, r.status_code, r.text)
        deposit = await client.post(
            "/balance/deposit",
            content=b"0",
            headers={**headers, "Content-Type": "application/json"},
        )
        assert problem(deposit, 422)["errors"] == [
            {"field": "body", "message": "must be a JSON object"}
        ]
        broken = await client.post(
            "/balance/deposit",
            content=b'{"amount": ',
            headers={**headers, "Content-Type": "application/json"},
        )
        # The field is "body", not the character position FastAPI puts where a field name goes.
        errors = problem(broken, 422)["errors"]
        assert [e["field"] for e in errors] == ["body"] and "not valid JSON" in errors[0]["message"]


async def test_profile_update(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        headers = await signup(client)
        await signup(client, "bob_trader")
        before = (await client.get("/auth/profile", headers=headers)).json()

        r = await client.put(
            "/auth/profile",
            headers=headers,
            json={"first_name": "Alicia", "phone": "4915112345678", "email": "New@Example.com"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["message"]
        user = r.json()["user"]
        assert user["first_name"] == "Alicia" and user["last_name"] == "O'Neil-Smith"
        assert user["phone"] == "4915112345678" and user["email"] == "new@example.com"
        assert user["updated_at"] > before["updated_at"]
        assert user["created_at"] == before["created_at"]

        # The old address was released in the same transaction, the new one is taken.
        r = await client.post(
            "/auth/register", json=registration("carol_trader", email="alice_trader@example.com")
        )
        assert r.status_code == 201
        r = await client.post(
            "/auth/register", json=registration("dave_trader", email="new@example.com")
        )
        problem(r, 409)

        r = await client.put(
            "/auth/profile", headers=headers, json={"email": "bob_trader@example.com"}
        )
        assert "email" in error_fields(problem(r, 409))
        r = await client.put("/auth/profile", headers=headers, json={"phone": None})
        assert r.status_code == 200 and r.json()["user"]["phone"] is None

        for bad in (
            {"first_name": None},
            {"last_name": "B4d"},
            {"email": "nope"},
            {"date_of_birth": "2099-01-01"},
            {"marketing_emails_consent": "yes"},
        ):
            r = await client.put("/auth/profile", headers=headers, json=bad)
            assert set(bad) <= error_fields(problem(r, 422)), bad
        profile = (await client.get("/auth/profile", headers=headers)).json()
        assert profile["email"] == "new@example.com" and profile["first_name"] == "Alicia"


# --- money ----------------------------------------------------------------------------------


async def test_deposit_withdraw_ledger_and_transactions(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "100.50"})
        assert r.status_code == 201, r.text
        deposit = r.json()
        assert deposit["success"] is True and deposit["message"]
        assert deposit["transaction_id"] and deposit["timestamp"]
        r = await client.post("/balance/withdraw", headers=headers, json={"amount": 30.25})
        assert r.status_code == 201, r.text
        assert await balance(client, headers) == Decimal("70.25")

        r = await client.post("/balance/withdraw", headers=headers, json={"amount": "70.26"})
        assert problem(r, 422)["type"].endswith("insufficient-funds")
        assert await balance(client, headers) == Decimal("70.25")

        for bad in ("10.001", 0, "-5", "1000000.01", "abc", "NaN", "Infinity", None, True):
            r = await client.post("/balance/deposit", headers=headers, json={"amount": bad})
            assert "amount" in error_fields(problem(r, 422)), bad
        problem(await client.post("/balance/deposit", headers=headers, json={}), 422)

        r = await client.get("/balance/transactions", headers=headers)
        assert r.status_code == 200
        listing = r.json()
        assert listing["total_count"] == 2
        first, second = listing["transactions"]
        assert first["transaction_type"] == "WITHDRAW" and first["amount"] == "-30.25"
        assert second["transaction_type"] == "DEPOSIT" and second["amount"] == "100.50"
        assert second["transaction_id"] == deposit["transaction_id"]
        assert {"status", "description", "created_at"} <= set(first)
        assert first["status"] == "COMPLETED"

        r = await client.get("/balance/transactions?limit=1&offset=1", headers=headers)
        page = r.json()
        assert page["total_count"] == 2 and len(page["transactions"]) == 1
        assert page["transactions"][0]["transaction_id"] == deposit["transaction_id"]
        for query in ("limit=0", "limit=101", "offset=-1", "limit=abc"):
            problem(await client.get(f"/balance/transactions?{query}", headers=headers), 422)

        assert ledger_sum(tables, "alice_trader") == await balance(client, headers)


async def test_daily_limits(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "10000.01"})
        assert problem(r, 422)["type"].endswith("daily-limit-exceeded")
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "6000"})
        assert r.status_code == 201
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "4000.01"})
        assert problem(r, 422)["type"].endswith("daily-limit-exceeded")
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "4000.00"})
        assert r.status_code == 201
        problem(
            await client.post("/balance/deposit", headers=headers, json={"amount": "0.01"}), 422
        )

        r = await client.post("/balance/withdraw", headers=headers, json={"amount": "5000"})
        assert r.status_code == 201
        r = await client.post("/balance/withdraw", headers=headers, json={"amount": "0.01"})
        assert problem(r, 422)["type"].endswith("daily-limit-exceeded")
        assert await balance(client, headers) == Decimal("5000.00")
        assert ledger_sum(tables, "alice_trader") == Decimal("5000.00")


async def test_idempotency_key_executes_once(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        keyed = {**headers, "Idempotency-Key": "dep-0001"}
        first = await client.post("/balance/deposit", headers=keyed, json={"amount": "25.00"})
        again = await client.post("/balance/deposit", headers=keyed, json={"amount": "25"})
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert await balance(client, headers) == Decimal("25.00")

        r = await client.post("/balance/deposit", headers=keyed, json={"amount": "26.00"})
        assert problem(r, 422)["type"].endswith("idempotency-key-reused")
        # Keys are per operation: the same key on withdraw is a new request.
        r = await client.post("/balance/withdraw", headers=keyed, json={"amount": "5.00"})
        assert r.status_code == 201
        bad_key = {**headers, "Idempotency-Key": "no spaces allowed"}
        r = await client.post("/balance/deposit", headers=bad_key, json={"amount": "1.00"})
        problem(r, 422)

        # Concurrent copies of one request: one executes, all answer with its result.
        raced = {**headers, "Idempotency-Key": "race-42"}
        results = await asyncio.gather(
            *(
                client.post("/balance/deposit", headers=raced, json={"amount": "10.00"})
                for _ in range(5)
            )
        )
        assert {r.status_code for r in results} == {201}
        assert len({r.json()["transaction_id"] for r in results}) == 1
        assert await balance(client, headers) == Decimal("30.00")
        assert ledger_sum(tables, "alice_trader") == Decimal("30.00")


@pytest.mark.parametrize("locks_enabled", [True, False])
async def test_concurrent_deposits_never_exceed_the_daily_limit(
    service_env: dict[str, Any],
    inventory_url: str,
    locks_enabled: bool,
) -> None:
    # Without the lock, only the conditional transaction stands between the race and the limit.
    env = dict(service_env)
    settings = Settings(
        **env, **FAST_ARGON2, inventory_url=inventory_url, locks_enabled=locks_enabled
    )
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        results = await asyncio.gather(
            *(
                client.post("/balance/deposit", headers=headers, json={"amount": "1000.00"})
                for _ in range(20)
            )
        )
        statuses = [r.status_code for r in results]
        assert set(statuses) <= {201, 409, 422}, statuses
        for r in results:
            if r.status_code != 201:
                problem(r, r.status_code)
        done = statuses.count(201)
        assert 1 <= done <= 10
        if 409 not in statuses:  # nobody gave up waiting for the lock: the limit was reached
            assert done == 10
        total = await balance(client, headers)
        assert total == Decimal(1000) * done <= Decimal(10000)
        assert ledger_sum(tables, "alice_trader") == total


async def test_red_pocket_once_per_day_counts_toward_deposit_limit(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        r = await client.post("/cny/claim", headers=headers)
        assert r.status_code == 201, r.text
        claim = r.json()
        assert claim["success"] is True and claim["got_red_pocket"] is True
        assert claim["message"] and claim["timestamp"]
        amount = Decimal(claim["amount"])
        assert Decimal("1.00") <= amount <= Decimal("88.88")
        assert amount == amount.quantize(Decimal("0.01"))

        r = await client.post("/cny/claim", headers=headers)
        assert problem(r, 409)["type"].endswith("already-claimed")
        assert await balance(client, headers) == amount

        r = await client.get("/balance/transactions", headers=headers)
        entry = r.json()["transactions"][0]
        assert entry["transaction_type"] == "RED_POCKET" and entry["amount"] == claim["amount"]

        # The claim used part of today's deposit allowance.
        room = Decimal(10000) - amount
        r = await client.post("/balance/deposit", headers=headers, json={"amount": str(room + 1)})
        problem(r, 422)
        r = await client.post("/balance/deposit", headers=headers, json={"amount": str(room)})
        assert r.status_code == 201
        assert ledger_sum(tables, "alice_trader") == Decimal(10000)


async def test_claim_limit_is_a_setting(service_env: dict[str, Any], inventory_url: str) -> None:
    settings = Settings(
        **service_env,
        **FAST_ARGON2,
        inventory_url=inventory_url,
        red_pocket_claims_per_day=2,
        red_pocket_min=Decimal("5.00"),
        red_pocket_max=Decimal("5.00"),
    )
    async with user_service(settings) as (client, _):
        headers = await signup(client)
        for _ in range(2):
            r = await client.post("/cny/claim", headers=headers)
            assert r.status_code == 201 and r.json()["amount"] == "5.00"
        problem(await client.post("/cny/claim", headers=headers), 409)
        assert await balance(client, headers) == Decimal("10.00")


# --- portfolio ------------------------------------------------------------------------------


def give(tables: Tables, username: str, asset_id: str, quantity: str) -> None:
    """What the order service would have written after a buy."""
    now = utc_now_iso()
    tables.holdings(
        username, asset_id, quantity=Decimal(quantity), created_at=now, updated_at=now
    ).save()


async def test_portfolio_values_holdings_at_inventory_prices(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        r = await client.get("/portfolio", headers=headers)
        assert r.json() == {"assets": [], "usd_balance": "0.00", "total_value": "0.00"}

        await client.post("/balance/deposit", headers=headers, json={"amount": "1000.00"})
        give(tables, "alice_trader", "BTC", "0.5")
        give(tables, "alice_trader", "ETH", "2")
        give(tables, "alice_trader", "DOGE", "4000")  # priced via the detail route
        give(tables, "alice_trader", "SOL", "0")  # sold out: not shown
        r = await client.get("/portfolio", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        # 25000 + 6000 + 1000 + 1000 cash = 33000
        assert body["usd_balance"] == "1000.00" and body["total_value"] == "33000.00"
        assets = {a["asset_id"]: a for a in body["assets"]}
        assert set(assets) == {"BTC", "ETH", "DOGE"}
        assert assets["BTC"] == {
            "asset_id": "BTC",
            "quantity": "0.5",
            "current_price": "50000.00",
            "market_value": "25000.00",
            "percentage": "75.76",
        }
        assert assets["ETH"]["market_value"] == "6000.00"
        assert assets["ETH"]["percentage"] == "18.18"
        assert assets["DOGE"]["current_price"] == "0.25"
        assert assets["DOGE"]["market_value"] == "1000.00"
        assert assets["DOGE"]["percentage"] == "3.03"


async def test_asset_balance(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        give(tables, "alice_trader", "BTC", "0.25")
        r = await client.get("/balance/asset/btc", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["asset_id"] == "BTC" and body["asset_name"] == "Bitcoin"
        assert body["quantity"] == "0.25" and body["current_price"] == "50000.00"
        assert body["total_value"] == "12500.00"
        assert body["created_at"] and body["updated_at"]
        problem(await client.get("/balance/asset/ETH", headers=headers), 404)
        for bad in ("BTC-1", "ABCDEFGHIJK", "%20"):
            problem(await client.get(f"/balance/asset/{bad}", headers=headers), 422)


async def test_portfolio_without_inventory_is_503(
    service_env: dict[str, Any],
) -> None:
    settings = Settings(
        **service_env, **FAST_ARGON2, inventory_url=f"http://127.0.0.1:{free_port()}"
    )
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        # Nothing held: no price needed, so the portfolio still answers.
        assert (await client.get("/portfolio", headers=headers)).status_code == 200
        give(tables, "alice_trader", "BTC", "1")
        problem(await client.get("/portfolio", headers=headers), 503)
        problem(await client.get("/balance/asset/BTC", headers=headers), 503)
        # Money does not depend on the inventory.
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "1.00"})
        assert r.status_code == 201


# --- hardening: absurd numbers, exact parsing, idempotency, concurrency ----------------------

ABSURD_AMOUNTS = [
    "1e100",
    "-0",
    "1E-100",
    "NaN",
    "Infinity",
    "1" + "0" * 30,
    "9" * 5000,
    "1e999999999",
    "0.019999999999999999",
    "10.004999999999999",
]


async def test_absurd_amounts_are_422_never_5xx(settings: Settings) -> None:
    async with user_service(settings) as (client, tables):
        headers = {**await signup(client), "Content-Type": "application/json"}
        for n, text in enumerate(ABSURD_AMOUNTS):
            for value in (json.dumps(text), text):  # a JSON string, then a JSON number
                for operation in ("deposit", "withdraw"):
                    keyed = {**headers, "Idempotency-Key": f"absurd-{operation}-{n}-{len(value)}"}
                    r = await client.post(
                        f"/balance/{operation}", content=f'{{"amount": {value}}}', headers=keyed
                    )
                    assert "amount" in error_fields(problem(r, 422)), (operation, value[:40])
        assert await balance(client, headers) == 0
        assert ledger_sum(tables, "alice_trader") == 0


async def test_a_json_number_with_too_many_decimals_is_422_not_rounded(
    settings: Settings,
) -> None:
    """As a float, 0.019999999999999999 is 0.02: it was accepted as 0.02 USD."""
    async with user_service(settings) as (client, _):
        headers = {**await signup(client), "Content-Type": "application/json"}
        r = await client.post(
            "/balance/deposit", content=b'{"amount": 0.019999999999999999}', headers=headers
        )
        assert "amount" in error_fields(problem(r, 422))
        r = await client.post("/balance/deposit", content=b'{"amount": 0.02}', headers=headers)
        assert r.status_code == 201, r.text
        r = await client.post("/balance/deposit", content=b'{"amount": "0.03"}', headers=headers)
        assert r.status_code == 201, r.text
        assert await balance(client, headers) == Decimal("0.05")


async def test_a_refused_withdrawal_is_replayed_on_retry_not_run_again(
    settings: Settings,
) -> None:
    """Only 201s were stored: a refused first attempt ran again on retry, and succeeded once the
    money had arrived. A retry returns the first final answer, a 4xx included."""
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        keyed = {**headers, "Idempotency-Key": "withdraw-early"}
        first = await client.post("/balance/withdraw", headers=keyed, json={"amount": "50.00"})
        first_body = problem(first, 422)
        assert first_body["type"].endswith("insufficient-funds")
        r = await client.post("/balance/deposit", headers=headers, json={"amount": "100.00"})
        assert r.status_code == 201
        again = await client.post("/balance/withdraw", headers=keyed, json={"amount": "50"})
        again_body = problem(again, 422)
        assert again.headers["Idempotent-Replayed"] == "true"
        first_body.pop("request_id"), again_body.pop("request_id")
        assert again_body == first_body
        assert await balance(client, headers) == Decimal("100.00")
        assert ledger_sum(tables, "alice_trader") == Decimal("100.00")


async def test_an_expired_idempotency_key_runs_anew(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    ttl = 7200
    settings = Settings(
        **service_env, **FAST_ARGON2, inventory_url=inventory_url, idempotency_ttl_seconds=ttl
    )
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        keyed = {**headers, "Idempotency-Key": "dep-expiring"}
        first = await client.post("/balance/deposit", headers=keyed, json={"amount": "10.00"})
        assert first.status_code == 201
        record = tables.idempotency.get("alice_trader#deposit#dep-expiring", consistent_read=True)
        left = (record.expires_at - datetime.now(UTC)).total_seconds()
        assert ttl - 5 <= left <= ttl  # DynamoDB's TTL attribute, from the setting

        # Later than the TTL: DynamoDB may not have deleted the item yet (moto never does).
        record.update(
            actions=[tables.idempotency.expires_at.set(datetime.now(UTC) - timedelta(seconds=1))]
        )
        again = await client.post("/balance/deposit", headers=keyed, json={"amount": "10.00"})
        assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
        assert again.json()["transaction_id"] != first.json()["transaction_id"]
        assert await balance(client, headers) == Decimal("20.00")
        # ... and the new result is the one replayed from now on.
        third = await client.post("/balance/deposit", headers=keyed, json={"amount": "10.00"})
        assert third.json() == again.json() and third.headers["Idempotent-Replayed"] == "true"
        assert await balance(client, headers) == Decimal("20.00")


async def test_idempotency_keys_are_scoped_per_user(settings: Settings) -> None:
    async with user_service(settings) as (client, _):
        alice, bob = await signup(client), await signup(client, "bob_trader")
        key = {"Idempotency-Key": "shared-key"}
        a = await client.post("/balance/deposit", headers={**alice, **key}, json={"amount": "5"})
        b = await client.post("/balance/deposit", headers={**bob, **key}, json={"amount": "7"})
        assert a.status_code == b.status_code == 201
        assert a.json()["transaction_id"] != b.json()["transaction_id"]
        assert await balance(client, alice) == Decimal("5.00")
        assert await balance(client, bob) == Decimal("7.00")


@pytest.mark.parametrize("locks_enabled", [True, False], ids=["locks-on", "locks-off"])
async def test_concurrent_retries_of_one_deposit_execute_once_and_answer_alike(
    service_env: dict[str, Any], inventory_url: str, locks_enabled: bool
) -> None:
    settings = Settings(
        **service_env,
        **FAST_ARGON2,
        inventory_url=inventory_url,
        locks_enabled=locks_enabled,
        lock_wait_seconds=30,
        request_budget_seconds=60,  # covers the 30 s lock wait
    )
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        keyed = {**headers, "Idempotency-Key": "twin-deposit"}
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.post("/balance/deposit", headers=keyed, json={"amount": "10.00"})
                    for _ in range(10)
                )
            ),
            60,
        )
        assert [r.status_code for r in results] == [201] * 10
        assert len({r.text for r in results}) == 1
        assert sum("Idempotent-Replayed" not in r.headers for r in results) == 1
        assert await balance(client, headers) == Decimal("10.00")
        assert ledger_sum(tables, "alice_trader") == Decimal("10.00")

        # Copies of a refused withdrawal: one refusal, given to all of them.
        refused = {**headers, "Idempotency-Key": "twin-withdraw"}
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.post("/balance/withdraw", headers=refused, json={"amount": "11.00"})
                    for _ in range(10)
                )
            ),
            60,
        )
        assert [r.status_code for r in results] == [422] * 10
        assert len({(r.json()["type"], r.json()["detail"]) for r in results}) == 1
        assert await balance(client, headers) == Decimal("10.00")


@pytest.mark.parametrize("locks_enabled", [True, False], ids=["locks-on", "locks-off"])
async def test_concurrent_red_pocket_claims_succeed_once_per_day(
    service_env: dict[str, Any], inventory_url: str, locks_enabled: bool
) -> None:
    settings = Settings(
        **service_env,
        **FAST_ARGON2,
        inventory_url=inventory_url,
        locks_enabled=locks_enabled,
        lock_wait_seconds=30,
        request_budget_seconds=60,  # covers the 30 s lock wait
    )
    async with user_service(settings) as (client, tables):
        headers = await signup(client)
        results = await asyncio.wait_for(
            asyncio.gather(*(client.post("/cny/claim", headers=headers) for _ in range(12))), 60
        )
        statuses = [r.status_code for r in results]
        assert statuses.count(201) == 1, statuses
        assert set(statuses) == {201, 409}, statuses
        for r in results:
            if r.status_code == 409:
                problem(r, 409)
        won = next(r for r in results if r.status_code == 201).json()
        assert await balance(client, headers) == Decimal(won["amount"])
        assert ledger_sum(tables, "alice_trader") == Decimal(won["amount"])
