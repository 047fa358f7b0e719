"""The asset catalogue: the committed JSON file, its seeding into the assets table, and the
in-memory copy every request reads.

The table, not the file, is what the running service serves: a lab may deactivate an asset in
DynamoDB and restart the service to see it disappear from the list. Seeding writes only the
assets the table lacks, so such edits survive restarts, and two instances starting together
at worst put the same item twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cnop.core.db import Tables

# Kept in the catalogue for the price sources, never shown to clients.
INTERNAL_KEYS = frozenset({"coingecko_id", "volatility"})
# Stored in their own columns of the assets table; the rest goes to ``data_json``.
COLUMN_KEYS = ("asset_id", "name", "category", "is_active", "price_usd")


@dataclass(frozen=True)
class CatalogueEntry:
    asset_id: str
    base_price: Decimal
    is_active: bool
    data: dict[str, Any] = field(repr=False)

    @property
    def coingecko_id(self) -> str | None:
        value = self.data.get("coingecko_id")
        return str(value) if value else None

    @property
    def volatility(self) -> float:
        return float(self.data.get("volatility", 1.0))

    @property
    def rank(self) -> int:
        return int(self.data.get("market_cap_rank") or 10**6)


@dataclass(frozen=True)
class Catalogue:
    entries: tuple[CatalogueEntry, ...]  # by market-cap rank, then id

    @classmethod
    def of(cls, entries: list[CatalogueEntry]) -> Catalogue:
        return cls(tuple(sorted(entries, key=lambda e: (e.rank, e.asset_id))))

    def get(self, asset_id: str) -> CatalogueEntry | None:
        return next((e for e in self.entries if e.asset_id == asset_id), None)

    @property
    def active_count(self) -> int:
        return sum(1 for e in self.entries if e.is_active)


def entry_from_dict(data: dict[str, Any]) -> CatalogueEntry:
    return CatalogueEntry(
        asset_id=str(data["asset_id"]).upper(),
        base_price=Decimal(str(data["price_usd"])),
        is_active=bool(data["is_active"]),
        data=data,
    )


def load_file(path: Path) -> list[CatalogueEntry]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return [entry_from_dict(item) for item in doc["assets"]]


def seed_assets(tables: Tables, entries: list[CatalogueEntry]) -> int:
    """Put the catalogue entries the table lacks (one batch write); returns how many."""
    model = tables.assets
    present = {item.asset_id for item in model.scan(attributes_to_get=["asset_id"])}
    missing = [e for e in entries if e.asset_id not in present]
    with model.batch_write() as batch:
        for entry in missing:
            rest = {k: v for k, v in entry.data.items() if k not in COLUMN_KEYS}
            batch.save(
                model(
                    asset_id=entry.asset_id,
                    name=str(entry.data["name"]),
                    category=str(entry.data["category"]),
                    is_active=entry.is_active,
                    base_price=entry.base_price,
                    data_json=json.dumps(rest, sort_keys=True),
                )
            )
    return len(missing)


def load_assets(tables: Tables) -> list[CatalogueEntry]:
    """Read the whole assets table back; the columns win over what ``data_json`` says."""
    entries = []
    for item in tables.assets.scan(consistent_read=True):
        data = json.loads(item.data_json)
        data.update(
            asset_id=item.asset_id,
            name=item.name,
            category=item.category,
            is_active=item.is_active,
            price_usd=format(item.base_price, "f"),
        )
        entries.append(entry_from_dict(data))
    return entries
