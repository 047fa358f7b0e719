"""Order service against real Redis and a moto DynamoDB server, with a stand-in inventory.

The inventory stand-in is a tiny FastAPI app on a real port (the real inventory service is a
separate process in the platform); everything else is the order service's own code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cnop.core.breaker import State
from cnop.core.clock import utc_now_iso
from cnop.core.db import Tables
from cnop.core.money import qty_str
from cnop.services.auth.main import Settings as AuthSettings
from cnop.services.auth.main import create_app as create_auth_app
from cnop.services.gateway.main import Settings as GatewaySettings
from cnop.services.gateway.main import create_app as create_gateway_app
from cnop.services.order.main import Settings, create_app
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY

from tests.conftest import assert_no_leak, free_port, running, serve_in_thread

# Prices as the inventory sends them: JSON strings of decimals (and one plain number).
PRICES: dict[str, Any] = {
    "BTC": "50000.00",
    "ETH": 2500.5,
    "DOGE": "0.10",
    "RACE": "10.00",
    "SHIB": "0.00001234",
    "FREE": "0.00",
}
INACTIVE = {"OLD": "3.00"}


def _inventory_app() -> FastAPI:
    app = FastAPI()

    @app.get("/inventory/assets/{asset_id}")
    async def asset(asset_id: str) -> JSONResponse:
        if asset_id == "BOOM":
            return JSONResponse({"detail": "boom"}, status_code=500)
        price = PRICES.get(asset_id, INACTIVE.get(asset_id))
        if price is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(
            {
                "data": {
                    "asset_id": asset_id,
                    "name": asset_id.title(),
                    "price_usd": price,
                    "is_active": asset_id not in INACTIVE,
                    "category": "test",
                }
            }
        )

    return app


@pytest.fixture(scope="module")
def inventory_url() -> Iterator[str]:
    with serve_in_thread(_inventory_app()) as url:
        yield url


# The stand-in inventory runs in a thread of the test process and shares its interpreter (and
# the GIL) with the test and the order service: on a loaded CI machine a price call has been
# seen to take over the production 1 s. These tests are about money and idempotency, not time
# (the budgets have their own tests), so the order service here waits patiently.
PATIENT = {"request_budget_seconds": 30, "internal_timeout_seconds": 10}


@asynccontextmanager
async def order_service(
    service_env: dict[str, Any], inventory_url: str, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = {**service_env, **PATIENT, "inventory_url": inventory_url, **overrides}
    app = create_app(Settings(**settings))
    async with running(app) as client:
        yield app, client


def tables_of(app: FastAPI) -> Tables:
    return app.state.ctx.tables


def auth(app: FastAPI, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.ctx.tokens.issue(username).token}"}


def fund(app: FastAPI, username: str, amount: str) -> None:
    """What registration plus one deposit leave behind: a balance and its ledger entry."""
    tables = tables_of(app)
    now = utc_now_iso()
    tables.balances(username, usd_balance=Decimal(amount), created_at=now, updated_at=now).save()
    tables.ledger(
        username,
        f"{now}#txn_seed",
        transaction_id="txn_seed",
        transaction_type="DEPOSIT",
        amount=Decimal(amount),
        created_at=now,
    ).save()


def balance(app: FastAPI, username: str) -> Decimal:
    return tables_of(app).balances.get(username, consistent_read=True).usd_balance


def holding(app: FastAPI, username: str, asset_id: str) -> Decimal:
    model = tables_of(app).holdings
    try:
        return model.get(username, asset_id, consistent_read=True).quantity
    except model.DoesNotExist:
        return Decimal(0)


def ledger_sum(app: FastAPI, username: str) -> Decimal:
    return sum(
        (e.amount for e in tables_of(app).ledger.query(username, consistent_read=True)),
        Decimal(0),
    )


def trades_sum(app: FastAPI, username: str, asset_id: str) -> Decimal:
    model = tables_of(app).asset_ledger
    entries = model.query(
        username, model.entry_key.startswith(f"{asset_id}#"), consistent_read=True
    )
    return sum((e.quantity for e in entries), Decimal(0))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def buy(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    asset_id: str,
    quantity: str,
    order_type: str = "market_buy",
    **extra: Any,
) -> httpx.Response:
    body = {"order_type": order_type, "asset_id": asset_id, "quantity": quantity, **extra}
    return await client.post("/orders", json=body, headers=headers)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert_no_leak(r.text)
    body = r.json()
    assert body["status"] == status and body["detail"] and body["request_id"]
    return body


async def test_buy_executes_at_inventory_price_and_keeps_ledgers_in_step(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "alice_trader", "10000.00")
        headers = auth(app, "alice_trader")
        completed = counter("cnop_orders_total", order_type="market_buy", result="completed")

        # The client's price is validated but ignored: the order executes at 50000.00.
        r = await buy(client, headers, "btc", "0.1", price="1")
        assert r.status_code == 201, r.text
        data = r.json()["data"]
        assert set(data) == {
            "order_id",
            "order_type",
            "asset_id",
            "quantity",
            "price",
            "status",
            "total_amount",
            "created_at",
        }
        assert data["asset_id"] == "BTC" and data["order_type"] == "market_buy"
        assert (data["quantity"], data["price"], data["total_amount"]) == (
            "0.1",
            "50000.00",
            "5000.00",
        )
        assert data["status"] == "completed"
        assert counter(
            "cnop_orders_total", order_type="market_buy", result="completed"
        ) == pytest.approx(completed + 1)

        # A JSON-number price from inventory is used exactly, and a buy (a debit) rounds up:
        # 2500.5 * 0.003 = 7.5015 -> 7.51.
        r = await buy(client, headers, "ETH", "0.003")
        assert r.status_code == 201, r.text
        assert r.json()["data"]["total_amount"] == "7.51"
        # A sub-cent price keeps its digits.
        r = await buy(client, headers, "SHIB", "1000000")
        assert r.status_code == 201, r.text
        assert r.json()["data"]["price"] == "0.00001234"
        assert r.json()["data"]["total_amount"] == "12.34"

        assert balance(app, "alice_trader") == Decimal("4980.15")
        assert ledger_sum(app, "alice_trader") == balance(app, "alice_trader")
        assert holding(app, "alice_trader", "BTC") == Decimal("0.1")
        assert trades_sum(app, "alice_trader", "BTC") == Decimal("0.1")

        r = await client.get(f"/orders/{data['order_id']}", headers=headers)
        assert r.status_code == 200
        assert r.json()["data"] == data


async def test_sell_credits_usd_and_cannot_sell_more_than_held(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "bob_trader", "1000.00")
        headers = auth(app, "bob_trader")
        assert (await buy(client, headers, "DOGE", "100")).status_code == 201

        r = await buy(client, headers, "DOGE", "100.5", order_type="market_sell")
        body = assert_problem(r, 422)
        assert "holdings" in body["detail"]
        r = await buy(client, headers, "ETH", "1", order_type="market_sell")
        assert_problem(r, 422)

        r = await buy(client, headers, "DOGE", "40", order_type="market_sell")
        assert r.status_code == 201, r.text
        assert r.json()["data"]["total_amount"] == "4.00"
        assert balance(app, "bob_trader") == Decimal("994.00")
        assert holding(app, "bob_trader", "DOGE") == Decimal("60")
        assert ledger_sum(app, "bob_trader") == Decimal("994.00")
        assert trades_sum(app, "bob_trader", "DOGE") == Decimal("60")


async def test_rejections_are_422_problems_and_counted(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "carol_trader", "50000.00")
        headers = auth(app, "carol_trader")
        rejected = counter("cnop_orders_total", order_type="market_buy", result="rejected")

        # Max order value is checked at the execution price, whatever the client claims.
        r = await buy(client, headers, "BTC", "0.3", price="0.01")
        body = assert_problem(r, 422)
        assert "maximum" in body["detail"]
        assert_problem(await buy(client, headers, "OLD", "1"), 422)  # inactive asset
        assert_problem(await buy(client, headers, "DOGE", "0.001"), 422)  # worth below a cent
        assert_problem(await buy(client, headers, "FREE", "1"), 422)  # no price to execute at
        assert counter(
            "cnop_orders_total", order_type="market_buy", result="rejected"
        ) == pytest.approx(rejected + 4)

        # Not enough USD: the conditional transaction refuses, nothing is written.
        fund(app, "poor_trader", "5.00")
        poor = auth(app, "poor_trader")
        conflicts = counter("cnop_transaction_conflicts_total", operation="order")
        body = assert_problem(await buy(client, poor, "RACE", "1"), 422)
        assert "funds" in body["detail"]
        assert counter("cnop_transaction_conflicts_total", operation="order") == conflicts + 1
        assert balance(app, "poor_trader") == Decimal("5.00")
        assert (await client.get("/orders", headers=poor)).json()["data"] == []
        # No balance item at all (never registered here) is insufficient funds too.
        assert_problem(await buy(client, auth(app, "ghost_trader"), "DOGE", "1"), 422)

        assert_problem(await buy(client, headers, "NOPE", "1"), 404)  # unknown asset
        assert balance(app, "carol_trader") == Decimal("50000.00")


async def test_bad_input_is_422_and_limit_orders_are_not_implemented(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "dave_trader", "1000.00")
        headers = auth(app, "dave_trader")
        for order_type in ("limit_buy", "limit_sell"):
            body = assert_problem(await buy(client, headers, "BTC", "1", order_type), 422)
            assert "not implemented" in body["detail"]
            assert body["errors"][0]["field"] == "order_type"
        bad_bodies: dict[str, dict[str, Any]] = {
            "order_type": {"order_type": "stop_loss", "asset_id": "BTC", "quantity": "1"},
            "asset_id": {"order_type": "market_buy", "asset_id": "BTC-USD", "quantity": "1"},
            "quantity": {"order_type": "market_buy", "asset_id": "BTC", "quantity": "0.0009"},
            "quantity ": {
                "order_type": "market_buy",
                "asset_id": "BTC",
                "quantity": "0.1234567891",
            },
            "price": {"order_type": "market_buy", "asset_id": "BTC", "quantity": "1", "price": 0},
            "nan": {"order_type": "market_buy", "asset_id": "BTC", "quantity": "NaN"},
            "long id": {"order_type": "market_buy", "asset_id": "A" * 11, "quantity": "1"},
        }
        for name, payload in bad_bodies.items():
            r = await client.post("/orders", json=payload, headers=headers)
            body = assert_problem(r, 422)
            assert body["errors"], name
        r = await client.post("/orders", content=b"{not json", headers=headers)
        assert_problem(r, 422)
        assert_problem(await buy(client, {}, "BTC", "1"), 401)
        for order_id in ("short", "x" * 51, "ord-with-dash-123"):
            assert_problem(await client.get(f"/orders/{order_id}", headers=headers), 422)
        assert_problem(await client.get("/orders/ord_0000000000000abc", headers=headers), 404)
        r = await client.get("/orders", params={"limit": 101}, headers=headers)
        assert_problem(r, 422)
        assert_problem(await client.get("/assets/BTC-1/transactions", headers=headers), 422)
        assert balance(app, "dave_trader") == Decimal("1000.00")


async def test_order_history_paging_filters_and_privacy(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "erin_trader", "5000.00")
        fund(app, "frank_trader", "100.00")
        erin, frank = auth(app, "erin_trader"), auth(app, "frank_trader")
        plan = [
            ("market_buy", "DOGE", "10"),
            ("market_buy", "ETH", "0.1"),
            ("market_buy", "DOGE", "20"),
            ("market_sell", "DOGE", "5"),
            ("market_buy", "BTC", "0.001"),
        ]
        ids = []
        for order_type, asset_id, quantity in plan:
            r = await buy(client, erin, asset_id, quantity, order_type)
            assert r.status_code == 201, r.text
            ids.append(r.json()["data"]["order_id"])
        newest_first = ids[::-1]

        r = await client.get("/orders", headers=erin)
        assert [o["order_id"] for o in r.json()["data"]] == newest_first
        assert r.json()["has_more"] is False
        r = await client.get("/orders", params={"limit": 2}, headers=erin)
        assert [o["order_id"] for o in r.json()["data"]] == newest_first[:2]
        assert r.json()["has_more"] is True
        r = await client.get("/orders", params={"limit": 2, "offset": 4}, headers=erin)
        assert [o["order_id"] for o in r.json()["data"]] == newest_first[4:]
        assert r.json()["has_more"] is False
        r = await client.get("/orders", params={"asset_id": "doge"}, headers=erin)
        assert [o["order_id"] for o in r.json()["data"]] == [ids[3], ids[2], ids[0]]
        params = {"asset_id": "DOGE", "order_type": "market_buy", "limit": 1}
        r = await client.get("/orders", params=params, headers=erin)
        assert [o["order_id"] for o in r.json()["data"]] == [ids[2]]
        assert r.json()["has_more"] is True
        r = await client.get("/orders", params={"order_type": "market_sell"}, headers=erin)
        assert [o["order_id"] for o in r.json()["data"]] == [ids[3]]

        # Another user's order does not exist for frank, and his history is his own.
        assert_problem(await client.get(f"/orders/{ids[0]}", headers=frank), 404)
        assert (await client.get("/orders", headers=frank)).json() == {
            "data": [],
            "has_more": False,
        }

        r = await client.get("/assets/doge/transactions", headers=erin)
        assert r.status_code == 200
        trades = r.json()["data"]
        assert [(t["transaction_type"], t["quantity"]) for t in trades] == [
            ("SELL", "5"),
            ("BUY", "20"),
            ("BUY", "10"),
        ]
        assert {t["asset_id"] for t in trades} == {"DOGE"}
        assert set(trades[0]) == {
            "asset_id",
            "transaction_type",
            "quantity",
            "price",
            "status",
            "timestamp",
        }
        assert trades[0]["price"] == "0.10" and trades[0]["status"] == "COMPLETED"
        r = await client.get("/assets/DOGE/transactions", params={"limit": 1}, headers=erin)
        assert len(r.json()["data"]) == 1 and r.json()["has_more"] is True
        assert (await client.get("/assets/DOGE/transactions", headers=frank)).json()["data"] == []


async def test_idempotency_key_replays_the_first_result(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "gina_trader", "1000.00")
        headers = {**auth(app, "gina_trader"), "Idempotency-Key": "order-key-1"}
        first = await buy(client, headers, "DOGE", "100")
        assert first.status_code == 201, first.text
        again = await buy(client, headers, "doge", "100.0")  # the same request, spelt otherwise
        assert again.status_code == 201
        assert again.json() == first.json()
        assert balance(app, "gina_trader") == Decimal("990.00")
        assert len((await client.get("/orders", headers=headers)).json()["data"]) == 1

        body = assert_problem(await buy(client, headers, "DOGE", "200"), 422)
        assert "Idempotency-Key" in body["detail"]
        bad_key = {**headers, "Idempotency-Key": "spaces are not allowed"}
        assert_problem(await buy(client, bad_key, "DOGE", "1"), 422)

        # Copies racing without a lock: one transaction commits, the others replay it.
        async with order_service(service_env, inventory_url, locks_enabled=False) as (_, raw):
            twin = {**headers, "Idempotency-Key": "order-key-2"}
            results = await asyncio.gather(*(buy(raw, twin, "DOGE", "50") for _ in range(8)))
        assert {r.status_code for r in results} == {201}
        assert len({r.json()["data"]["order_id"] for r in results}) == 1
        assert balance(app, "gina_trader") == Decimal("985.00")
        assert ledger_sum(app, "gina_trader") == Decimal("985.00")


async def test_inventory_failures_are_503_problems(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with order_service(service_env, dead) as (app, client):
        fund(app, "hank_trader", "1000.00")
        headers = auth(app, "hank_trader")
        r = await buy(client, headers, "BTC", "0.01")
        assert_problem(r, 503)
        assert "Retry-After" in r.headers
    async with order_service(service_env, inventory_url) as (app, client):
        assert_problem(await buy(client, headers, "BOOM", "1"), 503)
        assert balance(app, "hank_trader") == Decimal("1000.00")


async def test_order_events_are_logged(
    service_env: dict[str, Any], inventory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with order_service(service_env, inventory_url, log_level="INFO") as (app, client):
        fund(app, "ivan_trader", "20.00")
        headers = auth(app, "ivan_trader")
        r = await buy(client, headers, "RACE", "1")
        assert r.status_code == 201
        assert (await buy(client, headers, "RACE", "2")).status_code == 422
    events = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"event"' in line
    ]
    done = next(e for e in events if e["event"] == "order_completed")
    assert done["order_id"] == r.json()["data"]["order_id"] and done["total"] == "10.00"
    assert done["user"] == "ivan_trader" and done["service"] == "order"
    rejected = next(e for e in events if e["event"] == "order_rejected")
    assert rejected["reason"] == "insufficient_funds"


async def _race(app: FastAPI, client: httpx.AsyncClient, n: int = 50) -> list[int]:
    """50 simultaneous buys of 10.00 USD each by a user who can afford exactly 10."""
    fund(app, "race_trader", "100.00")
    headers = auth(app, "race_trader")
    results = await asyncio.gather(*(buy(client, headers, "RACE", "1") for _ in range(n)))
    for r in results:
        if r.status_code != 201:
            assert_no_leak(r.text)
    return [r.status_code for r in results]


def _invariants_hold(app: FastAPI, completed: int) -> bool:
    usd = balance(app, "race_trader")
    return (
        completed <= 10
        and usd >= 0
        and usd == Decimal(100) - 10 * completed
        and ledger_sum(app, "race_trader") == usd
        and trades_sum(app, "race_trader", "RACE") == holding(app, "race_trader", "RACE")
        and holding(app, "race_trader", "RACE") == completed
    )


def patient_racers(locks_enabled: bool) -> dict[str, Any]:
    """Settings for a race where everyone waits for the lock: a 30 s lock wait, and a request
    budget that covers it (budgets that do not nest are refused at start-up)."""
    return {"locks_enabled": locks_enabled, "lock_wait_seconds": 30, "request_budget_seconds": 60}


@pytest.mark.parametrize("locks_enabled", [True, False], ids=["locks-on", "locks-off"])
async def test_concurrent_buys_never_overdraw(
    service_env: dict[str, Any], inventory_url: str, locks_enabled: bool
) -> None:
    settings = patient_racers(locks_enabled)
    async with order_service(service_env, inventory_url, **settings) as (app, client):
        statuses = await _race(app, client)
        assert statuses.count(201) == 10, statuses
        assert set(statuses) <= {201, 409, 422}, statuses
        assert _invariants_hold(app, 10)
        r = await client.get("/orders", params={"limit": 100}, headers=auth(app, "race_trader"))
        assert len(r.json()["data"]) == 10


async def test_without_locks_and_conditions_the_race_overdraws(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    """The weakened lab mode: proves the protections above are what keeps the money right."""
    # Fifty requests at once queue on the storage and the stand-in: PATIENT covers them.
    settings = {"locks_enabled": False, "order_conditional_writes": False}
    async with order_service(service_env, inventory_url, **settings) as (app, client):
        statuses = await _race(app, client)
        assert not any(s >= 500 for s in statuses), statuses
        assert not _invariants_hold(app, statuses.count(201)), (
            statuses,
            balance(app, "race_trader"),
        )


# -- hardening: absurd numbers, exact parsing, rounding, idempotency, concurrency ------------

ABSURD_NUMBERS = [
    "1e100",
    "1E+100",
    "-0",
    "1E-100",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" + "0" * 30,
    "9" * 5000,
    "1e999999999",
    "0." + "0" * 500 + "1",
    "0.100000000000000001",
]


def _number_bodies(field: str) -> list[bytes]:
    """An order with ``field`` set to each absurd value, as a JSON string and as a JSON number."""
    base = {"order_type": "market_buy", "asset_id": "DOGE", "quantity": "1", "price": "1"}
    bodies = []
    for text in ABSURD_NUMBERS:
        for value in (json.dumps(text), text):
            doc = {k: json.dumps(v) for k, v in base.items()} | {field: value}
            bodies.append(("{" + ",".join(f'"{k}": {v}' for k, v in doc.items()) + "}").encode())
    return bodies


async def test_absurd_numbers_are_422_never_5xx_even_with_an_idempotency_key(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    """``"price": "1e100"`` with a key made the fingerprint raise: a 500 that, five times over,
    opened the gateway's order breaker for everyone. Every absurd number is a 422 now."""
    async with order_service(service_env, inventory_url) as (app, client):
        headers = {**auth(app, "poison_trader"), "Content-Type": "application/json"}
        for field in ("price", "quantity"):
            for n, body in enumerate(_number_bodies(field)):
                keyed = {**headers, "Idempotency-Key": f"poison-{field}-{n}"}
                r = await client.post("/orders", content=body, headers=keyed)
                assert r.status_code == 422, (body[:120], r.status_code, r.text[:300])
                problem = assert_problem(r, 422)
                assert field in {e["field"] for e in problem["errors"]}, body[:120]
        assert (await client.get("/orders", headers=headers)).json()["data"] == []


