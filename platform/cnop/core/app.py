"""Builds a service's FastAPI app with everything every service shares.

A service supplies its settings, its routers and, optionally, a start-up hook; this factory adds
JSON logging, request ids, request deadlines, security headers, metrics, fault flags, problem
handlers, health probes, request-body limits, the internal credential check (backends) and the
clients in :class:`~cnop.core.context.ServiceContext`.

The middleware stack, outermost first, and why in that order::

    request id -> deadline -> security headers -> metrics -> CORS (gateway) ->
    unhandled errors -> internal credential (backends) -> fault flags -> body guard -> routes

Everything a client sees passes the first three (so a 500 or a 403 still carries the request
id and every security header, and is counted); unhandled errors are turned into problems inside
them; a call without the platform's credential is refused before faults apply and before a byte
of its body is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel

from cnop.core.body_guard import BodyGuardMiddleware
from cnop.core.context import ServiceContext
from cnop.core.deadline import DeadlineMiddleware
from cnop.core.faults import FaultFlags, FaultMiddleware
from cnop.core.health import Liveness, LivenessReport, ReadinessCheck, health_router
from cnop.core.internal import InternalAuthMiddleware
from cnop.core.json_body import check_routes
from cnop.core.locks import UserLocks
from cnop.core.logging import configure_logging, log_event
from cnop.core.metrics import MetricsMiddleware, export_settings, init_known_series
from cnop.core.middleware import RequestContextMiddleware, SecurityHeadersMiddleware
from cnop.core.problems import UnhandledErrorMiddleware, install_problem_handlers
from cnop.core.redis import make_redis
from cnop.core.settings import ServiceSettings
from cnop.core.tokens import TokenService

StartupHook = Callable[[ServiceContext], Awaitable[None]]
ShutdownHook = Callable[[ServiceContext], Awaitable[None]]


def build_context(settings: ServiceSettings, *, uses_dynamodb: bool) -> ServiceContext:
    """PynamoDB and botocore (about 20 MiB a process) are imported only by the services that
    use DynamoDB: the gateway, auth and insights never load them."""
    tables = None
    if uses_dynamodb:
        from cnop.core.db import build_tables

        tables = build_tables(settings)
    redis = make_redis(
        settings.redis_url, settings.redis_timeout_seconds, settings.redis_max_connections
    )
    return ServiceContext(
        settings=settings,
        redis=redis,
        tokens=TokenService(
            settings.secret,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            expiry_minutes=settings.jwt_expiry_minutes,
            redis=redis,
            service=settings.service_name,
            leeway_seconds=settings.jwt_leeway_seconds,
            fail_open_on_redis_error=settings.redis_fail_open_reads,
            check_revocation=settings.token_revocation_enabled,
            accept_unsigned=settings.jwt_accept_unsigned,
        ),
        locks=UserLocks(
            redis,
            settings.service_name,
            ttl_seconds=settings.lock_ttl_seconds,
            wait_seconds=settings.lock_wait_seconds,
            enabled=settings.locks_enabled,
        ),
        faults=FaultFlags(
            redis,
            settings.service_name,
            enabled=settings.fault_flags_enabled,
            refresh_seconds=settings.fault_refresh_seconds,
        ),
        http=httpx.AsyncClient(
            timeout=settings.internal_timeout_seconds,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        ),
        tables=tables,
        extra={},
    )


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[APIRouter],
    uses_dynamodb: bool = True,
    on_startup: StartupHook | None = None,
    on_shutdown: ShutdownHook | None = None,
    cors: bool = False,
    log_requests: bool = True,
    liveness: LivenessReport | None = None,
    known_labels: Mapping[str, Sequence[str]] | None = None,
    internal_only: bool = True,
    liveness_model: type[BaseModel] = Liveness,
) -> FastAPI:
    """``known_labels`` are the service's own label values (``{"upstreams": (...)}``) that
    :data:`cnop.core.metrics.KNOWN_SERIES` refers to as ``"@upstreams"``. ``internal_only``: the
    service answers the platform only (every backend); the gateway, the public entry, passes
    False."""
    configure_logging(settings.service_name, settings.log_level)
    # Before anything is served or scraped: a drill's first event must be a change from 0.
    init_known_series(settings.service_name, known_labels)
    export_settings(settings.service_name, settings)
    check_routes(routers)
    ctx = build_context(settings, uses_dynamodb=uses_dynamodb)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ctx.tables is not None:
            from cnop.core.db import ensure_tables

            await ctx.db(ensure_tables, ctx.tables)
        if on_startup is not None:
            await on_startup(ctx)
        log_event("service_started", port=settings.port)
        fault_watcher = asyncio.create_task(ctx.faults.watch(), name="fault-flags")
        try:
            yield
        finally:
            fault_watcher.cancel()
            if on_shutdown is not None:
                await on_shutdown(ctx)
            await ctx.http.aclose()
            await ctx.redis.aclose()
            log_event("service_stopped")

    app = FastAPI(
        title=title,
        lifespan=lifespan,
        docs_url="/docs" if settings.dev_mode else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.dev_mode else None,
    )
    app.state.ctx = ctx

    async def redis_ready() -> None:
        await ctx.redis.ping()

    checks: dict[str, ReadinessCheck] = {"redis": redis_ready}
    if ctx.tables is not None:
        from cnop.core.db import ping

        tables = ctx.tables

        async def dynamodb_ready() -> None:
            await ctx.db(ping, tables)

        checks["dynamodb"] = dynamodb_ready
    app.include_router(health_router(settings.service_name, checks, liveness, liveness_model))
    for router in routers:
        app.include_router(router)
    install_problem_handlers(app, verbose=settings.verbose_errors)

    # Added innermost first (see the module docstring for the resulting order).
    app.add_middleware(
        BodyGuardMiddleware,
        max_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
    )
    app.add_middleware(FaultMiddleware, flags=ctx.faults)
    if internal_only and settings.internal_auth_enabled:
        app.add_middleware(InternalAuthMiddleware, secret=settings.internal_token)
    app.add_middleware(UnhandledErrorMiddleware, verbose=settings.verbose_errors)
    if cors:
        # The permissive-cors flaw (security/flaws.yaml): every origin is echoed back, with
        # credentials, so any web page can call the API as the user who visits it.
        reflect_any = settings.cors_reflect_any_origin
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[] if reflect_any else settings.cors_origins,
            allow_origin_regex=".*" if reflect_any else None,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    if settings.security_headers_enabled:  # off: the missing-headers flaw
        app.add_middleware(SecurityHeadersMiddleware)
    # Outside the fault middleware: injected latency spends the request's deadline too.
    app.add_middleware(
        DeadlineMiddleware,
        budget_seconds=settings.request_budget_seconds,
        margin_seconds=settings.deadline_margin_seconds,
    )
    app.add_middleware(RequestContextMiddleware, log_requests=log_requests)
    return app
