"""Blocking PynamoDB operations of the user service; handlers run them through ``ctx.db``.

Every change to money is one ``TransactWrite``: the balance update, its ledger entry, the daily
totals and the idempotency record commit together or not at all, each guarded by a condition, so
the invariants (no negative balance, daily limits, ledger sum == balance, execute once) hold even
when the per-user lock is lost or switched off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pynamodb.exceptions import PynamoDBConnectionError, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Value
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from cnop.core import idempotency
from cnop.core.db import BalanceBase, HoldingBase, LedgerBase, Tables, UserBase
from cnop.core.problems import ProblemError

CONDITION_FAILED = "ConditionalCheckFailed"
TRANSACTION_CONFLICT = "TransactionConflict"


@dataclass(frozen=True)
class DailyBump:
    """Add ``increment`` to the user's ``{day}#{kind}`` total, refused if it would pass ``cap``."""

    kind: str
    increment: Decimal
    cap: Decimal
    refusal: Callable[[], ProblemError]


@dataclass(frozen=True)
class IdempotencyRecord:
    key: idempotency.RequestKey
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class MoneyChange:
    username: str
    delta: Decimal  # signed USD change of the balance
    require_funds: bool  # the balance must cover -delta
    transaction_id: str
    transaction_type: str  # DEPOSIT, WITHDRAW, RED_POCKET
    description: str
    timestamp: str
    day: str
    daily: list[DailyBump] = field(default_factory=list)
    idempotency: IdempotencyRecord | None = None


class TransactionRefused(Exception):
    """A cancelled transaction, with the reason of each item by its label."""

    def __init__(self, codes: dict[str, str | None]) -> None:
        super().__init__("transaction cancelled")
        self.codes = codes

    def failed(self, label: str) -> bool:
        return self.codes.get(label) == CONDITION_FAILED

    @property
    def conflict(self) -> bool:
        return TRANSACTION_CONFLICT in self.codes.values()

    @property
    def only_conflicts(self) -> bool:
        return all(code in (None, TRANSACTION_CONFLICT) for code in self.codes.values())


class _Labels:
    """Labels of the items in the order PynamoDB sends them.

    ``TransactWrite`` groups items by kind (condition checks, deletes, puts, updates) whatever
    order they were added in, and DynamoDB's cancellation reasons follow the sent order.
    """

    _KINDS = ("condition_check", "delete", "save", "update")

    def __init__(self) -> None:
        self._by_kind: dict[str, list[str]] = {kind: [] for kind in self._KINDS}

    def add(self, kind: str, label: str) -> None:
        self._by_kind[kind].append(label)

    def in_sent_order(self) -> list[str]:
        return [label for kind in self._KINDS for label in self._by_kind[kind]]


def _commit(tables: Tables, build: Callable[[TransactWrite, _Labels], None]) -> None:
    """Run one transaction; a refusal becomes :class:`TransactionRefused` (per item), any other
    failure a ``PynamoDBConnectionError`` so that ``ctx.db`` answers 503."""
    labels = _Labels()
    try:
        with TransactWrite(connection=tables.connection) as tw:
            build(tw, labels)
    except TransactWriteError as exc:
        codes = idempotency.cancellation_codes(exc)
        if not codes:
            raise PynamoDBConnectionError("transaction failed", exc) from exc
        raise TransactionRefused(dict(zip(labels.in_sent_order(), codes, strict=False))) from exc


