"""Calls to one upstream: its own connection pool, circuit breaker, timeout and retry policy.

One pooled ``aiohttp.ClientSession`` per upstream is a bulkhead: a hung order service can exhaust
its own pool but never the connections the inventory or auth calls need. aiohttp, not httpx: on
this path every request of the platform is proxied, and httpx (httpcore over anyio) spent about
ten times the CPU per request under concurrency (encode/httpx#3215), which made the gateway the
platform's bottleneck.

Each attempt has ONE deadline, ``timeout`` seconds from its start, covering the wait for a pool
slot, connect, write and read (a client's timeouts are per phase, so a request could otherwise
wait ``timeout`` for the pool and then ``timeout`` again for the answer). What is left of it
when the request leaves goes to the upstream in ``X-CNOP-Deadline-Ms`` (see
:mod:`cnop.core.deadline`), so the upstream answers (a 409, a fallback) before we give up on
it. The pool slots are our own semaphore in front of a connection pool of the same size, so
"our queue was full" (we never sent anything) and "the upstream was slow" are told apart. A
request waits for a slot at most ``pool_wait`` (a part of the attempt's deadline): sending it
later would leave the upstream too little of the deadline to do anything but fail, and that
failure would be blamed on it.

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

``upstream_error`` names the failure in the client library's place (``error``): ``ConnectError``,
``ConnectTimeout``, ``ReadError`` (the connection broke mid-answer), ``TimeoutError`` (the
deadline passed) or ``ProtocolError`` (a malformed answer), so logs and labs do not change with
the library.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from cnop.core import deadline
from cnop.core.breaker import BreakerOpenError, CircuitBreaker
from cnop.core.logging import log_event
from cnop.core.metrics import UPSTREAM_REQUESTS
from cnop.core.problems import PROBLEM_MEDIA_TYPE, ProblemError

RETRY_STATUSES = frozenset({502, 503, 504})
# How long an idle pooled connection is reused: well under the backends' own idle timeout.
KEEPALIVE_SECONDS = 2.0
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


@dataclass(frozen=True)
class Reply:
    """An upstream's whole answer, read before its connection goes back to the pool."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


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
        # Our own queue in front of the connection pool of the same size: waiting here is
        # measured against the attempt's deadline and is never blamed on the upstream.
        self._slots = asyncio.Semaphore(max_connections)
        self.base_url = base_url.rstrip("/")
        self._max_connections = max_connections
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The pool, made on first use: an aiohttp session belongs to the running event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    # Every connection stays open for the next call (no keep-alive cap below
                    # the pool's size: closing the surplus after each burst cost a TCP
                    # handshake, on both sides, per request).
                    limit=self._max_connections,
                    # Idle connections are dropped before the backend drops them (uvicorn: after
                    # 5 s): a request sent on a connection the server is closing at that very
                    # moment fails without an answer, a 502 for a login that cannot be retried.
                    keepalive_timeout=KEEPALIVE_SECONDS,
                    # Resolved for each new connection, as a plain socket would: a restarted
                    # container may come back under a new address.
                    use_dns_cache=False,
                ),
                headers=self._headers,
                # What the client sent, nothing added: no default User-Agent, and a body's type
                # is the client's Content-Type or none.
                skip_auto_headers=("User-Agent", "Content-Type"),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

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
    ) -> Reply:
        """Call the upstream under its breaker; every failure leaves as a :class:`ProblemError`.

        ``path`` and ``query`` go out as received (already percent-encoded, never re-quoted);
        header values that are bytes must be UTF-8 (see :func:`header_text`).
        """
        attempts = 1 + (self.retry.retries if retryable else 0)
        url = URL(_target(self.base_url, path, query), encoded=True)
        sent = {name: header_text(name, value) for name, value in (headers or {}).items()}
        failure: ProblemError | None = None
        response: Reply | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt))
            try:
                ticket = self.breaker.before_call()
            except BreakerOpenError as exc:
                UPSTREAM_REQUESTS.labels(self.name, "rejected").inc()
                raise unavailable(self.name, exc.retry_after) from None
            try:
                response = await self._attempt(method, url, sent, body)
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
            except (aiohttp.ClientError, TimeoutError) as exc:
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

    async def _attempt(self, method: str, url: URL, headers: dict[str, str], body: bytes) -> Reply:
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
            async with (
                asyncio.timeout(left),
                self._client().request(
                    method,
                    url,
                    headers=sent,
                    data=body or None,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=left),
                ) as answer,
            ):
                return Reply(answer.status, answer.headers, await answer.read())
        finally:
            self._slots.release()

    def _failed(self, exc: Exception, ticket: int, attempt: int) -> ProblemError:
        kind = failure_kind(exc)
        timed_out = kind == "TimeoutError"
        UPSTREAM_REQUESTS.labels(self.name, "timeout" if timed_out else "failure").inc()
        # Logged before the breaker hears of it: the failure that opens a breaker comes before
        # its circuit_state_changed in the log, so an operator (or a drill) counting failures
        # up to the opening counts exactly the ones that opened it.
        log_event(
            "upstream_error",
            logging.WARNING,
            upstream=self.name,
            error=kind,
            attempt=attempt + 1,
        )
        self.breaker.record(False, ticket)
        if kind in ("ConnectError", "ConnectTimeout"):
            return unavailable(self.name, 2)
        if timed_out:
            return ProblemError(504, f"The {self.name} service did not answer in time")
        return ProblemError(502, f"The {self.name} service gave an invalid answer")


class _PoolFull(Exception):
    """No connection of ours came free before the attempt's deadline: nothing was sent."""


def failure_kind(exc: BaseException) -> str:
    """The failure's name in the log, independent of the client library (see the module doc)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, TimeoutError):
        return "TimeoutError"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, aiohttp.ClientResponseError):  # a status line or header that is not HTTP
        return "ProtocolError"
    return "ReadError"  # reset, closed, or cut short in the body (ClientPayloadError)


def header_text(name: str, value: str | bytes) -> str:
    """A header value as aiohttp writes it (UTF-8): bytes that are not UTF-8 are the client's
    error, refused here rather than forwarded altered."""
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ProblemError(400, f"The {name} header is not valid UTF-8") from None


def _target(base_url: str, path: str, query: bytes) -> str:
    """The upstream URL, path and query as received. The path is ASCII already (percent-encoded
    by :func:`~cnop.services.gateway.routes.raw_path`); query bytes outside ASCII are
    percent-encoded here."""
    if not query:
        return base_url + path
    if not query.isascii():
        query = "".join(chr(b) if b < 0x80 else f"%{b:02X}" for b in query).encode()
    return f"{base_url}{path}?{query.decode()}"


def sanitized(name: str, response: Reply) -> Reply:
    """A 5xx that is not a problem document may carry anything (a trace): replace it."""
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 500 and not content_type.startswith(PROBLEM_MEDIA_TYPE):
        raise ProblemError(502, f"The {name} service failed")
    return response
