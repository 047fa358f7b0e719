"""Portfolio and per-asset views: holdings from our tables, prices from the inventory service.

Prices are asked for over HTTP (services never share code paths or tables for this); if the
inventory cannot answer, the view is a 503 rather than a portfolio valued at stale or zero prices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from cnop.core.context import ServiceContext
from cnop.core.logging import log_event, request_id_var
from cnop.core.money import qty_str, usd, usd_str
from cnop.core.problems import ProblemError


@dataclass(frozen=True)
class Position:
    asset_id: str
    quantity: Decimal
    price: Decimal


def price_str(price: Decimal) -> str:
    """Prices keep their own precision (a coin may cost 0.00001234 USD), never exponent form."""
    text = format(price, "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"


def parse_price(raw: Any) -> Decimal:
    """Accept the contract's decimal string (and, leniently, a JSON number)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError("price is not a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError("price is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError("price is not a finite non-negative number")
    return value


def portfolio_view(usd_balance: Decimal, positions: list[Position]) -> dict[str, Any]:
    """Market values in cents; percentages of the total (cash included), rounded to 2 places."""
    values = [usd(p.quantity * p.price) for p in positions]
    total = usd(usd_balance) + sum(values, Decimal(0))
    assets = []
    for position, value in zip(positions, values, strict=True):
        share = usd(value / total * 100) if total > 0 else Decimal(0)
        assets.append(
            {
                "asset_id": position.asset_id,
                "quantity": qty_str(position.quantity),
                "current_price": price_str(position.price),
                "market_value": usd_str(value),
                "percentage": usd_str(share),
            }
        )
    return {"assets": assets, "usd_balance": usd_str(usd_balance), "total_value": usd_str(total)}


def _unavailable() -> ProblemError:
    return ProblemError(503, "Asset prices are unavailable right now", headers={"Retry-After": "2"})


async def _get_json(ctx: ServiceContext, url: str, **params: Any) -> httpx.Response:
    headers = {}
    request_id = request_id_var.get()
    if request_id:
        headers["X-Request-ID"] = request_id
    return await ctx.call_service("inventory", "GET", url, params=params, headers=headers)


def _data(response: httpx.Response) -> Any:
    try:
        return response.json()["data"]
    except (ValueError, KeyError, TypeError):
        log_event("inventory_bad_response", logging.WARNING, status=response.status_code)
        raise _unavailable() from None


async def asset_detail(ctx: ServiceContext, asset_id: str) -> dict[str, Any] | None:
    """The inventory's asset document, or None when it does not know the asset."""
    base = ctx.settings.inventory_url.rstrip("/")
    response = await _get_json(ctx, f"{base}/inventory/assets/{asset_id}")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        log_event("inventory_bad_response", logging.WARNING, status=response.status_code)
        raise _unavailable()
    data = _data(response)
    if not isinstance(data, dict):
        raise _unavailable()
    return data


async def catalogue_prices(ctx: ServiceContext, asset_ids: list[str]) -> dict[str, Decimal]:
    """Prices of the given assets: one list call, then a detail call for any it did not carry."""
    if not asset_ids:
        return {}
    base = ctx.settings.inventory_url.rstrip("/")
    response = await _get_json(ctx, f"{base}/inventory/assets", limit="250", active_only="false")
    if response.status_code != 200:
        log_event("inventory_bad_response", logging.WARNING, status=response.status_code)
        raise _unavailable()
    items = _data(response)
    if not isinstance(items, list):
        raise _unavailable()
    wanted = set(asset_ids)
    prices: dict[str, Decimal] = {}
    for item in items:
        if isinstance(item, dict) and item.get("asset_id") in wanted:
            prices[item["asset_id"]] = checked_price(item)
    for asset_id in wanted - prices.keys():
        detail = await asset_detail(ctx, asset_id)
        prices[asset_id] = checked_price(detail) if detail is not None else Decimal(0)
    return prices


def checked_price(item: dict[str, Any]) -> Decimal:
    try:
        return parse_price(item.get("price_usd"))
    except ValueError:
        log_event("inventory_bad_price", logging.WARNING, asset_id=str(item.get("asset_id")))
        raise _unavailable() from None
