"""Chooses where each price comes from: live provider, simulator, or the catalogue snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from cnop.services.inventory.catalogue import CatalogueEntry
from cnop.services.inventory.live import LivePriceSource
from cnop.services.inventory.prices import PriceSimulator, Quote, catalogue_quote, rescale
from cnop.services.inventory.settings import Settings


class PriceBook:
    def __init__(
        self,
        settings: Settings,
        live: LivePriceSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._simulate = settings.price_simulator_enabled and not settings.price_freeze
        self._simulator = PriceSimulator(
            seed=settings.price_seed, tick_seconds=settings.price_tick_seconds
        )
        self._live = live
        self._clock = clock

    async def quotes(
        self, entries: list[CatalogueEntry], *, detail: bool = False
    ) -> dict[str, Quote]:
        """One consistent moment for the whole request: every asset priced at the same tick."""
        now = self._clock()
        live = await self._live.prices() if self._live is not None else {}
        out: dict[str, Quote] = {}
        for entry in entries:
            quote = (
                self._simulator.quote(entry, now, detail=detail)
                if self._simulate
                else catalogue_quote(entry)
            )
            hit = live.get(entry.asset_id)
            if hit is not None:
                quote = rescale(
                    quote, hit.price, hit.change_pct_24h, datetime.fromtimestamp(now, UTC)
                )
            out[entry.asset_id] = quote
        return out
