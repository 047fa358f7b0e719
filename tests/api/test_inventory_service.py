from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from cnop.services.inventory.catalogue import load_file
from cnop.services.inventory.main import Settings, create_app
from cnop.services.inventory.prices import MAX_DRIFT, PriceSimulator, log_offset
from cnop.services.inventory.settings import DEFAULT_CATALOGUE
from fastapi import FastAPI, Request

from tests.conftest import assert_no_leak, running, serve_in_thread

LIST_KEYS = {
    "asset_id", "name", "description", "category", "price_usd", "is_active", "symbol", "image",
    "market_cap_rank", "price_change_percentage_24h", "market_cap", "total_volume_24h",
}  # fmt: skip
DETAIL_KEYS = LIST_KEYS | {
    "availability_status", "price_change_24h", "price_change_percentage_7d",
    "price_change_percentage_30d", "high_24h", "low_24h", "circulating_supply", "total_supply",
    "max_supply", "ath", "ath_change_percentage", "ath_date", "atl", "atl_change_percentage",
    "atl_date", "last_updated",
}  # fmt: skip
HOUR = 3600.0  # long ticks: a test never straddles two prices


def raw_catalogue() -> list[dict[str, Any]]:
    return json.loads(DEFAULT_CATALOGUE.read_text())["assets"]


def tick_of(asset: dict[str, Any], tick_seconds: float) -> int:
    stamp = datetime.fromisoformat(asset["last_updated"].replace("Z", "+00:00")).timestamp()
    return round(stamp / tick_seconds)


def test_catalogue_file_is_complete_and_realistic() -> None:
    assets = raw_catalogue()
    assert len(assets) >= 30
    ids = [a["asset_id"] for a in assets]
    assert len(set(ids)) == len(ids)
    for a in assets:
        missing = {k for k in DETAIL_KEYS if a.get(k) in (None, "")}
        assert not missing, (a["asset_id"], missing)
        assert Decimal(a["low_24h"]) <= Decimal(a["price_usd"]) <= Decimal(a["high_24h"])
    by_id = {a["asset_id"]: a for a in assets}
    assert Decimal(45000) <= Decimal(by_id["BTC"]["price_usd"]) <= Decimal(55000)
    assert {"ETH", "SOL", "USDT"} <= set(by_id)
    assert sum(1 for a in assets if not a["is_active"]) >= 2


def test_simulator_is_a_pure_bounded_function() -> None:
    entries = {e.asset_id: e for e in load_file(DEFAULT_CATALOGUE)}
    sim = PriceSimulator(seed=42, tick_seconds=5)
    again = PriceSimulator(seed=42, tick_seconds=5)
    other_seed = PriceSimulator(seed=7, tick_seconds=5)
    btc = entries["BTC"]
    ticks = range(350_000_000, 350_000_000 + 20_000, 997)
    prices = [sim.price(btc, k) for k in ticks]
    assert prices == [again.price(btc, k) for k in ticks]
    assert prices != [other_seed.price(btc, k) for k in ticks]
    assert len(set(prices)) > len(prices) // 2  # it moves
    bound = Decimal(MAX_DRIFT).exp()
    for p in prices:
        assert btc.base_price / bound - 1 <= p <= btc.base_price * bound + 1
    assert all(abs(log_offset(42, "ETH", k)) <= MAX_DRIFT for k in range(0, 10**6, 4999))
    # neighbouring ticks differ by a small step, as in a random walk
    steps = [abs(sim.price(btc, k + 1) / sim.price(btc, k) - 1) for k in ticks]
    assert max(steps) < Decimal("0.01")
    usdt = [sim.price(entries["USDT"], k) for k in ticks]
    assert all(Decimal("0.99") <= p <= Decimal("1.01") for p in usdt)


