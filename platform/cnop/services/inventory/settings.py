"""The inventory service's settings (``CNOP_PRICE_SEED``, ``CNOP_LIVE_PRICES_URL``, ...).

Kept apart from ``main`` so the price modules can read them without importing the app factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from pydantic import Field

from cnop.core.context import ServiceContext
from cnop.core.settings import ServiceSettings

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.json")


class Settings(ServiceSettings):
    service_name: str = "inventory"
    port: int = 8001

    # The committed catalogue seeded into the assets table at start-up; a lab may ship its own.
    catalogue_path: Path = DEFAULT_CATALOGUE

    # Simulated market: a seeded random walk, the same on every instance for the same tick.
    price_simulator_enabled: bool = True
    # Frozen prices are the catalogue's own figures: handy for drills that need known prices.
    price_freeze: bool = False
    price_seed: int = 42
    price_tick_seconds: float = Field(default=5.0, gt=0, le=3600)

    # Optional CoinGecko-style ``/simple/price`` endpoint; any failure falls back to the simulator.
    live_prices_url: str | None = None
    # A request that triggers the (shared) fetch waits for it: it must fit the request budget.
    live_prices_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    # How long a fetched (or failed) answer is reused: the public API is rate limited.
    live_prices_ttl_seconds: float = Field(default=30.0, ge=0)

    def _waits_within_budget(self) -> dict[str, float]:
        waits = super()._waits_within_budget()
        if self.live_prices_url:
            waits["CNOP_LIVE_PRICES_TIMEOUT_SECONDS"] = self.live_prices_timeout_seconds
        return waits


def inventory_settings(ctx: ServiceContext) -> Settings:
    return cast(Settings, ctx.settings)
