"""``Idempotency-Key`` support: a retried request returns its first result and executes once.

The record is written *inside* the same DynamoDB transaction as the operation, with
``attribute_not_exists``: if two copies of a request race (or the lock was lost), only one
transaction commits, and the other replays the stored result.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pynamodb.transactions import TransactWrite

from cnop.core.clock import utc_now_iso
from cnop.core.db import IdempotencyBase, Tables
from cnop.core.problems import ProblemError

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class StoredResult:
    status_code: int
    body: dict[str, Any]


def validate_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _KEY_RE.match(raw):
        raise ProblemError(
            422,
            "Idempotency-Key must be 1-64 characters of letters, digits, '_', '-', '.', ':'",
            errors=[{"field": "Idempotency-Key", "message": "invalid format"}],
        )
    return raw


def request_fingerprint(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_key(username: str, operation: str, key: str) -> str:
    return f"{username}#{operation}#{key}"


def lookup(tables: Tables, record: str, fingerprint: str) -> StoredResult | None:
    """Return the stored result, or None; a key reused for another request is a 422."""
    try:
        item: IdempotencyBase = tables.idempotency.get(record)
    except tables.idempotency.DoesNotExist:
        return None
    if item.request_hash != fingerprint:
        raise ProblemError(
            422,
            "This Idempotency-Key was already used for a different request",
            slug="idempotency-key-reused",
        )
    return StoredResult(int(item.status_code), json.loads(item.response_json))


def add_record(
    tw: TransactWrite,
    tables: Tables,
    record: str,
    fingerprint: str,
    status_code: int,
    body: dict[str, Any],
) -> None:
    model = tables.idempotency
    tw.save(
        model(
            record,
            request_hash=fingerprint,
            status_code=status_code,
            response_json=json.dumps(body, default=str),
            created_at=utc_now_iso(),
        ),
        condition=model.key.does_not_exist(),
    )


def cancellation_codes(exc: Exception) -> list[str | None]:
    """Per-item reasons of a cancelled transaction (``ConditionalCheckFailed``, ...)."""
    reasons = getattr(exc, "cancellation_reasons", None) or []
    return [r.code if r is not None else None for r in reasons]