async def test_list_assets_contract(service_env: dict[str, Any]) -> None:
    catalogue = raw_catalogue()
    active = [a for a in catalogue if a["is_active"]]
    app = create_app(Settings(**service_env))
    async with running(app) as client:
        r = await client.get("/inventory/assets")
        assert r.status_code == 200
        body = r.json()
        assert body["total_count"] == len(active) and body["active_count"] == len(active)
        assert len(body["data"]) == min(50, len(active))
        ranks = [a["market_cap_rank"] for a in body["data"]]
        assert ranks == sorted(ranks)
        for item in body["data"]:
            assert set(item) == LIST_KEYS
            assert item["is_active"] is True
            assert isinstance(item["price_usd"], str)
            assert Decimal(item["price_usd"]).as_tuple().exponent == -2
            assert Decimal(item["price_usd"]) > 0
        assert body["data"][0]["asset_id"] == "BTC"

        r = await client.get("/inventory/assets", params={"active_only": "false", "limit": 250})
        body = r.json()
        assert body["total_count"] == len(catalogue) == len(body["data"])
        assert body["active_count"] == len(active)
        assert {a["asset_id"] for a in body["data"] if not a["is_active"]} == {
            a["asset_id"] for a in catalogue if not a["is_active"]
        }

        r = await client.get("/inventory/assets", params={"limit": 5})
        assert len(r.json()["data"]) == 5 and r.json()["total_count"] == len(active)

        for params in ({"limit": 0}, {"limit": 251}, {"limit": "x"}, {"active_only": "maybe"}):
            r = await client.get("/inventory/assets", params=params)
            assert r.status_code == 422, params
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["errors"][0]["field"] == next(iter(params))
            assert_no_leak(r.text)


async def test_asset_detail_is_consistent_with_the_simulator(
    service_env: dict[str, Any],
) -> None:
    settings = Settings(**service_env, price_tick_seconds=HOUR, price_seed=1234)
    entries = {e.asset_id: e for e in load_file(DEFAULT_CATALOGUE)}
    sim = PriceSimulator(seed=1234, tick_seconds=HOUR)
    app = create_app(settings)
    async with running(app) as client:
        r = await client.get("/inventory/assets/btc")  # upper-cased
        assert r.status_code == 200
        asset = r.json()["data"]
        assert set(asset) == DETAIL_KEYS
        assert all(asset[k] is not None for k in DETAIL_KEYS)
        assert asset["asset_id"] == "BTC" and asset["availability_status"] == "available"
        tick = tick_of(asset, HOUR)
        price = Decimal(asset["price_usd"])
        assert price == sim.price(entries["BTC"], tick)
        day_ago = sim.price(entries["BTC"], tick - 24)
        assert Decimal(asset["price_change_24h"]) == price - day_ago
        assert asset["price_change_percentage_24h"] == float(
            ((price - day_ago) / day_ago * 100).quantize(Decimal("0.01"))
        )
        assert Decimal(asset["low_24h"]) <= min(price, day_ago)
        assert Decimal(asset["high_24h"]) >= max(price, day_ago)
        assert Decimal(asset["ath"]) >= price >= Decimal(asset["atl"])
        assert asset["market_cap"] == int(price * asset["circulating_supply"])

        # the list shows the same price at the same tick
        listed = (await client.get("/inventory/assets")).json()["data"]
        assert next(a for a in listed if a["asset_id"] == "BTC")["price_usd"] == str(price)

        inactive = next(a["asset_id"] for a in raw_catalogue() if not a["is_active"])
        r = await client.get(f"/inventory/assets/{inactive}")
        assert r.status_code == 200
        assert r.json()["data"]["is_active"] is False
        assert r.json()["data"]["availability_status"] != "available"


async def test_bad_and_unknown_asset_ids(service_env: dict[str, Any]) -> None:
    app = create_app(Settings(**service_env))
    async with running(app) as client:
        for bad in ("BTC-USD", "ABCDEFGHIJK", "b%20tc", "%3Cscript%3E"):
            r = await client.get(f"/inventory/assets/{bad}")
            assert r.status_code == 422, bad
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["errors"][0]["field"] == "asset_id"
            assert_no_leak(r.text)
        r = await client.get("/inventory/assets/ZZZ9")
        assert r.status_code == 404
        body = r.json()
        assert body["status"] == 404 and "ZZZ9" in body["detail"] and body["request_id"]
        assert_no_leak(r.text)


async def test_instances_agree_and_seed_is_idempotent(
    service_env: dict[str, Any],
) -> None:
    settings = Settings(**service_env, price_tick_seconds=HOUR)
    app_a, app_b = create_app(settings), create_app(settings)
    async with AsyncExitStack() as stack:
        # both start at once against the same (new) tables
        client_a, client_b = await asyncio.gather(
            stack.enter_async_context(running(app_a)), stack.enter_async_context(running(app_b))
        )
        params = {"active_only": "false", "limit": 250}
        a = (await client_a.get("/inventory/assets", params=params)).json()
        b = (await client_b.get("/inventory/assets", params=params)).json()
        assert a == b
        assert a["total_count"] == len(raw_catalogue())
        tables = app_a.state.ctx.tables
        assert tables.assets.count() == len(raw_catalogue())

        # an operator deactivates SOL in the table; a restart keeps that edit
        sol = tables.assets.get("SOL")
        sol.update(actions=[tables.assets.is_active.set(False)])

    async with running(create_app(settings)) as client:
        assert tables.assets.count() == len(raw_catalogue())
        listed = (await client.get("/inventory/assets")).json()
        assert "SOL" not in {x["asset_id"] for x in listed["data"]}
        assert listed["active_count"] == a["active_count"] - 1
        detail = (await client.get("/inventory/assets/SOL")).json()["data"]
        assert detail["is_active"] is False and detail["availability_status"] == "suspended"


