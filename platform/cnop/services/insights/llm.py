"""The Gemini call, through the google-genai SDK, behind a circuit breaker and a deadline.

Any failure (no key, open breaker, timeout, API error, empty answer) raises
:class:`LLMUnavailable`; the caller answers from the rule-based fallback instead. The breaker
means a dead or slow provider costs each request microseconds, not ``llm_timeout_seconds``.

The call gets ``min(llm_timeout_seconds, what the request's deadline leaves)``, so the fallback
is served before the gateway gives up on us. Only a timeout at the full ``llm_timeout_seconds``
is the provider's fault; one cut short by our own deadline gives its breaker ticket back
without a verdict.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httpx

from cnop.core import deadline
from cnop.core.breaker import BreakerOpenError, BreakerPolicy, CircuitBreaker
from cnop.core.logging import log_event
from cnop.services.insights.settings import Settings
from cnop.services.insights.summary import SYSTEM_INSTRUCTION

if TYPE_CHECKING:
    from google import genai

UPSTREAM = "gemini"


class LLMUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GeminiSummarizer:
    def __init__(self, settings: Settings) -> None:
        self.model = settings.gemini_model
        self._timeout = settings.llm_timeout_seconds
        self._temperature = settings.llm_temperature
        self.breaker = CircuitBreaker(UPSTREAM, BreakerPolicy(enabled=settings.llm_breaker_enabled))
        self._client: genai.Client | None = None
        self._http: httpx.AsyncClient | None = None
        if settings.gemini_api_key is not None:
            # Imported only with a key: without one (the offline lab) every summary is the
            # rule-based fallback, and the SDK would cost the process ~25 MiB for nothing.
            from google import genai
            from google.genai import types

            # Our own httpx client: the SDK would otherwise switch to aiohttp whenever aiohttp is
            # installed (the gateway uses it), and the call's transport must not depend on what
            # else happens to be installed.
            self._http = httpx.AsyncClient()  # proxies from the environment, as the SDK would
            self._client = genai.Client(
                api_key=settings.gemini_api_key.get_secret_value(),
                http_options=types.HttpOptions(
                    base_url=settings.gemini_base_url,
                    api_version=settings.gemini_api_version,
                    # The SDK's own limit (ms) closes the socket; ours below bounds the call.
                    timeout=int(self._timeout * 1000),
                    httpx_async_client=self._http,
                ),
            )

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def summarize(self, prompt: str) -> str:
        if self._client is None:
            raise LLMUnavailable("no_api_key")
        timeout = deadline.step_budget(self._timeout)
        if timeout <= 0:
            raise LLMUnavailable("no_time_left")
        try:
            ticket = self.breaker.before_call()
        except BreakerOpenError as exc:
            raise LLMUnavailable("circuit_open") from exc
        from google.genai import types  # loaded already: there is a client

        try:
            async with asyncio.timeout(timeout):
                response = await self._client.aio.models.generate_content(
                    model=self.model,
                    contents=prompt,
                    config=types.GenerateContentConfig(
                        system_instruction=SYSTEM_INSTRUCTION,
                        temperature=self._temperature,
                    ),
                )
            text = (response.text or "").strip()
            if not text:
                raise LLMUnavailable("empty_answer")
        except LLMUnavailable as exc:
            self._failed(exc.reason, ticket)
            raise
        except TimeoutError as exc:
            if timeout < self._timeout:
                # Our deadline, not the provider, cut the call short: no verdict on it.
                self.breaker.release(ticket)
                log_event("llm_call_failed", logging.WARNING, upstream=UPSTREAM, reason="deadline")
                raise LLMUnavailable("deadline") from exc
            self._failed("timeout", ticket)
            raise LLMUnavailable("timeout") from exc
        except asyncio.CancelledError:
            self.breaker.release(ticket)
            raise
        except Exception as exc:  # SDK, transport or parsing: all mean "no summary now"
            self._failed(type(exc).__name__, ticket)
            raise LLMUnavailable("error") from exc
        self.breaker.record(True, ticket)
        return text

    def _failed(self, reason: str, ticket: int) -> None:
        self.breaker.record(False, ticket)
        log_event("llm_call_failed", logging.WARNING, upstream=UPSTREAM, reason=reason)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
        if self._http is not None:  # ours, so the SDK leaves closing it to us
            await self._http.aclose()
