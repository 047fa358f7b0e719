"""Request validation and response rendering for orders and trades.

Amounts leave as JSON strings: totals in cents, quantities without trailing zeros, and prices with
at least cents but up to 8 decimals, so a sub-cent asset's price is not rounded to "0.00".
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

from cnop.core.db import AssetLedgerBase, OrderBase
from cnop.core.money import Price, Quantity, qty, qty_str, usd, usd_str

ASSET_ID_PATTERN = r"^[A-Za-z0-9]{1,10}$"
ORDER_ID_PATTERN = r"^[A-Za-z0-9_]{10,50}$"
MARKET_TYPES = ("market_buy", "market_sell")
LIMIT_TYPES = ("limit_buy", "limit_sell")
OrderType = Literal["market_buy", "market_sell", "limit_buy", "limit_sell"]
AssetId = Annotated[str, StringConstraints(pattern=ASSET_ID_PATTERN)]


class OrderRequest(BaseModel):
    # Unknown keys are ignored (clients of the original platform send a few extra ones).
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"order_type": "market_buy", "asset_id": "BTC", "quantity": "0.001"}]
        },
    )

    order_type: OrderType
    asset_id: AssetId
    quantity: Quantity
    # Accepted for compatibility and validated, but market orders never execute at it.
    price: Price | None = None

    @field_validator("asset_id")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    def fingerprint_payload(self) -> dict[str, Any]:
        """Canonical form, so "1.0" and 1 count as the same request for Idempotency-Key."""
        return {
            "order_type": self.order_type,
            "asset_id": self.asset_id,
            "quantity": qty_str(self.quantity),
            "price": None if self.price is None else qty_str(self.price),
        }


def price_str(value: Decimal) -> str:
    exact = qty(value)
    return usd_str(exact) if exact == usd(exact) else qty_str(exact)


def render_order(order: OrderBase) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "order_type": order.order_type,
        "asset_id": order.asset_id,
        "quantity": qty_str(order.quantity),
        "price": price_str(order.price),
        "status": order.status,
        "total_amount": usd_str(order.total_amount),
        "created_at": order.created_at,
    }


def render_trade(trade: AssetLedgerBase) -> dict[str, Any]:
    return {
        "asset_id": trade.asset_id,
        "transaction_type": trade.transaction_type,
        # Stored signed (so the sum is the holding); shown as the traded amount.
        "quantity": qty_str(abs(trade.quantity)),
        "price": price_str(trade.price),
        "status": trade.status,
        "timestamp": trade.timestamp,
    }