async def test_a_json_number_is_read_from_its_text_not_through_a_float(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "exact_trader", "100.00")
        headers = {**auth(app, "exact_trader"), "Content-Type": "application/json"}
        # As a float, 0.100000000000000001 is 0.1: it would pass "at most 8 decimals".
        body = b'{"order_type": "market_buy", "asset_id": "DOGE", "quantity": 0.100000000000000001}'
        r = await client.post("/orders", content=body, headers=headers)
        assert "quantity" in {e["field"] for e in assert_problem(r, 422)["errors"]}
        body = b'{"order_type": "market_buy", "asset_id": "DOGE", "quantity": 100.00000001}'
        r = await client.post("/orders", content=body, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["quantity"] == "100.00000001"
        assert holding(app, "exact_trader", "DOGE") == Decimal("100.00000001")


async def test_tiny_round_trips_never_mint_usd(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    """The reviewer's attack: buy DOGE worth 0.0149 USD and sell it back in pieces worth 0.0051.
    Rounded half-even both ways, a buy cost 0.01 and each piece sold for 0.01, so 19 rounds
    turned cents into more cents plus DOGE. A buy now rounds up and a sell down."""
    async with order_service(service_env, inventory_url) as (app, client):
        start = Decimal("0.10")
        fund(app, "dust_trader", str(start))
        headers = auth(app, "dust_trader")
        statuses = []
        for _ in range(19):
            statuses.append((await buy(client, headers, "DOGE", "0.149")).status_code)
            for _ in range(2):
                r = await buy(client, headers, "DOGE", "0.051", order_type="market_sell")
                statuses.append(r.status_code)
        left = holding(app, "dust_trader", "DOGE")
        if left * Decimal("0.10") >= Decimal("0.01"):
            r = await buy(client, headers, "DOGE", qty_str(left), order_type="market_sell")
            statuses.append(r.status_code)
        assert set(statuses) <= {201, 422}, statuses
        usd_now, doge = balance(app, "dust_trader"), holding(app, "dust_trader", "DOGE")
        assert usd_now <= start, (usd_now, doge, statuses)
        assert usd_now + doge * Decimal("0.10") <= start, (usd_now, doge)
        assert usd_now >= 0 and doge >= 0
        assert ledger_sum(app, "dust_trader") == usd_now
        assert trades_sum(app, "dust_trader", "DOGE") == doge


async def test_a_refused_order_is_replayed_on_retry_not_run_again(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    """A retry returns the first *final* answer: a 422 too, even once the money is there."""
    async with order_service(service_env, inventory_url) as (app, client):
        fund(app, "retry_trader", "5.00")
        headers = {**auth(app, "retry_trader"), "Idempotency-Key": "order-retry-1"}
        first = await buy(client, headers, "RACE", "1")
        first_body = assert_problem(first, 422)
        fund(app, "retry_trader", "100.00")
        again = await buy(client, headers, "RACE", "1")
        again_body = assert_problem(again, 422)
        assert again.headers["Idempotent-Replayed"] == "true"
        first_body.pop("request_id"), again_body.pop("request_id")
        assert again_body == first_body
        assert balance(app, "retry_trader") == Decimal("100.00")
        assert (await client.get("/orders", headers=headers)).json()["data"] == []
        # The same key for another request is still refused as reuse.
        body = assert_problem(await buy(client, headers, "RACE", "2"), 422)
        assert body["type"].endswith("idempotency-key-reused")


async def test_an_unavailable_answer_is_not_final_so_the_retry_runs(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    keyed: dict[str, str] = {}
    async with order_service(service_env, dead) as (app, client):
        fund(app, "patient_trader", "100.00")
        keyed = {**auth(app, "patient_trader"), "Idempotency-Key": "order-after-outage"}
        assert_problem(await buy(client, keyed, "RACE", "1"), 503)
    async with order_service(service_env, inventory_url) as (app, client):
        r = await buy(client, keyed, "RACE", "1")
        assert r.status_code == 201, r.text
        assert "Idempotent-Replayed" not in r.headers
        assert balance(app, "patient_trader") == Decimal("90.00")


@pytest.mark.parametrize("locks_enabled", [True, False], ids=["locks-on", "locks-off"])
async def test_concurrent_retries_of_one_order_execute_once_and_answer_alike(
    service_env: dict[str, Any], inventory_url: str, locks_enabled: bool
) -> None:
    settings = patient_racers(locks_enabled)
    async with order_service(service_env, inventory_url, **settings) as (app, client):
        fund(app, "twin_trader", "100.00")
        headers = {**auth(app, "twin_trader"), "Idempotency-Key": "twin-order"}
        results = await asyncio.wait_for(
            asyncio.gather(*(buy(client, headers, "RACE", "1") for _ in range(10))), 60
        )
        assert [r.status_code for r in results] == [201] * 10
        assert len({r.text for r in results}) == 1
        assert sum("Idempotent-Replayed" not in r.headers for r in results) == 1
        assert balance(app, "twin_trader") == Decimal("90.00") == ledger_sum(app, "twin_trader")
        assert holding(app, "twin_trader", "RACE") == 1

        # Copies of a refused order: all get the same refusal, nothing executes.
        refused = {**headers, "Idempotency-Key": "twin-refused"}
        results = await asyncio.wait_for(
            asyncio.gather(*(buy(client, refused, "RACE", "100") for _ in range(10))), 60
        )
        assert [r.status_code for r in results] == [422] * 10
        details = {(r.json()["type"], r.json()["detail"]) for r in results}
        assert len(details) == 1
        assert balance(app, "twin_trader") == Decimal("90.00")


@pytest.mark.parametrize("locks_enabled", [True, False], ids=["locks-on", "locks-off"])
async def test_concurrent_buys_and_sells_of_one_user_keep_every_invariant(
    service_env: dict[str, Any], inventory_url: str, locks_enabled: bool
) -> None:
    """Mixed orders racing: no overdraft, no short sale, ledgers equal balances, value kept."""
    settings = patient_racers(locks_enabled)
    async with order_service(service_env, inventory_url, **settings) as (app, client):
        fund(app, "mixed_trader", "50.00")
        headers = auth(app, "mixed_trader")
        assert (await buy(client, headers, "RACE", "3")).status_code == 201  # 20.00 USD left
        orders = [
            buy(client, headers, "RACE", "1", order_type=side)
            for side in ("market_buy", "market_sell") * 12
        ]
        results = await asyncio.wait_for(asyncio.gather(*orders), 90)
        statuses = [r.status_code for r in results]
        assert set(statuses) <= {201, 409, 422}, statuses
        for r in results:
            if r.status_code != 201:
                assert_problem(r, r.status_code)
        usd_now, race = balance(app, "mixed_trader"), holding(app, "mixed_trader", "RACE")
        assert usd_now >= 0 and race >= 0
        assert ledger_sum(app, "mixed_trader") == usd_now
        assert trades_sum(app, "mixed_trader", "RACE") == race
        # RACE trades at exactly 10.00, so no rounding: value is conserved to the cent.
        assert usd_now + race * 10 == Decimal("50.00")


async def test_poison_prices_through_the_gateway_leave_the_order_breaker_closed(
    service_env: dict[str, Any], inventory_url: str
) -> None:
    """The reported impact: five keyed orders priced 1e100 by a user with no money were five 500s
    and opened the gateway's order breaker for every user. Now they are 422s, which a breaker
    counts as answers, not failures."""
    order_app = create_app(Settings(**service_env, inventory_url=inventory_url))
    auth_app = create_auth_app(AuthSettings(**service_env))
    with (
        serve_in_thread(order_app, lifespan="on") as order_url,
        serve_in_thread(auth_app, lifespan="on") as auth_url,
    ):
        gateway_app = create_gateway_app(
            GatewaySettings(**service_env, order_url=order_url, auth_url=auth_url)
        )
        async with running(gateway_app) as client:
            token = auth_app.state.ctx.tokens.issue("poison_trader").token
            body = {"order_type": "market_buy", "asset_id": "DOGE", "quantity": "1"}
            for i in range(8):
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"poison-{i}"}
                r = await client.post(
                    "/api/v1/orders", json={**body, "price": "1e100"}, headers=headers
                )
                assert r.status_code == 422, r.text
            breaker = gateway_app.state.gateway.upstreams["order"].breaker
            assert breaker.state is State.CLOSED
