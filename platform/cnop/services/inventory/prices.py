"""Seeded price simulator: a bounded random walk that every instance computes identically.

The log-price offset from the base price at tick ``k`` is a sum of octaves of value noise: at
octave ``j`` a gaussian is drawn at every ``2**j``-th tick from a hash of
``(seed, asset, j, index)`` and interpolated linearly in between, weighted by ``sqrt(2**j)``.
That has the variance growth of a random walk up to the longest octave (about 5.7 hours at
5-second ticks), yet price(k) is a pure function of (seed, asset, k) computable in O(octaves):
no state, no history, and two instances (or a test) always agree. The offset is clamped to
+/- ``MAX_DRIFT`` so prices never wander far from the catalogue.

Gaussians come from integer arithmetic on a BLAKE2 digest (Irwin-Hall) and the exponential from
:class:`~decimal.Decimal`, so results do not depend on the platform's libm either.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from cnop.core.money import usd
from cnop.services.inventory.catalogue import CatalogueEntry

OCTAVES = 12
TICK_VOLATILITY = 0.0006  # scale of one tick's log-return for a volatility-1.0 asset
MAX_DRIFT = 0.15  # |ln(price / base)| never exceeds this
DAY_SECONDS = 86_400
HIGH_LOW_SAMPLES = 48  # points sampled over the last 24 h for high_24h / low_24h


@dataclass(frozen=True)
class Quote:
    """What the API shows about an asset's price at one moment, all figures consistent."""

    price: Decimal
    price_24h_ago: Decimal
    high_24h: Decimal
    low_24h: Decimal
    change_pct_7d: Decimal
    change_pct_30d: Decimal
    as_of: datetime

    @property
    def change_24h(self) -> Decimal:
        return self.price - self.price_24h_ago

    @property
    def change_pct_24h(self) -> Decimal:
        return pct_change(self.price_24h_ago, self.price)


def pct_change(old: Decimal, new: Decimal) -> Decimal:
    return Decimal(0) if old == 0 else (new - old) / old * 100


@lru_cache(maxsize=131_072)
def _lattice(seed: int, asset_id: str, octave: int, index: int) -> float:
    """A standard-normal-ish draw fixed by its arguments (sum of 12 uniforms minus 6)."""
    digest = hashlib.blake2b(
        f"{seed}:{asset_id}:{octave}:{index}".encode(), digest_size=24
    ).digest()
    total = sum(int.from_bytes(digest[i : i + 2], "big") for i in range(0, 24, 2))
    return total / 65_535 - 6.0


def log_offset(seed: int, asset_id: str, tick: int, volatility: float = 1.0) -> float:
    """ln(price / base) at ``tick``: a pure function, bounded by ``MAX_DRIFT``."""
    total = 0.0
    for octave in range(OCTAVES):
        period = 1 << octave
        index, rest = divmod(tick, period)
        a = _lattice(seed, asset_id, octave, index)
        b = _lattice(seed, asset_id, octave, index + 1)
        total += math.sqrt(period) * (a + (b - a) * (rest / period))
    offset = volatility * TICK_VOLATILITY * total
    return max(-MAX_DRIFT, min(MAX_DRIFT, offset))


def simulated_price(
    base: Decimal, seed: int, asset_id: str, tick: int, volatility: float
) -> Decimal:
    """The base price moved by the walk, in cents (what clients see and orders execute at)."""
    if base == 0:
        return base
    factor = Decimal(repr(log_offset(seed, asset_id, tick, volatility))).exp()
    return max(usd(base * factor), Decimal("0.01"))


class PriceSimulator:
    def __init__(self, *, seed: int, tick_seconds: float) -> None:
        self.seed = seed
        self.tick_seconds = tick_seconds
        self.ticks_per_day = max(1, round(DAY_SECONDS / tick_seconds))

    def tick_at(self, now: float) -> int:
        return math.floor(now / self.tick_seconds)

    def price(self, entry: CatalogueEntry, tick: int) -> Decimal:
        return simulated_price(entry.base_price, self.seed, entry.asset_id, tick, entry.volatility)

    def quote(self, entry: CatalogueEntry, now: float, *, detail: bool) -> Quote:
        """Price now and the 24 h figures; 7/30-day changes and high/low only for ``detail``."""
        tick = self.tick_at(now)
        day = self.ticks_per_day
        price = self.price(entry, tick)
        prev = self.price(entry, tick - day)
        high = low = price
        pct7 = pct30 = Decimal(0)
        if detail:
            step = max(1, day // HIGH_LOW_SAMPLES)
            samples = [self.price(entry, tick - i) for i in range(step, day, step)]
            samples += [price, prev]
            high, low = max(samples), min(samples)
            pct7 = pct_change(self.price(entry, tick - 7 * day), price)
            pct30 = pct_change(self.price(entry, tick - 30 * day), price)
        return Quote(
            price=price,
            price_24h_ago=prev,
            high_24h=high,
            low_24h=low,
            change_pct_7d=pct7,
            change_pct_30d=pct30,
            as_of=datetime.fromtimestamp(tick * self.tick_seconds, UTC),
        )


def catalogue_quote(entry: CatalogueEntry) -> Quote:
    """The catalogue's own snapshot: the prices when the simulator is off or frozen."""
    data = entry.data
    price = entry.base_price
    change = Decimal(str(data.get("price_change_24h", "0")))
    prev = price - change
    return Quote(
        price=price,
        price_24h_ago=prev,
        high_24h=max(Decimal(str(data.get("high_24h", price))), price, prev),
        low_24h=min(Decimal(str(data.get("low_24h", price))), price, prev),
        change_pct_7d=Decimal(str(data.get("price_change_percentage_7d", 0))),
        change_pct_30d=Decimal(str(data.get("price_change_percentage_30d", 0))),
        as_of=_parse_time(str(data.get("last_updated", "1970-01-01T00:00:00Z"))),
    )


def rescale(quote: Quote, price: Decimal, change_pct_24h: Decimal | None, as_of: datetime) -> Quote:
    """Move a quote to a live price, keeping its shape so high >= price >= low still holds."""
    ratio = price / quote.price if quote.price else Decimal(1)
    if change_pct_24h is not None and change_pct_24h > -100:
        prev = usd(price / (1 + change_pct_24h / 100))
    else:
        prev = usd(quote.price_24h_ago * ratio)
    return Quote(
        price=price,
        price_24h_ago=prev,
        high_24h=max(usd(quote.high_24h * ratio), price, prev),
        low_24h=min(usd(quote.low_24h * ratio), price, prev),
        change_pct_7d=quote.change_pct_7d,
        change_pct_30d=quote.change_pct_30d,
        as_of=as_of,
    )


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
