"""The insights service's settings.

The Gemini key is read from ``CNOP_GEMINI_API_KEY``, ``GEMINI_API_KEY`` or
``GOOGLE_GEMINI_API_KEY`` (first found wins), because learners bring keys under whichever name
their other tools use. Without a key the service still answers, from its rule-based fallback.
"""

from __future__ import annotations

from typing import cast

from pydantic import AliasChoices, Field, SecretStr, field_validator

from cnop.core.context import ServiceContext
from cnop.core.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "insights"
    port: int = 8004

    gemini_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CNOP_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_API_KEY", "gemini_api_key"
        ),
    )
    gemini_model: str = "gemini-2.5-flash"
    # A stand-in or proxy speaking the Gemini REST API (tests, air-gapped labs).
    gemini_base_url: str | None = None
    # Pinned so the REST path is always /v1beta/models/{model}:generateContent, whatever the
    # SDK's default of the day.
    gemini_api_version: str = "v1beta"
    # Cap of one LLM call; also bounded by the request's deadline (then the fallback answers).
    llm_timeout_seconds: float = Field(default=2.0, gt=0, le=120)
    llm_temperature: float = Field(default=0.4, ge=0, le=2)
    # A lab can switch the breaker off to show a slow LLM dragging every request down.
    llm_breaker_enabled: bool = True
    # 0 disables the cache.
    insights_cache_ttl_seconds: int = Field(default=300, ge=0)

    def _waits_within_budget(self) -> dict[str, float]:
        return {
            **super()._waits_within_budget(),
            "CNOP_LLM_TIMEOUT_SECONDS": self.llm_timeout_seconds,
        }

    @field_validator("gemini_api_key", mode="after")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None


def insights_settings(ctx: ServiceContext) -> Settings:
    return cast(Settings, ctx.settings)
