"""inventory service: the asset catalogue and its current prices, public and read-only.

At start-up the committed catalogue is seeded into the assets table and the table is read back
into memory; requests never touch DynamoDB, and prices are computed per request (simulator,
catalogue snapshot or live provider, see ``pricebook``).
"""

from __future__ import annotations

from fastapi import FastAPI

from cnop.core.app import create_service_app
from cnop.core.context import ServiceContext
from cnop.core.logging import log_event
from cnop.services.inventory.api import STATE_KEY, InventoryState, router
from cnop.services.inventory.catalogue import Catalogue, load_assets, load_file, seed_assets
from cnop.services.inventory.live import LivePriceSource
from cnop.services.inventory.pricebook import PriceBook
from cnop.services.inventory.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    seed_entries = load_file(settings.catalogue_path)  # a broken file stops us before serving

    async def on_startup(ctx: ServiceContext) -> None:
        tables = ctx.require_tables()
        written = await ctx.db(seed_assets, tables, seed_entries)
        catalogue = Catalogue.of(await ctx.db(load_assets, tables))
        live = None
        if settings.live_prices_url:
            live = LivePriceSource(
                settings.live_prices_url,
                ctx.http,
                ctx.faults,
                coin_ids={e.asset_id: e.coingecko_id for e in catalogue.entries if e.coingecko_id},
                timeout_seconds=settings.live_prices_timeout_seconds,
                ttl_seconds=settings.live_prices_ttl_seconds,
            )
        assert ctx.extra is not None
        ctx.extra[STATE_KEY] = InventoryState(catalogue, PriceBook(settings, live))
        log_event(
            "catalogue_loaded",
            assets=len(catalogue.entries),
            seeded=written,
            live_prices=live is not None,
        )

    return create_service_app(
        settings, title="CNOP inventory", routers=[router], on_startup=on_startup
    )
