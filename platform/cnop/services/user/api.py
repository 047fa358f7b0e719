"""HTTP routes of the user service (the gateway strips ``/api/v1`` before they are reached)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pynamodb.expressions.update import Action

from cnop.core.auth import Ctx, CurrentUser
from cnop.core.clock import utc_now_iso
from cnop.core.db import UserBase
from cnop.core.json_body import api_router
from cnop.core.logging import log_event, user_var
from cnop.core.metrics import PASSWORD_CHECKS, TRANSACTION_CONFLICTS
from cnop.core.money import qty_str, usd, usd_str
from cnop.core.paging import check_page_size, page_size
from cnop.core.problems import ProblemError
from cnop.core.redis import REDIS_DOWN_ERRORS
from cnop.core.schemas import problems
from cnop.core.tokens import TokenError
from cnop.services.user import funds, portfolio, responses, store
from cnop.services.user.passwords import Passwords, PasswordsBusy
from cnop.services.user.schemas import (
    AmountRequest,
    LoginRequest,
    LogoutRequest,
    ProfileUpdate,
    RegisterRequest,
)
from cnop.services.user.settings import user_settings

router = api_router()

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def _passwords(request: Request) -> Passwords:
    return request.app.state.ctx.extra["passwords"]


def _invalid_credentials() -> ProblemError:
    # One answer for unknown user and wrong password alike: nothing to enumerate.
    return ProblemError(401, "Invalid username or password", slug="invalid-credentials")


def _passwords_busy() -> ProblemError:
    # A 4xx, not a 503: a burst of logins is the clients' doing, and must not count as the
    # user service failing in the breaker every user shares.
    log_event("password_checks_busy", logging.WARNING)
    return ProblemError(
        429,
        "Too many password checks are in progress; try again shortly",
        slug="password-checks-busy",
        headers={"Retry-After": "1"},
    )


def _email_taken() -> ProblemError:
    return ProblemError(
        409,
        "This email address is already registered",
        slug="email-taken",
        errors=[{"field": "email", "message": "already registered"}],
    )


def _profile(user: UserBase) -> dict[str, Any]:
    return {
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "phone": user.phone,
        "date_of_birth": user.date_of_birth,
        "marketing_emails_consent": bool(user.marketing_emails_consent),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


async def _require_user(ctx: Ctx, username: str) -> UserBase:
    user = await ctx.db(store.get_user, ctx.require_tables(), username)
    if user is None:
        raise ProblemError(404, "No account exists for this user", slug="account-not-found")
    return user


# --- accounts -------------------------------------------------------------------------------


@router.post(
    "/auth/register", status_code=201, response_model=responses.Message, responses=problems(409)
)
async def register(body: RegisterRequest, request: Request, ctx: Ctx) -> dict[str, str]:
    tables = ctx.require_tables()
    try:
        password_hash = await _passwords(request).hash(body.password)
    except PasswordsBusy:
        raise _passwords_busy() from None
    now = utc_now_iso()
    user = tables.users(
        body.username,
        email=body.email,
        password_hash=password_hash,
        first_name=body.first_name,
        last_name=body.last_name,
        phone=body.phone,
        date_of_birth=body.date_of_birth,
        marketing_emails_consent=body.marketing_emails_consent,
        role="user",
        created_at=now,
        updated_at=now,
    )
    try:
        await ctx.db(store.create_user, tables, user, now)
    except store.TransactionRefused as refused:
        TRANSACTION_CONFLICTS.labels("register").inc()
        if refused.failed("user") or refused.failed("balance"):
            raise ProblemError(
                409,
                "This username is already taken",
                slug="username-taken",
                errors=[{"field": "username", "message": "already taken"}],
            ) from None
        if refused.failed("email"):
            raise _email_taken() from None
        if refused.only_conflicts:
            raise funds.conflict_problem() from None
        raise funds.storage_problem() from None
    log_event("user_registered", username=body.username)
    return {"message": "User registered successfully"}


@router.post("/auth/login", response_model=responses.Token, responses=problems(401))
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> dict[str, Any]:
    user = await ctx.db(store.get_user, ctx.require_tables(), body.username)
    try:
        ok = await _passwords(request).verify(body.password, user.password_hash if user else None)
    except PasswordsBusy:
        raise _passwords_busy() from None
    PASSWORD_CHECKS.labels("unknown_user" if user is None else "match" if ok else "mismatch").inc()
    if user is None or not ok:
        reason = "unknown_user" if user is None else "wrong_password"
        log_event("login_failed", logging.WARNING, username=body.username, reason=reason)
        if user is None and user_settings(ctx).login_reveal_unknown_user:  # the flaw
            raise ProblemError(404, "No account exists for this user", slug="account-not-found")
        raise _invalid_credentials()
    issued = ctx.tokens.issue(user.username, user.role or "user")
    user_var.set(user.username)
    log_event("login_succeeded", username=user.username)
    return {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in}


@router.post("/auth/logout", response_model=responses.Message, responses=problems(403))
async def logout(body: LogoutRequest, user: CurrentUser, ctx: Ctx) -> dict[str, str]:
    """Revoke the caller's token and, if the body names another token of the same user, it too."""
    to_revoke = [(user.jti, user.expires_at)]
    if body.access_token:
        try:
            claims = ctx.tokens.decode(body.access_token)
        except TokenError as exc:
            if exc.reason != "expired":  # an expired token is already useless
                raise ProblemError(
                    422,
                    "access_token is not a valid token",
                    errors=[{"field": "access_token", "message": "not a valid token"}],
                ) from None
        else:
            if claims["sub"] != user.username:
                raise ProblemError(403, "access_token belongs to another user")
            to_revoke.append((str(claims["jti"]), int(claims["exp"])))
    try:
        for jti, expires_at in to_revoke:
            await ctx.tokens.revoke(jti, expires_at)
    except REDIS_DOWN_ERRORS as exc:
        log_event("logout_failed", logging.ERROR, error=type(exc).__name__)
        raise ProblemError(
            503, "Logout cannot be recorded right now; try again", headers={"Retry-After": "2"}
        ) from None
    log_event("logged_out", revoked=len(to_revoke))
    return {"message": "Logged out successfully"}


