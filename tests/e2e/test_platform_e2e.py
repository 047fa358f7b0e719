"""The platform end to end, through the gateway of a real `lab up`: every contract route, the
validation rules, token handling, login blocking, rate limiting, the circuit breaker and the
order race. Everything here is what a client or an attacker could do."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest

from scenarios.config import LabConfig
from scenarios.runtime.local import LocalRuntime
from tests.conftest import assert_no_leak
from tests.e2e.conftest import Sandbox, next_ip

pytestmark = pytest.mark.e2e
API = "/api/v1"
PASSWORD = "Str0ng!Passw0rd"


def new_user(prefix: str = "e2e") -> dict[str, Any]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    return {
        "username": name,
        "email": f"{name}@example.com",
        "password": PASSWORD,
        "first_name": "Ada",
        "last_name": "Lovelace-King",
    }


async def register_and_login(client: httpx.AsyncClient, **extra: Any) -> tuple[dict, dict]:
    user = {**new_user(), **extra}
    r = await client.post(f"{API}/auth/register", json=user)
    assert r.status_code == 201, r.text
    r = await client.post(
        f"{API}/auth/login", json={"username": user["username"], "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    return user, {"Authorization": f"Bearer {r.json()['access_token']}"}


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    for key in ("type", "title", "status", "detail", "instance", "request_id"):
        assert key in body, key
    assert_no_leak(r.text)
    return body


def test_lab_up_is_quick(sandbox: Sandbox) -> None:
    assert sandbox.startup_seconds < 15, f"lab up took {sandbox.startup_seconds:.1f} s"


async def test_every_contract_route(sandbox: Sandbox) -> None:
    async with sandbox.client() as c:
        r = await c.get("/health")
        assert r.status_code == 200 and r.json()["service"] == "gateway"

        user = new_user()
        user.update(phone="4155550123", date_of_birth="1990-05-17", marketing_emails_consent=True)
        r = await c.post(f"{API}/auth/register", json=user)
        assert r.status_code == 201 and r.json() == {"message": "User registered successfully"}
        problem(await c.post(f"{API}/auth/register", json=user), 409)
        problem(
            await c.post(f"{API}/auth/register", json={**new_user(), "email": user["email"]}), 409
        )

        r = await c.post(
            f"{API}/auth/login", json={"username": user["username"].upper(), "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        login = r.json()
        assert login["token_type"] == "bearer" and login["expires_in"] == 3600
        auth = {"Authorization": f"Bearer {login['access_token']}"}

        r = await c.get(f"{API}/auth/profile", headers=auth)
        profile = r.json()
        assert r.status_code == 200 and profile["username"] == user["username"]
        assert profile["phone"] == "4155550123" and profile["date_of_birth"] == "1990-05-17"
        assert profile["marketing_emails_consent"] is True and "password_hash" not in profile
        r = await c.put(f"{API}/auth/profile", headers=auth, json={"first_name": "Grace"})
        assert r.status_code == 200 and r.json()["user"]["first_name"] == "Grace"
        other, _ = await register_and_login(c)
        problem(
            await c.put(f"{API}/auth/profile", headers=auth, json={"email": other["email"]}), 409
        )

        r = await c.get(f"{API}/inventory/assets")
        listing = r.json()
        assert r.status_code == 200 and listing["total_count"] >= 30
        assert listing["active_count"] <= listing["total_count"]
        assert all(a["is_active"] for a in listing["data"]) and len(listing["data"]) <= 50
        keys = {
            "asset_id",
            "name",
            "description",
            "category",
            "price_usd",
            "is_active",
            "symbol",
            "image",
            "market_cap_rank",
            "price_change_percentage_24h",
            "market_cap",
            "total_volume_24h",
        }
        assert keys <= set(listing["data"][0])
        r = await c.get(f"{API}/inventory/assets", params={"active_only": "false", "limit": 250})
        everything = r.json()
        assert len(everything["data"]) == everything["total_count"] > listing["total_count"]
        assert everything["active_count"] == listing["active_count"] == listing["total_count"]
        problem(await c.get(f"{API}/inventory/assets", params={"limit": 251}), 422)
        r = await c.get(f"{API}/inventory/assets/btc")
        btc = r.json()["data"]
        assert r.status_code == 200 and btc["asset_id"] == "BTC"
        assert 20000 < Decimal(str(btc["price_usd"])) < 100000
        for key in (
            "availability_status",
            "price_change_24h",
            "price_change_percentage_7d",
            "price_change_percentage_30d",
            "high_24h",
            "low_24h",
            "circulating_supply",
            "total_supply",
            "max_supply",
            "ath",
            "ath_change_percentage",
            "ath_date",
            "atl",
            "atl_change_percentage",
            "atl_date",
            "last_updated",
        ):
            assert key in btc, key
        problem(await c.get(f"{API}/inventory/assets/BAD-ID!"), 422)
        problem(await c.get(f"{API}/inventory/assets/NOPE123"), 404)

        r = await c.get(f"{API}/balance", headers=auth)
        assert r.status_code == 200 and Decimal(r.json()["current_balance"]) == 0
        r = await c.post(f"{API}/balance/deposit", headers=auth, json={"amount": "2500.50"})
        assert r.status_code == 201 and r.json()["success"] is True and r.json()["transaction_id"]
        r = await c.post(f"{API}/balance/withdraw", headers=auth, json={"amount": 500.25})
        assert r.status_code == 201 and r.json()["success"] is True
        r = await c.get(f"{API}/balance", headers=auth)
        assert Decimal(str(r.json()["current_balance"])) == Decimal("2000.25")

        r = await c.post(
            f"{API}/orders",
            headers=auth,
            json={"order_type": "market_buy", "asset_id": "btc", "quantity": "0.01"},
        )
        assert r.status_code == 201, r.text
        order = r.json()["data"]
        assert {
            "order_id",
            "order_type",
            "asset_id",
            "quantity",
            "price",
            "status",
            "total_amount",
            "created_at",
        } <= set(order)
        assert order["asset_id"] == "BTC" and order["order_type"] == "market_buy"
        r = await c.post(
            f"{API}/orders",
            headers=auth,
            json={"order_type": "market_sell", "asset_id": "BTC", "quantity": "0.004"},
        )
        assert r.status_code == 201, r.text
        r = await c.get(f"{API}/orders", headers=auth)
        orders = r.json()
        assert r.status_code == 200 and orders["has_more"] is False
        assert [o["order_type"] for o in orders["data"]] == ["market_sell", "market_buy"]
        r = await c.get(f"{API}/orders", headers=auth, params={"limit": 1})
        assert r.json()["has_more"] is True and len(r.json()["data"]) == 1
        r = await c.get(f"{API}/orders/{order['order_id']}", headers=auth)
        assert r.status_code == 200 and r.json()["data"]["order_id"] == order["order_id"]
        problem(await c.get(f"{API}/orders/bad!", headers=auth), 422)
        _, other_auth = await register_and_login(c)
        problem(await c.get(f"{API}/orders/{order['order_id']}", headers=other_auth), 404)

        r = await c.get(f"{API}/assets/BTC/transactions", headers=auth)
        trades = r.json()["data"]
        assert r.status_code == 200 and {t["transaction_type"] for t in trades} == {"BUY", "SELL"}
        r = await c.get(f"{API}/balance/asset/BTC", headers=auth)
        held = r.json()
        assert r.status_code == 200 and Decimal(str(held["quantity"])) == Decimal("0.006")
        problem(await c.get(f"{API}/balance/asset/ETH", headers=auth), 404)

        r = await c.get(f"{API}/balance/transactions", headers=auth)
        txs = r.json()
        assert r.status_code == 200 and txs["total_count"] == 4
        ledger = sum(Decimal(str(t["amount"])) for t in txs["transactions"])
        balance = Decimal(
            str((await c.get(f"{API}/balance", headers=auth)).json()["current_balance"])
        )
        assert ledger == balance

        r = await c.get(f"{API}/portfolio", headers=auth)
        portfolio = r.json()
        assert r.status_code == 200 and portfolio["assets"][0]["asset_id"] == "BTC"
        assert Decimal(str(portfolio["usd_balance"])) == balance

        r = await c.get(f"{API}/insights/portfolio", headers=auth)
        insight = r.json()["data"]
        assert r.status_code == 200 and insight["source"] in ("fallback", "cache", "llm")
        assert insight["summary"] and insight["generated_at"]

        r = await c.post(f"{API}/cny/claim", headers=auth)
        assert r.status_code == 201 and r.json()["got_red_pocket"] is True
        problem(await c.post(f"{API}/cny/claim", headers=auth), 409)

        problem(await c.post(f"{API}/auth/logout", headers=auth), 422)
        r = await c.post(f"{API}/auth/logout", headers=auth, json={})
        assert r.status_code == 200 and r.json() == {"message": "Logged out successfully"}
        problem(await c.get(f"{API}/balance", headers=auth), 401)

        problem(await c.get(f"{API}/no/such/route"), 404)


INVALID_REGISTRATIONS = [
    ("username", {"username": "short"}),
    ("username", {"username": "has space__"}),
    ("password", {"password": "alllowercase1!x"}),
    ("password", {"password": "NoDigitsHere!!"}),
    ("password", {"password": "NoSpecial123abc"}),
    ("password", {"password": "Sh0rt!"}),
    ("password", {"password": "Waaaaaaaaaaaaaaay2Long!"}),
    ("email", {"email": "not-an-email"}),
    ("first_name", {"first_name": "R2D2"}),
    ("last_name", {"last_name": ""}),
    ("phone", {"phone": "12345"}),
    ("date_of_birth", {"date_of_birth": "2020-01-01"}),
    ("date_of_birth", {"date_of_birth": "17/05/1990"}),
]


async def test_validation_rules_answer_422_naming_the_field(sandbox: Sandbox) -> None:
    async with sandbox.client() as c:
        for field, change in INVALID_REGISTRATIONS:
            body = problem(await c.post(f"{API}/auth/register", json={**new_user(), **change}), 422)
            assert field in str(body), (field, body)
        missing = new_user()
        del missing["last_name"]
        assert "last_name" in str(problem(await c.post(f"{API}/auth/register", json=missing), 422))
        problem(
            await c.post(f"{API}/auth/login", json={"username": "valid_user", "password": "x"}), 422
        )

        _, auth = await register_and_login(c)
        for amount in (0, -5, "1.001", "1000000.01", "NaN", "ten"):
            body = problem(
                await c.post(f"{API}/balance/deposit", headers=auth, json={"amount": amount}), 422
            )
            assert "amount" in str(body)
        problem(await c.post(f"{API}/balance/withdraw", headers=auth, json={"amount": 1}), 422)
        for _ in range(2):
            r = await c.post(f"{API}/balance/deposit", headers=auth, json={"amount": 5000})
            assert r.status_code == 201, r.text
        problem(await c.post(f"{API}/balance/deposit", headers=auth, json={"amount": 1}), 422)

        bad_orders = [
            ("order_type", {"order_type": "market_hold", "asset_id": "BTC", "quantity": 1}),
            ("order_type", {"order_type": "limit_buy", "asset_id": "BTC", "quantity": 1}),
            ("asset_id", {"order_type": "market_buy", "asset_id": "B-T-C", "quantity": 1}),
            ("quantity", {"order_type": "market_buy", "asset_id": "BTC", "quantity": "0.0001"}),
            ("quantity", {"order_type": "market_buy", "asset_id": "BTC", "quantity": 0}),
            ("price", {"order_type": "market_buy", "asset_id": "BTC", "quantity": 1, "price": -1}),
        ]
        for field, order in bad_orders:
            r = await c.post(f"{API}/orders", headers=auth, json=order)
            if order["order_type"] == "limit_buy":
                problem(r, 422)
            else:
                assert field in str(problem(r, 422)), (field, r.text)
        # The maximum order value is checked at the execution price, whatever the client says.
        r = await c.post(
            f"{API}/orders",
            headers=auth,
            json={"order_type": "market_buy", "asset_id": "BTC", "quantity": 1, "price": 1},
        )
        problem(r, 422)
        problem(
            await c.post(
                f"{API}/orders",
                headers=auth,
                json={"order_type": "market_sell", "asset_id": "ETH", "quantity": 1},
            ),
            422,
        )


async def test_refused_tokens(sandbox: Sandbox) -> None:
    secret = (sandbox.home / "jwt_secret").read_text().strip()
    async with sandbox.client() as c:
        _, auth = await register_and_login(c)
        token = auth["Authorization"].split()[1]
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience="cnop-api")
        expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, secret, "HS256")
        none_alg = jwt.encode(claims, None, algorithm="none")
        wrong_aud = jwt.encode({**claims, "aud": "someone-else"}, secret, "HS256")
        wrong_iss = jwt.encode({**claims, "iss": "evil"}, secret, "HS256")
        forged = jwt.encode(claims, "not-the-secret-" + "z" * 30, "HS256")
        head, body, sig = token.split(".")
        tampered = ".".join([head, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"), sig])
        for name, header in {
            "missing": None,
            "malformed": "Bearer not.a.jwt",
            "no-scheme": token,
            "expired": f"Bearer {expired}",
            "alg-none": f"Bearer {none_alg}",
            "wrong-audience": f"Bearer {wrong_aud}",
            "wrong-issuer": f"Bearer {wrong_iss}",
            "forged": f"Bearer {forged}",
            "tampered": f"Bearer {tampered}",
        }.items():
            headers = {"Authorization": header} if header else {}
            r = await c.get(f"{API}/balance", headers=headers)
            assert r.status_code == 401, (name, r.text)
            problem(r, 401)
        assert (await c.get(f"{API}/balance", headers=auth)).status_code == 200
        assert (await c.post(f"{API}/auth/logout", headers=auth, json={})).status_code == 200
        problem(await c.get(f"{API}/balance", headers=auth), 401)
        problem(await c.get(f"{API}/orders", headers=auth), 401)


async def test_backends_answer_the_platform_only(sandbox: Sandbox) -> None:
    operator = LocalRuntime(LabConfig(home=sandbox.home, port_offset=sandbox.offset))
    inventory = operator.endpoints().services["inventory"]
    user = operator.endpoints().services["user"]
    async with httpx.AsyncClient(timeout=10) as direct:
        # Straight to a backend, the gateway's login protection and limits would be skipped.
        problem(await direct.get(f"{inventory}/inventory/assets/BTC"), 403)
        problem(
            await direct.post(f"{user}/auth/login", json={"username": "x", "password": "y"}), 403
        )
        wrong = {"X-CNOP-Internal-Token": (sandbox.home / "jwt_secret").read_text().strip()}
        problem(await direct.get(f"{inventory}/inventory/assets/BTC", headers=wrong), 403)
        assert (await direct.get(f"{inventory}/health")).status_code == 200
        r = await direct.get(
            f"{inventory}/inventory/assets/BTC", headers=operator.internal_headers()
        )
        assert r.status_code == 200, r.text
    # Through the gateway everything works: it and the services prove themselves to each other
    # (an order needs order -> inventory, a token check gateway -> auth).
    async with sandbox.client() as c:
        _, auth = await register_and_login(c)
        r = await c.post(f"{API}/balance/deposit", headers=auth, json={"amount": "100"})
        assert r.status_code == 201, r.text
        r = await c.post(
            f"{API}/orders",
            headers=auth,
            json={"order_type": "market_buy", "asset_id": "DOGE", "quantity": "1"},
        )
        assert r.status_code == 201, r.text


async def test_odd_paths_deep_json_and_huge_bodies_are_4xx_through_the_gateway(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as c:
        for segment in ("BTC%3F", "%00", "%23", "%2541", "%FF", "BTC%0A"):
            problem(await c.get(f"{API}/inventory/assets/{segment}"), 422)
        problem(await c.get(f"{API}/inventory/assets/a%2Fb"), 404)
        problem(await c.get(f"{API}/inventory/assets?limit={'9' * 5000}"), 422)
        deep = b"[" * 50_000
        r = await c.post(
            f"{API}/auth/login", content=deep, headers={"Content-Type": "application/json"}
        )
        problem(r, 422)

        async def five_mib() -> Any:
            for _ in range(80):
                yield b" " * 65536

        problem(await c.post(f"{API}/auth/register", content=five_mib()), 413)


async def test_five_failed_logins_block_the_ip_but_not_others(sandbox: Sandbox) -> None:
    async with sandbox.client() as setup:
        user, _ = await register_and_login(setup)
    wrong = {"username": user["username"], "password": "Wr0ng!Password"}
    right = {"username": user["username"], "password": PASSWORD}
    async with sandbox.client() as attacker:
        for _ in range(5):
            problem(await attacker.post(f"{API}/auth/login", json=wrong), 401)
        problem(await attacker.post(f"{API}/auth/login", json=wrong), 403)
        problem(await attacker.post(f"{API}/auth/login", json=right), 403)
    async with sandbox.client() as legit:
        assert (await legit.post(f"{API}/auth/login", json=right)).status_code == 200


async def test_a_flood_from_one_ip_gets_429_with_headers(sandbox: Sandbox) -> None:
    statuses: list[int] = []
    limited: list[httpx.Response] = []
    async with sandbox.client() as flood:
        sem = asyncio.Semaphore(40)

        async def hit() -> None:
            async with sem:
                r = await flood.get(f"{API}/inventory/assets", params={"limit": 1})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    limited.append(r)

        started = time.monotonic()
        await asyncio.gather(*(hit() for _ in range(1400)))
        elapsed = time.monotonic() - started
    # GCRA: a burst of the limit, then the steady rate of 1000/min (16.7/s) while it lasts.
    allowance = 1000 + 1000 / 60 * elapsed + 2
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(200) <= allowance and limited, (counts, elapsed)
    assert 500 not in statuses
    r = limited[0]
    problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert header in r.headers, header
    async with sandbox.client() as bystander:  # other clients are not affected
        assert (await bystander.get(f"{API}/inventory/assets")).status_code == 200


async def test_breaker_opens_answers_fast_and_recovers(sandbox: Sandbox) -> None:
    from scenarios.config import LabConfig
    from scenarios.runtime import current_runtime

    runtime = current_runtime(LabConfig(home=sandbox.home, port_offset=sandbox.offset))
    ip = next_ip()
    runtime.kill("inventory")
    try:
        async with sandbox.client(ip) as c:
            for _ in range(10):  # enough failures to open it (5 in a row, retries included)
                r = await c.get(f"{API}/inventory/assets/BTC")
                problem(r, r.status_code)
                assert r.status_code in (502, 503, 504), r.text
            timings = []
            for _ in range(20):
                started = time.perf_counter()
                r = await c.get(f"{API}/inventory/assets/BTC")
                timings.append(time.perf_counter() - started)
                problem(r, 503)
                assert r.headers["retry-after"]
            # At once: a few ms on an idle machine, 10 ms measured under load (a dozen
            # processes on 2 cores); calling the dead upstream instead costs its two retries'
            # backoff, at least 75 ms (25-50 ms, then 50-100 ms).
            assert statistics.median(timings) < 0.050, timings
            # Other upstreams are not affected.
            _, auth = await register_and_login(c)
            assert (await c.get(f"{API}/balance", headers=auth)).status_code == 200
    finally:
        runtime.start("inventory")
    async with sandbox.client(ip) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = await c.get(f"{API}/inventory/assets/BTC")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.5)
        assert r.status_code == 200, r.text
        for _ in range(5):
            assert (await c.get(f"{API}/inventory/assets/BTC")).status_code == 200
        health = (await c.get("/health")).json()
        assert "closed" in str(health), health


async def test_fifty_concurrent_buys_for_a_user_who_can_afford_ten(sandbox: Sandbox) -> None:
    async with sandbox.client() as c:
        _, auth = await register_and_login(c)
        price = Decimal(
            str((await c.get(f"{API}/inventory/assets/BTC")).json()["data"]["price_usd"])
        )
        quantity = (Decimal(100) / price).quantize(Decimal("0.00000001"))
        cost = quantity * price
        deposit = (cost * Decimal("10.5")).quantize(Decimal("0.01"))
        r = await c.post(f"{API}/balance/deposit", headers=auth, json={"amount": str(deposit)})
        assert r.status_code == 201, r.text
        order = {"order_type": "market_buy", "asset_id": "BTC", "quantity": str(quantity)}

        async def buy() -> httpx.Response:
            # A 409 (the 1 s lock wait ran out: nothing was executed) is sent again after its
            # Retry-After, as a well-behaved client and the order-race drill do: on a loaded
            # machine the lock holders are slow enough that a second of waiting lost
            # affordable buys (9 to 15 of the 50 were 409s with 10 fills, so at the edge).
            for _ in range(3):
                r = await c.post(f"{API}/orders", headers=auth, json=order)
                if r.status_code != 409:
                    return r
                await asyncio.sleep(int(r.headers["retry-after"]))
            return await c.post(f"{API}/orders", headers=auth, json=order)

        responses = await asyncio.gather(*(buy() for _ in range(50)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 10, statuses
        # 429: past the 20 requests a user may have in flight; 409: the lock wait ran out
        # every time.
        assert all(s in (201, 409, 422, 429) for s in statuses), statuses
        for r in responses:
            if r.status_code != 201:
                problem(r, r.status_code)
        balance = Decimal(
            str((await c.get(f"{API}/balance", headers=auth)).json()["current_balance"])
        )
        assert balance >= 0
        txs = (
            await c.get(f"{API}/balance/transactions", headers=auth, params={"limit": 100})
        ).json()
        assert sum(Decimal(str(t["amount"])) for t in txs["transactions"]) == balance
        held = (await c.get(f"{API}/balance/asset/BTC", headers=auth)).json()
        trades = (await c.get(f"{API}/assets/BTC/transactions", headers=auth)).json()["data"]
        assert len(trades) == 10
        assert sum(Decimal(str(t["quantity"])) for t in trades) == Decimal(str(held["quantity"]))
        assert Decimal(str(held["quantity"])) == quantity * 10
