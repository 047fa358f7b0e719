"""user service: registration, login, profile, the USD balance and ledger, portfolio views.

Owns the users, emails, balances, ledger and daily_totals tables; reads holdings (written by the
order service) and asks the inventory service for prices.
"""

from __future__ import annotations

from fastapi import FastAPI

from cnop.core.app import create_service_app
from cnop.core.context import ServiceContext
from cnop.services.user.api import router
from cnop.services.user.passwords import Passwords
from cnop.services.user.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def on_startup(ctx: ServiceContext) -> None:
        extra = ctx.extra if ctx.extra is not None else {}
        ctx.extra = extra
        extra["passwords"] = Passwords(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
            max_concurrent=settings.argon2_max_concurrent,
        )

    return create_service_app(
        settings,
        title="CNOP user",
        routers=[router],
        on_startup=on_startup,
        known_labels={
            "lock_operations": ("deposit", "withdraw", "claim"),
            "transaction_operations": ("deposit", "withdraw", "claim", "register", "profile"),
        },
    )
