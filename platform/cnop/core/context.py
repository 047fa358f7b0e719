"""What a running service holds: settings, clients and the shared mechanisms built on them.

Built once in the app's lifespan and kept on ``app.state.ctx``; handlers reach it through
:func:`get_ctx`, tests build their own app with their own settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from fastapi import Request
from redis.asyncio import Redis
from starlette.concurrency import run_in_threadpool

from cnop.core import deadline
from cnop.core.faults import FaultFlags
from cnop.core.internal import internal_headers
from cnop.core.locks import UserLocks
from cnop.core.logging import log_event
from cnop.core.metrics import DEPENDENCY_ERRORS
from cnop.core.problems import ProblemError
from cnop.core.settings import ServiceSettings
from cnop.core.tokens import TokenService

if TYPE_CHECKING:  # PynamoDB and botocore (~20 MiB) load only in services that use DynamoDB
    from cnop.core.db import Tables

T = TypeVar("T")


@dataclass
class ServiceContext:
    settings: ServiceSettings
    redis: Redis
    tokens: TokenService
    faults: FaultFlags
    http: httpx.AsyncClient
    locks: UserLocks
    tables: Tables | None = None
    extra: dict[str, Any] | None = None

    @property
    def service(self) -> str:
        return self.settings.service_name

    def require_tables(self) -> Tables:
        assert self.tables is not None, "this service was built without DynamoDB"
        return self.tables

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking PynamoDB call off the event loop; an outage becomes a clean 503."""
        from pynamodb.exceptions import PynamoDBConnectionError  # see TYPE_CHECKING above

        if await self.faults.dependency_down("dynamodb"):
            DEPENDENCY_ERRORS.labels(self.service, "dynamodb", fn.__name__, "fail_closed").inc()
            raise ProblemError(
                503, "Storage is unavailable; try again shortly", headers={"Retry-After": "2"}
            )
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except PynamoDBConnectionError as exc:
            DEPENDENCY_ERRORS.labels(self.service, "dynamodb", fn.__name__, "fail_closed").inc()
            log_event("dynamodb_unavailable", logging.ERROR, error=type(exc).__name__)
            raise ProblemError(
                503, "Storage is unavailable; try again shortly", headers={"Retry-After": "2"}
            ) from exc

    async def call_service(
        self, dependency: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        """Call another platform service over HTTP, proving we are the platform (the internal
        credential); a fault flag, outage or timeout is a 503 for our caller.

        The call gets ``min(internal_timeout_seconds, what our deadline leaves)`` in total (pool
        wait, connect and read), and tells the callee so in ``X-CNOP-Deadline-Ms``: it answers
        before we give up, as we answer before our own caller does.
        """
        if await self.faults.dependency_down(dependency):
            DEPENDENCY_ERRORS.labels(self.service, dependency, method, "fail_closed").inc()
            raise ProblemError(
                503, f"The {dependency} service is unavailable", headers={"Retry-After": "2"}
            )
        timeout = deadline.step_budget(self.settings.internal_timeout_seconds)
        headers = {**(kwargs.pop("headers", None) or {}), **internal_headers(self.settings)}
        headers[deadline.DEADLINE_HEADER] = deadline.header_value(timeout)
        try:
            if timeout <= 0:
                raise httpx.TimeoutException("no time left before the caller's deadline")
            async with asyncio.timeout(timeout):
                return await self.http.request(
                    method, url, headers=headers, timeout=timeout, **kwargs
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            DEPENDENCY_ERRORS.labels(self.service, dependency, method, "fail_closed").inc()
            log_event(
                "dependency_unavailable",
                logging.WARNING,
                dependency=dependency,
                error=type(exc).__name__,
                timeout_seconds=round(timeout, 3),
            )
            raise ProblemError(
                503, f"The {dependency} service is unavailable", headers={"Retry-After": "2"}
            ) from exc


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx
