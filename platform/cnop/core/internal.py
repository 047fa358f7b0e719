"""The platform's internal credential: how a backend knows a request comes from the platform.

The gateway is the only public entry, but a backend's port can still be reached directly (a
learner's machine, a flat network, a misrouted port), and a direct call skips every protection
the gateway applies (rate limits, login blocking, body limits, header allow-list). So each
backend refuses, with a 403 problem, every request to its API that does not carry the shared
secret ``CNOP_INTERNAL_SECRET`` in :data:`INTERNAL_TOKEN_HEADER`; health probes stay open so
orchestrators and the lab can see it (metrics have their own port).

The secret is separate from the JWT secret: a leaked signing key must not open the backends, and
the backends never hand this one to a client. Callers attach it through :func:`internal_headers`
only (the gateway to every upstream, services calling each other through
``ServiceContext.call_service``), never on calls that leave the platform (the live price feed,
the LLM). Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from cnop.core.logging import log_event
from cnop.core.problems import problem_response
from cnop.core.settings import ServiceSettings

__all__ = ["INTERNAL_TOKEN_HEADER", "InternalAuthMiddleware", "internal_headers", "is_open_path"]

INTERNAL_TOKEN_HEADER = "X-CNOP-Internal-Token"  # noqa: S105 - a header name
_HEADER_KEY = INTERNAL_TOKEN_HEADER.lower().encode("latin-1")


def internal_headers(settings: ServiceSettings) -> dict[str, str]:
    """The header that proves a call comes from inside the platform; add it to internal calls."""
    return {INTERNAL_TOKEN_HEADER: settings.internal_token}


def is_open_path(path: str) -> bool:
    """Health probes answer anyone: liveness and readiness say nothing a caller could abuse."""
    return path == "/health" or path.startswith("/health/")


class InternalAuthMiddleware:
    """Answers 403 to any request but a health probe that lacks the platform's credential."""

    def __init__(self, app: ASGIApp, *, secret: str) -> None:
        self.app = app
        self._secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        sent = [value for name, value in scope.get("headers", []) if name == _HEADER_KEY]
        if len(sent) == 1 and hmac.compare_digest(sent[0], self._secret):
            await self.app(scope, receive, send)
            return
        log_event(
            "internal_call_refused",
            logging.WARNING,
            path=scope["path"],
            reason="missing" if not sent else "wrong",
        )
        response = problem_response(
            403,
            "This service answers the platform only; use the gateway",
            scope["path"],
            slug="internal-only",
        )
        await response(scope, receive, send)
