"""Calls to one upstream: its own connection pool, circuit breaker, timeout and retry policy.

One pooled ``httpx.AsyncClient`` per upstream is a bulkhead: a hung order service can exhaust
its own pool but never the connections the inventory or auth calls need.

Each attempt has ONE deadline, ``timeout`` seconds from its start, covering the wait for a pool
slot, connect, write and read (httpx's timeouts are per phase, so a request could otherwise wait
``timeout`` for the pool and then ``timeout`` again for the answer). What is left of it when the
request leaves goes to the upstream in ``X-CNOP-Deadline-Ms`` (see :mod:`cnop.core.deadline`), so
the upstream answers (a 409, a fallback) before we give up on it. The pool slots are our own
semaphore in front of an httpx pool of the same size, so "our queue was full" (we never sent
anything) and "the upstream was slow" are told apart. A request waits for a slot at most
``pool_wait`` (a part of the attempt's deadline): sending it later would leave the upstream too
little of the deadline to do anything but fail, and that failure would be blamed on it.

Failure mapping (the contract leaves the status codes to us):
  breaker open                          -> 503 + Retry-After, upstream not called ("rejected")
  no pool slot within ``pool_wait``     -> 503 + Retry-After, the gateway's own ("pool_full"):
                                           not retried, not an upstream failure; the breaker
                                           gets its ticket back without a verdict
  connect refused / connect timeout     -> 503 + Retry-After: nothing is listening, so the
                                           service is *unavailable*, and retrying later is right
  deadline passed (read/write timeout)  -> 504 ("timeout")
  any other transport error (reset, malformed response) -> 502 ("failure")
  5xx answer                            -> passed through if it is a problem document (backends
                                           send those), else replaced by a generic 502 problem
Transport errors, timeouts and 5xx count as breaker failures; any 4xx is the caller's fault and
counts as a success. Idempotent calls are retried on transport errors, timeouts, 502, 503 and
504 with jittered exponential backoff; each attempt asks the breaker first and reports to it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from cnop.core import deadline
from cnop.core.breaker import BreakerOpenError, CircuitBreaker
from cnop.core.logging import log_event
from cnop.core.metrics import UPSTREAM_REQUESTS
from cnop.core.problems import PROBLEM_MEDIA_TYPE, ProblemError

RETRY_STATUSES = frozenset({502, 503, 504})
POOL_FULL_RETRY_AFTER = 1


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    backoff_seconds: float = 0.05
    backoff_max_seconds: float = 1.0

    def delay(self, attempt: int) -> float:
        """Equal jitter: half the exponential step fixed, half random, so retries spread out."""
        step = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return step / 2 + random.uniform(0, step / 2)


def unavailable(name: str, retry_after: float) -> ProblemError:
    return ProblemError(
        503,
        f"The {name} service is temporarily unavailable; try again shortly",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


class Upstream:
    def __init__(
        self,
        name: str,
        base_url: str,
        breaker: CircuitBreaker,
        *,
        timeout: float,
        retry: RetryPolicy,
        max_connections: int = 100,
        headers: Mapping[str, str] | None = None,
        pool_wait: float | None = None,
    ) -> None:
        """``headers`` go with every call (the platform's internal credential)."""
        self.name = name
        self.breaker = breaker
        self.retry = retry
        self.timeout = timeout
        self.pool_wait = timeout if pool_wait is None else min(pool_wait, timeout)
        # Our own queue in front of httpx's pool of the same size: waiting here is measured
        # against the attempt's deadline and is never blamed on the upstream.
        self._slots = asyncio.Semaphore(max_connections)
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections // 2
            ),
            follow_redirects=False,
            trust_env=False,
            headers=headers,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def precheck(self) -> None:
        """Answer 503 at once when the breaker is open, before any other work."""
        try:
            self.breaker.precheck()
        except BreakerOpenError as exc:
            UPSTREAM_REQUESTS.labels(self.name, "rejected").inc()
            raise unavailable(self.name, exc.retry_after) from None

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: Mapping[str, str | bytes] | None = None,
        body: bytes = b"",
        retryable: bool = False,
    ) -> httpx.Response:
        """Call the upstream under its breaker; every failure leaves as a :class:`ProblemError`."""
        attempts = 1 + (self.retry.retries if retryable else 0)
        url = httpx.URL(path=path, query=query)
        failure: ProblemError | None = None
        response: httpx.Response | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt))
            try:
                ticket = self.breaker.before_call()
            except BreakerOpenError as exc:
                UPSTREAM_REQUESTS.labels(self.name, "rejected").inc()
                raise unavailable(self.name, exc.retry_after) from None
            try:
                response = await self._attempt(method, url, headers or {}, body)
            except _PoolFull:
                self.breaker.release(ticket)
                UPSTREAM_REQUESTS.labels(self.name, "pool_full").inc()
                log_event("upstream_pool_full", logging.WARNING, upstream=self.name)
                raise ProblemError(
                    503,
                    "The gateway is too busy to reach the "
                    f"{self.name} service right now; try again shortly",
                    slug="gateway-busy",
                    headers={"Retry-After": str(POOL_FULL_RETRY_AFTER)},
                ) from None
            except (httpx.HTTPError, TimeoutError) as exc:
                failure = self._failed(exc, ticket, attempt)
                response = None
                continue
            except asyncio.CancelledError:  # the upstream's answer was never seen
                self.breaker.release(ticket)
                raise
            ok = response.status_code < 500
            self.breaker.record(ok, ticket)
            UPSTREAM_REQUESTS.labels(self.name, "success" if ok else "failure").inc()
            if response.status_code not in RETRY_STATUSES:
                break
        if response is not None:
            return sanitized(self.name, response)
        assert failure is not None
        raise failure

    async def _attempt(
        self, method: str, url: httpx.URL, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        """One call within one deadline: pool wait, connect, write and read together."""
        expires = time.monotonic() + self.timeout
        try:
            async with asyncio.timeout(self.pool_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise _PoolFull from None
        try:
            left = expires - time.monotonic()
            if left <= 0:
                raise _PoolFull
            sent = {**headers, deadline.DEADLINE_HEADER: deadline.header_value(left)}
            async with asyncio.timeout(left):
                try:
                    return await self.client.request(
                        method, url, headers=sent, content=body, timeout=left
                    )
                except httpx.PoolTimeout:
                    raise _PoolFull from None
        finally:
            self._slots.release()

    def _failed(self, exc: Exception, ticket: int, attempt: int) -> ProblemError:
        timed_out = isinstance(exc, httpx.TimeoutException | TimeoutError)
        UPSTREAM_REQUESTS.labels(self.name, "timeout" if timed_out else "failure").inc()
        # Logged before the breaker hears of it: the failure that opens a breaker comes before
        # its circuit_state_changed in the log, so an operator (or a drill) counting failures
        # up to the opening counts exactly the ones that opened it.
        log_event(
            "upstream_error",
            logging.WARNING,
            upstream=self.name,
            error=type(exc).__name__,
            attempt=attempt + 1,
        )
        self.breaker.record(False, ticket)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return unavailable(self.name, 2)
        if timed_out:
            return ProblemError(504, f"The {self.name} service did not answer in time")
        return ProblemError(502, f"The {self.name} service gave an invalid answer")


class _PoolFull(Exception):
    """No connection of ours came free before the attempt's deadline: nothing was sent."""


def sanitized(name: str, response: httpx.Response) -> httpx.Response:
    """A 5xx that is not a problem document may carry anything (a trace): replace it."""
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 500 and not content_type.startswith(PROBLEM_MEDIA_TYPE):
        raise ProblemError(502, f"The {name} service failed")
    return response
