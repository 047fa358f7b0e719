"""PynamoDB models for every table, built per settings, and idempotent table bootstrap.

Model classes are made by :func:`build_tables` instead of living at module level with a
hard-coded ``Meta``: table names carry a prefix and the endpoint comes from settings, so two
sandboxes (or two test sessions) never share tables and nothing needs monkeypatching.

Money and quantities use :class:`DecimalAttribute`: PynamoDB's ``NumberAttribute`` goes through
``float``, which the contract forbids.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from pynamodb.attributes import (
    Attribute,
    BooleanAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.constants import NUMBER
from pynamodb.exceptions import PynamoDBException, TableError
from pynamodb.models import Model

from cnop.core.logging import log_event
from cnop.core.settings import ServiceSettings


class DecimalAttribute(Attribute[Decimal]):
    """A DynamoDB number that is a :class:`~decimal.Decimal` in Python, never a float."""

    attr_type = NUMBER

    def serialize(self, value: Decimal) -> str:
        return format(Decimal(value), "f")

    def deserialize(self, value: str) -> Decimal:
        return Decimal(value)


class UserBase(Model):
    username = UnicodeAttribute(hash_key=True)
    email = UnicodeAttribute()
    password_hash = UnicodeAttribute()
    first_name = UnicodeAttribute()
    last_name = UnicodeAttribute()
    phone = UnicodeAttribute(null=True)
    date_of_birth = UnicodeAttribute(null=True)
    marketing_emails_consent = BooleanAttribute(default=False)
    role = UnicodeAttribute(default="user")
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


class EmailBase(Model):
    """Email uniqueness: one item per address, written in the same transaction as the user."""

    email = UnicodeAttribute(hash_key=True)
    username = UnicodeAttribute()


class BalanceBase(Model):
    username = UnicodeAttribute(hash_key=True)
    usd_balance = DecimalAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


class LedgerBase(Model):
    """USD ledger: one signed entry per balance change; their sum is the balance."""

    username = UnicodeAttribute(hash_key=True)
    entry_key = UnicodeAttribute(range_key=True)  # "{iso timestamp}#{transaction_id}"
    transaction_id = UnicodeAttribute()
    transaction_type = UnicodeAttribute()  # DEPOSIT, WITHDRAW, BUY, SELL, RED_POCKET
    amount = DecimalAttribute()
    status = UnicodeAttribute(default="COMPLETED")
    description = UnicodeAttribute(null=True)
    reference_id = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()


class HoldingBase(Model):
    username = UnicodeAttribute(hash_key=True)
    asset_id = UnicodeAttribute(range_key=True)
    quantity = DecimalAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


class OrderBase(Model):
    username = UnicodeAttribute(hash_key=True)
    order_id = UnicodeAttribute(range_key=True)  # time-ordered, so a reverse query is newest first
    order_type = UnicodeAttribute()
    asset_id = UnicodeAttribute()
    quantity = DecimalAttribute()
    price = DecimalAttribute()
    total_amount = DecimalAttribute()
    status = UnicodeAttribute()
    created_at = UnicodeAttribute()


class AssetLedgerBase(Model):
    """Asset ledger: one signed trade per order; their sum is the holding."""

    username = UnicodeAttribute(hash_key=True)
    entry_key = UnicodeAttribute(range_key=True)  # "{asset_id}#{iso timestamp}#{order_id}"
    asset_id = UnicodeAttribute()
    transaction_type = UnicodeAttribute()  # BUY, SELL
    quantity = DecimalAttribute()  # signed: + for BUY, - for SELL
    price = DecimalAttribute()
    status = UnicodeAttribute(default="COMPLETED")
    order_id = UnicodeAttribute()
    timestamp = UnicodeAttribute()


class DailyTotalBase(Model):
    """Per user per UTC day: deposited, withdrawn, claimed, checked by condition expressions."""

    username = UnicodeAttribute(hash_key=True)
    day_kind = UnicodeAttribute(range_key=True)  # "2026-11-25#deposit"
    amount = DecimalAttribute()


class IdempotencyBase(Model):
    """First final result of a request carrying an Idempotency-Key (see core.idempotency)."""

    key = UnicodeAttribute(hash_key=True)  # "{username}#{operation}#{client key}"
    request_hash = UnicodeAttribute()
    status_code = NumberAttribute()
    response_json = UnicodeAttribute()
    created_at = UnicodeAttribute()
    # DynamoDB's TTL deletes the item some time after this; lookups check it themselves.
    expires_at = TTLAttribute(null=True)


class AssetBase(Model):
    asset_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    category = UnicodeAttribute()
    is_active = BooleanAttribute(default=True)
    base_price = DecimalAttribute()
    data_json = UnicodeAttribute()  # the rest of the catalogue entry, verbatim


@dataclass(frozen=True)
class Tables:
    users: type[UserBase]
    emails: type[EmailBase]
    balances: type[BalanceBase]
    ledger: type[LedgerBase]
    holdings: type[HoldingBase]
    orders: type[OrderBase]
    asset_ledger: type[AssetLedgerBase]
    daily_totals: type[DailyTotalBase]
    idempotency: type[IdempotencyBase]
    assets: type[AssetBase]
    connection: Connection

    def all(self) -> list[type[Model]]:
        return [getattr(self, f.name) for f in fields(self) if f.name != "connection"]


_BASES: dict[str, type[Model]] = {
    "users": UserBase,
    "emails": EmailBase,
    "balances": BalanceBase,
    "ledger": LedgerBase,
    "holdings": HoldingBase,
    "orders": OrderBase,
    "asset_ledger": AssetLedgerBase,
    "daily_totals": DailyTotalBase,
    "idempotency": IdempotencyBase,
    "assets": AssetBase,
}


# Every blocking DynamoDB call runs on AnyIO's worker threads (40 by default), so the one
# client all tables share keeps as many HTTP connections: none is thrown away under load.
DB_POOL_CONNECTIONS = 40


def build_tables(settings: ServiceSettings) -> Tables:
    """Model classes for this service's tables, all sharing ONE botocore client.

    PynamoDB gives each model class its own ``Connection``, and each builds its own botocore
    session and client, loading DynamoDB's service description again: about 10 MB per table,
    100 MB per service process, spent ten times on the same thing. The tables here share the
    connection that transactions use.
    """
    secret = settings.aws_secret_access_key
    client_options: dict[str, Any] = {
        "region": settings.dynamodb_region,
        "host": settings.dynamodb_endpoint,
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 5,
        "max_retry_attempts": 2,
        "max_pool_connections": DB_POOL_CONNECTIONS,
    }
    if settings.aws_access_key_id:
        client_options["aws_access_key_id"] = settings.aws_access_key_id
        client_options["aws_secret_access_key"] = secret.get_secret_value() if secret else None
    connection = Connection(**client_options)
    models: dict[str, Any] = {}
    for name, base in _BASES.items():
        meta = type(
            "Meta",
            (),
            {
                **client_options,
                "billing_mode": "PAY_PER_REQUEST",
                "table_name": f"{settings.table_prefix}-{name}",
            },
        )
        model = type(base.__name__.removesuffix("Base"), (base,), {"Meta": meta})
        table = model._get_connection()
        connection.add_meta_table(table.get_meta_table())
        table.connection = connection
        models[name] = model
    return Tables(connection=connection, **models)


class TablesLost(RuntimeError):
    """Some of the platform's tables exist and others do not: data was lost."""


