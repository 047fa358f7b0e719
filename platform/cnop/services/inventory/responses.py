"""Response bodies of the inventory service. Catalogue facts may be missing for an asset (a lab
may edit the table), so they are nullable; what the service computes itself never is."""

from __future__ import annotations

from cnop.core.schemas import ResponseModel, Timestamp, UsdText

__all__ = ["AssetDetail", "AssetDetailEnvelope", "AssetList", "AssetSummary"]

Number = int | float


class AssetSummary(ResponseModel):
    asset_id: str
    name: str | None
    description: str | None
    category: str | None
    price_usd: UsdText
    is_active: bool
    symbol: str | None
    image: str | None
    market_cap_rank: int | None
    price_change_percentage_24h: float
    market_cap: int | None
    total_volume_24h: Number | None


class AssetDetail(AssetSummary):
    availability_status: str
    price_change_24h: UsdText
    price_change_percentage_7d: float
    price_change_percentage_30d: float
    high_24h: UsdText
    low_24h: UsdText
    circulating_supply: Number | None
    total_supply: Number | None
    max_supply: Number | None
    ath: str
    ath_change_percentage: float
    ath_date: str | None
    atl: str
    atl_change_percentage: float
    atl_date: str | None
    last_updated: Timestamp


class AssetList(ResponseModel):
    data: list[AssetSummary]
    total_count: int
    active_count: int


class AssetDetailEnvelope(ResponseModel):
    data: AssetDetail
