"""Request deadlines: how long the caller will still wait, so every callee answers before it.

The gateway gives each attempt at an upstream one deadline (``upstream_timeout_seconds``) and
sends what is left of it in ``X-CNOP-Deadline-Ms``: whole milliseconds it will still wait.
:class:`DeadlineMiddleware` turns that header (or, without one, the service's own
``request_budget_seconds``) into a request-scoped deadline, and every step that may wait asks
this module how long it may: a lock wait, a call to another service, the LLM. Each gets
``min(its own cap, time left - margin)``, where the margin (``deadline_margin_seconds``) is what a
service keeps to turn "out of time" into an answer (409, 503, the fallback) and send it. A call to
another service forwards its own, shorter, timeout as that service's deadline, so budgets nest
down the whole chain and no callee is still working when its caller has given up.

The header is trusted only as a *bound*: it is clamped to the service's own budget, so a caller
can make a backend give up sooner, never work longer. Clients cannot send it at all: the
gateway forwards an allow-list of headers and this is not on it.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEADLINE_HEADER",
    "Deadline",
    "DeadlineMiddleware",
    "current",
    "header_value",
    "parse_header",
    "reset",
    "start",
    "step_budget",
]

DEADLINE_HEADER = "X-CNOP-Deadline-Ms"
_HEADER_KEY = DEADLINE_HEADER.lower().encode("latin-1")
# Longest header value we parse: 9 digits is ~11 days, far above any budget we clamp to.
_MAX_DIGITS = 9


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock by which the current request must be answered."""

    at: float
    margin: float = 0.0

    def left(self) -> float:
        """Seconds until the caller gives up (negative once it has)."""
        return self.at - time.monotonic()

    def budget(self, cap: float) -> float:
        """How long one step may wait: ``min(cap, left - margin)``, never below zero."""
        return max(0.0, min(cap, self.left() - self.margin))


_current: ContextVar[Deadline | None] = ContextVar("cnop_deadline", default=None)


def start(seconds: float, margin: float = 0.0) -> Token[Deadline | None]:
    """Set the current request's deadline ``seconds`` from now; reset it with the token."""
    return _current.set(Deadline(time.monotonic() + seconds, margin))


def reset(token: Token[Deadline | None]) -> None:
    _current.reset(token)


def current() -> Deadline | None:
    return _current.get()


def step_budget(cap: float) -> float:
    """What a step may spend now: ``cap`` outside a request, else bounded by its deadline."""
    deadline = _current.get()
    return cap if deadline is None else deadline.budget(cap)


def header_value(seconds: float) -> str:
    """The header's value for a wait of ``seconds``: whole milliseconds, rounded down."""
    return str(max(0, math.floor(seconds * 1000)))


def parse_header(raw: bytes | None, default: float, ceiling: float) -> float:
    """Seconds the caller grants: the header clamped to ``[0, ceiling]``, else ``default``.

    Anything but plain digits (a sign, a fraction, garbage, too long) is ignored: the service
    then works to its own budget, which is what it does for a caller that sends nothing.
    """
    if raw is None:
        return default
    text = raw.strip()
    if not text.isdigit() or len(text) > _MAX_DIGITS:
        return default
    return min(int(text) / 1000, ceiling)


class DeadlineMiddleware:
    """Reads ``X-CNOP-Deadline-Ms`` into the request's deadline (plain ASGI, so it is cheap)."""

    def __init__(self, app: ASGIApp, *, budget_seconds: float, margin_seconds: float) -> None:
        self.app = app
        self.budget = budget_seconds
        self.margin = margin_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k == _HEADER_KEY), None)
        token = start(parse_header(raw, self.budget, self.budget), self.margin)
        try:
            await self.app(scope, receive, send)
        finally:
            reset(token)
