"""auth service: the platform's single authority on whether an access token is good.

The gateway asks it about every authenticated request, so token rules live in one place
(``cnop.core.tokens``) and the gateway needs no database. Internal only: the gateway never routes
to it.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request

from cnop.core.app import create_service_app
from cnop.core.auth import Ctx, authenticate
from cnop.core.settings import ServiceSettings
from cnop.core.tokens import ORIGINAL_METHOD_HEADER, SAFE_METHODS


class Settings(ServiceSettings):
    service_name: str = "auth"
    port: int = 8003


router = APIRouter()


@router.post("/validate")
async def validate(request: Request, ctx: Ctx) -> dict[str, object]:
    """Answer 200 with the user context, or a 401 problem saying why the token is refused.

    The token is judged for the method the gateway names (a safe one may fail open without
    Redis); without that header it is judged as state-changing, the strict case."""
    method = request.headers.get(ORIGINAL_METHOD_HEADER, "").upper()
    user = await authenticate(
        ctx, request.headers.get("authorization"), safe=method in SAFE_METHODS
    )
    return {
        "valid": True,
        "user": {
            "username": user.username,
            "role": user.role,
            "jti": user.jti,
            "expires_at": user.expires_at,
        },
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(), title="CNOP auth", routers=[router], uses_dynamodb=False
    )
