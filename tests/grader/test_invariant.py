"""Invariant checks against a stand-in gateway that serves contract-shaped books."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI, Header, Query
from fastapi.responses import JSONResponse

from grader.checks.invariant import signed_amount
from grader.evaluate import evaluate, evaluate_all
from grader.model import Account, InvariantCheck, RunContext
from tests.conftest import serve_in_thread

PASSWORDS = {"alice_trader": "Alice-Secret-1", "bob_trader": "Bob-Secret-12"}

# alice: 1 deposit of 100.00, 103 deposits of 0.10 (a float sum drifts), a withdrawal of 10.00,
# a failed withdrawal, a buy of 2 BTC paid 60.00 (negative amount) and a sale of 0.5 BTC for 15.00:
# balance 100.00 + 10.30 - 10.00 - 60.00 + 15.00 = 55.30, BTC 1.5.
ALICE_LEDGER = (
    [{"transaction_type": "DEPOSIT", "amount": "100.00", "status": "completed"}]
    + [{"transaction_type": "DEPOSIT", "amount": "0.10", "status": "completed"}] * 103
    + [
        {"transaction_type": "WITHDRAW", "amount": "10.00", "status": "completed"},
        {"transaction_type": "WITHDRAW", "amount": "999.00", "status": "failed"},
        {"transaction_type": "ORDER_PAYMENT", "amount": "-60.00", "status": "completed"},
        {"transaction_type": "ORDER_SALE", "amount": "15.00", "status": "completed"},
    ]
)
BOOKS: dict[str, dict[str, Any]] = {
    "alice_trader": {
        "balance": "55.30",
        "ledger": ALICE_LEDGER,
        "portfolio": [{"asset_id": "BTC", "quantity": "1.5"}],
        "trades": {
            "BTC": [
                {
                    "asset_id": "BTC",
                    "transaction_type": "BUY",
                    "quantity": "2",
                    "status": "completed",
                },
                {
                    "asset_id": "BTC",
                    "transaction_type": "SELL",
                    "quantity": "0.5",
                    "status": "completed",
                },
            ]
        },
        "orders": [
            {
                "order_id": "ord_alice_0002",
                "asset_id": "BTC",
                "order_type": "market_sell",
                "status": "completed",
            },
            {
                "order_id": "ord_alice_0001",
                "asset_id": "BTC",
                "order_type": "market_buy",
                "status": "completed",
            },
        ],
    },
    "bob_trader": {
        # A lost lock let two withdrawals through: the balance went below zero, the ledger shows
        # only the deposit, and a holding drifted from the trades.
        "balance": "-5.00",
        "ledger": [{"transaction_type": "DEPOSIT", "amount": "10.00", "status": "completed"}],
        "portfolio": [
            {"asset_id": "ETH", "quantity": "1.5"},
            {"asset_id": "XRP", "quantity": "-3"},
        ],
        "trades": {
            "ETH": [
                {
                    "asset_id": "ETH",
                    "transaction_type": "BUY",
                    "quantity": "1.0",
                    "status": "completed",
                }
            ],
        },
        "orders": [
            {
                "order_id": f"ord_bob_{i:06d}",
                "asset_id": "ETH",
                "order_type": "market_buy",
                "status": "completed" if i < 70 else "failed",
            }
            for i in range(120)
        ],
    },
}


def stand_in() -> FastAPI:
    app = FastAPI()
    state = {"logins": 0, "throttled": False}

    def who(authorization: str | None) -> str | None:
        token = (authorization or "").removeprefix("Bearer ")
        return token.removeprefix("tok-") if token.startswith("tok-") else None

    def unauthorized() -> JSONResponse:
        return JSONResponse({"title": "Unauthorized", "status": 401, "detail": "bad token"}, 401)

    @app.post("/api/v1/auth/login")
    def login(body: dict[str, str]) -> Any:
        state["logins"] += 1
        if PASSWORDS.get(body.get("username", "")) != body.get("password"):
            return JSONResponse(
                {"title": "Unauthorized", "status": 401, "detail": "Invalid credentials"}, 401
            )
        return {
            "access_token": f"tok-{body['username']}",
            "token_type": "bearer",
            "expires_in": 3600,
        }

    @app.get("/api/v1/balance")
    def balance(authorization: str | None = Header(None)) -> Any:
        user = who(authorization)
        if user is None:
            return unauthorized()
        return {"current_balance": BOOKS[user]["balance"], "updated_at": "2025-01-01T00:00:00Z"}

    @app.get("/api/v1/balance/transactions")
    def ledger(
        authorization: str | None = Header(None), limit: int = Query(50, le=100), offset: int = 0
    ) -> Any:
        user = who(authorization)
        if user is None:
            return unauthorized()
        rows = BOOKS[user]["ledger"]
        page = [
            {"transaction_id": f"tx{offset + i}", "created_at": "2025-01-01T00:00:00Z", **row}
            for i, row in enumerate(rows[offset : offset + limit])
        ]
        return {"transactions": page, "total_count": len(rows)}

    @app.get("/api/v1/portfolio")
    def portfolio(authorization: str | None = Header(None)) -> Any:
        user = who(authorization)
        if user is None:
            return unauthorized()
        if user == "alice_trader" and not state["throttled"]:
            state["throttled"] = True  # the first read is rate limited once
            return JSONResponse(
                {"title": "Too Many Requests", "status": 429}, 429, headers={"Retry-After": "1"}
            )
        return {
            "assets": BOOKS[user]["portfolio"],
            "usd_balance": BOOKS[user]["balance"],
            "total_value": "0",
        }

    @app.get("/api/v1/orders")
    def orders(
        authorization: str | None = Header(None), limit: int = Query(50, le=100), offset: int = 0
    ) -> Any:
        user = who(authorization)
        if user is None:
            return unauthorized()
        rows = BOOKS[user]["orders"]
        return {"data": rows[offset : offset + limit], "has_more": offset + limit < len(rows)}

    @app.get("/api/v1/assets/{asset_id}/transactions")
    def trades(
        asset_id: str,
        authorization: str | None = Header(None),
        limit: int = Query(50, le=100),
        offset: int = 0,
    ) -> Any:
        user = who(authorization)
        if user is None:
            return unauthorized()
        rows = BOOKS[user]["trades"].get(asset_id.upper(), [])
        return {"data": rows[offset : offset + limit], "has_more": offset + limit < len(rows)}

    app.state.counters = state
    return app


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, FastAPI]]:
    app = stand_in()
    with serve_in_thread(app, lifespan="auto") as url:
        yield url, app


@pytest.fixture
def ctx(gateway: tuple[str, FastAPI]) -> RunContext:
    url, _ = gateway
    return RunContext(
        prometheus_url="http://127.0.0.1:9",
        gateway_url=url,
        phases={},
        accounts={
            "alice": Account(username="alice_trader", password=PASSWORDS["alice_trader"]),
            "bob": Account(username="bob_trader", password=PASSWORDS["bob_trader"]),
            "alice_token": Account(username="alice_trader", password="", token="tok-alice_trader"),
            "stale": Account(
                username="alice_trader", password=PASSWORDS["alice_trader"], token="expired"
            ),
            "mallory": Account(username="mallory_x", password="Wrong-Secret-1"),
        },
    )


def inv(rule: str, account: str, **fields: Any) -> InvariantCheck:
    return InvariantCheck(
        id=f"{rule}-{account}".replace("_", "-"), title=rule, rule=rule, account=account, **fields
    )


def test_signed_amounts() -> None:
    assert signed_amount({"transaction_type": "WITHDRAW", "amount": "5.00"}) == -5
    assert signed_amount({"transaction_type": "order_payment", "amount": "-5.00"}) == -5
    assert signed_amount({"transaction_type": "BUY", "amount": "5.00"}) == -5
    assert signed_amount({"transaction_type": "DEPOSIT", "amount": "5.00"}) == 5
    assert signed_amount({"transaction_type": "RED_POCKET", "amount": "8.88"}) == Decimal("8.88")


def test_consistent_account_passes_every_rule(ctx: RunContext) -> None:
    rules = [
        inv("balance_non_negative", "alice"),
        inv("holdings_non_negative", "alice"),
        inv("ledger_equals_balance", "alice"),
        inv("trades_equal_holdings", "alice"),
        inv("trades_equal_holdings", "alice", asset_id="btc"),
        inv("orders_completed", "alice", op="==", value=2),
        inv("balance_equals", "alice", value=55.3),
    ]
    results = evaluate_all(rules, ctx)
    for result in results:
        assert result.passed, (result.id, result.error, result.evidence)
    ledger = results[2].evidence
    # Decimal, not float: 103 x 0.10 sums to exactly 10.30.
    assert ledger["ledger_sum"] == "55.30" and ledger["balance"] == "55.30"
    assert ledger["ledger_entries"] == 108 and ledger["ledger_entries_counted"] == 107
    assert results[3].evidence["assets"]["BTC"]["trades_sum"] == "1.5"


def test_every_money_rule_says_what_it_observed(ctx: RunContext) -> None:
    """`lab run` prints evidence["observed"]; the money checks used to leave it blank."""
    rules = [
        inv("balance_non_negative", "alice"),
        inv("holdings_non_negative", "alice"),
        inv("ledger_equals_balance", "alice"),
        inv("trades_equal_holdings", "alice", asset_id="btc"),
    ]
    observed = [r.evidence.get("observed") for r in evaluate_all(rules, ctx)]
    assert observed[0] == "balance 55.30 USD"
    assert observed[1].startswith("none negative")
    assert observed[2] == "ledger 55.30, balance 55.30"
    assert observed[3] == "BTC: trades 1.5, held 1.5"


def test_inconsistent_account_fails(ctx: RunContext) -> None:
    results = {
        r.id: r
        for r in evaluate_all(
            [
                inv("balance_non_negative", "bob"),
                inv("holdings_non_negative", "bob"),
                inv("ledger_equals_balance", "bob"),
                inv("trades_equal_holdings", "bob"),
                inv("orders_completed", "bob", op=">=", value=71),
                inv("balance_equals", "bob", value=0),
            ],
            ctx,
        )
    }
    for result in results.values():
        assert not result.passed and result.error is None, result
    assert results["holdings-non-negative-bob"].evidence["negative"] == {"XRP": "-3"}
    assert results["ledger-equals-balance-bob"].evidence["difference"] == "-15.00"
    trades = results["trades-equal-holdings-bob"].evidence["assets"]
    assert not trades["ETH"]["equal"] and not trades["XRP"]["equal"]
    # 120 orders over three pages, 70 completed.
    assert results["orders-completed-bob"].evidence["observed"] == 70
    assert results["orders-completed-bob"].evidence["orders"] == 120


def test_tokens_and_logins(ctx: RunContext, gateway: tuple[str, FastAPI]) -> None:
    _, app = gateway
    before = app.state.counters["logins"]
    with_token = evaluate(inv("balance_equals", "alice_token", value=55.30), ctx)
    assert with_token.passed, with_token
    assert app.state.counters["logins"] == before  # a given token is used, not a login
    stale = evaluate(inv("balance_non_negative", "stale"), ctx)
    assert stale.passed and app.state.counters["logins"] == before + 1  # logged in again
    wrong = evaluate(inv("balance_non_negative", "mallory"), ctx)
    assert not wrong.passed and "cannot log in" in wrong.error and "401" in wrong.error
    unknown = evaluate(inv("balance_non_negative", "nobody"), ctx)
    assert not unknown.passed and "nobody" in unknown.error
    unreachable = ctx.model_copy(update={"gateway_url": "http://127.0.0.1:9"})
    down = evaluate(inv("balance_non_negative", "alice"), unreachable)
    assert not down.passed and "failed" in down.error
    missing_value = evaluate(inv("orders_completed", "alice"), ctx)
    assert not missing_value.passed and "needs `value`" in missing_value.error
