"""Every table of a service goes through one botocore client (PynamoDB would give each model
class its own, each loading DynamoDB's service description again: ~10 MB a table)."""

from __future__ import annotations

import secrets
from decimal import Decimal

from cnop.core.db import DB_POOL_CONNECTIONS, build_tables, ensure_tables
from cnop.core.settings import ServiceSettings


def _settings(endpoint: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="db-test",
        dev_mode=True,
        dynamodb_endpoint=endpoint,
        table_prefix="t" + secrets.token_hex(4),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_all_tables_and_transactions_share_one_client(dynamodb_endpoint: str) -> None:
    tables = build_tables(_settings(dynamodb_endpoint))
    ensure_tables(tables)
    tables.balances("ann", usd_balance=Decimal("1.50"), created_at="t", updated_at="t").save()
    assert tables.balances.get("ann", consistent_read=True).usd_balance == Decimal("1.50")
    clients = {id(model._get_connection().connection.client) for model in tables.all()}
    assert clients == {id(tables.connection.client)}
    assert tables.connection.client.meta.config.max_pool_connections == DB_POOL_CONNECTIONS


def test_two_services_never_share_a_client(dynamodb_endpoint: str) -> None:
    first = build_tables(_settings(dynamodb_endpoint))
    second = build_tables(_settings(dynamodb_endpoint))
    assert first.connection is not second.connection
    assert first.users._get_connection().connection is first.connection
    assert second.users._get_connection().connection is second.connection
