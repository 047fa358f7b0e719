"""The gateway's request pipeline: one catch-all handler that walks each request through
client IP -> IP rate limit -> route table -> token check -> user rate limit -> user in-flight
cap -> login guard -> upstream; plus the body of ``GET /health`` (breaker states and Redis).

Order matters: the IP limit runs before anything else (even for unknown routes), so a flood
costs one Redis round trip per request and never reaches the auth service; an open upstream
breaker is checked before the token check, so a dead upstream is refused in microseconds. The
in-flight slot is taken last, just before the upstream call, and given back when the answer is
in: one user's burst queues at most ``rate_limit_user_inflight`` requests on the upstream (and
on that user's lock), so it cannot time out, and trip the breaker, for everyone else.
The login guard reserves the attempt's place in the
failed-login budgets right before the upstream call, and whatever happens to the call (answer,
timeout, cancellation) settles that reservation, so nothing between reserving and calling may
fail.

Limits and blocks key on the client key (an IPv6 client's /64, see :mod:`.client_ip`); logs and
the upstream's X-Forwarded-For carry the client's full address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cnop.core.breaker import BreakerPolicy, CircuitBreaker, State
from cnop.core.internal import internal_headers
from cnop.core.logging import log_event, request_id_var, user_var
from cnop.core.metrics import IP_BLOCKS, LOGIN_ATTEMPTS, RATE_LIMIT_DECISIONS
from cnop.core.problems import ProblemError
from cnop.core.redis import REDIS_DOWN_ERRORS, make_redis, report_redis_down
from cnop.services.gateway.auth_check import AuthCheck
from cnop.services.gateway.client_ip import client_ip, client_key, parse_networks
from cnop.services.gateway.inflight import RETRY_AFTER_SECONDS, InflightLimiter
from cnop.services.gateway.login_guard import (
    LoginGuard,
    LoginPolicy,
    Refusal,
    Reservation,
)
from cnop.services.gateway.published import OPENAPI_PATH, load_document
from cnop.services.gateway.ratelimit import Decision, RateLimiter, tightest
from cnop.services.gateway.routes import LOGIN_PATH, RouteMatch, WrongMethod, match, raw_path
from cnop.services.gateway.settings import Settings
from cnop.services.gateway.upstreams import Reply, RetryPolicy, Upstream

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# An allow-list: whatever else a client sends (X-User-*, X-Forwarded-*, Cookie, hop-by-hop
# headers) never reaches a backend.
FORWARDED_REQUEST_HEADERS = (
    "authorization",
    "content-type",
    "idempotency-key",
    "accept",
    "accept-language",
    "user-agent",
)
# Framing is recomputed; server, date and request id are ours to set.
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "server",
    "date",
    "x-request-id",
}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})

router = APIRouter()


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Gateway:
    """Everything the pipeline needs, built once per app from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = settings.service_name
        redis = make_redis(
            settings.redis_url, settings.redis_timeout_seconds, settings.redis_max_connections
        )
        self.redis = redis
        self.trusted = parse_networks(settings.trusted_proxies)
        self.limiter = RateLimiter(redis)
        self.inflight = InflightLimiter(redis, settings.longest_request_seconds + 1)
        self.guard = LoginGuard(
            redis,
            LoginPolicy(
                ip_max=settings.login_ip_max_failures,
                ip_window=settings.login_ip_window_seconds,
                ip_block=settings.login_ip_block_seconds,
                user_max=settings.login_user_max_failures,
                user_window=settings.login_user_window_seconds,
                user_block=settings.login_user_block_seconds,
                # Outlives any login call: one attempt per call (logins are never retried).
                reservation_ttl=max(30.0, 4 * settings.upstream_timeout_seconds),
            ),
            atomic=settings.login_guard_atomic,
        )
        policy = BreakerPolicy(
            failure_rate=settings.breaker_failure_rate,
            window=settings.breaker_window,
            min_calls=settings.breaker_min_calls,
            consecutive_failures=settings.breaker_consecutive_failures,
            open_seconds=settings.breaker_open_seconds,
            half_open_calls=settings.breaker_half_open_calls,
            enabled=settings.breaker_enabled,
        )
        retry = RetryPolicy(
            retries=settings.upstream_retries,
            backoff_seconds=settings.upstream_retry_backoff_seconds,
            backoff_max_seconds=settings.upstream_retry_backoff_max_seconds,
        )
        urls = {
            "user": settings.user_url,
            "inventory": settings.inventory_url,
            "order": settings.order_url,
            "insights": settings.insights_url,
            "auth": settings.auth_url,
        }
        self.upstreams = {
            name: Upstream(
                name,
                url,
                CircuitBreaker(name, policy),
                timeout=settings.upstream_timeout_seconds,
                retry=retry,
                max_connections=settings.upstream_max_connections,
                headers=internal_headers(settings),
                pool_wait=settings.pool_wait_seconds,
            )
            for name, url in urls.items()
        }
        self.auth = AuthCheck(self.upstreams["auth"])
        self.openapi = load_document()

    async def aclose(self) -> None:
        await asyncio.gather(*(u.aclose() for u in self.upstreams.values()))
        await self.redis.aclose(close_connection_pool=True)

    # -- the pipeline -------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        decisions: list[Decision] = []
        try:
            response = await self._handle(request, decisions)
        except ProblemError as exc:
            best = tightest(*decisions)
            if best is not None:
                exc.headers = {**best.headers(), **exc.headers}
            raise
        best = tightest(*decisions)
        if best is not None:
            response.headers.update(best.headers())
        return response

    async def _handle(self, request: Request, decisions: list[Decision]) -> Response:
        scope = request.scope
        found = match(request.method, raw_path(scope))
        is_document = scope["path"] == OPENAPI_PATH
        scope["cnop.route"] = (
            found.route.template
            if isinstance(found, RouteMatch)
            else (
                found.template
                if isinstance(found, WrongMethod)
                else (OPENAPI_PATH if is_document else "unmatched")
            )
        )
        is_login = isinstance(found, RouteMatch) and found.route.path == LOGIN_PATH
        ip = client_ip(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            self.trusted,
        )
        key = client_key(ip)
        s = self.settings
        # Without Redis the limits cannot be enforced: reads go on unlimited (fail open, a
        # setting), while logins and every state-changing request are refused (fail closed).
        unsafe = is_login or request.method not in SAFE_METHODS
        if s.rate_limit_enabled:
            await self._limit(
                decisions, "ip", f"ip:{key}", s.rate_limit_ip_limit, ip=ip, fail_closed=unsafe
            )
        if is_document:
            return _document(request.method, self.openapi)
        if found is None:
            raise ProblemError(404, "No such resource")
        if isinstance(found, WrongMethod):
            allow = ", ".join(sorted(found.allowed))
            raise ProblemError(405, f"Method not allowed; use {allow}", headers={"Allow": allow})
        route = found.route
        upstream = self.upstreams[route.upstream]
        # The core's body guard refuses an oversized or too deeply nested body while it streams.
        body = await request.body()
        request_id = request_id_var.get() or ""
        username: str | None = None
        if route.auth:
            upstream.precheck()
            username = await self.auth.username(
                request.headers.get("authorization"), request_id, request.method
            )
            user_var.set(username)
            if s.rate_limit_enabled:
                await self._limit(
                    decisions,
                    "user",
                    f"user:{username}",
                    s.rate_limit_user_limit,
                    ip=ip,
                    fail_closed=unsafe,
                )
        login_name = _login_username(body) if is_login else None
        # The bytes as received: a value outside ASCII (legal on the wire) is the backend's to
        # judge, never an encoding error of ours.
        headers: dict[str, str | bytes] = {
            name: request.headers[name].encode("latin-1")
            for name in FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        headers["X-Request-ID"] = request_id
        headers["X-Forwarded-For"] = ip
        # A login is never retried: a retry would be a second password check on one reservation.
        retryable = not is_login and (
            request.method in RETRYABLE_METHODS
            or (request.method == "POST" and route.idempotent and "idempotency-key" in headers)
        )
        reservation = None
        if is_login and s.login_protection_enabled:
            reservation = await self._reserve_login(ip, key, login_name)
        settled = False
        try:
            async with self._in_flight(username, ip, unsafe):
                reply = await upstream.send(
                    request.method,
                    found.upstream_path,
                    query=scope.get("query_string", b""),
                    headers=headers,
                    body=body,
                    retryable=retryable,
                )
            if is_login:
                settled = True
                await self._after_login(reply.status_code, ip, login_name, reservation)
        finally:
            if reservation is not None and not settled:
                # No answer (timeout, open breaker, cancelled): not a credential failure.
                await asyncio.shield(self._settle_login(reservation, ip, failed=False))
        return _response(reply)

    # -- steps --------------------------------------------------------------------------------

    async def _limit(
        self,
        decisions: list[Decision],
        policy: str,
        key: str,
        limit: int,
        *,
        ip: str,
        fail_closed: bool = False,
    ) -> None:
        try:
            decision = await self.limiter.hit(key, limit, self.settings.rate_limit_window_seconds)
        except REDIS_DOWN_ERRORS as exc:
            fail_open = self.settings.redis_fail_open_reads and not fail_closed
            report_redis_down(self.service, f"rate_limit_{policy}", fail_open=fail_open, error=exc)
            if fail_open:
                return
            raise _redis_unavailable() from None
        decisions.append(decision)
        RATE_LIMIT_DECISIONS.labels(policy, "allowed" if decision.allowed else "limited").inc()
        if not decision.allowed:
            log_event(
                "rate_limited",
                logging.WARNING,
                policy=policy,
                client_ip=ip,
                client_key=client_key(ip),
                limit=limit,
                retry_after=decision.retry_after,
            )
            raise ProblemError(429, "Too many requests; slow down", headers=decision.headers())

    @asynccontextmanager
    async def _in_flight(self, username: str | None, ip: str, unsafe: bool) -> AsyncIterator[None]:
        """Hold one of the user's in-flight slots around the upstream call (or 429 at once).

        Without Redis the cap follows the user limiter: reads go on (fail open), anything that
        changes state is refused (fail closed).
        """
        s = self.settings
        if username is None or not s.rate_limit_enabled:
            yield
            return
        limit = s.rate_limit_user_inflight
        try:
            slot = await self.inflight.acquire(username, limit)
        except REDIS_DOWN_ERRORS as exc:
            fail_open = s.redis_fail_open_reads and not unsafe
            report_redis_down(
                self.service, "rate_limit_user_inflight", fail_open=fail_open, error=exc
            )
            if not fail_open:
                raise _redis_unavailable() from None
            yield
            return
        RATE_LIMIT_DECISIONS.labels("user_inflight", "allowed" if slot.allowed else "limited").inc()
        if not slot.allowed:
            log_event(
                "rate_limited",
                logging.WARNING,
                policy="user_inflight",
                client_ip=ip,
                limit=limit,
                in_flight=slot.in_flight,
                retry_after=RETRY_AFTER_SECONDS,
            )
            raise ProblemError(
                429,
                f"Too many requests in flight for this account (at most {limit}); slow down",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        try:
            yield
        finally:
            try:
                await self.inflight.release(slot)
            except REDIS_DOWN_ERRORS as exc:  # the slot expires on its own
                report_redis_down(
                    self.service, "rate_limit_user_inflight", fail_open=True, error=exc
                )

    async def _reserve_login(self, ip: str, key: str, username: str | None) -> Reservation:
        """Hold this attempt's place in the IP's and the username's failed-login budgets
        (check and count in one script), or refuse it: 403 for the IP, 429 for the username."""
        try:
            outcome = await self.guard.reserve(key, username)
        except REDIS_DOWN_ERRORS as exc:
            report_redis_down(self.service, "login_guard", fail_open=False, error=exc)
            raise _redis_unavailable() from None
        if isinstance(outcome, Reservation):
            RATE_LIMIT_DECISIONS.labels("login_ip", "allowed").inc()
            if username is not None:
                RATE_LIMIT_DECISIONS.labels("login_user", "allowed").inc()
            return outcome
        raise _login_refused(outcome, ip, key, username)

    async def _after_login(
        self, status: int, ip: str, username: str | None, reservation: Reservation | None
    ) -> None:
        if 200 <= status < 300:
            LOGIN_ATTEMPTS.labels("success").inc()
        # Only the user service's 401 is a credential failure: validation errors, outages and
        # successes give the reservation back (a success does not clear earlier failures).
        failed = status == 401
        if failed:
            LOGIN_ATTEMPTS.labels("failure").inc()
            log_event("login_failed", logging.WARNING, client_ip=ip, username=username)
        if reservation is not None:
            await self._settle_login(reservation, ip, failed=failed)

    async def _settle_login(self, reservation: Reservation, ip: str, *, failed: bool) -> None:
        try:
            outcome = await self.guard.settle(reservation, failed=failed)
        except REDIS_DOWN_ERRORS as exc:
            # The answer stands; the reservation expires on its own (reservation_ttl), and the
            # next attempt fails closed at the reservation while Redis is down.
            report_redis_down(self.service, "login_guard", fail_open=False, error=exc)
            return
        if outcome.ip_blocked_now:
            IP_BLOCKS.inc()
            log_event(
                "ip_blocked",
                logging.WARNING,
                client_ip=ip,
                client_key=reservation.ip,
                failures=outcome.ip_failures,
                block_seconds=self.guard.policy.ip_block,
            )
        if outcome.user_throttled_now:
            log_event(
                "username_throttled",
                logging.WARNING,
                username=reservation.username,
                failures=outcome.user_failures,
                block_seconds=self.guard.policy.user_block,
            )

    async def health(self) -> dict[str, Any]:
        """Liveness plus what the gateway depends on: breaker states and Redis."""
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=self.settings.redis_timeout_seconds)
            redis = "ok"
        except Exception:  # health reports, never raises
            redis = "unavailable"
        upstreams = {name: u.breaker.state.label for name, u in self.upstreams.items()}
        healthy = redis == "ok" and all(
            u.breaker.state is State.CLOSED for u in self.upstreams.values()
        )
        return {
            "status": "ok" if healthy else "degraded",
            "service": self.service,
            "upstreams": upstreams,
            "redis": redis,
        }


def _document(method: str, document: bytes) -> Response:
    """The published OpenAPI document: public, no token, but rate limited like any route."""
    if method != "GET":
        raise ProblemError(405, "Method not allowed; use GET", headers={"Allow": "GET"})
    return Response(document, media_type="application/json")


def _login_username(body: bytes) -> str | None:
    """The username a login targets, lower-cased like the user service stores it."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    name = doc.get("username") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip().lower()[:64]


def _login_refused(refusal: Refusal, ip: str, key: str, username: str | None) -> ProblemError:
    """Count and log a refused login; the problem to answer with (403 IP, 429 username)."""
    if refusal.policy == "login_user":
        RATE_LIMIT_DECISIONS.labels("login_ip", "allowed").inc()
    RATE_LIMIT_DECISIONS.labels(refusal.policy, "limited").inc()
    LOGIN_ATTEMPTS.labels("blocked").inc()
    log_event(
        "rate_limited",
        logging.WARNING,
        policy=refusal.policy,
        client_ip=ip,
        client_key=key,
        username=username,
        retry_after=refusal.retry_after,
    )
    retry = {"Retry-After": _seconds(refusal.retry_after)}
    if refusal.policy == "login_ip":
        return ProblemError(
            403,
            "Too many failed logins from this address; try again later",
            slug="ip-blocked",
            headers=retry,
        )
    return ProblemError(
        429, "Too many failed logins for this account; try again later", headers=retry
    )


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value)))


def _redis_unavailable() -> ProblemError:
    return ProblemError(
        503, "Rate limiting is unavailable; try again shortly", headers={"Retry-After": "2"}
    )


def _response(reply: Reply) -> Response:
    headers = {k: v for k, v in reply.headers.items() if k.lower() not in DROPPED_RESPONSE_HEADERS}
    return Response(reply.content, status_code=reply.status_code, headers=headers)


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


@router.api_route("/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def proxy(request: Request) -> Response:
    return await get_gateway(request).handle(request)
