"""The gateway's token check: asks the auth service, through its own breaker, who the caller is.

The gateway holds no token rules of its own (they live in the auth service and ``cnop.core``),
so a revoked token is refused here as soon as the auth service refuses it. Any failure to get an
answer is a 503: the gateway cannot tell a good token from a bad one, so it must not guess.
"""

from __future__ import annotations

import httpx

from cnop.core.auth import BEARER_CHALLENGE
from cnop.core.logging import log_event
from cnop.core.problems import ProblemError
from cnop.core.tokens import ORIGINAL_METHOD_HEADER, bearer_token
from cnop.services.gateway.upstreams import Upstream, unavailable


class AuthCheck:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

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


def _detail(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None
