"""Failed-login protection: block an IP that keeps failing, throttle a username under attack.

Two independent policies, each a sliding-window log of failure times in a sorted set:

* ``login_ip``: ``ip_max`` failures within ``ip_window`` from one client IP block every login
  from that IP for ``ip_block`` seconds (403), whatever username it tries;
* ``login_user``: ``user_max`` failures within ``user_window`` against one (lower-cased) username,
  from any number of IPs, throttle logins to that username for ``user_block`` seconds (429), so
  spraying one account from a botnet stops too.

A log rather than GCRA because the numbers are small (5, 10) and "N failures in the last T
seconds" is exactly what a log answers. Only credential failures count (the user service's 401),
never validation errors. Checking and recording are one Lua script each; the block key is set
with ``NX``, so a block is created, logged and counted once even when failures race. A success
does not clear the counters: otherwise an attacker holding one valid account could reset their
own IP's count between guesses.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

KEY_PREFIX = "cnop:login:"

# KEYS: ip block, user block (optional). Returns the remaining block time in ms (0 = none).
CHECK_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then ttl = 0 end
  out[i] = ttl
end
return out
"""

# KEYS: pairs of (failure log, block key). ARGV: now_ms, member, then per pair:
# window_ms, max_failures, block_ms. Returns per pair {failures, newly_blocked 0|1}.
RECORD_SCRIPT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local log, block = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i])
  local max = tonumber(ARGV[3 * i + 1])
  local block_ms = tonumber(ARGV[3 * i + 2])
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  redis.call('ZADD', log, now, member)
  redis.call('PEXPIRE', log, window)
  local failures = redis.call('ZCARD', log)
  local newly = 0
  if failures >= max then
    if redis.call('SET', block, '1', 'PX', block_ms, 'NX') then
      newly = 1
    end
    redis.call('DEL', log)
  end
  out[2 * i - 1] = failures
  out[2 * i] = newly
end
return out
"""


@dataclass(frozen=True)
class LoginPolicy:
    ip_max: int = 5
    ip_window: float = 300
    ip_block: float = 300
    user_max: int = 10
    user_window: float = 900
    user_block: float = 900


@dataclass(frozen=True)
class Blocks:
    ip_seconds: float  # 0 when the IP may log in
    user_seconds: float  # 0 when the username may be tried


@dataclass(frozen=True)
class FailureOutcome:
    ip_failures: int
    ip_blocked_now: bool
    user_failures: int
    user_throttled_now: bool


def _ip_keys(ip: str) -> tuple[str, str]:
    return f"{KEY_PREFIX}fail:ip:{ip}", f"{KEY_PREFIX}block:ip:{ip}"


def _user_keys(username: str) -> tuple[str, str]:
    return f"{KEY_PREFIX}fail:user:{username}", f"{KEY_PREFIX}block:user:{username}"


class LoginGuard:
    def __init__(
        self, redis: Redis, policy: LoginPolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self.policy = policy
        self._check = redis.register_script(CHECK_SCRIPT)
        self._record = redis.register_script(RECORD_SCRIPT)
        self._clock = clock

    async def blocks(self, ip: str, username: str | None) -> Blocks:
        keys = [_ip_keys(ip)[1]] + ([_user_keys(username)[1]] if username else [])
        ttls = [int(t) for t in await self._check(keys=keys)]
        return Blocks(ttls[0] / 1000, (ttls[1] if username else 0) / 1000)

    async def record_failure(self, ip: str, username: str | None) -> FailureOutcome:
        p = self.policy
        keys = list(_ip_keys(ip))
        args: list[str | int | float] = [
            int(self._clock() * 1000),
            secrets.token_hex(8),
            int(p.ip_window * 1000),
            p.ip_max,
            int(p.ip_block * 1000),
        ]
        if username:
            keys += _user_keys(username)
            args += [int(p.user_window * 1000), p.user_max, int(p.user_block * 1000)]
        result = [int(v) for v in await self._record(keys=keys, args=args)]
        return FailureOutcome(
            ip_failures=result[0],
            ip_blocked_now=bool(result[1]),
            user_failures=result[2] if username else 0,
            user_throttled_now=bool(result[3]) if username else False,
        )
