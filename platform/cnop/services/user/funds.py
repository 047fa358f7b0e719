"""Deposit, withdraw and red-pocket claims: lock, idempotency, one conditional transaction.

The per-user lock keeps a user's requests from racing; the conditions inside the transaction are
what actually guarantee the money rules, so a lost or disabled lock never breaks them. A
transaction refused because another one touched the same items (``TransactionConflict``) is
retried a few times, then answered 409 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from decimal import Decimal
from typing import Any

from fastapi.responses import JSONResponse

from cnop.core import idempotency
from cnop.core.clock import iso, new_id, utc_day, utc_now
from cnop.core.context import ServiceContext
from cnop.core.logging import log_event
from cnop.core.metrics import TRANSACTION_CONFLICTS
from cnop.core.money import CENT, credit_usd, debit_usd, usd, usd_str
from cnop.core.problems import ProblemError
from cnop.services.user import store
from cnop.services.user.settings import user_settings


class _AlreadyCommitted(Exception):
    """Another copy of this idempotent request committed first: replay its stored result."""


def conflict_problem() -> ProblemError:
    return ProblemError(
        409,
        "The account was changed by a concurrent request; retry shortly",
        slug="transaction-conflict",
        headers={"Retry-After": "1"},
    )


def storage_problem() -> ProblemError:
    return ProblemError(
        503, "Storage is unavailable; try again shortly", headers={"Retry-After": "2"}
    )


def daily_limit_problem(kind: str, limit: Decimal) -> ProblemError:
    return ProblemError(
        422,
        f"This would exceed the daily {kind} limit of {usd_str(limit)} USD",
        slug="daily-limit-exceeded",
        limit=usd_str(limit),
    )


def insufficient_funds_problem() -> ProblemError:
    return ProblemError(422, "Insufficient funds for this withdrawal", slug="insufficient-funds")


def account_missing_problem() -> ProblemError:
    return ProblemError(404, "No account exists for this user", slug="account-not-found")


async def commit(ctx: ServiceContext, operation: str, change: store.MoneyChange) -> None:
    """Run the transaction, turning per-item cancellation reasons into the client's answer."""
    tables = ctx.require_tables()
    attempts = user_settings(ctx).transaction_attempts
    for attempt in range(1, attempts + 1):
        try:
            await ctx.db(store.apply_money_change, tables, change)
            return
        except store.TransactionRefused as refused:
            TRANSACTION_CONFLICTS.labels(operation).inc()
            _raise_for_refusal(change, refused)
            log_event("transaction_conflict", logging.WARNING, operation=operation, attempt=attempt)
            if attempt < attempts:
                await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
    raise conflict_problem()


def _raise_for_refusal(change: store.MoneyChange, refused: store.TransactionRefused) -> None:
    """Raise the business answer for a failed condition; return if only conflicts remain."""
    if refused.failed("idempotency"):
        raise _AlreadyCommitted
    for bump in change.daily:  # in order: "already claimed" before "limit reached"
        if refused.failed(f"daily:{bump.kind}"):
            raise bump.refusal()
    if refused.failed("balance"):
        raise insufficient_funds_problem() if change.require_funds else account_missing_problem()
    if not refused.only_conflicts:
        # e.g. ValidationError or ThrottlingError: nothing a retry of ours would fix now.
        log_event("transaction_refused", logging.ERROR, codes=refused.codes)
        raise storage_problem()


async def move_funds(
    ctx: ServiceContext,
    username: str,
    operation: str,
    amount: Decimal,
    raw_idempotency_key: str | None,
) -> JSONResponse:
    """Deposit (``operation="deposit"``) or withdraw; answers 201 or replays the first result.

    With an Idempotency-Key, everything that decides the answer runs inside the lock after the
    lookup, so a retry gets the first final answer (a 201 or a 4xx refusal) and never runs twice.
    """
    settings = user_settings(ctx)
    tables = ctx.require_tables()
    # Amounts arrive with at most 2 decimals, so this changes nothing today; it keeps the rule
    # (a credit rounds down, a debit up) should validation ever allow more.
    amount = credit_usd(amount) if operation == "deposit" else debit_usd(amount)
    key = idempotency.request_key(
        username,
        operation,
        raw_idempotency_key,
        {"amount": usd_str(amount)},
        settings.idempotency_ttl_seconds,
    )
    async with ctx.locks.hold(username, operation):
        if key is not None:
            stored = await ctx.db(idempotency.lookup, tables, key)
            if stored is not None:
                return idempotency.replay(stored)
        try:
            body = await _move(ctx, username, operation, amount, key)
        except _AlreadyCommitted:
            assert key is not None
            stored = await ctx.db(idempotency.lookup, tables, key)
            if stored is None:
                raise conflict_problem() from None
            return idempotency.replay(stored)
        except ProblemError as refusal:
            return await idempotency.answer_refusal(ctx.db, tables, key, refusal)
    log_event(
        f"{operation}_completed", transaction_id=body["transaction_id"], amount=usd_str(amount)
    )
    return JSONResponse(body, status_code=201)


