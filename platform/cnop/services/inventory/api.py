"""Public catalogue routes (the gateway maps ``/api/v1/inventory/...`` here)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path

from cnop.core.auth import Ctx
from cnop.core.clock import iso
from cnop.core.context import ServiceContext
from cnop.core.money import usd_str
from cnop.core.paging import check_page_size, page_size
from cnop.core.problems import ProblemError
from cnop.core.schemas import problems
from cnop.services.inventory import responses
from cnop.services.inventory.catalogue import Catalogue, CatalogueEntry
from cnop.services.inventory.pricebook import PriceBook
from cnop.services.inventory.prices import Quote, pct_change

ASSET_ID_PATTERN = r"^[A-Za-z0-9]{1,10}$"
STATE_KEY = "inventory"

router = APIRouter()


@dataclass(frozen=True)
class InventoryState:
    catalogue: Catalogue
    prices: PriceBook


def state(ctx: ServiceContext) -> InventoryState:
    assert ctx.extra is not None
    return ctx.extra[STATE_KEY]


@router.get("/inventory/assets", response_model=responses.AssetList)
async def list_assets(
    ctx: Ctx,
    active_only: bool = True,
    limit: Annotated[int, page_size(250)] = 50,
) -> dict[str, Any]:
    """``total_count`` counts every asset matching the filter, before ``limit`` cuts the page."""
    check_page_size(ctx.settings, limit, 250)
    inv = state(ctx)
    matching = [e for e in inv.catalogue.entries if e.is_active or not active_only]
    page = matching[:limit]
    quotes = await inv.prices.quotes(page)
    return {
        "data": [list_item(e, quotes[e.asset_id]) for e in page],
        "total_count": len(matching),
        "active_count": inv.catalogue.active_count,
    }


@router.get(
    "/inventory/assets/{asset_id}",
    response_model=responses.AssetDetailEnvelope,
    responses=problems(404),
)
async def get_asset(
    ctx: Ctx,
    asset_id: Annotated[str, Path(pattern=ASSET_ID_PATTERN, examples=["BTC"])],
) -> dict[str, Any]:
    """Inactive assets are still served here (with their status), so history stays readable."""
    inv = state(ctx)
    entry = inv.catalogue.get(asset_id.upper())
    if entry is None:
        raise ProblemError(404, f"Asset {asset_id.upper()} not found", slug="asset-not-found")
    quote = (await inv.prices.quotes([entry], detail=True))[entry.asset_id]
    return {"data": detail_item(entry, quote)}


def _pct(value: Decimal) -> float:
    """Percentages are ratios, not money: JSON numbers with two decimals."""
    return float(value.quantize(Decimal("0.01")))


def _market_cap(entry: CatalogueEntry, price: Decimal) -> int | None:
    supply = entry.data.get("circulating_supply")
    if supply:
        return int(price * Decimal(str(supply)))
    cap = entry.data.get("market_cap")
    return int(cap) if cap is not None else None


def list_item(entry: CatalogueEntry, quote: Quote) -> dict[str, Any]:
    d = entry.data
    return {
        "asset_id": entry.asset_id,
        "name": d.get("name"),
        "description": d.get("description"),
        "category": d.get("category"),
        "price_usd": usd_str(quote.price),
        "is_active": entry.is_active,
        "symbol": d.get("symbol"),
        "image": d.get("image"),
        "market_cap_rank": d.get("market_cap_rank"),
        "price_change_percentage_24h": _pct(quote.change_pct_24h),
        "market_cap": _market_cap(entry, quote.price),
        "total_volume_24h": d.get("total_volume_24h"),
    }


def _availability(entry: CatalogueEntry) -> str:
    status = str(entry.data.get("availability_status") or "available")
    if entry.is_active:
        return "available"
    # Deactivated in the table after seeding: the stored status may still say available.
    return status if status != "available" else "suspended"


def detail_item(entry: CatalogueEntry, quote: Quote) -> dict[str, Any]:
    d = entry.data
    price = quote.price
    ath, ath_date = Decimal(str(d.get("ath", price))), d.get("ath_date")
    if price > ath:
        ath, ath_date = price, iso(quote.as_of)
    atl, atl_date = Decimal(str(d.get("atl", price))), d.get("atl_date")
    if price < atl:
        atl, atl_date = price, iso(quote.as_of)
    return {
        **list_item(entry, quote),
        "availability_status": _availability(entry),
        "price_change_24h": usd_str(quote.change_24h),
        "price_change_percentage_7d": _pct(quote.change_pct_7d),
        "price_change_percentage_30d": _pct(quote.change_pct_30d),
        "high_24h": usd_str(quote.high_24h),
        "low_24h": usd_str(quote.low_24h),
        "circulating_supply": d.get("circulating_supply"),
        "total_supply": d.get("total_supply"),
        "max_supply": d.get("max_supply"),
        "ath": format(ath, "f"),
        "ath_change_percentage": _pct(pct_change(ath, price)),
        "ath_date": ath_date,
        "atl": format(atl, "f"),
        "atl_change_percentage": _pct(pct_change(atl, price)),
        "atl_date": atl_date,
        "last_updated": iso(quote.as_of),
    }
