"""Builds a service's FastAPI app with everything every service shares.

A service supplies its settings, its routers and, optionally, a start-up hook; this factory adds
JSON logging, request ids, request deadlines, security headers, metrics, fault flags, problem
handlers, health probes and the clients in :class:`~cnop.core.context.ServiceContext`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cnop.core.context import ServiceContext
from cnop.core.db import build_tables, ensure_tables, ping
from cnop.core.deadline import DeadlineMiddleware
from cnop.core.faults import FaultFlags, FaultMiddleware
from cnop.core.health import LivenessReport, ReadinessCheck, health_router
from cnop.core.locks import UserLocks
from cnop.core.logging import configure_logging, log_event
from cnop.core.metrics import MetricsMiddleware
from cnop.core.middleware import RequestContextMiddleware, SecurityHeadersMiddleware
from cnop.core.problems import install_problem_handlers
from cnop.core.redis import make_redis
from cnop.core.settings import ServiceSettings
from cnop.core.tokens import TokenService

StartupHook = Callable[[ServiceContext], Awaitable[None]]
ShutdownHook = Callable[[ServiceContext], Awaitable[None]]


def build_context(settings: ServiceSettings, *, uses_dynamodb: bool) -> ServiceContext:
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
        tables=build_tables(settings) if uses_dynamodb else None,
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
) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level)
    ctx = build_context(settings, uses_dynamodb=uses_dynamodb)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ctx.tables is not None:
            await ctx.db(ensure_tables, ctx.tables)
        if on_startup is not None:
            await on_startup(ctx)
        log_event("service_started", port=settings.port)
        try:
            yield
        finally:
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
        tables = ctx.tables

        async def dynamodb_ready() -> None:
            await ctx.db(ping, tables)

        checks["dynamodb"] = dynamodb_ready
    app.include_router(health_router(settings.service_name, checks, liveness))
    for router in routers:
        app.include_router(router)
    install_problem_handlers(app)

    # Added innermost first: faults apply inside metrics, so injected errors are counted.
    app.add_middleware(FaultMiddleware, flags=ctx.faults)
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
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
    app.add_middleware(SecurityHeadersMiddleware)
    # Outside the fault middleware: injected latency spends the request's deadline too.
    app.add_middleware(
        DeadlineMiddleware,
        budget_seconds=settings.request_budget_seconds,
        margin_seconds=settings.deadline_margin_seconds,
    )
    app.add_middleware(RequestContextMiddleware, log_requests=log_requests)
    return app
