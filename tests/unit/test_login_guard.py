"""The login guard's scripts against a real Redis: reservations, settlement, blocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cnop.core.redis import make_redis
from cnop.services.gateway.login_guard import (
    KEY_PREFIX,
    LoginGuard,
    LoginPolicy,
    Refusal,
    Reservation,
)
from redis import Redis as SyncRedis
from redis.asyncio import Redis

POLICY = LoginPolicy(reservation_ttl=30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str, redis_sync: SyncRedis) -> AsyncIterator[Redis]:
    client = make_redis(redis_url, 2.0, 200)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def guard(redis: Redis, clock: FakeClock) -> LoginGuard:
    return LoginGuard(redis, POLICY, clock)


async def reserve(guard: LoginGuard, ip: str, username: str | None) -> Reservation:
    outcome = await guard.reserve(ip, username)
    assert isinstance(outcome, Reservation), outcome
    return outcome


async def test_forty_simultaneous_reservations_from_one_ip_get_five_places(
    guard: LoginGuard,
) -> None:
    outcomes = await asyncio.gather(
        *(guard.reserve("192.0.2.1", f"user_{i:02d}") for i in range(40))
    )
    places = [o for o in outcomes if isinstance(o, Reservation)]
    refusals = [o for o in outcomes if isinstance(o, Refusal)]
    assert len(places) == 5 and len(refusals) == 35
    assert {r.policy for r in refusals} == {"login_ip"}
    # Pending places only: nothing is blocked until failures are confirmed.
    assert all(0 < r.retry_after <= POLICY.reservation_ttl for r in refusals)


async def test_forty_simultaneous_reservations_on_one_username_get_ten_places(
    guard: LoginGuard,
) -> None:
    outcomes = await asyncio.gather(
        *(guard.reserve(f"198.51.100.{i + 1}", "victim_user") for i in range(40))
    )
    places = [o for o in outcomes if isinstance(o, Reservation)]
    assert len(places) == 10
    assert {o.policy for o in outcomes if isinstance(o, Refusal)} == {"login_user"}


async def test_the_fifth_confirmed_failure_blocks_once_however_they_race(
    guard: LoginGuard, redis_sync: SyncRedis
) -> None:
    places = [await reserve(guard, "192.0.2.2", None) for _ in range(5)]
    outcomes = await asyncio.gather(*(guard.settle(p, failed=True) for p in places))
    assert sum(o.ip_blocked_now for o in outcomes) == 1
    assert max(o.ip_failures for o in outcomes) == 5
    refused = await guard.reserve("192.0.2.2", "anyone_at_all")
    assert isinstance(refused, Refusal) and refused.policy == "login_ip"
    assert 299 <= refused.retry_after <= 300
    # The failure log is cleared with the block: the block's TTL is the whole penalty.
    assert not redis_sync.exists(f"{KEY_PREFIX}fail:ip:192.0.2.2")


async def test_a_refund_frees_only_its_own_place_and_never_goes_below_zero(
    guard: LoginGuard, redis_sync: SyncRedis
) -> None:
    places = [await reserve(guard, "192.0.2.3", None) for _ in range(5)]
    assert isinstance(await guard.reserve("192.0.2.3", None), Refusal)
    await guard.settle(places[0], failed=False)
    await guard.settle(places[0], failed=False)  # a second refund of the same place: nothing
    stranger = Reservation("192.0.2.3", None, "not-a-reservation")
    await guard.settle(stranger, failed=False)
    assert redis_sync.zcard(f"{KEY_PREFIX}pending:ip:192.0.2.3") == 4
    assert isinstance(await guard.reserve("192.0.2.3", None), Reservation)
    assert isinstance(await guard.reserve("192.0.2.3", None), Refusal)


async def test_a_refunded_fifth_attempt_leaves_no_block(guard: LoginGuard) -> None:
    places = [await reserve(guard, "192.0.2.4", "some_user") for _ in range(5)]
    for place in places[:4]:
        outcome = await guard.settle(place, failed=True)
        assert not outcome.ip_blocked_now
    # The fifth was a 422 (or the right password, or an outage): only 4 failures.
    outcome = await guard.settle(places[4], failed=False)
    assert (outcome.ip_failures, outcome.ip_blocked_now) == (0, False)
    fifth = await reserve(guard, "192.0.2.4", "some_user")
    assert (await guard.settle(fifth, failed=True)).ip_blocked_now


async def test_a_username_refusal_takes_no_place_in_the_ip_budget(
    guard: LoginGuard, redis_sync: SyncRedis
) -> None:
    for i in range(10):
        await reserve(guard, f"203.0.113.{i + 1}", "sprayed_user")
    refused = await guard.reserve("192.0.2.5", "sprayed_user")
    assert isinstance(refused, Refusal) and refused.policy == "login_user"
    assert not redis_sync.exists(f"{KEY_PREFIX}pending:ip:192.0.2.5")
    assert isinstance(await guard.reserve("192.0.2.5", "other_user"), Reservation)


async def test_confirmed_username_failures_throttle_it(guard: LoginGuard) -> None:
    places = [await reserve(guard, f"203.0.113.{i + 1}", "victim_user") for i in range(10)]
    outcomes = [await guard.settle(p, failed=True) for p in places]
    assert [o.user_throttled_now for o in outcomes] == [False] * 9 + [True]
    refused = await guard.reserve("192.0.2.6", "victim_user")
    assert isinstance(refused, Refusal) and refused.policy == "login_user"
    assert 899 <= refused.retry_after <= 900


async def test_an_unsettled_reservation_expires(guard: LoginGuard, clock: FakeClock) -> None:
    for _ in range(5):
        await reserve(guard, "192.0.2.7", None)  # a gateway that died mid-call
    assert isinstance(await guard.reserve("192.0.2.7", None), Refusal)
    clock.now += POLICY.reservation_ttl + 1
    assert isinstance(await guard.reserve("192.0.2.7", None), Reservation)


async def test_failures_leave_the_window(guard: LoginGuard, clock: FakeClock) -> None:
    for _ in range(4):
        await guard.settle(await reserve(guard, "192.0.2.8", None), failed=True)
    clock.now += POLICY.ip_window + 1
    for _ in range(4):
        outcome = await guard.settle(await reserve(guard, "192.0.2.8", None), failed=True)
        assert not outcome.ip_blocked_now
    assert outcome.ip_failures == 4


async def test_check_then_act_mode_lets_a_burst_through(redis: Redis, clock: FakeClock) -> None:
    weak = LoginGuard(redis, POLICY, clock, atomic=False)
    outcomes = await asyncio.gather(*(weak.reserve("192.0.2.9", "victim_user") for _ in range(40)))
    assert all(isinstance(o, Reservation) for o in outcomes)
    places = [o for o in outcomes if isinstance(o, Reservation)]
    await weak.settle(places[0], failed=False)  # nothing was reserved, nothing to refund
    settled = [await weak.settle(p, failed=True) for p in places[1:6]]
    assert settled[-1].ip_blocked_now
    assert isinstance(await weak.reserve("192.0.2.9", None), Refusal)
