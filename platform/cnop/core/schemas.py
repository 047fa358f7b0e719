"""Response field types every service shares, so the published OpenAPI document says exactly what
a client receives.

Money leaves the API as a JSON string (see :mod:`cnop.core.money`); the patterns below are the
formats ``usd_str``, ``qty_str`` and the price renderers produce, so a response that drifts from
them fails validation in the service instead of reaching a client.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from pydantic import BaseModel, Field

__all__ = [
    "Message",
    "PercentText",
    "PriceText",
    "QuantityText",
    "ResponseModel",
    "Timestamp",
    "UsdText",
    "problems",
]

UsdText = Annotated[
    str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["1250.00"], description="USD, cents")
]
QuantityText = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+(\.[0-9]{1,8})?$",
        examples=["0.5"],
        description="up to 8 decimals, no trailing zeros",
    ),
]
PriceText = Annotated[
    str,
    Field(
        pattern=r"^[0-9]+\.[0-9]{2,}$",
        examples=["67890.12"],
        description="USD per unit, at least cents",
    ),
]
PercentText = Annotated[
    str,
    Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["12.50"], description="percent, 2 decimals"),
]
Timestamp = Annotated[str, Field(examples=["2026-01-02T03:04:05.123456Z"])]


class ResponseModel(BaseModel):
    """Base of response bodies. A key a handler returns but the model lacks is dropped, never
    published unannounced: a new response field starts in its model."""


class Message(ResponseModel):
    message: str


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error statuses its handler itself may answer.

    The OpenAPI generator (``cnop.openapi``) gives each one the problem+json body and adds what
    every route can answer through the gateway (401, 422, 429, 502-504...).
    """
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}
