"""RFC 9457 problem documents and the exception handlers that produce them.

Every error a client sees goes through here, so nothing internal (trace, class name, hostname)
can leak: unknown exceptions become a generic 500 and are logged server-side only.

Starlette runs an app's ``Exception`` handler in its outermost layer, outside every middleware
of ours, so a 500 answered there would lack the security headers, the request id and CORS.
:class:`UnhandledErrorMiddleware` therefore catches what escapes the routes inside our stack and
answers there; the ``Exception`` handler stays as the last resort for a failing middleware.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnop.core.logging import log_event, request_id_var

PROBLEM_TYPE_BASE = "https://cnop-lab.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    500: "internal-error",
    502: "bad-gateway",
    503: "service-unavailable",
    504: "upstream-timeout",
}


class ProblemError(Exception):
    """Raise to answer with a problem document; ``extra`` adds members (e.g. ``errors``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or _SLUGS.get(status, "error")
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


def problem_body(
    status: int,
    detail: str,
    instance: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or _SLUGS.get(status, "error")),
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id_var.get(),
    }
    body.update(extra)
    return body


def problem_response(
    status: int,
    detail: str,
    instance: str,
    *,
    headers: dict[str, str] | None = None,
    slug: str | None = None,
    title: str | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, instance, slug=slug, title=title, **extra),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            # FastAPI puts the character position where a field name goes: ("body", 1).
            reason = (err.get("ctx") or {}).get("error", "not valid JSON")
            position = next((p for p in err.get("loc", ()) if isinstance(p, int)), None)
            where = "" if position is None else f" at character {position}"
            errors.append({"field": "body", "message": f"not valid JSON: {reason}{where}"})
            continue
        message = str(err.get("msg", "invalid value"))
        # pydantic prefixes custom validator messages; students should read the rule itself.
        message = message.removeprefix("Value error, ")
        errors.append({"field": _field_name(err.get("loc", ())), "message": message})
    return errors


def exception_details(exc: BaseException) -> dict[str, Any]:
    """What the verbose-errors flaw (``CNOP_VERBOSE_ERRORS``) adds to a problem document: the
    exception's class and its traceback, the kind of leak that maps the code for an attacker."""
    return {
        "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "traceback": traceback.format_exception(exc),
    }


def install_problem_handlers(app: FastAPI, *, verbose: bool = False) -> None:
    """``verbose`` is the verbose-errors flaw (security/flaws.yaml); never on as shipped."""

    def leak(exc: BaseException) -> dict[str, Any]:
        return exception_details(exc) if verbose else {}

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            request.url.path,
            headers=exc.headers,
            slug=exc.slug,
            title=exc.title,
            **{**exc.extra, **leak(exc)},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return problem_response(
            422, f"Invalid input: {fields}", request.url.path, errors=errors, **leak(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's 400 for a JSON body it cannot even decode (not UTF-8): for the contract
            # that is bad input like any malformed JSON, so the same 422 naming the body.
            errors = [{"field": "body", "message": "not valid JSON (UTF-8 text)"}]
            return problem_response(
                422, "Invalid input: body", request.url.path, errors=errors, **leak(exc)
            )
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such resource"
        return problem_response(
            exc.status_code,
            detail,
            request.url.path,
            headers=dict(exc.headers or {}),
            **leak(exc),
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request.url.path, exc, verbose=verbose)


def _internal_error(path: str, exc: Exception, *, verbose: bool = False) -> JSONResponse:
    log_event(
        "unhandled_error", logging.ERROR, path=path, error_type=type(exc).__name__, exc_info=exc
    )
    extra = exception_details(exc) if verbose else {}
    return problem_response(500, "An unexpected error occurred", path, **extra)


class UnhandledErrorMiddleware:
    """Turns an exception that escaped the routes into a 500 problem, inside our middlewares.

    Installed inside the ones that decorate responses (request id, security headers, CORS,
    metrics), so the 500 carries all of them and is counted. When the response had already
    started there is nothing clean left to send: the exception goes on to the server.
    """

    def __init__(self, app: ASGIApp, *, verbose: bool = False) -> None:
        self.app = app
        self.verbose = verbose  # the verbose-errors flaw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:
                raise
            await _internal_error(scope["path"], exc, verbose=self.verbose)(scope, receive, send)
