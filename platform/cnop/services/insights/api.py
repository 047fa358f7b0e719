"""``GET /insights/portfolio``: LLM summary, else a cached one, else the rule-based fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request

from cnop.core.auth import Ctx, CurrentUser
from cnop.core.clock import utc_now_iso
from cnop.core.context import ServiceContext
from cnop.core.logging import log_event
from cnop.core.metrics import INSIGHTS_REQUESTS
from cnop.core.schemas import problems
from cnop.services.insights import responses
from cnop.services.insights.cache import CachedInsight, InsightsCache
from cnop.services.insights.llm import GeminiSummarizer, LLMUnavailable
from cnop.services.insights.portfolio import fetch_portfolio
from cnop.services.insights.settings import insights_settings
from cnop.services.insights.summary import (
    FALLBACK_MODEL,
    Figures,
    build_prompt,
    cache_key,
    fallback_summary,
    figures,
)

Source = Literal["llm", "cache", "fallback"]
STATE_KEY = "insights"

router = APIRouter()


@dataclass(frozen=True)
class InsightsState:
    llm: GeminiSummarizer
    cache: InsightsCache


def state(ctx: ServiceContext) -> InsightsState:
    assert ctx.extra is not None
    return ctx.extra[STATE_KEY]


@router.get(
    "/insights/portfolio", response_model=responses.InsightEnvelope, responses=problems(403)
)
async def portfolio_insights(request: Request, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    settings = insights_settings(ctx)
    portfolio = await fetch_portfolio(ctx, request, settings.user_url)
    numbers = figures(portfolio)
    inv = state(ctx)
    source: Source
    reason: str | None = None
    if numbers.empty or not inv.llm.configured:
        # Nothing to analyse, or no key: the LLM and the cache have nothing to add.
        reason = "empty_portfolio" if numbers.empty else "no_api_key"
        insight, source = _fallback(numbers), "fallback"
    else:
        key = cache_key(portfolio, inv.llm.model)
        cached = await inv.cache.get(key)
        if cached is not None:
            insight, source = cached, "cache"
        else:
            try:
                text = await inv.llm.summarize(build_prompt(numbers))
            except LLMUnavailable as exc:
                reason = exc.reason
                insight, source = _fallback(numbers), "fallback"
            else:
                insight = CachedInsight(text, utc_now_iso(), inv.llm.model)
                source = "llm"
                await inv.cache.put(key, insight)
    INSIGHTS_REQUESTS.labels(source).inc()
    log_event("insights_served", source=source, reason=reason, holdings=len(numbers.positions))
    return {
        "data": {
            "summary": insight.summary,
            "generated_at": insight.generated_at,
            "model": insight.model,
            "source": source,
        }
    }


def _fallback(numbers: Figures) -> CachedInsight:
    return CachedInsight(fallback_summary(numbers), utc_now_iso(), FALLBACK_MODEL)
