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

import httpx

from cnop.core.auth import BEARER_CHALLENGE
from cnop.core.logging import log_event
from cnop.core.problems import ProblemError
from cnop.core.tokens import bearer_token
from cnop.services.gateway.upstreams import Upstream, unavailable


class AuthCheck:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._checks: dict[str, asyncio.Task[str]] = {}

    async def username(self, authorization: str | None, request_id: str) -> str:
        """The caller's username, or a 401 / 503 problem."""
        if bearer_token(authorization) is None:
            log_event("token_rejected", reason="missing")
            raise ProblemError(401, "A bearer token is required", headers=BEARER_CHALLENGE)
        assert authorization is not None
        check = self._checks.get(authorization)
        if check is None:
            check = asyncio.ensure_future(self._validate(authorization, request_id))
            self._checks[authorization] = check
            check.add_done_callback(lambda done: self._forget(authorization, done))
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

    def _forget(self, authorization: str, done: asyncio.Task[str]) -> None:
        if self._checks.get(authorization) is done:
            del self._checks[authorization]
        if not done.cancelled():
            done.exception()  # retrieved, even if every waiter went away

    async def _validate(self, authorization: str, request_id: str) -> str:
        try:
            response = await self.upstream.send(
                "POST",
                "/validate",
                headers={"Authorization": authorization, "X-Request-ID": request_id},
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


def _detail(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None
