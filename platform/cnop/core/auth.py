"""The FastAPI dependency every backend uses to re-validate the caller's JWT (defence in depth)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from cnop.core.context import ServiceContext, get_ctx
from cnop.core.logging import log_event, user_var
from cnop.core.problems import ProblemError
from cnop.core.tokens import SAFE_METHODS, TokenError, UserContext, bearer_token

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cnop"'}


async def authenticate(
    ctx: ServiceContext, authorization: str | None, *, safe: bool = False
) -> UserContext:
    """The caller, or a 401 / 503 problem; ``safe``: the request changes nothing (see tokens)."""
    token = bearer_token(authorization)
    if token is None:
        log_event("token_rejected", logging.INFO, reason="missing")
        raise ProblemError(401, "A bearer token is required", headers=BEARER_CHALLENGE)
    try:
        user = await ctx.tokens.verify(token, safe=safe)
    except TokenError as exc:
        log_event("token_rejected", logging.WARNING, reason=exc.reason)
        if exc.reason == "unavailable":
            raise ProblemError(503, exc.detail, headers={"Retry-After": "2"}) from exc
        raise ProblemError(401, exc.detail, headers=BEARER_CHALLENGE) from exc
    user_var.set(user.username)
    return user


async def require_user(
    request: Request, ctx: Annotated[ServiceContext, Depends(get_ctx)]
) -> UserContext:
    return await authenticate(
        ctx, request.headers.get("authorization"), safe=request.method in SAFE_METHODS
    )


CurrentUser = Annotated[UserContext, Depends(require_user)]
Ctx = Annotated[ServiceContext, Depends(get_ctx)]
