"""Optional live prices from a CoinGecko-style ``/simple/price`` endpoint.

Off unless ``live_prices_url`` is set. One request fetches every asset, and its answer (or its
failure) is reused for ``live_prices_ttl_seconds``, so a slow or rate-limiting provider costs at
most one timeout per period; meanwhile, and for any asset it does not quote, the simulator
answers. The provider is never trusted: numbers are parsed as Decimal and checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import httpx

from cnop.core.faults import FaultFlags
from cnop.core.logging import log_event
from cnop.core.money import usd

DEPENDENCY = "live_prices"


@dataclass(frozen=True)
class LivePrice:
    price: Decimal
    change_pct_24h: Decimal | None


class LivePriceSource:
    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        faults: FaultFlags,
        *,
        coin_ids: dict[str, str],  # asset_id -> provider id
        timeout_seconds: float,
        ttl_seconds: float,
    ) -> None:
        self._url = url
        self._http = http
        self._faults = faults
        self._coin_ids = coin_ids
        self._timeout = timeout_seconds
        self._ttl = ttl_seconds
        self._prices: dict[str, LivePrice] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def prices(self) -> dict[str, LivePrice]:
        """Live prices by asset id; empty when the provider is failing (callers fall back)."""
        if not self._coin_ids:
            return {}
        if time.monotonic() - self._fetched_at >= self._ttl:
            async with self._lock:  # one fetch at a time; the others reuse its answer
                if time.monotonic() - self._fetched_at >= self._ttl:
                    self._prices = await self._fetch()
                    self._fetched_at = time.monotonic()
        return self._prices

    async def _fetch(self) -> dict[str, LivePrice]:
        if await self._faults.dependency_down(DEPENDENCY):
            return {}
        params = {
            "ids": ",".join(sorted(set(self._coin_ids.values()))),
            "vs_currencies": "usd",
            "include_24hr_change": "true",
        }
        try:
            response = await self._http.get(self._url, params=params, timeout=self._timeout)
            response.raise_for_status()
            doc = json.loads(response.text, parse_float=Decimal, parse_int=Decimal)
        except (httpx.HTTPError, ValueError) as exc:
            log_event("live_prices_unavailable", logging.WARNING, error=type(exc).__name__)
            return {}
        prices = parse_simple_price(doc, self._coin_ids)
        log_event("live_prices_fetched", assets=len(prices))
        return prices


def parse_simple_price(doc: object, coin_ids: dict[str, str]) -> dict[str, LivePrice]:
    """Keep only well-formed, positive quotes; anything else is left to the simulator."""
    if not isinstance(doc, dict):
        return {}
    out: dict[str, LivePrice] = {}
    for asset_id, coin in coin_ids.items():
        entry = doc.get(coin)
        if not isinstance(entry, dict):
            continue
        try:
            price = usd(Decimal(entry["usd"]))
            change = entry.get("usd_24h_change")
            change_pct = Decimal(change) if change is not None else None
        except (KeyError, TypeError, InvalidOperation):
            continue
        if not price.is_finite() or price <= 0:
            continue
        if change_pct is not None and not change_pct.is_finite():
            change_pct = None
        out[asset_id] = LivePrice(price, change_pct)
    return out