def ensure_tables(tables: Tables, *, settle_seconds: float = 10.0) -> None:
    """Create the tables on a fresh DynamoDB; safe to run from every service at once.

    A lost table is never recreated silently: when some tables exist and others are missing
    (and stay missing while sibling services may still be creating them), the service refuses
    to start, so a student sees "data was lost" instead of an empty table answering as if
    nothing happened.
    """
    models = tables.all()
    present = [model.exists() for model in models]
    if any(present) and not all(present):
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline and not all(present):
            time.sleep(0.25)  # a sibling service may be creating them right now
            present = [model.exists() for model in models]
        if not all(present):
            missing = [m.Meta.table_name for m, ok in zip(models, present, strict=True) if not ok]
            log_event("tables_missing", logging.ERROR, tables=missing)
            raise TablesLost(
                f"DynamoDB lost the tables {', '.join(missing)} while the others exist; "
                "refusing to recreate them empty (a fresh sandbox: `lab down`, `lab up`)"
            )
    for model in models:
        try:
            if model.exists():
                # Tables made before a TTL attribute existed get it switched on too.
                model.update_ttl(ignore_update_ttl_errors=True)
                continue
            model.create_table(wait=True, ignore_update_ttl_errors=True)
            log_event("table_created", table=model.Meta.table_name)
        except TableError as exc:
            # Another service created it between our check and our create.
            if "ResourceInUse" not in str(exc.cause) and not model.exists():
                raise
        except PynamoDBException:
            log_event("table_bootstrap_failed", logging.ERROR, table=model.Meta.table_name)
            raise


def ping(tables: Tables) -> None:
    """Raise unless DynamoDB answers and holds every table (readiness): an endpoint that
    answers but lost its tables is not ready, it would fail every request.

    ListTables pages (one, in a sandbox), not one DescribeTable per table: a probe must stay
    cheap on a busy, serialised endpoint.
    """
    wanted = {model.Meta.table_name for model in tables.all()}
    found: set[str] = set()
    start: str | None = None
    while True:
        page = tables.connection.list_tables(exclusive_start_table_name=start, limit=100)
        found.update(page.get("TableNames", []))
        start = page.get("LastEvaluatedTableName")
        if wanted <= found or not start:
            break
    missing = wanted - found
    if missing:
        raise TablesLost(f"DynamoDB lacks the tables {', '.join(sorted(missing))}")
