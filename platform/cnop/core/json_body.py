"""Request bodies whose JSON numbers are read from their text as ``Decimal``, never as ``float``.

FastAPI parses a JSON body itself (``await request.json()``) before pydantic sees it, and the
standard library turns ``0.019999999999999999`` into the float ``0.02``: the decimals a client
sent are gone before any field rule can count them. :class:`DecimalJSONRoute` hands FastAPI a
request whose ``json()`` keeps every number's exact text, so ``Amount``'s "at most 2 decimals"
refuses that value (422) instead of accepting a rounded one. Integers become ``Decimal`` too,
so a 5,000-digit integer is a validation error naming its field, not a parsing failure.

Every router of a service that reads a JSON body uses it (:func:`api_router`);
:func:`check_routes` refuses at start-up a body route that does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

__all__ = ["DecimalJSONRoute", "api_router", "check_routes", "loads"]


def loads(body: bytes | str) -> Any:
    """``json.loads`` with every number as an exact ``Decimal``."""
    return json.loads(body, parse_float=Decimal, parse_int=Decimal)


class _DecimalJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads this body as JSON (it does without a content type, too)."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _require_object(request: _DecimalJSONRequest) -> None:
    """Every body of the API is a JSON object. FastAPI validates a body model *from attributes*,
    so ``0``, ``"x"`` or ``[]`` would pass as a model whose fields are all optional: an empty
    update answered 200. Such a body is a 422 naming it, before any handler runs."""
    if not await request.body() or not _is_json(request.headers.get("content-type")):
        return
    try:
        document = await request.json()
    except ValueError:
        return  # not JSON at all: FastAPI's own 422 says so
    if not isinstance(document, dict):
        raise RequestValidationError(
            [
                {
                    "type": "model_type",
                    "loc": ("body",),
                    "msg": "must be a JSON object",
                    "input": None,
                }
            ]
        )


class DecimalJSONRoute(APIRoute):
    """An ``APIRoute`` whose JSON body numbers reach pydantic as ``Decimal``, and whose body, if
    it has one, must be a JSON object."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        reads_body = self.body_field is not None

        async def decimal_json_handler(request: Request) -> Response:
            wrapped = _DecimalJSONRequest(request.scope, request.receive)
            if reads_body:
                await _require_object(wrapped)
            return await handler(wrapped)

        return decimal_json_handler


def api_router() -> APIRouter:
    return APIRouter(route_class=DecimalJSONRoute)


def check_routes(routers: Iterable[APIRouter]) -> None:
    """Refuse a route that reads a JSON body through the float-parsing default route class."""
    for router in routers:
        for route in router.routes:
            if (
                isinstance(route, APIRoute)
                and route.body_field is not None
                and not isinstance(route, DecimalJSONRoute)
            ):
                raise TypeError(
                    f"{route.path} reads a JSON body: build its router with "
                    "cnop.core.json_body.api_router() so numbers are parsed as Decimal"
                )