async def _move(
    ctx: ServiceContext,
    username: str,
    operation: str,
    amount: Decimal,
    key: idempotency.RequestKey | None,
) -> dict[str, Any]:
    settings = user_settings(ctx)
    if operation == "deposit":
        limit, delta, kind_label = settings.daily_deposit_limit, amount, "deposit"
    else:
        limit, delta, kind_label = settings.daily_withdraw_limit, -amount, "withdrawal"
    if amount > limit:
        raise daily_limit_problem(kind_label, limit)
    now = utc_now()
    transaction_id = new_id("txn")
    body: dict[str, Any] = {
        "success": True,
        "message": f"{operation.capitalize()} of {usd_str(amount)} USD completed",
        "transaction_id": transaction_id,
        "timestamp": iso(now),
    }
    change = store.MoneyChange(
        username=username,
        delta=delta,
        require_funds=operation == "withdraw",
        transaction_id=transaction_id,
        transaction_type=operation.upper(),
        description=f"{operation.capitalize()} of {usd_str(amount)} USD",
        timestamp=iso(now),
        day=utc_day(now),
        daily=[
            store.DailyBump(
                operation, amount, limit, lambda: daily_limit_problem(kind_label, limit)
            )
        ],
        idempotency=store.IdempotencyRecord(key, 201, body) if key is not None else None,
    )
    await commit(ctx, operation, change)
    return body


def draw_red_pocket(low: Decimal, high: Decimal) -> Decimal:
    """A uniform amount in whole cents between ``low`` and ``high`` inclusive."""
    low_cents, high_cents = int(usd(low) / CENT), int(usd(high) / CENT)
    cents = low_cents + secrets.randbelow(high_cents - low_cents + 1)
    return usd(Decimal(cents) * CENT)


def already_claimed_problem() -> ProblemError:
    return ProblemError(
        409, "The red pocket was already claimed today (UTC)", slug="already-claimed"
    )


async def claim_red_pocket(ctx: ServiceContext, username: str) -> dict[str, Any]:
    """Credit a random red pocket, at most ``red_pocket_claims_per_day`` times per UTC day.

    The claim is a RED_POCKET ledger entry and counts toward the daily deposit limit (the same
    ``#deposit`` total), both enforced by conditions in the one transaction.
    """
    settings = user_settings(ctx)
    if settings.red_pocket_claims_per_day < 1:
        raise already_claimed_problem()
    amount = draw_red_pocket(settings.red_pocket_min, settings.red_pocket_max)
    limit = settings.daily_deposit_limit
    if amount > limit:
        raise daily_limit_problem("deposit", limit)
    async with ctx.locks.hold(username, "claim"):
        now = utc_now()
        transaction_id = new_id("txn")
        change = store.MoneyChange(
            username=username,
            delta=amount,
            require_funds=False,
            transaction_id=transaction_id,
            transaction_type="RED_POCKET",
            description=f"Red pocket of {usd_str(amount)} USD",
            timestamp=iso(now),
            day=utc_day(now),
            # Order matters: a second claim is "already claimed" even when the limit is full too.
            daily=[
                store.DailyBump(
                    "claim",
                    Decimal(1),
                    Decimal(settings.red_pocket_claims_per_day),
                    already_claimed_problem,
                ),
                store.DailyBump(
                    "deposit", amount, limit, lambda: daily_limit_problem("deposit", limit)
                ),
            ],
        )
        await commit(ctx, "claim", change)
    log_event("red_pocket_claimed", transaction_id=transaction_id, amount=usd_str(amount))
    return {
        "success": True,
        "message": f"You received a red pocket of {usd_str(amount)} USD",
        "amount": usd_str(amount),
        "got_red_pocket": True,
        "timestamp": iso(now),
    }
