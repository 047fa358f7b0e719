"""Rate limits in Redis: one Lua script per decision, GCRA (the generic cell rate algorithm).

Why GCRA: a limit of ``limit`` per ``window`` seconds becomes one request every
``window / limit`` seconds with a burst allowance of ``limit`` (a token bucket, done without a
refill loop). Redis keeps a single number per key, the *theoretical arrival time* (TAT) of the
next request; a request is allowed when ``TAT + interval - window <= now``, and then pushes TAT
forward by one interval. One key with a TTL, O(1) memory per client (a sliding-window log keeps
up to ``limit`` entries per client, which a distributed flood turns into a lot of Redis memory),
and the exact numbers the headers need fall out of the same arithmetic: remaining = how many
intervals fit before TAT reaches ``now + window``, reset = when the allowance is full again,
retry-after = when the next request fits. The trade-off, as with any token bucket: a client
that was idle may spend its whole allowance at once and then continue at the steady rate, so
the busiest 60 s right after an idle period can see up to ``2 * limit - 1`` requests; a
sustained flood gets exactly ``limit`` per ``window``.

Decision and headers come from one ``EVALSHA`` round trip, so concurrent requests from many
gateway replicas cannot both take the last slot (the ``limits`` library needs two round trips
for the decision and the window stats). The script reads Redis ``TIME`` unless the caller passes
its own clock (tests do, to step across window edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

KEY_PREFIX = "cnop:rl:"

# KEYS[1] the limit's key. ARGV: limit, window_ms, now_ms ("" = Redis TIME).
# Returns {allowed 0|1, remaining, retry_after_ms, reset_ms}.
GCRA_SCRIPT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local interval = window / limit
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at - now > 0.001 then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
local remaining = math.floor((now - allow_at) / interval + 1e-6)
return {1, remaining, 0, math.ceil(new_tat - now)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until the next request fits (0 when allowed)
    reset: float  # seconds until the full allowance is back

    def headers(self) -> dict[str, str]:
        """The IETF draft's ``RateLimit-*`` fields, plus ``Retry-After`` when refused."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class RateLimiter:
    def __init__(self, redis: Redis, clock: Callable[[], float] | None = None) -> None:
        self._script = redis.register_script(GCRA_SCRIPT)
        self._clock = clock

    async def hit(self, key: str, limit: int, window_seconds: float) -> Decision:
        """Count one request against ``key``; raises Redis errors for the caller's policy."""
        now = "" if self._clock is None else f"{self._clock() * 1000:.3f}"
        allowed, remaining, retry_ms, reset_ms = await self._script(
            keys=[KEY_PREFIX + key], args=[limit, int(window_seconds * 1000), now]
        )
        return Decision(
            allowed=bool(allowed),
            limit=limit,
            remaining=int(remaining),
            retry_after=int(retry_ms) / 1000,
            reset=int(reset_ms) / 1000,
        )


def tightest(*decisions: Decision | None) -> Decision | None:
    """The decision closest to exhaustion: the one a client should read its headers from."""
    present = [d for d in decisions if d is not None]
    return min(present, key=lambda d: (d.allowed, d.remaining), default=None)
