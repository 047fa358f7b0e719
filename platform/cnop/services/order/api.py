"""HTTP routes of the order service (the gateway strips ``/api/v1``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path, Query
from fastapi.responses import JSONResponse

from cnop.core.auth import Ctx, CurrentUser
from cnop.core.context import ServiceContext
from cnop.core.json_body import api_router
from cnop.core.paging import check_page_size, page_size
from cnop.core.problems import ProblemError
from cnop.core.schemas import problems
from cnop.services.order import responses, store
from cnop.services.order.execution import place_order
from cnop.services.order.schemas import (
    ASSET_ID_PATTERN,
    ORDER_ID_PATTERN,
    OrderRequest,
    OrderType,
    render_order,
    render_trade,
)
from cnop.services.order.settings import Settings

router = api_router()

MAX_PAGE = 100
Limit = Annotated[int, page_size(MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=100_000)]


def _settings(ctx: ServiceContext) -> Settings:
    # create_app always builds the context from our Settings; plain ServiceSettings get defaults.
    settings = ctx.settings
    return settings if isinstance(settings, Settings) else Settings(**settings.model_dump())


@router.post(
    "/orders", status_code=201, response_model=responses.OrderEnvelope, responses=problems(404, 409)
)
async def create_order(
    body: OrderRequest,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    return await place_order(ctx, _settings(ctx), user.username, body, idempotency_key)


@router.get("/orders", response_model=responses.OrderPage)
async def list_orders(
    user: CurrentUser,
    ctx: Ctx,
    asset_id: Annotated[str | None, Query(pattern=ASSET_ID_PATTERN)] = None,
    order_type: OrderType | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    check_page_size(ctx.settings, limit, MAX_PAGE)
    orders, has_more = await ctx.db(
        store.list_orders,
        ctx.require_tables(),
        user.username,
        asset_id=asset_id.upper() if asset_id else None,
        order_type=order_type,
        limit=limit,
        offset=offset,
    )
    return {"data": [render_order(o) for o in orders], "has_more": has_more}


@router.get("/orders/{order_id}", response_model=responses.OrderEnvelope, responses=problems(404))
async def get_order(
    order_id: Annotated[str, Path(pattern=ORDER_ID_PATTERN)], user: CurrentUser, ctx: Ctx
) -> dict[str, Any]:
    # Keyed by (username, order_id): another user's order is simply not found, not forbidden,
    # so ids cannot be probed. Unless the bola flaw is on (security/flaws.yaml).
    if _settings(ctx).order_ownership_check_enabled:
        order = await ctx.db(store.get_order, ctx.require_tables(), user.username, order_id)
    else:
        order = await ctx.db(store.find_order_by_id, ctx.require_tables(), order_id)
    if order is None:
        raise ProblemError(404, "Order not found", slug="order-not-found")
    return {"data": render_order(order)}


@router.get("/assets/{asset_id}/transactions", response_model=responses.TradePage)
async def asset_transactions(
    asset_id: Annotated[str, Path(pattern=ASSET_ID_PATTERN, examples=["BTC"])],
    user: CurrentUser,
    ctx: Ctx,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    check_page_size(ctx.settings, limit, MAX_PAGE)
    trades, has_more = await ctx.db(
        store.list_asset_trades,
        ctx.require_tables(),
        user.username,
        asset_id.upper(),
        limit=limit,
        offset=offset,
    )
    return {"data": [render_trade(t) for t in trades], "has_more": has_more}
