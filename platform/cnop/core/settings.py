"""Typed, env-driven settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own fields; one object per process,
validated at start-up, so a missing JWT secret stops the service before it serves anything.
All variables carry the ``CNOP_`` prefix (``CNOP_JWT_SECRET``, ``CNOP_REDIS_URL``...).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_LENGTH = 32
DEV_SECRET = "cnop-dev-secret-do-not-use-outside-dev-mode"  # noqa: S105
DEV_INTERNAL_SECRET = "cnop-dev-internal-secret-do-not-use-outside-dev-mode"  # noqa: S105


class ServiceSettings(BaseSettings):
    """Settings every service understands."""

    model_config = SettingsConfigDict(env_prefix="CNOP_", extra="ignore", frozen=True)

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    dev_mode: bool = False
    log_level: str = "INFO"

    jwt_secret: SecretStr | None = None
    jwt_issuer: str = "cnop-auth"
    jwt_audience: str = "cnop-api"
    jwt_expiry_minutes: int = Field(default=60, ge=1, le=24 * 60)
    jwt_leeway_seconds: int = Field(default=0, ge=0, le=300)
    # Flaws (security/flaws.yaml), off by default. Accept tokens whose header says "alg": "none"
    # and that carry no signature (alg-none); allow a JWT secret shorter than 32 characters,
    # even outside dev mode (weak-jwt-secret).
    jwt_accept_unsigned: bool = False
    jwt_allow_weak_secret: bool = False

    # The credential the gateway (and a service calling another) proves itself with; backends
    # refuse their API without it. Separate from the JWT secret, required like it.
    internal_secret: SecretStr | None = None
    # A lab may switch the check off to show what a directly reachable backend costs.
    internal_auth_enabled: bool = True

    # Request bodies: enforced while reading (a chunked body stops at the limit), and nesting
    # of JSON arrays and objects is capped before any parser recurses into it.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    max_json_depth: int = Field(default=32, ge=1, le=500)

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    redis_max_connections: int = Field(default=200, ge=1)
    # When Redis is unreachable: reads keep working, anything that changes state fails closed.
    redis_fail_open_reads: bool = True

    dynamodb_endpoint: str | None = None
    dynamodb_region: str = "us-east-1"
    table_prefix: str = "cnop"
    # moto and DynamoDB Local accept any credentials; real AWS reads its own chain.
    aws_access_key_id: str | None = "testing"
    aws_secret_access_key: SecretStr | None = SecretStr("testing")

    # Per-user locks (user and order services). A lab may switch them off to show why the
    # conditional transaction, not the lock, is what really protects the money.
    locks_enabled: bool = True
    lock_ttl_seconds: float = Field(default=5.0, gt=0)
    # Waited for the lock (then 409 with Retry-After); also bounded by the request's deadline.
    lock_wait_seconds: float = Field(default=1.0, ge=0)
    # How long an Idempotency-Key's first result is kept and replayed (user and order services).
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1, le=30 * 24 * 3600)
    # Revocation check on every token (logout works); a lab may switch it off.
    token_revocation_enabled: bool = True

    fault_flags_enabled: bool = True
    fault_refresh_seconds: float = Field(default=0.25, ge=0)

    # Internal HTTP addresses of the other services (only those a service calls are used).
    user_url: str = "http://127.0.0.1:8000"
    inventory_url: str = "http://127.0.0.1:8001"
    order_url: str = "http://127.0.0.1:8002"
    auth_url: str = "http://127.0.0.1:8003"
    insights_url: str = "http://127.0.0.1:8004"
    # Cap of one call to another service; also bounded by the request's deadline.
    internal_timeout_seconds: float = Field(default=1.0, gt=0)

    # Deadlines (cnop.core.deadline). The budget the gateway gives this service per request
    # (its CNOP_UPSTREAM_TIMEOUT_SECONDS): the deadline when no X-CNOP-Deadline-Ms header came,
    # and the most a header may grant. The margin is kept back from every wait to answer in.
    request_budget_seconds: float = Field(default=3.0, gt=0, le=600)
    deadline_margin_seconds: float = Field(default=0.1, ge=0, le=5)

    cors_origins: list[str] = ["http://127.0.0.1:3000", "http://localhost:3000"]
    # The permissive-cors flaw (security/flaws.yaml): any Origin is allowed, with credentials.
    cors_reflect_any_origin: bool = False

    # Flaws (security/flaws.yaml). Problem documents carry the exception's class name and
    # traceback (verbose-errors); the security headers are left out (missing-headers); list
    # endpoints take any page size (no-limits).
    verbose_errors: bool = False
    security_headers_enabled: bool = True
    page_size_bound_enabled: bool = True

    @model_validator(mode="after")
    def _secret_is_strong(self) -> ServiceSettings:
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if len(secret) < MIN_SECRET_LENGTH and not (self.jwt_allow_weak_secret and secret):
            if not self.dev_mode:
                raise ValueError(
                    f"CNOP_JWT_SECRET must be set to at least {MIN_SECRET_LENGTH} characters "
                    "(or CNOP_DEV_MODE=true for a throw-away development secret)"
                )
            object.__setattr__(self, "jwt_secret", SecretStr(secret or DEV_SECRET))
        internal = self.internal_secret.get_secret_value() if self.internal_secret else ""
        if len(internal) < MIN_SECRET_LENGTH:
            if not self.dev_mode:
                raise ValueError(
                    f"CNOP_INTERNAL_SECRET must be set to at least {MIN_SECRET_LENGTH} characters "
                    "(or CNOP_DEV_MODE=true for a throw-away development secret)"
                )
            object.__setattr__(self, "internal_secret", SecretStr(internal or DEV_INTERNAL_SECRET))
        elif internal == secret and not self.dev_mode:
            # One leaked key must not both sign tokens and open the backends.
            raise ValueError("CNOP_INTERNAL_SECRET must differ from CNOP_JWT_SECRET")
        return self

    def _waits_within_budget(self) -> dict[str, float]:
        """Every single wait of this service that must end before its caller gives up.

        Subclasses add their own (the insights LLM call); each is checked by itself, since a
        step that runs after another gets only what the deadline has left anyway.
        """
        waits = {"CNOP_INTERNAL_TIMEOUT_SECONDS": self.internal_timeout_seconds}
        if self.locks_enabled:
            waits["CNOP_LOCK_WAIT_SECONDS"] = self.lock_wait_seconds
        return waits

    @model_validator(mode="after")
    def _budgets_nest(self) -> ServiceSettings:
        room = self.request_budget_seconds - self.deadline_margin_seconds
        if room <= 0:
            raise ValueError(
                f"CNOP_DEADLINE_MARGIN_SECONDS ({self.deadline_margin_seconds}) must be shorter "
                f"than CNOP_REQUEST_BUDGET_SECONDS ({self.request_budget_seconds})"
            )
        for name, seconds in self._waits_within_budget().items():
            if seconds >= room:
                raise ValueError(
                    f"budgets do not nest: {name} ({seconds}) must be shorter than "
                    f"CNOP_REQUEST_BUDGET_SECONDS ({self.request_budget_seconds}) minus "
                    f"CNOP_DEADLINE_MARGIN_SECONDS ({self.deadline_margin_seconds}), the time "
                    "the gateway waits for this service's answer"
                )
        return self

    @property
    def secret(self) -> str:
        assert self.jwt_secret is not None
        return self.jwt_secret.get_secret_value()

    @property
    def internal_token(self) -> str:
        assert self.internal_secret is not None
        return self.internal_secret.get_secret_value()
