"""Request-body limits enforced while the body streams in, before any handler or parser sees it.

Two limits, both settings of every service:

* size (``max_body_bytes``, 1 MiB): a declared ``Content-Length`` above it is refused before a
  byte is read; a chunked body is counted as it arrives and refused the moment the count passes
  the limit, so a client can never make a service buffer more than the limit plus one chunk.
  Answer: 413.
* nesting (``max_json_depth``): arrays and objects opened and not yet closed, counted outside
  JSON strings. Python's ``json`` parser recurses once per level, so 50,000 ``[`` would end in a
  ``RecursionError`` (a 500) in whatever parses the body: FastAPI, the gateway's login peek, a
  handler. Counting while streaming refuses it first, in one place. Answer: 422, like any body
  that is not the JSON a route accepts. The count is made on every body whatever its declared
  content type, so no header trick lets a deep body through to a parser that ignores the type.

A refused request never reaches a handler's answer: whatever the application does with the error
raised from ``receive`` (FastAPI turns it into a 400, a handler may not catch it at all), this
middleware drops that answer and sends its own problem document.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnop.core.problems import problem_response

__all__ = ["BodyGuardMiddleware", "JsonDepthCounter"]

_STRUCTURAL = re.compile(rb'[\[\]{}"\\]')
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


class JsonDepthCounter:
    """The deepest nesting of a JSON text fed in pieces; strings and their escapes are skipped.

    For any prefix a JSON parser accepts, the running count equals the parser's recursion depth,
    so refusing past ``limit`` here means no parser recurses deeper than ``limit``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self._in_string = False
        self._escaped = False  # a piece ended on a backslash inside a string

    def feed(self, piece: bytes) -> bool:
        """Count ``piece``; False as soon as the nesting passes the limit."""
        skip = 0 if self._escaped else -1
        self._escaped = False
        for found in _STRUCTURAL.finditer(piece):
            at = found.start()
            if at <= skip:
                continue
            char = piece[at]
            if self._in_string:
                if char == _BACKSLASH:
                    if at + 1 == len(piece):
                        self._escaped = True
                    skip = at + 1
                elif char == _QUOTE:
                    self._in_string = False
            elif char == _QUOTE:
                self._in_string = True
            elif char in _OPEN:
                self.depth += 1
                if self.depth > self.limit:
                    return False
            elif char in _CLOSE and self.depth:
                self.depth -= 1
        return True


class _BodyRefused(Exception):
    """Raised from ``receive`` to stop the application reading a refused body."""


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        counter = JsonDepthCounter(self.max_depth)
        received = 0
        refused: str | None = None  # "size" or "depth" once refused
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, refused
            if refused is not None:
                raise _BodyRefused
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_bytes:
                    refused = "size"
                elif not counter.feed(chunk):
                    refused = "depth"
                if refused is not None:
                    raise _BodyRefused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the application's answer to a body we refused; ours follows
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _BodyRefused:
            if started:
                raise
        if refused is None or started:
            return
        if refused == "size":
            await self._too_large(scope, receive, send)
            return
        detail = f"The request body nests arrays or objects deeper than {self.max_depth} levels"
        response = problem_response(
            422,
            detail,
            scope["path"],
            errors=[{"field": "body", "message": detail}],
        )
        await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, f"The request body is larger than {self.max_bytes} bytes", scope["path"]
        )
        await response(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            if not value.isdigit():
                return 0  # malformed framing is the HTTP server's to refuse
            return int(value) if len(value) <= 18 else 10**18
    return 0
