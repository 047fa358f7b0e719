"""Blocking DynamoDB work of the order service (run through ``ctx.db``).

:func:`commit_trade` is the heart of it: one transaction holds every write of an order, so an
order either fully happened or not at all, and the condition expressions keep balances and
holdings from going negative whatever the lock did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from cnop.core import idempotency
from cnop.core.db import AssetLedgerBase, OrderBase, Tables

T = TypeVar("T")


@dataclass(frozen=True)
class Trade:
    username: str
    order_id: str
    transaction_id: str
    order_type: str
    side: str  # BUY or SELL
    asset_id: str
    quantity: Decimal
    price: Decimal
    total: Decimal
    created_at: str

    @property
    def is_buy(self) -> bool:
        return self.side == "BUY"


def trade_item_labels(with_idempotency: bool) -> list[str]:
    """Names of the transaction's items in the order DynamoDB reports cancellation reasons.

    PynamoDB sends condition checks, deletes, puts, then updates; :func:`commit_trade` adds its
    puts and updates in exactly this order.
    """
    puts = ["order", "ledger", "asset_ledger"] + (["idempotency"] if with_idempotency else [])
    return [*puts, "balance", "holding"]


def commit_trade(
    tables: Tables,
    trade: Trade,
    *,
    conditional: bool,
    idem: idempotency.RequestKey | None = None,
    response_body: dict[str, Any] | None = None,
) -> None:
    """Write the whole order in one transaction; raises ``TransactWriteError`` when cancelled."""
    signed_qty = trade.quantity if trade.is_buy else -trade.quantity
    signed_usd = -trade.total if trade.is_buy else trade.total
    orders, ledger, asset_ledger = tables.orders, tables.ledger, tables.asset_ledger
    balances, holdings = tables.balances, tables.holdings
    now = trade.created_at
    # The token makes botocore's own retry of a timed-out call idempotent in DynamoDB: a
    # transaction that did commit is not committed twice under fresh ids by our retry loop.
    with TransactWrite(connection=tables.connection, client_request_token=trade.order_id) as tw:
        tw.save(
            orders(
                trade.username,
                trade.order_id,
                order_type=trade.order_type,
                asset_id=trade.asset_id,
                quantity=trade.quantity,
                price=trade.price,
                total_amount=trade.total,
                status="completed",
                created_at=now,
            ),
            condition=orders.order_id.does_not_exist(),
        )
        tw.save(
            ledger(
                trade.username,
                f"{now}#{trade.transaction_id}",
                transaction_id=trade.transaction_id,
                transaction_type=trade.side,
                amount=signed_usd,
                status="COMPLETED",
                description=f"{trade.side} {trade.quantity} {trade.asset_id} @ {trade.price}",
                reference_id=trade.order_id,
                created_at=now,
            ),
            condition=ledger.entry_key.does_not_exist(),
        )
        tw.save(
            asset_ledger(
                trade.username,
                f"{trade.asset_id}#{now}#{trade.order_id}",
                asset_id=trade.asset_id,
                transaction_type=trade.side,
                quantity=signed_qty,
                price=trade.price,
                status="COMPLETED",
                order_id=trade.order_id,
                timestamp=now,
            ),
            condition=asset_ledger.entry_key.does_not_exist(),
        )
        if idem is not None:
            assert response_body is not None
            idempotency.add_record(tw, tables, idem, 201, response_body)

        balance_condition: Condition | None
        if trade.is_buy:
            balance_condition = balances.usd_balance >= trade.total if conditional else None
        else:
            # A sell only credits an existing account (created at registration).
            balance_condition = balances.username.exists() if conditional else None
        tw.update(
            balances(trade.username),
            actions=[balances.usd_balance.add(signed_usd), balances.updated_at.set(now)],
            condition=balance_condition,
        )

        holding_condition: Condition | None = None
        if conditional and not trade.is_buy:
            holding_condition = holdings.quantity >= trade.quantity
        tw.update(
            holdings(trade.username, trade.asset_id),
            actions=[
                holdings.quantity.add(signed_qty),
                holdings.created_at.set(holdings.created_at | now),
                holdings.updated_at.set(now),
            ],
            condition=holding_condition,
        )


def read_balance(tables: Tables, username: str) -> Decimal | None:
    try:
        return tables.balances.get(username, consistent_read=True).usd_balance
    except tables.balances.DoesNotExist:
        return None


def read_holding(tables: Tables, username: str, asset_id: str) -> Decimal:
    try:
        return tables.holdings.get(username, asset_id, consistent_read=True).quantity
    except tables.holdings.DoesNotExist:
        return Decimal(0)


def get_order(tables: Tables, username: str, order_id: str) -> OrderBase | None:
    try:
        return tables.orders.get(username, order_id)
    except tables.orders.DoesNotExist:
        return None


def find_order_by_id(tables: Tables, order_id: str) -> OrderBase | None:
    """Any user's order with this id: what the bola flaw serves (a scan of the whole table)."""
    for order in tables.orders.scan(tables.orders.order_id == order_id, page_size=100):
        return order
    return None


def list_orders(
    tables: Tables,
    username: str,
    *,
    asset_id: str | None,
    order_type: str | None,
    limit: int,
    offset: int,
) -> tuple[list[OrderBase], bool]:
    """Newest first (order ids sort by time); one extra item tells whether there is more."""
    orders = tables.orders
    condition: Condition | None = None
    if asset_id is not None:
        condition = orders.asset_id == asset_id
    if order_type is not None:
        by_type = orders.order_type == order_type
        condition = by_type if condition is None else condition & by_type
    results = orders.query(
        username, filter_condition=condition, scan_index_forward=False, page_size=100
    )
    return _page(results, limit, offset)


def list_asset_trades(
    tables: Tables, username: str, asset_id: str, *, limit: int, offset: int
) -> tuple[list[AssetLedgerBase], bool]:
    model = tables.asset_ledger
    results = model.query(
        username,
        model.entry_key.startswith(f"{asset_id}#"),
        scan_index_forward=False,
        page_size=100,
    )
    return _page(results, limit, offset)


def _page(results: Iterable[T], limit: int, offset: int) -> tuple[list[T], bool]:
    page: list[T] = []
    for index, item in enumerate(results):
        if index < offset:
            continue
        if len(page) == limit:
            return page, True
        page.append(item)
    return page, False
