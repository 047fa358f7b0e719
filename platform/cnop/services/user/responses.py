"""Response bodies of the user service, as the contract's route table states them."""

from __future__ import annotations

from typing import Literal

from cnop.core.schemas import (
    Message,
    PercentText,
    PriceText,
    QuantityText,
    ResponseModel,
    Timestamp,
    UsdText,
)

__all__ = [
    "AssetBalance",
    "Balance",
    "FundsMoved",
    "LedgerEntry",
    "LedgerPage",
    "Message",
    "Portfolio",
    "PortfolioAsset",
    "Profile",
    "ProfileUpdated",
    "RedPocket",
    "Token",
]


class Token(ResponseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class Profile(ResponseModel):
    username: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    date_of_birth: str | None
    marketing_emails_consent: bool
    created_at: Timestamp
    updated_at: Timestamp


class ProfileUpdated(ResponseModel):
    message: str
    user: Profile


class Balance(ResponseModel):
    current_balance: UsdText
    updated_at: Timestamp


class FundsMoved(ResponseModel):
    success: Literal[True]
    message: str
    transaction_id: str
    timestamp: Timestamp


class LedgerEntry(ResponseModel):
    transaction_id: str
    transaction_type: str
    amount: UsdText
    status: str
    description: str | None
    created_at: Timestamp


class LedgerPage(ResponseModel):
    transactions: list[LedgerEntry]
    total_count: int


class RedPocket(ResponseModel):
    success: Literal[True]
    message: str
    amount: UsdText
    got_red_pocket: bool
    timestamp: Timestamp


class AssetBalance(ResponseModel):
    asset_id: str
    asset_name: str
    quantity: QuantityText
    current_price: PriceText
    total_value: UsdText
    created_at: Timestamp
    updated_at: Timestamp


class PortfolioAsset(ResponseModel):
    asset_id: str
    quantity: QuantityText
    current_price: PriceText
    market_value: UsdText
    percentage: PercentText


class Portfolio(ResponseModel):
    assets: list[PortfolioAsset]
    usd_balance: UsdText
    total_value: UsdText