def apply_money_change(tables: Tables, change: MoneyChange) -> None:
    """Items: ``balance``, ``ledger``, ``daily:{kind}`` per bump, ``idempotency`` if keyed."""
    balances = tables.balances
    ledger = tables.ledger
    daily = tables.daily_totals

    def build(tw: TransactWrite, labels: _Labels) -> None:
        condition: Condition = balances.username.exists()
        if change.require_funds:
            condition &= balances.usd_balance >= -change.delta
        tw.update(
            balances(change.username),
            actions=[
                balances.usd_balance.set(balances.usd_balance + change.delta),
                balances.updated_at.set(change.timestamp),
            ],
            condition=condition,
        )
        labels.add("update", "balance")
        tw.save(
            ledger(
                change.username,
                f"{change.timestamp}#{change.transaction_id}",
                transaction_id=change.transaction_id,
                transaction_type=change.transaction_type,
                amount=change.delta,
                status="COMPLETED",
                description=change.description,
                created_at=change.timestamp,
            ),
            condition=ledger.entry_key.does_not_exist(),
        )
        labels.add("save", "ledger")
        for bump in change.daily:
            increment = Value(bump.increment, attribute=daily.amount)
            tw.update(
                daily(change.username, f"{change.day}#{bump.kind}"),
                # SET amount = if_not_exists(amount, 0) + :increment
                actions=[daily.amount.set((daily.amount | Decimal(0)) + increment)],
                condition=daily.amount.does_not_exist()
                | (daily.amount <= bump.cap - bump.increment),
            )
            labels.add("update", f"daily:{bump.kind}")
        if change.idempotency is not None:
            rec = change.idempotency
            idempotency.add_record(tw, tables, rec.key, rec.status_code, rec.body)
            labels.add("save", "idempotency")

    _commit(tables, build)


def create_user(tables: Tables, user: UserBase, opening_timestamp: str) -> None:
    """Items ``user``, ``email`` (uniqueness claim) and ``balance`` (0.00), all or nothing."""
    users, emails, balances = tables.users, tables.emails, tables.balances

    def build(tw: TransactWrite, labels: _Labels) -> None:
        tw.save(user, condition=users.username.does_not_exist())
        labels.add("save", "user")
        tw.save(
            emails(user.email, username=user.username),
            condition=emails.email.does_not_exist(),
        )
        labels.add("save", "email")
        tw.save(
            balances(
                user.username,
                usd_balance=Decimal("0.00"),
                created_at=opening_timestamp,
                updated_at=opening_timestamp,
            ),
            condition=balances.username.does_not_exist(),
        )
        labels.add("save", "balance")

    _commit(tables, build)


def update_user(
    tables: Tables,
    username: str,
    actions: list[Action],
    old_email: str | None = None,
    new_email: str | None = None,
) -> None:
    """Items ``user`` and, on an email change, ``email`` (new claim) and ``old_email``."""
    users, emails = tables.users, tables.emails

    def build(tw: TransactWrite, labels: _Labels) -> None:
        tw.update(users(username), actions=actions, condition=users.username.exists())
        labels.add("update", "user")
        if new_email is not None and old_email is not None:
            tw.save(
                emails(new_email, username=username),
                condition=emails.email.does_not_exist(),
            )
            labels.add("save", "email")
            tw.delete(emails(old_email), condition=emails.username == username)
            labels.add("delete", "old_email")

    _commit(tables, build)


def get_user(tables: Tables, username: str) -> UserBase | None:
    try:
        return tables.users.get(username, consistent_read=True)
    except tables.users.DoesNotExist:
        return None


def get_balance(tables: Tables, username: str) -> BalanceBase | None:
    try:
        return tables.balances.get(username, consistent_read=True)
    except tables.balances.DoesNotExist:
        return None


def ledger_page(
    tables: Tables, username: str, limit: int, offset: int
) -> tuple[list[LedgerBase], int]:
    """Newest first. DynamoDB has no offset: the first ``offset`` entries are read, skipped."""
    entries = list(
        tables.ledger.query(
            username, scan_index_forward=False, limit=offset + limit, consistent_read=True
        )
    )
    total = tables.ledger.count(username, consistent_read=True)
    return entries[offset:], total


def holdings(tables: Tables, username: str) -> list[HoldingBase]:
    return [h for h in tables.holdings.query(username, consistent_read=True) if h.quantity > 0]


def get_holding(tables: Tables, username: str, asset_id: str) -> HoldingBase | None:
    try:
        holding = tables.holdings.get(username, asset_id, consistent_read=True)
    except tables.holdings.DoesNotExist:
        return None
    return holding if holding.quantity > 0 else None
