"""insights service: a short written summary of the caller's portfolio.

Reads the portfolio from the user service, asks Gemini (google-genai SDK) for a summary, caches
it in Redis by portfolio shape, and always has an answer: with no key, a failing or slow LLM or
an open breaker it falls back to a deterministic rule-based summary. No DynamoDB of its own.
"""

from __future__ import annotations

from fastapi import FastAPI

from cnop.core.app import create_service_app
from cnop.core.context import ServiceContext
from cnop.core.logging import log_event
from cnop.services.insights.api import STATE_KEY, InsightsState, router, state
from cnop.services.insights.cache import InsightsCache
from cnop.services.insights.llm import UPSTREAM as LLM_UPSTREAM
from cnop.services.insights.llm import GeminiSummarizer
from cnop.services.insights.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def on_startup(ctx: ServiceContext) -> None:
        assert ctx.extra is not None
        llm = GeminiSummarizer(settings)
        ctx.extra[STATE_KEY] = InsightsState(
            llm=llm, cache=InsightsCache(ctx, settings.insights_cache_ttl_seconds)
        )
        log_event("llm_configured", model=settings.gemini_model, enabled=llm.configured)

    async def on_shutdown(ctx: ServiceContext) -> None:
        await state(ctx).llm.aclose()

    return create_service_app(
        settings,
        title="CNOP insights",
        routers=[router],
        uses_dynamodb=False,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        known_labels={"upstreams": (LLM_UPSTREAM,)},
    )
