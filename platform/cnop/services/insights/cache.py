"""Redis cache of LLM summaries; Redis trouble skips the cache (fail open), never the answer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from cnop.core.context import ServiceContext
from cnop.core.redis import REDIS_DOWN_ERRORS, report_redis_down


@dataclass(frozen=True)
class CachedInsight:
    summary: str
    generated_at: str
    model: str


class InsightsCache:
    def __init__(self, ctx: ServiceContext, ttl_seconds: int) -> None:
        self._ctx = ctx
        self._ttl = ttl_seconds

    async def _usable(self) -> bool:
        return self._ttl > 0 and not await self._ctx.faults.dependency_down("redis")

    async def get(self, key: str) -> CachedInsight | None:
        if not await self._usable():
            return None
        try:
            raw = await self._ctx.redis.get(key)
        except REDIS_DOWN_ERRORS as exc:
            report_redis_down(self._ctx.service, "insights_cache", fail_open=True, error=exc)
            return None
        if raw is None:
            return None
        try:
            return CachedInsight(**json.loads(raw))
        except (ValueError, TypeError):
            return None  # a foreign or old entry: regenerate and overwrite it

    async def put(self, key: str, insight: CachedInsight) -> None:
        if not await self._usable():
            return
        try:
            await self._ctx.redis.set(key, json.dumps(asdict(insight)), ex=self._ttl)
        except REDIS_DOWN_ERRORS as exc:
            report_redis_down(self._ctx.service, "insights_cache", fail_open=True, error=exc)
