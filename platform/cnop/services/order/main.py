"""order service: executes market orders at the inventory's price, one DynamoDB transaction each.

The order, the USD change, the holding change and both ledger entries commit together with
condition expressions, so no balance or holding goes negative even when the per-user lock is lost.
"""

from __future__ import annotations

from typing import get_args

from fastapi import FastAPI

from cnop.core.app import create_service_app
from cnop.services.order.api import router
from cnop.services.order.schemas import OrderType
from cnop.services.order.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        title="CNOP order",
        routers=[router],
        known_labels={
            "lock_operations": ("order",),
            "transaction_operations": ("order",),
            "order_types": get_args(OrderType),
        },
    )
