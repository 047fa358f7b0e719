"""The Redis client and the fail-open / fail-closed policy for when Redis is away."""

from __future__ import annotations

import logging

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
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


def make_redis(url: str, timeout: float, max_connections: int = 200) -> Redis:
    """A client with short timeouts whose pool *waits* (up to ``timeout``) for a connection.

    Short timeouts turn an outage into a fast, explicit decision, not a hung request. redis-py's
    default async pool raises ``MaxConnectionsError`` (a ``ConnectionError``) when it runs out,
    which would read as "Redis is down" during exactly the floods the limiter exists for.

    One immediate retry on a *connection* error (not a timeout): after Redis restarts, every
    pooled connection is dead, and without it the first command on each fails, so a service
    that is fine would fail open or closed once per connection (a limit skipped, a token
    refused). The retry opens a fresh connection; a Redis that is really down fails it too.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        health_check_interval=5,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis(connection_pool=pool)


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
