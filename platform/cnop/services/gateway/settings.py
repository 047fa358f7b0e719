"""The gateway's settings: every number of its security and resilience policy, as env vars.

Labs start learners from weaker values (no breaker, no login protection, generous limits), so
each switch and number here is a ``CNOP_...`` variable (``CNOP_RATE_LIMIT_IP_LIMIT``,
``CNOP_BREAKER_ENABLED``, ``CNOP_TRUSTED_PROXIES='["10.0.0.0/8"]'``...).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from cnop.core.settings import ServiceSettings
from cnop.services.gateway.client_ip import parse_networks


class Settings(ServiceSettings):
    service_name: str = "gateway"
    port: int = 8080

    upstream_timeout_seconds: float = Field(default=3.0, gt=0)
    upstream_retries: int = Field(default=2, ge=0, le=5)
    upstream_retry_backoff_seconds: float = Field(default=0.05, ge=0)
    upstream_retry_backoff_max_seconds: float = Field(default=1.0, ge=0)
    # Connections per upstream: also a bulkhead (a hung upstream holds at most this many; the
    # rest wait up to the timeout for one). Small on purpose: httpcore scans its whole pool on
    # every request, and 100 connections cost the gateway a third of its throughput here
    # (bench/throughput.py: 262 req/s at 100, 401 req/s at 16, on 2 cores).
    upstream_max_connections: int = Field(default=16, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    # The limiter's own Redis pool; a request waits up to redis_timeout_seconds for a connection.

    rate_limit_enabled: bool = True
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    rate_limit_ip_limit: int = Field(default=1000, ge=1)
    rate_limit_user_limit: int = Field(default=600, ge=1)

    login_protection_enabled: bool = True
    login_ip_max_failures: int = Field(default=5, ge=1)
    login_ip_window_seconds: float = Field(default=300.0, gt=0)
    login_ip_block_seconds: float = Field(default=300.0, gt=0)
    login_user_max_failures: int = Field(default=10, ge=1)
    login_user_window_seconds: float = Field(default=900.0, gt=0)
    login_user_block_seconds: float = Field(default=900.0, gt=0)
    # Reserve each attempt's place in the budgets before the password check (atomic check and
    # count); false restores check-then-act, where simultaneous guesses all get through.
    login_guard_atomic: bool = True

    breaker_enabled: bool = True
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window: int = Field(default=20, ge=1)
    breaker_min_calls: int = Field(default=10, ge=1)
    breaker_consecutive_failures: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=10.0, gt=0)
    breaker_half_open_calls: int = Field(default=3, ge=1)

    # CIDRs of proxies in front of the gateway whose X-Forwarded-For we believe (JSON list).
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # raises ValueError on a bad CIDR: refuse to start
        return value
