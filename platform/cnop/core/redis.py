"""The Redis client and the fail-open / fail-closed policy for when Redis is away."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Connection, Redis
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


# After this many dials in a row failed, every further dial fails at once for REDIAL_AFTER_SECONDS
# (then one trial dial goes out). Not after one: under load a single dial can miss its timeout
# while Redis is fine, and refusing every new connection for a second then would turn a slow
# moment into refused logins.
FAILED_DIALS_BEFORE_FAIL_FAST = 3
REDIAL_AFTER_SECONDS = 1.0
# Threads for name lookups: a lookup the caller gave up on keeps its thread until the resolver's
# own timeout (10 s with glibc's defaults), and one trial per REDIAL_AFTER_SECONDS may start one.
RESOLVER_THREADS = 16


class DialGate:
    """Fail fast while Redis cannot be reached: one dial per interval, not one per command.

    Why: where the name ``redis`` stops resolving while its container is down (Docker's embedded
    DNS), or a dial hangs, every command would pay the whole connect timeout, reads that must fail
    open run out of their budget, and each abandoned name lookup holds a thread of the event
    loop's small resolver pool for the resolver's own timeout (10 s), so after Redis is back new
    connections queue behind them. With the gate, once ``failures`` dials in a row have failed,
    every dial in the next ``redial_after`` seconds fails at once (microseconds), then a single
    trial dial goes out; the first success opens the gate again. Names are resolved on the
    gate's own threads, so a stuck lookup never delays one made after Redis is back. redis-py's
    Retry and health checks retry or probe, but none stops dialling a dead server, hence this
    small gate.
    """

    def __init__(
        self,
        redial_after: float = REDIAL_AFTER_SECONDS,
        failures: int = FAILED_DIALS_BEFORE_FAIL_FAST,
    ) -> None:
        self.redial_after = redial_after
        self.failures = failures
        self.resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="redis-resolve")
        self._streak = 0  # dials failed in a row
        self._down_until = 0.0  # monotonic
        self._trial = False

    def admit(self) -> None:
        """Raise at once while the gate is closed; admit one trial dial after the interval."""
        if self._streak < self.failures:
            return
        wait = self._down_until - time.monotonic()
        if wait > 0 or self._trial:
            raise RedisConnectionError(
                f"Redis unreachable; next dial in {max(wait, 0.0):.2f} s (fail fast)"
            )
        self._trial = True

    def succeeded(self) -> None:
        self._streak, self._trial = 0, False

    def failed(self) -> None:
        self._streak += 1
        self._trial = False
        self._down_until = time.monotonic() + self.redial_after

    def released(self) -> None:
        """The dial was cancelled by its caller: no verdict, the trial slot goes to the next."""
        self._trial = False


class GatedConnection(Connection):
    """A TCP connection that asks its pool's :class:`DialGate` before dialling."""

    def __init__(self, *, dial_gate: DialGate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dial_gate = dial_gate
        self._address: str | None = None

    def _connection_arguments(self) -> dict[str, Any]:
        return {"host": self._address or self.host, "port": self.port}

    async def _connect(self) -> None:
        gate = self.dial_gate
        gate.admit()
        try:
            loop = asyncio.get_running_loop()
            # Resolved here, on the gate's threads and within the connect timeout: uvloop's
            # create_connection, cancelled during its own lookup, also leaves a future whose
            # gaierror nobody retrieves ("Future exception was never retrieved", uvloop#437).
            async with asyncio.timeout(self.socket_connect_timeout):
                infos = await loop.run_in_executor(
                    gate.resolver,
                    socket.getaddrinfo,
                    self.host,
                    self.port,
                    0,
                    socket.SOCK_STREAM,
                )
            self._address = str(infos[0][4][0])
            await super()._connect()
        except asyncio.CancelledError:
            gate.released()
            raise
        except BaseException:
            gate.failed()
            raise
        gate.succeeded()


def make_redis(url: str, timeout: float, max_connections: int = 200) -> Redis:
    """A client with short timeouts whose pool *waits* (up to ``timeout``) for a connection.

    Short timeouts turn an outage into a fast, explicit decision, not a hung request. redis-py's
    default async pool raises ``MaxConnectionsError`` (a ``ConnectionError``) when it runs out,
    which would read as "Redis is down" during exactly the floods the limiter exists for.

    One immediate retry on a *connection* error (not a timeout): after Redis restarts, every
    pooled connection is dead, and without it the first command on each fails, so a service
    that is fine would fail open or closed once per connection (a limit skipped, a token
    refused). The retry opens a fresh connection; a Redis that is really down fails it too.

    Dials over TCP (``redis://``) go through a :class:`DialGate`, so a Redis that cannot be
    reached costs one dial per second, not a timeout per command.
    """
    gated: dict[str, Any] = {}
    if urlsplit(url).scheme == "redis":
        gated = {"connection_class": GatedConnection, "dial_gate": DialGate()}
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        health_check_interval=5,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        **gated,
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
