"""The execution price, asked of the inventory service over HTTP at order time.

Anything but a clean answer from inventory is our caller's 503: an order must never execute at a
price we are not sure of.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from cnop.core.context import ServiceContext
from cnop.core.logging import log_event, request_id_var
from cnop.core.metrics import DEPENDENCY_ERRORS
from cnop.core.money import MAX_PRICE
from cnop.core.problems import ProblemError


@dataclass(frozen=True)
class Quote:
    asset_id: str
    price: Decimal
    is_active: bool


def _unavailable() -> ProblemError:
    return ProblemError(503, "The inventory service is unavailable", headers={"Retry-After": "2"})


async def fetch_quote(ctx: ServiceContext, inventory_url: str, asset_id: str) -> Quote:
    request_id = request_id_var.get()
    headers = {"X-Request-ID": request_id} if request_id else {}
    response = await ctx.call_service(
        "inventory",
        "GET",
        f"{inventory_url.rstrip('/')}/inventory/assets/{asset_id}",
        headers=headers,
    )
    if response.status_code == 404:
        raise ProblemError(404, f"Asset {asset_id} not found", slug="asset-not-found")
    if response.status_code != 200:
        DEPENDENCY_ERRORS.labels(ctx.service, "inventory", "GET", "fail_closed").inc()
        log_event(
            "dependency_unavailable",
            logging.WARNING,
            dependency="inventory",
            status=response.status_code,
        )
        raise _unavailable()
    try:
        data = response.json()["data"]
        # A JSON string keeps the decimal exact; a number is accepted via its text form.
        price = Decimal(str(data["price_usd"]))
        is_active = data.get("is_active", True) is not False
    except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
        log_event(
            "dependency_bad_answer", logging.WARNING, dependency="inventory", error=str(exc)[:100]
        )
        raise _unavailable() from exc
    # Zero is a valid answer ("no price now", refused by the order rules); negative is not, nor
    # a price beyond any a client may name (the money helpers are exact only within bounds).
    if not price.is_finite() or price < 0 or price > MAX_PRICE:
        log_event("dependency_bad_answer", logging.WARNING, dependency="inventory", error="price")
        raise _unavailable()
    return Quote(asset_id=asset_id, price=price, is_active=is_active)
