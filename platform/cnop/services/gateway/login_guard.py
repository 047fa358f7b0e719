"""Failed-login protection: block an IP that keeps failing, throttle a username under attack.

Two independent policies, each a sliding-window log of failure times in a sorted set:

* ``login_ip``: ``ip_max`` failures within ``ip_window`` from one client (its IP, an IPv6
  client's /64) block every login from it for ``ip_block`` seconds (403), whatever username
  it tries;
* ``login_user``: ``user_max`` failures within ``user_window`` against one (lower-cased) username,
  from any number of IPs, throttle logins to that username for ``user_block`` seconds (429), so
  spraying one account from a botnet stops too.

A log rather than GCRA because the numbers are small (5, 10) and "N failures in the last T
seconds" is exactly what a log answers. Only credential failures count (the user service's 401),
never validation errors, successes or outages.

**The bounds hold under concurrency.** Checking for a block before the password check and
recording the failure after it is check-then-act: 40 guesses sent at the same moment all pass
the check before the first failure is recorded, and all 40 reach the password check. So an
attempt *reserves* its place in every budget it draws on, in the same script that checks them,
before the request goes upstream, and the answer settles the reservation:

* each policy keeps two sorted sets: confirmed failures (trimmed to the window) and pending
  reservations (trimmed after ``reservation_ttl``, so a gateway that dies mid-call holds a
  place for seconds, not for the window);
* :meth:`LoginGuard.reserve` refuses when the policy is blocked, or when failures plus pending
  reservations already fill the budget: the fifth concurrent guess from an IP takes the last
  place and the sixth is refused at once, without waiting for the first five to be answered.
  The policies are reserved all or nothing, the IP's first: an attempt refused for its
  username takes no place in its IP's budget;
* :meth:`LoginGuard.settle` with ``failed=True`` (the user service's 401, and only that)
  moves the reservation's own member from pending to failures; with ``failed=False`` (2xx,
  422, 5xx, a timeout, an open breaker, a cancelled request) it removes that member and nothing
  else, so a refund can neither go below zero nor give back another attempt's place;
* the block is created when a confirmed failure brings the count to the maximum, with
  ``SET NX`` (so it is created, counted and logged once however confirmations race), and the
  failure log is cleared: the block's TTL is the penalty. The block waits for the confirmation
  rather than the fifth reservation because that reservation may still be refunded (the fifth
  attempt was a malformed 422 or the right password) and only credential failures may block;
  the pending reservations already stop a sixth attempt in the meantime.

A success does not clear the counters: otherwise an attacker holding one valid account could
reset their own IP's count between guesses.

``atomic=False`` keeps the old check-then-act order (look at the block keys, record failures
after the answer) so a lab can show the race (``CNOP_LOGIN_GUARD_ATOMIC=false``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

__all__ = [
    "KEY_PREFIX",
    "FailureOutcome",
    "LoginGuard",
    "LoginPolicy",
    "Refusal",
    "Reservation",
]

KEY_PREFIX = "cnop:login:"
Policy = Literal["login_ip", "login_user"]
_POLICIES: tuple[Policy, Policy] = ("login_ip", "login_user")

# KEYS: per policy (block, failures, pending). ARGV: now_ms, member, then per policy:
# window_ms, max, reservation_ms. Returns {0, policy index (1-based), retry_ms} when refused,
# {1, 0, 0} when a place was reserved in every policy.
RESERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = #KEYS / 3
for i = 1, n do
  local block, fails, pending = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local window = tonumber(ARGV[3 * i])
  local max = tonumber(ARGV[3 * i + 1])
  local hold = tonumber(ARGV[3 * i + 2])
  local ttl = redis.call('PTTL', block)
  if ttl > 0 then
    return {0, i, ttl}
  end
  redis.call('ZREMRANGEBYSCORE', fails, '-inf', now - window)
  redis.call('ZREMRANGEBYSCORE', pending, '-inf', now - hold)
  if redis.call('ZCARD', fails) + redis.call('ZCARD', pending) >= max then
    -- Full: a place frees when the oldest failure leaves the window or the oldest
    -- reservation is settled (at the latest when it expires).
    local retry = window
    local oldest = redis.call('ZRANGE', fails, 0, 0, 'WITHSCORES')
    if oldest[2] then retry = tonumber(oldest[2]) + window - now end
    oldest = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
    if oldest[2] then retry = math.min(retry, tonumber(oldest[2]) + hold - now) end
    return {0, i, math.max(1, math.ceil(retry))}
  end
end
for i = 1, n do
  local pending = KEYS[3 * i]
  redis.call('ZADD', pending, now, member)
  redis.call('PEXPIRE', pending, tonumber(ARGV[3 * i + 2]))
end
return {1, 0, 0}
"""