async def test_frozen_prices_are_the_catalogue(service_env: dict[str, Any]) -> None:
    by_id = {a["asset_id"]: a for a in raw_catalogue()}
    app = create_app(Settings(**service_env, price_freeze=True))
    async with running(app) as client:
        listed = (await client.get("/inventory/assets", params={"limit": 250})).json()["data"]
        for item in listed:
            assert item["price_usd"] == by_id[item["asset_id"]]["price_usd"]
        eth = (await client.get("/inventory/assets/ETH")).json()["data"]
        for key in ("price_usd", "high_24h", "low_24h", "price_change_24h", "ath", "atl"):
            assert eth[key] == by_id["ETH"][key], key
        assert eth["last_updated"].startswith(by_id["ETH"]["last_updated"][:19])


class CoinGeckoStandIn:
    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[dict[str, str]] = []
        self.app = FastAPI()

        @self.app.get("/api/v3/simple/price")
        async def simple_price(request: Request) -> Any:
            self.calls.append(dict(request.query_params))
            if self.mode == "error":
                return _json_error()
            if self.mode == "slow":
                # Far past the test's 0.3 s timeout; over once the service hangs up.
                for _ in range(100):
                    if await request.is_disconnected():
                        break
                    await asyncio.sleep(0.05)
            return {
                "bitcoin": {"usd": 61234.5, "usd_24h_change": 2.5},
                "ethereum": {"usd": "not-a-price"},
                "solana": {"usd": -3},
            }


def _json_error() -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": "rate limited"}, status_code=500)


@pytest.fixture(scope="module")
def coingecko() -> Iterator[tuple[CoinGeckoStandIn, str]]:
    stand_in = CoinGeckoStandIn()
    with serve_in_thread(stand_in.app) as url:
        yield stand_in, f"{url}/api/v3/simple/price"


async def test_live_prices_with_fallback(
    service_env: dict[str, Any], coingecko: tuple[CoinGeckoStandIn, str]
) -> None:
    stand_in, url = coingecko
    by_id = {a["asset_id"]: a for a in raw_catalogue()}
    common = {**service_env, "price_freeze": True, "live_prices_url": url}

    stand_in.mode, stand_in.calls[:] = "ok", []
    # The stand-in shares this process's GIL: on a loaded machine it may take longer than the
    # production 2 s to answer, and this part is about the live prices, not time.
    patient = {"live_prices_timeout_seconds": 10, "request_budget_seconds": 30}
    app = create_app(Settings(**common, **patient, live_prices_ttl_seconds=60))
    async with running(app) as client:
        btc = (await client.get("/inventory/assets/BTC")).json()["data"]
        assert btc["price_usd"] == "61234.50"
        assert btc["price_change_percentage_24h"] == 2.5
        assert Decimal(btc["low_24h"]) <= Decimal("61234.50") <= Decimal(btc["high_24h"])
        listed = (await client.get("/inventory/assets")).json()["data"]
        prices = {a["asset_id"]: a["price_usd"] for a in listed}
        assert prices["BTC"] == "61234.50"
        # malformed or missing quotes fall back, asset by asset
        assert prices["ETH"] == by_id["ETH"]["price_usd"]
        assert prices["SOL"] == by_id["SOL"]["price_usd"]
        assert len(stand_in.calls) == 1  # reused within the TTL
        assert "bitcoin" in stand_in.calls[0]["ids"].split(",")
        assert stand_in.calls[0]["vs_currencies"] == "usd"

    for mode in ("error", "slow"):
        stand_in.mode, stand_in.calls[:] = mode, []
        app = create_app(Settings(**common, live_prices_timeout_seconds=0.3))
        async with running(app) as client:
            started = time.monotonic()
            r = await client.get("/inventory/assets/BTC")
            # The 0.3 s timeout, not the 5 s answer: room for a loaded machine either side.
            assert time.monotonic() - started < 2.5, mode
            assert r.status_code == 200, mode
            assert r.json()["data"]["price_usd"] == by_id["BTC"]["price_usd"], mode
            assert len(stand_in.calls) == 1, mode
