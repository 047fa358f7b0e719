"""The user service's settings (``CNOP_DAILY_DEPOSIT_LIMIT``, ``CNOP_RED_POCKET_MAX``, ...).

Kept apart from ``main`` so handlers can read them without importing the app factory.
"""

from __future__ import annotations

from decimal import Decimal
from typing import cast

from pydantic import Field, model_validator

from cnop.core.context import ServiceContext
from cnop.core.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "user"
    port: int = 8000

    # Daily limits per UTC day; labs lower or raise them.
    daily_deposit_limit: Decimal = Field(default=Decimal("10000"), ge=0)
    daily_withdraw_limit: Decimal = Field(default=Decimal("5000"), ge=0)

    red_pocket_claims_per_day: int = Field(default=1, ge=0)
    red_pocket_min: Decimal = Field(default=Decimal("1.00"), gt=0, decimal_places=2)
    red_pocket_max: Decimal = Field(default=Decimal("88.88"), gt=0, decimal_places=2)

    # How often a transaction refused by a concurrent one (TransactionConflict) is retried
    # before the client gets a 409 with Retry-After.
    transaction_attempts: int = Field(default=3, ge=1, le=10)

    # argon2id cost: OWASP's recommended m=19 MiB, t=2, p=1. pwdlib's default (64 MiB, t=3,
    # p=4) costs about five times more CPU per login, and on a 2-core sandbox a modest login
    # flood then pushes logins past the gateway's 3 s timeout and trips the user breaker: the
    # hash cost is itself a denial-of-service lever, which a lab can raise to show it.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost_kib: int = Field(default=19456, ge=1024)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes at once (each holds argon2_memory_cost_kib): bounds the service's memory under a
    # login burst; more than the cores gains nothing.
    argon2_max_concurrent: int = Field(default=4, ge=1, le=64)
    # Flaws (security/flaws.yaml), off by default. The profile answers the whole stored record,
    # password hash and role included (data-exposure); login answers 404 for an unknown username
    # instead of the one 401 for any bad credentials (user-enumeration).
    profile_expose_internals: bool = False
    login_reveal_unknown_user: bool = False

    @model_validator(mode="after")
    def _red_pocket_range(self) -> Settings:
        if self.red_pocket_min > self.red_pocket_max:
            raise ValueError("CNOP_RED_POCKET_MIN must not exceed CNOP_RED_POCKET_MAX")
        return self


def user_settings(ctx: ServiceContext) -> Settings:
    return cast(Settings, ctx.settings)
