"""The gateway's token check: asks the auth service, through its own breaker, who the caller is.

The gateway holds no token rules of its own (they live in the auth service and ``cnop.core``),
so a revoked token is refused here as soon as the auth service refuses it. Any failure to get an
answer is a 503: the gateway cannot tell a good token from a bad one, so it must not guess.

Concurrent checks of the very same token share one call (single flight; nothing is kept once
it answers): one user's burst of 150 requests costs the auth service one validation, not 150
that fill the auth connection pool, and time out, for every other user.
"""

from __future__ import annotations

import asyncio

from cnop.core.auth import BEARER_CHALLENGE
from cnop.core.logging import log_event
from cnop.core.problems import ProblemError
from cnop.core.tokens import ORIGINAL_METHOD_HEADER, SAFE_METHODS, bearer_token
from cnop.services.gateway.upstreams import Reply, Upstream, unavailable


class AuthCheck:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        # In-flight checks, shared by concurrent requests with the same token and the same kind
        # of method (a safe method may fail open without Redis, an unsafe one may not).
        self._checks: dict[tuple[str, bool], asyncio.Task[str]] = {}

    async def username(self, authorization: str | None, request_id: str, method: str) -> str:
        """The caller's username, or a 401 / 503 problem."""
        if bearer_token(authorization) is None:
            log_event("token_rejected", reason="missing")
            raise ProblemError(401, "A bearer token is required", headers=BEARER_CHALLENGE)
        assert authorization is not None
        if not authorization.isascii():
            # A JWT is base64url text: anything else is not a token (and not worth a call).
            log_event("token_rejected", reason="invalid")
            raise ProblemError(401, "The token is not valid", headers=BEARER_CHALLENGE)
        key = (authorization, method.upper() in SAFE_METHODS)
        check = self._checks.get(key)
        if check is None:
            check = asyncio.ensure_future(self._validate(authorization, request_id, method))
            self._checks[key] = check
            check.add_done_callback(lambda done: self._forget(key, done))
        try:
            # Shielded: one waiter giving up must not cancel the answer the others wait for.
            return await asyncio.shield(check)
        except ProblemError as exc:
            # Each request gets its own copy: the pipeline adds its own headers to it.
            raise ProblemError(
                exc.status,
                exc.detail,
                slug=exc.slug,
                title=exc.title,
                headers=dict(exc.headers),
                **exc.extra,
            ) from None

    def _forget(self, key: tuple[str, bool], done: asyncio.Task[str]) -> None:
        if self._checks.get(key) is done:
            del self._checks[key]
        if not done.cancelled():
            done.exception()  # retrieved, even if every waiter went away

    async def _validate(self, authorization: str, request_id: str, method: str) -> str:
        try:
            response = await self.upstream.send(
                "POST",
                "/validate",
                headers={
                    "Authorization": authorization,
                    "X-Request-ID": request_id,
                    ORIGINAL_METHOD_HEADER: method,
                },
            )
        except ProblemError as exc:
            if exc.status == 503:
                raise
            raise unavailable("auth", 2) from None
        if response.status_code == 401:
            detail = _detail(response) or "The token is not valid"
            raise ProblemError(401, detail, headers=BEARER_CHALLENGE)
        if response.status_code != 200:
            raise unavailable("auth", 2)
        try:
            username = response.json()["user"]["username"]
        except (ValueError, KeyError, TypeError):
            raise unavailable("auth", 2) from None
        if not isinstance(username, str) or not username:
            raise unavailable("auth", 2)
        return username


def _detail(response: Reply) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None
