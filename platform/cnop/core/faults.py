"""Fault flags: how the lab makes a service slow, flaky, hung or cut off from a dependency.

The lab writes one Redis key per flag, ``cnop:fault:{service}:{fault}``, holding a JSON object
and always a TTL, so a crashed drill never leaves the platform broken. Each service reads its
flags at most every ``refresh`` seconds and applies them in :class:`FaultMiddleware` (latency,
error rate, hang) or through :meth:`FaultFlags.dependency_down` (dependency failure).

Flag values:
  latency             {"ms": 800}                       added before the handler runs
  error_rate          {"rate": 0.5, "status": 500}      share of requests answered with an error
                      (+ "spread": "even": exactly that share, evenly spaced, e.g. 0.6 fails
                      the 2nd, 4th and 5th of every 5, never more than needed in a row)
  hang                {"seconds": 30}                   the request waits that long, then 504s
  dependency_failure  {"dependency": "dynamodb"|"redis"|"inventory"|...}
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from typing import Any

from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from cnop.core.logging import log_event
from cnop.core.metrics import FAULT_ACTIVE
from cnop.core.problems import problem_response
from cnop.core.redis import REDIS_DOWN_ERRORS

FAULT_KINDS = ("latency", "error_rate", "hang", "dependency_failure")
FAULT_PREFIX = "cnop:fault:"


def fault_key(service: str, fault: str) -> str:
    return f"{FAULT_PREFIX}{service}:{fault}"


class FaultFlags:
    def __init__(
        self, redis: Redis, service: str, *, enabled: bool, refresh_seconds: float
    ) -> None:
        self._redis = redis
        self.service = service
        self.enabled = enabled
        self._refresh = refresh_seconds
        self._active: dict[str, dict[str, Any]] = {}
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()
        for kind in FAULT_KINDS:
            FAULT_ACTIVE.labels(service, kind).set(0)

    async def current(self) -> dict[str, dict[str, Any]]:
        if not self.enabled:
            return {}
        if time.monotonic() - self._checked_at >= self._refresh:
            async with self._lock:
                if time.monotonic() - self._checked_at >= self._refresh:
                    await self._reload()
        return self._active

    async def watch(self) -> None:
        """Re-reads the flags every refresh interval, requests or not: a fault cleared while
        no request arrives is logged (``fault_cleared``) and its gauge drops when it happens,
        not at the next request, which may come minutes later or never."""
        if not self.enabled:
            return
        while True:
            try:
                await self.current()
            except Exception as exc:  # a watcher that died would stop logging faults
                log_event("fault_refresh_failed", logging.WARNING, error=type(exc).__name__)
            await asyncio.sleep(max(self._refresh, 0.05))

    async def _reload(self) -> None:
        self._checked_at = time.monotonic()
        try:
            raw = await self._redis.mget([fault_key(self.service, k) for k in FAULT_KINDS])
        except REDIS_DOWN_ERRORS:
            raw = [None] * len(FAULT_KINDS)  # no Redis, no flags: faults fail safe
        fresh: dict[str, dict[str, Any]] = {}
        for kind, value in zip(FAULT_KINDS, raw, strict=True):
            if value is None:
                continue
            try:
                parsed = json.loads(value)
            except ValueError:
                continue
            fresh[kind] = parsed if isinstance(parsed, dict) else {}
        for kind in FAULT_KINDS:
            was, now = kind in self._active, kind in fresh
            if now and (not was or self._active[kind] != fresh[kind]):
                log_event("fault_injected", logging.WARNING, fault=kind, params=fresh[kind])
            elif was and not now:
                log_event("fault_cleared", fault=kind)
            FAULT_ACTIVE.labels(self.service, kind).set(1 if now else 0)
        self._active = fresh

    async def dependency_down(self, dependency: str) -> bool:
        flag = (await self.current()).get("dependency_failure")
        return bool(flag) and flag.get("dependency") in (dependency, "*")


class FaultMiddleware:
    """Applies latency, error-rate and hang flags to every route but health probes."""

    def __init__(self, app: ASGIApp, flags: FaultFlags) -> None:
        self.app = app
        self.flags = flags
        self._requests = 0  # requests an even error rate has seen (one event loop: no lock)

    def _injects_error(self, flag: dict[str, Any]) -> bool:
        """Random by default; ``"spread": "even"`` fails request n exactly when the running
        total floor(n x rate) steps up, so a drill knows the share and the longest failing run
        (a rate below 1/2 never fails twice in a row) instead of hoping for them."""
        rate = min(1.0, max(0.0, float(flag.get("rate", 1.0))))
        if flag.get("spread") != "even":
            return random.random() < rate
        self._requests += 1
        n = self._requests
        return math.floor(n * rate + 1e-9) > math.floor((n - 1) * rate + 1e-9)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/health"):
            await self.app(scope, receive, send)
            return
        active = await self.flags.current()
        if "latency" in active:
            await asyncio.sleep(max(0.0, float(active["latency"].get("ms", 0))) / 1000)
        if "hang" in active:
            await asyncio.sleep(max(0.0, float(active["hang"].get("seconds", 30))))
            response = problem_response(504, "Request timed out", scope["path"])
            await response(scope, receive, send)
            return
        flag = active.get("error_rate")
        if flag and self._injects_error(flag):
            status = int(flag.get("status", 500))
            response = problem_response(
                status, "Injected fault", scope["path"], slug="injected-fault"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
