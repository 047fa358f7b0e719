"""Failed-login bounds under concurrency: the real gateway in front of the real user service.

Guesses are counted where the password is checked (the user service's
``cnop_password_checks_total``), not from what the attacker was answered. A latency fault on
the user service (300 ms before each login is handled) stands for a slow password hash: it
keeps every guess of a burst in flight at once, which is when check-then-act lets them all by.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cnop.core.faults import fault_key
from cnop.services.gateway.main import Settings
from cnop.services.user.main import Settings as UserSettings
from cnop.services.user.main import create_app as create_user_app
from redis import Redis

from tests.api.test_gateway import (
    ClientFactory,
    ServerThread,
    StandIn,
    assert_problem,
    gateway,
    metric,
)
from tests.conftest import TEST_INTERNAL_SECRET, TEST_SECRET, free_port

PASSWORD = "Str0ng!Passw0rd"
WRONG = "Wr0ng!Passw0rd-"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8192, "argon2_parallelism": 1}
LOGIN = "/api/v1/auth/login"


@pytest.fixture(scope="module")
def user_service(redis_url: str, dynamodb_endpoint: str) -> Iterator[ServerThread]:
    """One user service for the module: creating its tables in moto takes seconds."""
    settings = UserSettings(
        jwt_secret=TEST_SECRET,
        internal_secret=TEST_INTERNAL_SECRET,
        redis_url=redis_url,
        dynamodb_endpoint=dynamodb_endpoint,
        table_prefix="t" + secrets.token_hex(4),
        fault_refresh_seconds=0,
        log_level="WARNING",
        inventory_url=f"http://127.0.0.1:{free_port()}",
        **FAST_ARGON2,
    )
    server = ServerThread(create_user_app(settings))
    server.launch()
    deadline = time.monotonic() + 90
    while not (server.server and server.server.started):
        assert time.monotonic() < deadline and server.thread and server.thread.is_alive()
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def platform(
    redis_url: str, user: ServerThread, **overrides: Any
) -> AsyncIterator[ClientFactory]:
    # Generous timeouts: a busy test machine must not turn a password check into a 504, nor a
    # slow Redis into the guard's fail-closed 503.
    values: dict[str, Any] = {
        "breaker_enabled": False,
        "upstream_timeout_seconds": 10.0,
        "redis_timeout_seconds": 5.0,
        # Logins are never retried; a short cap lets a test set a short upstream timeout.
        "upstream_retry_backoff_max_seconds": 0.1,
    }
    values.update(overrides)
    settings = Settings(
        jwt_secret=TEST_SECRET,
        internal_secret=TEST_INTERNAL_SECRET,
        redis_url=redis_url,
        log_level="WARNING",
        user_url=user.url,
        **values,
    )
    async with gateway(settings) as client:
        yield client


def checks(result: str) -> float:
    return metric("cnop_password_checks_total", result=result)


def slow_logins(redis: Redis, ms: int = 300) -> None:
    redis.set(fault_key("user", "latency"), json.dumps({"ms": ms}), ex=60)


async def register(client: httpx.AsyncClient, name: str) -> str:
    """A fresh account (the module shares one user service); returns its username."""
    username = f"{name}_{secrets.token_hex(4)}"
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "first_name": "Lab",
            "last_name": "Trader",
        },
    )
    assert r.status_code == 201, r.text
    return username


def login(username: str, password: str = WRONG) -> dict[str, str]:
    return {"username": username, "password": password}


async def burst(calls: list[Any]) -> list[httpx.Response]:
    return list(await asyncio.gather(*calls))


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


async def test_forty_simultaneous_guesses_from_one_ip_reach_the_password_check_five_times(
    redis_url: str, user_service: ServerThread, redis_sync: Redis
) -> None:
    async with platform(redis_url, user_service) as client:
        setup = client("192.0.2.100")
        victim = await register(setup, "victim")
        legit = await register(setup, "legit")
        slow_logins(redis_sync)
        attacker, bystander = client("198.51.100.7"), client("192.0.2.50")
        mismatches, matches = checks("mismatch"), checks("match")
        answers = await burst(
            [attacker.post(LOGIN, json=login(victim)) for _ in range(40)]
            + [bystander.post(LOGIN, json=login(legit, PASSWORD))]
        )
        attack, own = answers[:40], answers[40]
        assert checks("mismatch") - mismatches <= 5
        assert checks("mismatch") - mismatches == 5  # the budget is used, not lost
        assert statuses(attack) == {401: 5, 403: 35}, statuses(attack)
        assert own.status_code == 200 and checks("match") == matches + 1
        # The IP is now blocked for the full 300 s, whatever username it tries next.
        r = await attacker.post(LOGIN, json=login(legit, PASSWORD))
        assert_problem(r, 403)
        assert 290 <= int(r.headers["retry-after"]) <= 300
    assert checks("mismatch") - mismatches == 5


async def test_forty_simultaneous_guesses_at_one_username_from_forty_ips_reach_it_ten_times(
    redis_url: str, user_service: ServerThread, redis_sync: Redis
) -> None:
    async with platform(redis_url, user_service) as client:
        setup = client("192.0.2.100")
        sprayed = await register(setup, "sprayed")
        legit = await register(setup, "legit")
        slow_logins(redis_sync)
        mismatches = checks("mismatch")
        answers = await burst(
            [client(f"203.0.113.{i + 1}").post(LOGIN, json=login(sprayed)) for i in range(40)]
            + [client("192.0.2.50").post(LOGIN, json=login(legit, PASSWORD))]
        )
        attack, own = answers[:40], answers[40]
        assert checks("mismatch") - mismatches == 10
        assert statuses(attack) == {401: 10, 429: 30}, statuses(attack)
        assert own.status_code == 200
        # The throttle is the username's: the spraying addresses may still log in elsewhere.
        r = await client("203.0.113.1").post(LOGIN, json=login(legit, PASSWORD))
        assert r.status_code == 200
        r = await client("192.0.2.51").post(LOGIN, json=login(sprayed, PASSWORD))
        assert_problem(r, 429)
        assert 890 <= int(r.headers["retry-after"]) <= 900


async def test_answers_that_are_not_credential_failures_give_the_place_back(
    redis_url: str, user_service: ServerThread, redis_sync: Redis
) -> None:
    """Malformed logins (422), upstream errors (5xx) and timeouts (504) hold a place while in
    flight and give it back: afterwards the IP still has exactly five guesses. The 5xx and the
    timeouts come from stand-ins behind other gateways sharing the Redis (the guard's state)."""
    ip = "198.51.100.8"
    async with platform(redis_url, user_service) as client:
        victim = await register(client("192.0.2.100"), "victim")
        before = {r: checks(r) for r in ("match", "mismatch", "unknown_user")}
        slow_logins(redis_sync, 100)
        answers = await burst(
            [client(ip).post(LOGIN, json=login(victim, "short")) for _ in range(20)]
        )
        assert set(statuses(answers)) <= {422, 403} and 422 in statuses(answers)
        assert {r: checks(r) for r in before} == before  # a 422 comes before the password check

    for stand_in, timeout in ((StandIn("user", status=500), 3.0), (StandIn("user", delay=2), 0.3)):
        stand_in.server.start()
        try:
            async with platform(
                redis_url, stand_in.server, upstream_timeout_seconds=timeout
            ) as client:
                answers = await burst(
                    [client(ip).post(LOGIN, json=login(victim)) for _ in range(20)]
                )
        finally:
            stand_in.server.stop()
        found = statuses(answers)
        assert all(s >= 500 or s == 403 for s in found) and any(s >= 500 for s in found), found

    async with platform(redis_url, user_service) as client:
        slow_logins(redis_sync)
        answers = await burst([client(ip).post(LOGIN, json=login(victim)) for _ in range(40)])
        assert statuses(answers) == {401: 5, 403: 35}, statuses(answers)
        assert checks("mismatch") == before["mismatch"] + 5


async def test_a_success_gives_its_place_back_but_clears_no_failure(
    redis_url: str, user_service: ServerThread, redis_sync: Redis
) -> None:
    async with platform(redis_url, user_service) as client:
        own = await register(client("192.0.2.100"), "own")
        attacker = client("198.51.100.9")
        for _ in range(4):
            assert_problem(await attacker.post(LOGIN, json=login("someone_else")), 401)
        for _ in range(3):  # logging in to one's own account resets nothing
            r = await attacker.post(LOGIN, json=login(own, PASSWORD))
            assert r.status_code == 200
        assert_problem(await attacker.post(LOGIN, json=login("someone_else")), 401)
        assert_problem(await attacker.post(LOGIN, json=login(own, PASSWORD)), 403)


async def test_check_then_act_can_be_restored_for_labs(
    redis_url: str, user_service: ServerThread, redis_sync: Redis
) -> None:
    async with platform(redis_url, user_service, login_guard_atomic=False) as client:
        victim = await register(client("192.0.2.100"), "victim")
        slow_logins(redis_sync)
        attacker = client("198.51.100.10")
        mismatches = checks("mismatch")
        await burst([attacker.post(LOGIN, json=login(victim)) for _ in range(12)])
        assert checks("mismatch") - mismatches == 12  # the race: every guess got through
        assert_problem(await attacker.post(LOGIN, json=login(victim)), 403)