@router.get("/auth/profile", response_model=responses.Profile, responses=problems(404))
async def get_profile(user: CurrentUser, ctx: Ctx) -> Any:
    stored = await _require_user(ctx, user.username)
    if user_settings(ctx).profile_expose_internals:
        # The data-exposure flaw: the whole stored record, past the response model's filter.
        return JSONResponse({name: getattr(stored, name) for name in stored.get_attributes()})
    return _profile(stored)


@router.put("/auth/profile", response_model=responses.ProfileUpdated, responses=problems(404, 409))
async def update_profile(body: ProfileUpdate, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    tables = ctx.require_tables()
    users = tables.users
    current = await _require_user(ctx, user.username)
    sent = body.model_fields_set
    actions: list[Action] = []
    for name in ("first_name", "last_name", "marketing_emails_consent", "phone", "date_of_birth"):
        if name not in sent:
            continue
        value = getattr(body, name)
        attribute = getattr(users, name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    old_email = new_email = None
    if "email" in sent and body.email is not None and body.email != current.email:
        old_email, new_email = current.email, body.email
        actions.append(users.email.set(new_email))
    if not actions:
        return {"message": "Nothing to update", "user": _profile(current)}
    actions.append(users.updated_at.set(utc_now_iso()))
    try:
        await ctx.db(store.update_user, tables, user.username, actions, old_email, new_email)
    except store.TransactionRefused as refused:
        TRANSACTION_CONFLICTS.labels("profile").inc()
        if refused.failed("email"):
            raise _email_taken() from None
        if refused.failed("user"):
            raise ProblemError(404, "No account exists for this user") from None
        if refused.only_conflicts or refused.failed("old_email"):
            # The stored email changed under us: the client may simply retry.
            raise funds.conflict_problem() from None
        raise funds.storage_problem() from None
    log_event("profile_updated", fields=sorted(sent))
    return {
        "message": "Profile updated successfully",
        "user": _profile(await _require_user(ctx, user.username)),
    }


# --- money ----------------------------------------------------------------------------------


@router.get("/balance", response_model=responses.Balance, responses=problems(404))
async def get_balance(user: CurrentUser, ctx: Ctx) -> dict[str, str]:
    balance = await ctx.db(store.get_balance, ctx.require_tables(), user.username)
    if balance is None:
        raise ProblemError(404, "No account exists for this user", slug="account-not-found")
    return {"current_balance": usd_str(balance.usd_balance), "updated_at": balance.updated_at}


@router.post(
    "/balance/deposit",
    status_code=201,
    response_model=responses.FundsMoved,
    responses=problems(404, 409),
)
async def deposit(
    body: AmountRequest, user: CurrentUser, ctx: Ctx, key: IdempotencyKey = None
) -> JSONResponse:
    return await funds.move_funds(ctx, user.username, "deposit", body.amount, key)


@router.post(
    "/balance/withdraw",
    status_code=201,
    response_model=responses.FundsMoved,
    responses=problems(404, 409),
)
async def withdraw(
    body: AmountRequest, user: CurrentUser, ctx: Ctx, key: IdempotencyKey = None
) -> JSONResponse:
    return await funds.move_funds(ctx, user.username, "withdraw", body.amount, key)


@router.get("/balance/transactions", response_model=responses.LedgerPage)
async def transactions(
    user: CurrentUser,
    ctx: Ctx,
    limit: Annotated[int, page_size(100)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    check_page_size(ctx.settings, limit, 100)
    entries, total = await ctx.db(
        store.ledger_page, ctx.require_tables(), user.username, limit, offset
    )
    return {
        "transactions": [
            {
                "transaction_id": e.transaction_id,
                "transaction_type": e.transaction_type,
                "amount": usd_str(e.amount),
                "status": e.status,
                "description": e.description,
                "created_at": e.created_at,
            }
            for e in entries
        ],
        "total_count": total,
    }


@router.post(
    "/cny/claim",
    status_code=201,
    response_model=responses.RedPocket,
    responses=problems(404, 409, 422),
)
async def claim(user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    return await funds.claim_red_pocket(ctx, user.username)


# --- holdings -------------------------------------------------------------------------------


@router.get(
    "/balance/asset/{asset_id}", response_model=responses.AssetBalance, responses=problems(404)
)
async def asset_balance(
    asset_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,10}$", examples=["BTC"])],
    user: CurrentUser,
    ctx: Ctx,
) -> dict[str, Any]:
    asset_id = asset_id.upper()
    holding = await ctx.db(store.get_holding, ctx.require_tables(), user.username, asset_id)
    if holding is None:
        raise ProblemError(404, f"You hold no {asset_id}", slug="asset-not-held")
    detail = await portfolio.asset_detail(ctx, asset_id)
    price = portfolio.checked_price(detail) if detail is not None else usd(0)
    name = str(detail.get("name") or asset_id) if detail is not None else asset_id
    return {
        "asset_id": asset_id,
        "asset_name": name,
        "quantity": qty_str(holding.quantity),
        "current_price": portfolio.price_str(price),
        "total_value": usd_str(holding.quantity * price),
        "created_at": holding.created_at,
        "updated_at": holding.updated_at,
    }


@router.get("/portfolio", response_model=responses.Portfolio, responses=problems(404))
async def get_portfolio(user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    tables = ctx.require_tables()
    balance = await ctx.db(store.get_balance, tables, user.username)
    if balance is None:
        raise ProblemError(404, "No account exists for this user", slug="account-not-found")
    held = await ctx.db(store.holdings, tables, user.username)
    prices = await portfolio.catalogue_prices(ctx, [h.asset_id for h in held])
    positions = [portfolio.Position(h.asset_id, h.quantity, prices[h.asset_id]) for h in held]
    return portfolio.portfolio_view(balance.usd_balance, positions)
