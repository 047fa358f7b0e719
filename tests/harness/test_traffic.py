"""Traffic records and their maths, and the generators against a small stand-in gateway."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jwt
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from grader.model import Account, Observation
from scenarios.traffic import (
    LoginBruteforceParams,
    LoginBurstParams,
    LoginSprayParams,
    OrderRaceParams,
    Recorder,
    RequestsParams,
    TrafficContext,
    TrafficError,
    client_addresses,
    forge_tokens,
    paced,
    percentile,
    quantity_for,
    run_login_bruteforce,
    run_login_burst,
    run_login_spray,
    run_order_race,
    summarize,
    wrong_password,
)
from tests.conftest import serve_in_thread


def obs(status: int, latency_s: float = 0.01, t: float = 0.0) -> Observation:
    return Observation(generator="g", t=t, status=status, latency_s=latency_s)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 99) is None
    assert percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_summarize_counts_transport_errors_as_unavailable() -> None:
    summary = summarize([obs(200, 0.010), obs(503, 0.002), obs(0, 1.0), obs(429, 0.004)])
    assert summary["requests"] == 4
    assert summary["by_status"] == {"0": 1, "200": 1, "429": 1, "503": 1}
    assert summary["availability"] == 0.5
    assert summary["p99_ms"] == pytest.approx(1000.0)
    assert summarize([])["availability"] is None


def test_recorder_aliases_are_copies_with_their_own_name() -> None:
    recorder = Recorder()
    recorder.add(obs(200), "g.assets")
    recorder.ensure("g.empty")
    assert [o.generator for o in recorder.observations["g"]] == ["g"]
    assert [o.generator for o in recorder.observations["g.assets"]] == ["g.assets"]
    assert recorder.observations["g.empty"] == []


def test_wrong_passwords_pass_the_format_rules() -> None:
    for i in (0, 7, 99999):
        password = wrong_password(i)
        assert 12 <= len(password) <= 20
        assert any(c.isupper() for c in password) and any(c.islower() for c in password)
        assert any(c.isdigit() for c in password) and any(c in "!@#$%^&*()-_=+" for c in password)


def test_quantity_for_rounds_down_to_eight_decimals() -> None:
    qty = quantity_for(100, Decimal("2650.00"))
    assert qty == Decimal("0.03773584")
    assert qty * Decimal("2650.00") <= 100
    with pytest.raises(TrafficError, match="minimum quantity"):
        quantity_for(1, Decimal("50000"))


def test_forged_tokens_never_carry_a_valid_signature() -> None:
    secret = "s" * 40
    real = jwt.encode(
        {"sub": "alice", "role": "user", "exp": int(time.time()) + 600, "jti": "a"},
        secret,
        algorithm="HS256",
    )
    tokens = forge_tokens(real, "revoked-token", random.Random(1))
    assert tokens["missing"] is None and tokens["revoked"] == "revoked-token"
    for name in ("forged", "tampered", "expired", "alg_none", "garbage"):
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(tokens[name], secret, algorithms=["HS256"])
    assert jwt.get_unverified_header(tokens["alg_none"])["alg"] == "none"
    assert jwt.decode(tokens["tampered"], options={"verify_signature": False})["sub"] == "admin"
    expired = jwt.decode(tokens["expired"], options={"verify_signature": False})
    assert expired["exp"] < time.time()


async def test_paced_is_bounded_by_count_and_time() -> None:
    started: list[int] = []

    async def make(i: int) -> None:
        started.append(i)

    await paced(100, None, 7, make)
    assert started == list(range(7))
    started.clear()
    t0 = time.monotonic()
    # 1 s at 10 a second: 10 or 11 slots. A stall across the end loses the slots after it, so
    # the lower bound allows ~0.3 s of a loaded machine's delay (it was 0.1 s before).
    await paced(10, 1.0, None, make)
    assert time.monotonic() - t0 < 2.0
    assert 7 <= len(started) <= 11
    with pytest.raises(TrafficError):
        await paced(1, None, None, make)


async def test_paced_skips_the_slots_of_a_pause_and_resumes_on_its_grid() -> None:
    sent: list[tuple[int, float]] = []
    t0 = time.monotonic()

    async def make(i: int) -> None:
        sent.append((i, time.monotonic() - t0))

    # 8 a second, paused from 0.25 s to 1 s: slot 8 is due at 1 s. A grid started over after
    # the pause would put it at 2 s; the bound leaves a loaded machine 0.5 s of delay.
    await paced(8, None, 12, make, pause=(0.25, 1.0))
    assert [i for i, _ in sent] == [0, 1, 8, 9, 10, 11]
    resumed = dict(sent)[8]
    assert 1.0 <= resumed < 1.5, "the first slot from the pause's end on, not later"


def test_a_pause_must_end_after_it_begins() -> None:
    spec = {"path": "/api/v1/inventory/assets"}
    assert RequestsParams(requests=[spec], pause=(28, 33)).pause == (28.0, 33.0)
    for wrong in ((33, 28), (5, 5), (-1, 2)):
        with pytest.raises(ValueError, match="pause"):
            RequestsParams(requests=[spec], pause=wrong)


async def test_paced_limits_requests_in_flight() -> None:
    in_flight, peak = 0, 0

    async def make(i: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1

    await paced(200, None, 10, make, max_in_flight=2)
    assert peak == 2


# --- generators against a stand-in gateway (real HTTP over loopback) -------------------------


def stand_in() -> FastAPI:
    """Blocks an IP after 5 failed logins, as the contract says; prices ETH at 2650."""
    app = FastAPI()
    failures: dict[str, int] = {}
    seen_ips: set[str] = set()
    app.state.seen_ips = seen_ips
    app.state.forwarded = []
    app.state.orders = 0

    @app.post("/api/v1/auth/login")
    async def login(request: Request) -> JSONResponse:
        ip = request.client.host if request.client else "?"
        seen_ips.add(ip)
        app.state.forwarded.extend(request.headers.getlist("x-forwarded-for"))
        if failures.get(ip, 0) >= 5:
            return JSONResponse({"title": "blocked"}, status_code=403)
        failures[ip] = failures.get(ip, 0) + 1
        return JSONResponse({"title": "bad credentials"}, status_code=401)

    @app.get("/api/v1/inventory/assets/{asset_id}")
    async def asset(asset_id: str) -> dict:
        return {"data": {"asset_id": asset_id, "price_usd": "2650.00"}}

    @app.post("/api/v1/orders")
    async def order(request: Request) -> JSONResponse:
        body = await request.json()
        app.state.orders += 1
        status = 201 if app.state.orders <= 3 else 422
        return JSONResponse({"quantity": body["quantity"]}, status_code=status)

    return app


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, FastAPI]]:
    app = stand_in()
    with serve_in_thread(app, lifespan="auto") as url:
        yield url, app


def context(url: str, sources: dict[str, str | None] | None = None) -> TrafficContext:
    return TrafficContext(
        gateway_url=url,
        accounts={"victim": Account(username="victim_1", password="x", token="t")},
        rng=random.Random(1),
        recorder=Recorder(),
        nonce="abc",
        sources=sources or {},
    )


async def test_bruteforce_records_every_answer(gateway: tuple[str, FastAPI]) -> None:
    url, _ = gateway
    ctx = context(url)
    params = LoginBruteforceParams(account="victim", attempts=9, rate=50, source_ip="127.0.0.41")
    await run_login_bruteforce(ctx, "brute", params, None)
    await ctx.aclose()
    statuses = [o.status for o in ctx.recorder.observations["brute"]]
    # One guess at a time: exactly five reach the password check, then the block holds.
    assert statuses == [401] * 5 + [403] * 4
    assert all(o.route == "login" and o.latency_s > 0 for o in ctx.recorder.observations["brute"])


async def test_spray_comes_from_distinct_loopback_addresses(gateway: tuple[str, FastAPI]) -> None:
    url, app = gateway
    ctx = context(url)
    params = LoginSprayParams(account="victim", ips=4, attempts_per_ip=2, rate=100, subnet=9)
    await run_login_spray(ctx, "spray", params, None)
    await ctx.aclose()
    assert len(ctx.recorder.observations["spray"]) == 8
    assert {f"127.0.9.{i}" for i in range(1, 5)} <= app.state.seen_ips


async def test_a_burst_is_in_flight_all_at_once_from_its_addresses() -> None:
    app = FastAPI()
    seen: dict[str, Any] = {"open": 0, "peak": 0, "ips": set()}

    @app.post("/api/v1/auth/login")
    async def login(request: Request) -> JSONResponse:
        seen["open"] += 1
        seen["peak"] = max(seen["peak"], seen["open"])
        seen["ips"].add(request.client.host if request.client else "?")
        await asyncio.sleep(0.5)  # a slow password check: nobody is answered before all arrive
        seen["open"] -= 1
        return JSONResponse({"title": "bad credentials"}, status_code=401)

    with serve_in_thread(app) as url:
        ctx = context(url)
        spray = LoginBurstParams(account="victim", attempts=12, ips=4, subnet=8)
        await run_login_burst(ctx, "spray", spray, None)
        brute = LoginBurstParams(account="victim", attempts=5, source_ip="127.0.0.42")
        await run_login_burst(ctx, "brute", brute, None)
        await ctx.aclose()
    assert seen["peak"] == 12
    assert seen["ips"] == {f"127.0.8.{i}" for i in range(1, 5)} | {"127.0.0.42"}
    assert [o.status for o in ctx.recorder.observations["spray"]] == [401] * 12
    assert len(ctx.recorder.observations["brute"]) == 5
    with pytest.raises(ValueError, match="subnet, not source_ip"):
        LoginBurstParams(account="victim", ips=3, source_ip="127.0.0.42")


async def test_generators_claim_no_address_in_a_header(gateway: tuple[str, FastAPI]) -> None:
    url, app = gateway
    app.state.forwarded.clear()
    ctx = context(url)
    params = LoginSprayParams(account="victim", ips=3, attempts_per_ip=1, rate=100, subnet=10)
    await run_login_spray(ctx, "spray", params, None)
    await ctx.aclose()
    assert len(ctx.recorder.observations["spray"]) == 3
    assert app.state.forwarded == []  # the socket address is the only claim a client makes


async def test_a_runtime_maps_drill_addresses_to_its_own(gateway: tuple[str, FastAPI]) -> None:
    url, app = gateway
    ctx = context(url, {"127.0.11.1": "127.0.12.7", "127.0.11.2": "127.0.12.8"})
    params = LoginSprayParams(account="victim", ips=2, attempts_per_ip=1, rate=100, subnet=11)
    await run_login_spray(ctx, "spray", params, None)
    await ctx.aclose()
    assert {"127.0.12.7", "127.0.12.8"} <= app.state.seen_ips
    assert not {"127.0.11.1", "127.0.11.2"} & app.state.seen_ips


def test_client_addresses_name_every_address_a_step_sends_from() -> None:
    spray = LoginSprayParams(account="victim", ips=3, subnet=4, source_ip="127.0.0.9")
    assert client_addresses(spray) == ["127.0.4.1", "127.0.4.2", "127.0.4.3"]
    burst = LoginBurstParams(account="victim", attempts=40, ips=3, subnet=5)
    assert client_addresses(burst) == ["127.0.5.1", "127.0.5.2", "127.0.5.3"]
    brute = LoginBruteforceParams(account="victim", source_ip="127.0.0.41")
    assert client_addresses(brute) == ["127.0.0.41"]
    assert client_addresses(LoginBruteforceParams(account="victim")) == []


async def test_order_race_sizes_orders_from_the_price(gateway: tuple[str, FastAPI]) -> None:
    url, _ = gateway
    ctx = context(url)
    params = OrderRaceParams(account="victim", asset_id="ETH", concurrency=6, amount_usd=100)
    await run_order_race(ctx, "race", params, None)
    await ctx.aclose()
    statuses = sorted(o.status for o in ctx.recorder.observations["race"])
    assert statuses == [201] * 3 + [422] * 3
    assert ctx.recorder.stats["race.quantity"] == "0.03773584"


def contended() -> FastAPI:
    """Answers its first ``app.state.busy`` buys 409 (lock contention) with Retry-After, then
    fills three and refuses the rest 422, like an account that can afford three buys."""
    app = FastAPI()
    app.state.busy, app.state.fills = 4, 0

    @app.get("/api/v1/inventory/assets/{asset_id}")
    async def asset(asset_id: str) -> dict:
        return {"data": {"asset_id": asset_id, "price_usd": "100.00"}}

    @app.post("/api/v1/orders")
    async def order() -> JSONResponse:
        if app.state.busy > 0:
            app.state.busy -= 1
            return JSONResponse({"title": "busy"}, status_code=409, headers={"Retry-After": "1"})
        app.state.fills += 1
        return JSONResponse({}, status_code=201 if app.state.fills <= 3 else 422)

    return app


async def test_a_race_client_retries_lock_contention_after_its_retry_after() -> None:
    with serve_in_thread(contended(), lifespan="auto") as url:
        ctx = context(url)
        params = OrderRaceParams(
            account="victim", asset_id="ETH", concurrency=6, amount_usd=100, conflict_retries=2
        )
        await run_order_race(ctx, "race", params, None)
        await ctx.aclose()
    observed = ctx.recorder.observations["race"]
    # The four refused buys come back once each: no affordable buy is lost to contention.
    assert sorted(o.status for o in observed) == [201] * 3 + [409] * 4 + [422] * 3
    retried = [o for o in observed if o.route == "buy-retry"]
    assert len(retried) == 4 and all(o.status != 409 for o in retried)
    first_409 = min(o.t for o in observed if o.status == 409)
    assert min(o.t for o in retried) - first_409 >= 0.95  # after Retry-After, not at once


async def test_a_race_client_without_retries_or_retry_after_takes_the_409() -> None:
    app = contended()
    with serve_in_thread(app, lifespan="auto") as url:
        ctx = context(url)
        params = OrderRaceParams(account="victim", asset_id="ETH", concurrency=6, amount_usd=100)
        await run_order_race(ctx, "race", params, None)
        await ctx.aclose()
    assert sorted(o.status for o in ctx.recorder.observations["race"]) == ([201] * 2 + [409] * 4)


async def test_unreachable_gateway_is_status_zero() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    ctx = context(f"http://127.0.0.1:{port}")
    params = LoginBruteforceParams(account="victim", attempts=2, rate=50)
    await run_login_bruteforce(ctx, "brute", params, None)
    await ctx.aclose()
    assert [o.status for o in ctx.recorder.observations["brute"]] == [0, 0]
    assert all(o.error for o in ctx.recorder.observations["brute"])


def limiter_stand_in(first_wait_s: float, share: float, limit: int = 40) -> FastAPI:
    """The gateway's limiter (GCRA, ``limit`` per 60 s) on the asset list, its bucket empty and
    its next slot ``first_wait_s`` away at the first request; a refusal's Retry-After says
    ``share`` of the real wait (1: the truth), rounded up to whole seconds, at least 1."""
    app = FastAPI()
    window = 60.0
    interval = window / limit
    app.state.tat = None  # the theoretical arrival time of the next request

    @app.get("/api/v1/inventory/assets")
    async def assets() -> JSONResponse:
        now = time.monotonic()
        if app.state.tat is None:
            app.state.tat = now + window - interval + first_wait_s
        tat = max(app.state.tat, now)
        wait = tat + interval - window - now
        if wait > 0.001:
            says = max(1, math.ceil(wait * share))
            return JSONResponse({}, status_code=429, headers={"Retry-After": str(says)})
        app.state.tat = tat + interval
        return JSONResponse({"data": []})

    return app


@pytest.mark.parametrize(
    ("share", "probes"),
    [(1.0, [200, 200]), (0.5, [429, 429])],
    ids=["truthful", "halved"],
)
async def test_the_retry_after_probe_catches_a_halved_header_whatever_the_first_wait(
    share: float, probes: list[int]
) -> None:
    """At 40 per 60 s the first refusal may come 0.5 s before the next slot: a halved header
    says 1 s, as the truth does, and a request after it gets through. The probe takes the
    refusal that comes right after a fresh slot was spent (a wait of 1.5 s: 2 s said, or 1 s
    halved), so a halved header is refused again every time."""
    from scenarios.traffic import probe_retry_after

    with serve_in_thread(limiter_stand_in(0.5, share), lifespan="auto") as url:
        ctx = context(url)
        await probe_retry_after(ctx, ctx.client(None, 5.0), "stuffing", "/api/v1/inventory/assets")
        await ctx.aclose()
    asks = ctx.recorder.observations["stuffing"]
    sent = ctx.recorder.observations["stuffing.after_retry_after"]
    assert [o.status for o in sent] == probes
    for probe in sent:
        obeyed = max((o for o in asks if o.t < probe.t), key=lambda o: o.t)
        before = max((o for o in asks if o.t < obeyed.t), key=lambda o: o.t)
        assert obeyed.status == 429 and before.status == 200  # right after a fresh slot
        said = float(obeyed.header("Retry-After") or 0)
        assert said == (2 if share == 1.0 else 1)
        assert probe.t - obeyed.t >= said  # it waited the whole Retry-After
