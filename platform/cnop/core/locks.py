"""Per-user distributed locks on redis-py's asyncio ``Lock`` (owner token, TTL, compare-and-delete).

The lock keeps concurrent requests of one user from racing; it is *not* what guarantees the
money invariants (a paused holder can outlive its TTL). The DynamoDB conditional transaction is.

A request waits ``min(wait_seconds, what its deadline leaves)`` for the lock, then gets a 409
with ``Retry-After``: contention is the caller's to retry, never a 5xx, and never a gateway
timeout (which the gateway's breaker would count against the whole service).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import LockError

from cnop.core import deadline
from cnop.core.logging import log_event
from cnop.core.metrics import LOCK_ACQUISITIONS, LOCK_HOLD, LOCK_WAIT
from cnop.core.problems import ProblemError
from cnop.core.redis import REDIS_DOWN_ERRORS, report_redis_down

LOCK_PREFIX = "cnop:lock:user:"


class UserLocks:
    def __init__(
        self,
        redis: Redis,
        service: str,
        *,
        ttl_seconds: float,
        wait_seconds: float,
        enabled: bool = True,
    ) -> None:
        self._redis = redis
        self._service = service
        self.ttl = ttl_seconds
        self.wait = wait_seconds
        self.enabled = enabled

    @asynccontextmanager
    async def hold(self, username: str, operation: str) -> AsyncIterator[None]:
        """Hold the user's lock for the block, or raise a 409 (contention) / 503 (no Redis)."""
        if not self.enabled:
            yield
            return
        lock = self._redis.lock(
            LOCK_PREFIX + username,
            timeout=self.ttl,
            sleep=0.02,
            blocking_timeout=deadline.step_budget(self.wait),
        )
        started = time.perf_counter()
        try:
            acquired = await lock.acquire()
        except REDIS_DOWN_ERRORS as exc:
            report_redis_down(self._service, f"lock:{operation}", fail_open=False, error=exc)
            raise ProblemError(
                503,
                "The service cannot serialise this operation right now; try again shortly",
                headers={"Retry-After": "1"},
            ) from exc
        waited = time.perf_counter() - started
        LOCK_WAIT.labels(operation).observe(waited)
        if not acquired:
            LOCK_ACQUISITIONS.labels(operation, "timeout").inc()
            log_event("lock_timeout", logging.WARNING, operation=operation, waited_seconds=waited)
            raise ProblemError(
                409,
                "Another operation on this account is in progress; retry shortly",
                slug="lock-contention",
                headers={"Retry-After": "1"},
            )
        LOCK_ACQUISITIONS.labels(operation, "acquired").inc()
        held_from = time.perf_counter()
        try:
            yield
        finally:
            LOCK_HOLD.labels(operation).observe(time.perf_counter() - held_from)
            try:
                await lock.release()
            except LockError:
                # Our TTL ran out and someone else may hold it now: the conditional
                # transaction already protected the data; record that it happened.
                log_event("lock_lost", logging.WARNING, operation=operation)
            except REDIS_DOWN_ERRORS as exc:
                report_redis_down(self._service, f"unlock:{operation}", fail_open=True, error=exc)
