"""Placing a market order: price, limits, lock, one conditional transaction, and what a
cancelled transaction means.

The lock keeps one user's orders from racing in the common case; the condition expressions in
:func:`~cnop.services.order.store.commit_trade` are what keep the money right when the lock is
off, expired or lost. A cancelled transaction is mapped item by item: a failed balance or
holding condition is a business rejection (422), a failed idempotency condition means a twin
request already committed (replay it), and a conflict is retried, then refused with a 409.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi.responses import JSONResponse
from pynamodb.exceptions import TransactWriteError

from cnop.core import idempotency
from cnop.core.clock import new_id, utc_now_iso
from cnop.core.context import ServiceContext
from cnop.core.db import Tables
from cnop.core.logging import log_event
from cnop.core.metrics import ORDERS, TRANSACTION_CONFLICTS
from cnop.core.money import (
    CENT,
    credit_price,
    credit_usd,
    debit_price,
    debit_usd,
    qty_str,
    times,
    usd_str,
)
from cnop.core.problems import ProblemError
from cnop.services.order import store
from cnop.services.order.quotes import fetch_quote
from cnop.services.order.schemas import LIMIT_TYPES, OrderRequest, price_str
from cnop.services.order.settings import Settings

# Response codes that mean "someone else touched these items, try again", not "you may not".
_RETRYABLE_CODES = {
    "TransactionConflict",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ThrottlingError",
    "ThrottlingException",
    "ProvisionedThroughputExceeded",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
}
INSUFFICIENT_FUNDS = "Insufficient funds for this order"
INSUFFICIENT_HOLDINGS = "Insufficient holdings for this order"

# DynamoDB's own failures (after botocore's retries): our caller gets a 503, not a 500.
_SERVER_ERROR_CODES = {"InternalServerError", "InternalFailure", "ServiceUnavailable"}


@dataclass(frozen=True)
class OrderResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def _reject(request: OrderRequest, reason: str, detail: str, **extra: Any) -> ProblemError:
    ORDERS.labels(request.order_type, "rejected").inc()
    log_event(
        "order_rejected",
        logging.INFO,
        reason=reason,
        order_type=request.order_type,
        asset_id=request.asset_id,
        quantity=qty_str(request.quantity),
        **extra,
    )
    return ProblemError(422, detail, slug=reason.replace("_", "-"))


def _conflict() -> ProblemError:
    return ProblemError(
        409,
        "The order conflicted with concurrent changes to this account; retry shortly",
        slug="transaction-conflict",
        headers={"Retry-After": "1"},
    )


def _classify(exc: TransactWriteError, labels: list[str]) -> str:
    """One word for why the transaction failed: idempotency, balance, holding, retry, down."""
    codes = idempotency.cancellation_codes(exc)
    if codes:
        conditional = {
            label
            for label, code in zip(labels, codes, strict=False)
            if code == "ConditionalCheckFailed"
        }
        for label in ("idempotency", "balance", "holding"):
            if label in conditional:
                return label
        # A conflict, or the order/ledger keys exist already (an id clash): retrying with fresh
        # ids is safe, since a cancelled transaction wrote nothing.
        return "retry"
    code = exc.cause_response_code
    if code is None or code in _SERVER_ERROR_CODES:
        return "down"
    if code in _RETRYABLE_CODES:
        return "retry"
    raise exc


async def _read_funds(
    ctx: ServiceContext, tables: Tables, request: OrderRequest, username: str
) -> Decimal | None:
    """The weakened lab mode reads first and decides later, after the price lookup, as naive
    check-then-write code does: that gap is where a paused or slow request lets another one
    spend the same money. (The hardened mode decides inside the transaction instead.)"""
    if request.order_type == "market_buy":
        return await ctx.db(store.read_balance, tables, username)
    return await ctx.db(store.read_holding, tables, username, request.asset_id)


def _check_funds(request: OrderRequest, funds: Decimal | None, total: Decimal) -> None:
    if request.order_type == "market_buy":
        if funds is None or funds < total:
            raise _reject(request, "insufficient_funds", INSUFFICIENT_FUNDS)
    elif funds is None or funds < request.quantity:
        raise _reject(request, "insufficient_holdings", INSUFFICIENT_HOLDINGS)


def _new_trade(
    request: OrderRequest, username: str, price: Decimal, total: Decimal
) -> tuple[store.Trade, dict[str, Any]]:
    trade = store.Trade(
        username=username,
        order_id=new_id("ord"),
        transaction_id=new_id("txn"),
        order_type=request.order_type,
        side="BUY" if request.order_type == "market_buy" else "SELL",
        asset_id=request.asset_id,
        quantity=request.quantity,
        price=price,
        total=total,
        created_at=utc_now_iso(),
    )
    body = {
        "data": {
            "order_id": trade.order_id,
            "order_type": trade.order_type,
            "asset_id": trade.asset_id,
            "quantity": qty_str(trade.quantity),
            "price": price_str(trade.price),
            "status": "completed",
            "total_amount": usd_str(trade.total),
            "created_at": trade.created_at,
        }
    }
    return trade, body


async def place_order(
    ctx: ServiceContext,
    settings: Settings,
    username: str,
    request: OrderRequest,
    idempotency_key: str | None,
) -> JSONResponse:
    """Execute a market order once; with an Idempotency-Key a retry replays the first final
    answer (the 201, or a 4xx refusal such as insufficient funds) instead of running again."""
    if request.order_type in LIMIT_TYPES:
        raise ProblemError(
            422,
            "Limit orders are not implemented; use market_buy or market_sell",
            slug="not-implemented",
            errors=[{"field": "order_type", "message": "limit orders are not implemented"}],
        )
    key = idempotency.request_key(
        username,
        "order",
        idempotency_key,
        request.fingerprint_payload(),
        settings.idempotency_ttl_seconds,
    )
    tables = ctx.require_tables()
    async with ctx.locks.hold(username, "order"):
        if key is not None:
            stored = await ctx.db(idempotency.lookup, tables, key)
            if stored is not None:
                return idempotency.replay(stored)
        try:
            result = await _execute(ctx, settings, tables, username, request, key)
        except ProblemError as refusal:
            return await idempotency.answer_refusal(ctx.db, tables, key, refusal)
    if result.replayed:
        return idempotency.replay(idempotency.StoredResult(result.status_code, result.body))
    return JSONResponse(result.body, status_code=result.status_code)


async def _execute(
    ctx: ServiceContext,
    settings: Settings,
    tables: Tables,
    username: str,
    request: OrderRequest,
    idem: idempotency.RequestKey | None,
) -> OrderResult:
    conditional = settings.order_conditional_writes
    funds = None if conditional else await _read_funds(ctx, tables, request, username)
    quote = await fetch_quote(ctx, settings.inventory_url, request.asset_id)
    if not quote.is_active:
        raise _reject(request, "asset_inactive", f"Asset {request.asset_id} is not tradable")
    # Rounding never favours the client: a buy pays the price and the total rounded up, a sell
    # receives them rounded down. (Half-even both ways let tiny round trips mint cents.)
    buying = request.order_type == "market_buy"
    price = debit_price(quote.price) if buying else credit_price(quote.price)
    if price <= 0:
        raise _reject(request, "asset_unpriced", f"Asset {request.asset_id} has no price now")
    value = times(request.quantity, price)
    # Below a cent, a buy would pay more than it gets and a sell would get nothing: refused.
    if value < CENT:
        raise _reject(request, "order_too_small", "The order value is below 0.01 USD")
    total = debit_usd(value) if buying else credit_usd(value)
    if total > settings.max_order_value:
        raise _reject(
            request,
            "max_order_value",
            f"Order value {usd_str(total)} USD exceeds the maximum of "
            f"{usd_str(settings.max_order_value)} USD",
            total=usd_str(total),
        )
    labels = store.trade_item_labels(idem is not None)
    for attempt in range(settings.transaction_retries + 1):
        if not conditional:
            if attempt > 0:
                funds = await _read_funds(ctx, tables, request, username)
            _check_funds(request, funds, total)
        trade, body = _new_trade(request, username, price, total)
        try:
            await ctx.db(
                store.commit_trade,
                tables,
                trade,
                conditional=conditional,
                idem=idem,
                response_body=body,
            )
        except TransactWriteError as exc:
            failure = exc
        else:
            ORDERS.labels(request.order_type, "completed").inc()
            log_event(
                "order_completed",
                order_id=trade.order_id,
                order_type=trade.order_type,
                asset_id=trade.asset_id,
                quantity=qty_str(trade.quantity),
                price=price_str(trade.price),
                total=usd_str(trade.total),
            )
            return OrderResult(201, body)
        outcome = _classify(failure, labels)
        if outcome == "down":
            raise ProblemError(
                503, "Storage is unavailable; try again shortly", headers={"Retry-After": "2"}
            ) from failure
        TRANSACTION_CONFLICTS.labels("order").inc()
        if outcome == "idempotency" and idem is not None:
            # A twin request with the same key committed first: answer what it answered.
            stored = await ctx.db(idempotency.lookup, tables, idem)
            if stored is not None:
                return OrderResult(stored.status_code, stored.body, replayed=True)
        elif outcome == "balance" and trade.is_buy:
            raise _reject(request, "insufficient_funds", INSUFFICIENT_FUNDS)
        elif outcome == "balance":
            raise _reject(request, "no_account", "This account has no balance record")
        elif outcome == "holding":
            raise _reject(request, "insufficient_holdings", INSUFFICIENT_HOLDINGS)
        log_event("transaction_conflict", logging.WARNING, operation="order", attempt=attempt)
        await asyncio.sleep(random.uniform(0.01, 0.05) * (2**attempt))
    raise _conflict()
