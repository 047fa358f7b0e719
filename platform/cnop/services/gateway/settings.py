"""The gateway's settings: every number of its security and resilience policy, as env vars.

Labs start learners from weaker values (no breaker, no login protection, generous limits), so
each switch and number here is a ``CNOP_...`` variable (``CNOP_RATE_LIMIT_IP_LIMIT``,
``CNOP_BREAKER_ENABLED``, ``CNOP_TRUSTED_PROXIES='["10.0.0.0/8"]'``...).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from cnop.core.settings import ServiceSettings
from cnop.services.gateway.client_ip import parse_networks


class Settings(ServiceSettings):
    service_name: str = "gateway"
    port: int = 8080

    # One deadline per attempt: pool wait, connect and read together. Backends learn what is left
    # of it (X-CNOP-Deadline-Ms) and answer before it; their CNOP_REQUEST_BUDGET_SECONDS is this.
    upstream_timeout_seconds: float = Field(default=3.0, gt=0)
    upstream_retries: int = Field(default=2, ge=0, le=5)
    upstream_retry_backoff_seconds: float = Field(default=0.05, ge=0)
    upstream_retry_backoff_max_seconds: float = Field(default=1.0, ge=0)
    # Connections per upstream: also a bulkhead (a hung upstream holds at most this many; the
    # rest wait up to the pool wait for one). Small on purpose: httpcore scans its whole pool on
    # every request, and 100 connections cost the gateway a third of its throughput here
    # (lab bench: 262 req/s at 100, 401 req/s at 16, on 2 cores). Yet more than one
    # user's in-flight cap (20): one user alone must not be able to fill an upstream's pool.
    upstream_max_connections: int = Field(default=24, ge=1)
    # Longest wait for one of those connections, within the attempt's deadline; past it the
    # gateway answers 503 itself (its own queue is full, not the upstream's fault). None = two
    # thirds of the timeout less the margin (~1.9 s at 3 s): long enough for a queue behind
    # requests that wait the full 1 s for a user's lock to clear, and the backend still gets
    # more than 1 s (its lock wait).
    upstream_pool_wait_seconds: float | None = Field(default=None, gt=0)

    # The limiter's own Redis pool; a request waits up to redis_timeout_seconds for a connection.

    rate_limit_enabled: bool = True
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    rate_limit_ip_limit: int = Field(default=1000, ge=1)
    rate_limit_user_limit: int = Field(default=600, ge=1)
    # Requests of one authenticated user in flight at once (all replicas); more is 429.
    rate_limit_user_inflight: int = Field(default=20, ge=1)

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

    def _waits_within_budget(self) -> dict[str, float]:
        return {}  # the gateway takes no locks and calls services through its upstreams

    @property
    def pool_wait_seconds(self) -> float:
        if self.upstream_pool_wait_seconds is not None:
            return self.upstream_pool_wait_seconds
        return (self.upstream_timeout_seconds - self.deadline_margin_seconds) * 2 / 3

    @property
    def longest_request_seconds(self) -> float:
        """The longest the gateway works on one request: every attempt and every backoff, plus
        the token check (one attempt at the auth service); how long an in-flight slot may live."""
        attempts = 2 + self.upstream_retries
        return attempts * self.upstream_timeout_seconds + (
            self.upstream_retries * self.upstream_retry_backoff_max_seconds
        )

    @model_validator(mode="after")
    def _upstream_budget_nests(self) -> Settings:
        if self.upstream_timeout_seconds <= self.deadline_margin_seconds:
            raise ValueError(
                f"budgets do not nest: CNOP_UPSTREAM_TIMEOUT_SECONDS "
                f"({self.upstream_timeout_seconds}) must be longer than "
                f"CNOP_DEADLINE_MARGIN_SECONDS ({self.deadline_margin_seconds}), or a backend "
                "has no time left to answer in"
            )
        if self.pool_wait_seconds >= self.upstream_timeout_seconds - self.deadline_margin_seconds:
            raise ValueError(
                "budgets do not nest: CNOP_UPSTREAM_POOL_WAIT_SECONDS "
                f"({self.pool_wait_seconds}) must be shorter than CNOP_UPSTREAM_TIMEOUT_SECONDS "
                f"({self.upstream_timeout_seconds}) minus CNOP_DEADLINE_MARGIN_SECONDS "
                f"({self.deadline_margin_seconds}): the wait for a connection is part of the "
                "attempt's deadline, and the backend needs the rest"
            )
        if self.upstream_retries and (
            self.upstream_retry_backoff_max_seconds >= self.upstream_timeout_seconds
        ):
            raise ValueError(
                "budgets do not nest: CNOP_UPSTREAM_RETRY_BACKOFF_MAX_SECONDS "
                f"({self.upstream_retry_backoff_max_seconds}) must be shorter than "
                f"CNOP_UPSTREAM_TIMEOUT_SECONDS ({self.upstream_timeout_seconds}): a retry "
                "should not wait longer than the attempt it repeats"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # raises ValueError on a bad CIDR: refuse to start
        return value
