"""Per-user cap on requests in flight at once, shared by every gateway replica through Redis.

A rate limit counts requests over a minute; it does not stop one user from opening 150
requests in the same second, each holding a connection and (for orders) queueing on the user's
lock. This cap does: at most ``limit`` requests of one user are between "slot taken" and "answer
sent"; one more is a 429 at once.

Each user has a sorted set of request ids scored by start time (Redis ``TIME``, in ms). One Lua
script purges entries older than ``stale_seconds``, counts and adds, so concurrent requests on
any number of replicas cannot both take the last slot; the release (``ZREM``) runs in a
``finally``. A gateway that crashes between the two cannot leak slots for long: its entries are
purged once they are older than the longest a request can take (``stale_seconds``, derived from
the gateway's timeout and retry settings), and the whole key expires with them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

__all__ = ["KEY_PREFIX", "InflightLimiter", "Slot"]

KEY_PREFIX = "cnop:inflight:user:"
RETRY_AFTER_SECONDS = 1

# KEYS[1] the user's set. ARGV: limit, stale_ms, member. Returns {allowed 0|1, in_flight}.
ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[1]) then
  return {0, count}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], stale)
return {1, count + 1}
"""


@dataclass(frozen=True)
class Slot:
    allowed: bool
    key: str
    member: str
    in_flight: int


class InflightLimiter:
    def __init__(self, redis: Redis, stale_seconds: float) -> None:
        self._redis = redis
        self._script = redis.register_script(ACQUIRE_SCRIPT)
        self._stale_ms = max(1, int(stale_seconds * 1000))

    async def acquire(self, user: str, limit: int) -> Slot:
        """Take a slot if fewer than ``limit`` are taken; raises Redis errors for the caller."""
        key = KEY_PREFIX + user
        member = uuid.uuid4().hex  # ours, never the client's request id (it could repeat)
        allowed, count = await self._script(keys=[key], args=[limit, self._stale_ms, member])
        return Slot(bool(allowed), key, member, int(count))

    async def release(self, slot: Slot) -> None:
        """Give a taken slot back; raises Redis errors (the slot then expires by itself)."""
        if slot.allowed:
            await self._redis.zrem(slot.key, slot.member)
