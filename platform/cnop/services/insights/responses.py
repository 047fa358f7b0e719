"""Response body of the insights service."""

from __future__ import annotations

from typing import Literal

from cnop.core.schemas import ResponseModel, Timestamp

__all__ = ["Insight", "InsightEnvelope"]


class Insight(ResponseModel):
    summary: str
    generated_at: Timestamp
    model: str
    source: Literal["llm", "cache", "fallback"]


class InsightEnvelope(ResponseModel):
    data: Insight
