"""The caller's portfolio, fetched from the user service with the caller's own credentials.

The user service is the owner of balances and holdings; we forward the caller's
``Authorization`` (it re-validates the token) and ``X-Request-ID`` (one trace across services),
and treat its answer as untrusted input: it is validated before any of it reaches a prompt.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cnop.core.context import ServiceContext
from cnop.core.logging import log_event, request_id_var
from cnop.core.problems import ProblemError

NonNegative = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class Holding(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # The same pattern as the public API: nothing else can be smuggled into the prompt.
    asset_id: str = Field(pattern=r"^[A-Za-z0-9]{1,10}$")
    quantity: NonNegative
    current_price: NonNegative
    market_value: NonNegative
    percentage: Decimal | None = Field(default=None, allow_inf_nan=False)


class Portfolio(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    assets: list[Holding] = Field(default_factory=list, max_length=500)
    usd_balance: NonNegative = Decimal(0)
    total_value: NonNegative = Decimal(0)


def _unavailable() -> ProblemError:
    return ProblemError(503, "The user service is unavailable", headers={"Retry-After": "2"})


async def fetch_portfolio(ctx: ServiceContext, request: Request, user_url: str) -> Portfolio:
    headers = {"Authorization": request.headers.get("authorization", "")}
    request_id = request_id_var.get()
    if request_id:
        headers["X-Request-ID"] = request_id
    response = await ctx.call_service("user", "GET", f"{user_url}/portfolio", headers=headers)
    if response.status_code in (401, 403):
        raise ProblemError(response.status_code, "The portfolio cannot be read with this token")
    if response.status_code != 200:
        log_event(
            "dependency_error", logging.WARNING, dependency="user", status=response.status_code
        )
        raise _unavailable()
    try:
        return Portfolio.model_validate_json(response.content)
    except ValidationError as exc:
        log_event(
            "dependency_bad_answer", logging.WARNING, dependency="user", errors=exc.error_count()
        )
        raise ProblemError(502, "The user service gave an unusable answer") from exc
