"""gateway service: the platform's only public entry (port 8080).

Routing (a data table in :mod:`.routes`), the token check through the auth service, rate limits
and failed-login protection in Redis, and a circuit breaker, timeout and retry policy per
upstream. Every number is a setting (``CNOP_...``) because labs start from weaker ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from cnop.core.app import create_service_app
from cnop.core.context import ServiceContext
from cnop.services.gateway.api import Gateway, router
from cnop.services.gateway.responses import GatewayHealth
from cnop.services.gateway.routes import UPSTREAMS
from cnop.services.gateway.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    gateway = Gateway(settings)

    async def on_shutdown(ctx: ServiceContext) -> None:
        await gateway.aclose()

    async def liveness() -> dict[str, Any]:
        return await gateway.health()

    app = create_service_app(
        settings,
        title="CNOP gateway",
        routers=[router],
        uses_dynamodb=False,
        on_shutdown=on_shutdown,
        cors=True,
        liveness=liveness,
        known_labels={"upstreams": UPSTREAMS},
        internal_only=False,
        liveness_model=GatewayHealth,
    )
    app.state.gateway = gateway
    return app
