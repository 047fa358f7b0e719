"""Response bodies of the order service, as the contract's route table states them."""

from __future__ import annotations

from typing import Literal

from cnop.core.schemas import PriceText, QuantityText, ResponseModel, Timestamp, UsdText

__all__ = ["Order", "OrderEnvelope", "OrderPage", "Trade", "TradePage"]


class Order(ResponseModel):
    order_id: str
    order_type: Literal["market_buy", "market_sell", "limit_buy", "limit_sell"]
    asset_id: str
    quantity: QuantityText
    price: PriceText
    status: str
    total_amount: UsdText
    created_at: Timestamp


class OrderEnvelope(ResponseModel):
    data: Order


class OrderPage(ResponseModel):
    data: list[Order]
    has_more: bool


class Trade(ResponseModel):
    asset_id: str
    transaction_type: Literal["BUY", "SELL"]
    quantity: QuantityText
    price: PriceText
    status: str
    timestamp: Timestamp


class TradePage(ResponseModel):
    data: list[Trade]
    has_more: bool
