"""Bodies the gateway answers itself (everything else is the upstream's body, passed through)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["GatewayHealth"]

BreakerState = Literal["closed", "open", "half-open"]


class GatewayHealth(BaseModel):
    """``GET /health``: ``degraded`` while Redis is away or any breaker is not closed."""

    status: Literal["ok", "degraded"]
    service: str
    upstreams: dict[str, BreakerState]
    redis: Literal["ok", "unavailable"]
