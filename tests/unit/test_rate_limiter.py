"""The GCRA limiter's Lua script against a real Redis: the numbers clients read in headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cnop.core.redis import make_redis
from cnop.services.gateway.ratelimit import (
    KEY_PREFIX,
    Decision,
    RateLimiter,
    tightest,
)
from redis import Redis as SyncRedis
from redis.asyncio import Redis


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str, redis_sync: SyncRedis) -> AsyncIterator[Redis]:
    # 50 connections race as hard as 200 for atomicity, without 200 simultaneous connects
    # timing out on a loaded machine.
    client = make_redis(redis_url, 5.0, 50)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_allows_the_limit_then_refuses_with_exact_numbers(
    redis: Redis, clock: FakeClock
) -> None:
    limiter = RateLimiter(redis, clock)
    seen = [await limiter.hit("k", 3, 60) for _ in range(3)]
    assert [d.allowed for d in seen] == [True, True, True]
    assert [d.remaining for d in seen] == [2, 1, 0]
    assert [d.reset for d in seen] == [20, 40, 60]  # when the allowance is full again
    refused = await limiter.hit("k", 3, 60)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == 20  # one interval (60 s / 3) until the next slot
    assert refused.reset == 60
    assert refused.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": "20",
    }
    assert "Retry-After" not in seen[0].headers()


async def test_refusals_do_not_consume_the_allowance(redis: Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(redis, clock)
    for _ in range(3):
        await limiter.hit("k", 3, 60)
    for _ in range(50):
        assert not (await limiter.hit("k", 3, 60)).allowed
    clock.now += 20
    assert (await limiter.hit("k", 3, 60)).allowed


async def test_window_edges(redis: Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(redis, clock)
    start = clock.now
    for _ in range(3):
        assert (await limiter.hit("k", 3, 60)).allowed
    clock.now = start + 19.99
    early = await limiter.hit("k", 3, 60)
    assert not early.allowed
    assert early.retry_after == pytest.approx(0.01, abs=0.002)
    clock.now = start + 20  # exactly one interval later: one slot, no more
    edge = await limiter.hit("k", 3, 60)
    assert edge.allowed and edge.remaining == 0
    assert not (await limiter.hit("k", 3, 60)).allowed
    # A sustained client gets exactly the rate: one per 20 s, never a second full burst.
    allowed_in_next_minute = 0
    for step in range(1, 61):
        clock.now = start + 20 + step
        allowed_in_next_minute += (await limiter.hit("k", 3, 60)).allowed
    assert allowed_in_next_minute == 3
    # After a full quiet window the whole allowance is back.
    clock.now = start + 1000
    fresh = await limiter.hit("k", 3, 60)
    assert fresh.allowed and fresh.remaining == 2


async def test_a_partial_refill_shows_in_remaining(redis: Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(redis, clock)
    for _ in range(10):
        await limiter.hit("k", 10, 60)
    clock.now += 30  # half the window: half the allowance back
    decision = await limiter.hit("k", 10, 60)
    assert decision.allowed
    assert decision.remaining == 4  # 5 came back, this request took one
    assert decision.reset == pytest.approx(36)


async def test_keys_are_isolated(redis: Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(redis, clock)
    for _ in range(2):
        await limiter.hit("ip:10.0.0.1", 2, 60)
    assert not (await limiter.hit("ip:10.0.0.1", 2, 60)).allowed
    other = await limiter.hit("ip:10.0.0.2", 2, 60)
    assert other.allowed and other.remaining == 1
    user = await limiter.hit("user:alice", 2, 60)
    assert user.allowed and user.remaining == 1


async def test_keys_expire_when_the_allowance_is_full(redis: Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(redis, clock)
    await limiter.hit("k", 1000, 60)
    ttl = await redis.pttl(KEY_PREFIX + "k")
    assert 0 < ttl <= 61  # one interval (60 ms): no idle client leaves state behind


async def test_atomic_under_200_concurrent_calls(redis: Redis, clock: FakeClock) -> None:
    limiter = RateLimiter(redis, clock)
    decisions = await asyncio.gather(*(limiter.hit("hot", 50, 60) for _ in range(200)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 50
    # Every allowed request saw a different count: no two took the same slot.
    assert sorted(d.remaining for d in allowed) == list(range(50))


async def test_redis_time_is_the_default_clock(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    first = await limiter.hit("k", 2, 60)
    second = await limiter.hit("k", 2, 60)
    third = await limiter.hit("k", 2, 60)
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert 29 < third.retry_after <= 30


def test_tightest_prefers_a_refusal_then_the_lowest_remaining() -> None:
    ip = Decision(True, 1000, 990, 0, 1)
    user = Decision(True, 600, 10, 0, 50)
    refused = Decision(False, 600, 0, 1, 60)
    assert tightest(ip, user) is user
    assert tightest(ip, None, refused) is refused
    assert tightest(None) is None
