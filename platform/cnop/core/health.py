"""Liveness (``/health``) and readiness (``/health/ready``) probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

ReadinessCheck = Callable[[], Awaitable[None]]
# A service whose liveness says more (the gateway reports its breakers) supplies the body.
LivenessReport = Callable[[], Awaitable[dict[str, Any]]]


class Liveness(BaseModel):
    status: str
    service: str


def health_router(
    service: str,
    checks: dict[str, ReadinessCheck],
    liveness: LivenessReport | None = None,
    liveness_model: type[BaseModel] = Liveness,
) -> APIRouter:
    """``liveness_model`` describes the body of ``/health`` (the gateway publishes its own)."""
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=liveness_model)
    async def live() -> dict[str, Any]:
        if liveness is not None:
            return await liveness()
        return {"status": "ok", "service": service}

    @router.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        async def run(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), timeout=2)
            except Exception:  # readiness reports, never raises
                return "unavailable"
            return "ok"

        names = list(checks)
        results = await asyncio.gather(*(run(checks[n]) for n in names))
        report = dict(zip(names, results, strict=True))
        ok = all(r == "ok" for r in results)
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "service": service, "checks": report},
            status_code=200 if ok else 503,
        )

    return router