# KEYS: per policy (block, failures, pending). ARGV: now_ms, member, failed 0|1, then per
# policy: window_ms, max, block_ms. Returns per policy {failures, newly_blocked 0|1}.
SETTLE_SCRIPT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local failed = ARGV[3] == '1'
local out = {}
for i = 1, #KEYS / 3 do
  local block, fails, pending = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('ZREM', pending, member)
  local failures, newly = 0, 0
  if failed then
    local window = tonumber(ARGV[3 * i + 1])
    local max = tonumber(ARGV[3 * i + 2])
    local block_ms = tonumber(ARGV[3 * i + 3])
    redis.call('ZREMRANGEBYSCORE', fails, '-inf', now - window)
    redis.call('ZADD', fails, now, member)
    redis.call('PEXPIRE', fails, window)
    failures = redis.call('ZCARD', fails)
    if failures >= max then
      if redis.call('SET', block, '1', 'PX', block_ms, 'NX') then
        newly = 1
      end
      redis.call('DEL', fails)
    end
  end
  out[2 * i - 1] = failures
  out[2 * i] = newly
end
return out
"""

# The check-then-act order (``atomic=False``): block TTLs only, nothing reserved.
# KEYS: block keys. Returns their remaining time in ms (0 = none).
CHECK_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then ttl = 0 end
  out[i] = ttl
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
    # How long an unsettled reservation holds its place: longer than any login call can take
    # (the gateway passes its upstream timeout plus a margin), short enough that a gateway that
    # died mid-call does not hold the budget for long.
    reservation_ttl: float = 30


@dataclass(frozen=True)
class Reservation:
    """A place held in the budgets of ``ip`` and (when known) ``username``."""

    ip: str  # the client key (an IPv4 address, an IPv6 /64)
    username: str | None
    member: str  # this attempt's own id in the sorted sets


@dataclass(frozen=True)
class Refusal:
    policy: Policy  # login_ip: 403; login_user: 429
    retry_after: float  # seconds


@dataclass(frozen=True)
class FailureOutcome:
    ip_failures: int
    ip_blocked_now: bool
    user_failures: int
    user_throttled_now: bool


def _keys(policy: Policy, subject: str) -> list[str]:
    """Block, failure log and pending reservations of one policy's subject."""
    kind = "ip" if policy == "login_ip" else "user"
    return [
        f"{KEY_PREFIX}block:{kind}:{subject}",
        f"{KEY_PREFIX}fail:{kind}:{subject}",
        f"{KEY_PREFIX}pending:{kind}:{subject}",
    ]


class LoginGuard:
    def __init__(
        self,
        redis: Redis,
        policy: LoginPolicy,
        clock: Callable[[], float] = time.time,
        *,
        atomic: bool = True,
    ) -> None:
        self.policy = policy
        self.atomic = atomic
        self._reserve = redis.register_script(RESERVE_SCRIPT)
        self._settle = redis.register_script(SETTLE_SCRIPT)
        self._check = redis.register_script(CHECK_SCRIPT)
        self._clock = clock

    def _subjects(self, ip: str, username: str | None) -> list[tuple[Policy, str]]:
        return [("login_ip", ip)] + ([("login_user", username)] if username else [])

    def _numbers(self, policy: Policy) -> tuple[float, int, float]:
        p = self.policy
        if policy == "login_ip":
            return p.ip_window, p.ip_max, p.ip_block
        return p.user_window, p.user_max, p.user_block

    async def reserve(self, ip: str, username: str | None) -> Reservation | Refusal:
        """Hold a place for one attempt from client key ``ip`` at ``username``, or say which
        policy refuses it and for how long. Raises Redis errors for the caller's policy."""
        member = secrets.token_hex(8)
        subjects = self._subjects(ip, username)
        keys: list[str] = []
        if not self.atomic:
            for policy, subject in subjects:
                keys.append(_keys(policy, subject)[0])
            ttls = [int(t) for t in await self._check(keys=keys)]
            for (policy, _), ttl in zip(subjects, ttls, strict=True):
                if ttl > 0:
                    return Refusal(policy, ttl / 1000)
            return Reservation(ip, username, member)
        args: list[str | int] = [self._now_ms(), member]
        for policy, subject in subjects:
            keys += _keys(policy, subject)
            window, limit, _ = self._numbers(policy)
            args += [int(window * 1000), limit, int(self.policy.reservation_ttl * 1000)]
        reserved, index, retry_ms = (int(v) for v in await self._reserve(keys=keys, args=args))
        if not reserved:
            return Refusal(subjects[index - 1][0], retry_ms / 1000)
        return Reservation(ip, username, member)

    async def settle(self, reservation: Reservation, *, failed: bool) -> FailureOutcome:
        """Confirm the attempt as a credential failure (``failed``) or refund its place.
        Raises Redis errors; an unsettled reservation expires after ``reservation_ttl``."""
        if not failed and not self.atomic:
            return FailureOutcome(0, False, 0, False)  # check-then-act reserved nothing
        subjects = self._subjects(reservation.ip, reservation.username)
        keys: list[str] = []
        args: list[str | int] = [self._now_ms(), reservation.member, int(failed)]
        for policy, subject in subjects:
            keys += _keys(policy, subject)
            window, limit, block = self._numbers(policy)
            args += [int(window * 1000), limit, int(block * 1000)]
        result = [int(v) for v in await self._settle(keys=keys, args=args)]
        user = len(subjects) > 1
        return FailureOutcome(
            ip_failures=result[0],
            ip_blocked_now=bool(result[1]),
            user_failures=result[2] if user else 0,
            user_throttled_now=bool(result[3]) if user else False,
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
