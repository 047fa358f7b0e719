"""The Redis client and the fail-open / fail-closed policy for when Redis is away."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cnop.core.logging import log_event
from cnop.core.metrics import DEPENDENCY_ERRORS

REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


def make_redis(url: str, timeout: float) -> Redis:
    # Short timeouts: an outage must turn into a fast, explicit decision, not a hung request.
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        health_check_interval=5,
    )


def report_redis_down(
    service: str, operation: str, *, fail_open: bool, error: BaseException
) -> None:
    mode = "fail_open" if fail_open else "fail_closed"
    DEPENDENCY_ERRORS.labels(service, "redis", operation, mode).inc()
    log_event(
        "redis_unavailable",
        logging.WARNING,
        operation=operation,
        mode=mode,
        error=type(error).__name__,
    )
