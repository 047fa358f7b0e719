"""``Idempotency-Key`` support: a retried request returns its first final result and executes once.

The rules, and what keeps each of them:

- **Scope.** A record lives under ``{username}#{operation}#{client key}``: one user's key never
  answers another user's request, nor a deposit a withdrawal.
- **Final results only.** 2xx and 4xx are final and stored, except the 4xx that mean "try again"
  (408, 409, 425, 429: lock contention, a transaction conflict); those and 5xx are not stored, so
  a retry runs anew, which is what the answer told the client to do.
- **Execute once.** A 2xx is written *inside* the operation's DynamoDB transaction, a 4xx (which
  changed nothing) by a conditional put right after it; both only where no live record exists.
  If two copies of a request race (the lock was lost or is off), one write wins and the other
  copy answers with the winner's stored result.
- **Consistent reads.** A retry that arrives right after the first attempt committed must see it.
- **Expiry.** A record carries ``expires_at`` (a DynamoDB TTL attribute) ``idempotency_ttl_seconds``
  (24 h) after it was written. DynamoDB deletes expired items only eventually, and moto never,
  so a lookup treats an expired record as absent and a write may replace one: the key runs anew.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi.responses import JSONResponse
from pynamodb.exceptions import PutError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from cnop.core.clock import utc_now, utc_now_iso
from cnop.core.db import IdempotencyBase, Tables
from cnop.core.problems import PROBLEM_TYPE_BASE, ProblemError

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# 4xx answers that tell the client to come back: storing one would make every retry fail too.
RETRY_LATER_STATUSES = frozenset({408, 409, 425, 429})
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class StoredResult:
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class RequestKey:
    """One request's idempotency record: where it lives, what it must match, how long it lives."""

    record: str
    fingerprint: str
    ttl_seconds: int


def is_final(status_code: int) -> bool:
    return 200 <= status_code < 300 or (
        400 <= status_code < 500 and status_code not in RETRY_LATER_STATUSES
    )


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


def request_key(
    username: str,
    operation: str,
    raw_key: str | None,
    payload: dict[str, Any],
    ttl_seconds: int,
) -> RequestKey | None:
    """The record for a request, or None when it carries no key; a malformed key is a 422."""
    key = validate_key(raw_key)
    if key is None:
        return None
    return RequestKey(
        record_key(username, operation, key), request_fingerprint(payload), ttl_seconds
    )


def _expired(item: IdempotencyBase, now: datetime) -> bool:
    return item.expires_at is not None and item.expires_at <= now


def lookup(tables: Tables, key: RequestKey) -> StoredResult | None:
    """The live stored result, or None; a key reused for another request is a 422."""
    try:
        item: IdempotencyBase = tables.idempotency.get(key.record, consistent_read=True)
    except tables.idempotency.DoesNotExist:
        return None
    if _expired(item, utc_now()):
        return None
    if item.request_hash != key.fingerprint:
        raise ProblemError(
            422,
            "This Idempotency-Key was already used for a different request",
            slug="idempotency-key-reused",
        )
    return StoredResult(int(item.status_code), json.loads(item.response_json))


def _item(
    tables: Tables, key: RequestKey, status_code: int, body: dict[str, Any]
) -> tuple[IdempotencyBase, Condition]:
    """The record and the condition that it may be written: no record, or an expired one."""
    model = tables.idempotency
    now = utc_now()
    item = model(
        key.record,
        request_hash=key.fingerprint,
        status_code=status_code,
        response_json=json.dumps(body, default=str),
        created_at=utc_now_iso(),
        expires_at=now + timedelta(seconds=key.ttl_seconds),
    )
    return item, model.key.does_not_exist() | (model.expires_at <= now)


def add_record(
    tw: TransactWrite, tables: Tables, key: RequestKey, status_code: int, body: dict[str, Any]
) -> None:
    """Store a success inside the transaction that makes it happen (``idempotency`` item)."""
    item, condition = _item(tables, key, status_code, body)
    tw.save(item, condition=condition)


def remember_refusal(tables: Tables, key: RequestKey, problem: ProblemError) -> StoredResult | None:
    """Store a final 4xx, which changed nothing, so a retry gets it again instead of running.

    Returns None when stored, or the result a racing copy of the request stored first (the
    answer to give instead). Blocking: run through ``ctx.db``.
    """
    body = {
        "type": PROBLEM_TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    item, condition = _item(tables, key, problem.status, body)
    try:
        item.save(condition=condition)
    except PutError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
        return lookup(tables, key)
    return None


async def answer_refusal(
    db: Callable[..., Awaitable[Any]],
    tables: Tables,
    key: RequestKey | None,
    refusal: ProblemError,
) -> JSONResponse:
    """What a keyed request refused with ``refusal`` answers: a final refusal is stored (so a
    retry replays it) and raised; if a racing copy stored its answer first, that answer.
    ``db`` is ``ctx.db`` (runs the blocking store call off the event loop)."""
    if key is None or not is_final(refusal.status):
        raise refusal
    first = await db(remember_refusal, tables, key, refusal)
    if first is not None:
        return replay(first)
    raise refusal


def replay(stored: StoredResult) -> JSONResponse:
    """Answer with a stored result; a stored refusal is raised again as the same problem (with
    this request's own ``request_id`` and ``instance``)."""
    headers = {REPLAYED_HEADER: "true"}
    if stored.status_code >= 400:
        doc = dict(stored.body)
        slug = str(doc.pop("type", "")).removeprefix(PROBLEM_TYPE_BASE) or None
        title = doc.pop("title", None)
        detail = str(doc.pop("detail", ""))
        for rendered in ("status", "instance", "request_id"):
            doc.pop(rendered, None)
        raise ProblemError(
            stored.status_code, detail, slug=slug, title=title, headers=headers, **doc
        )
    return JSONResponse(stored.body, status_code=stored.status_code, headers=headers)


def cancellation_codes(exc: Exception) -> list[str | None]:
    """Per-item reasons of a cancelled transaction (``ConditionalCheckFailed``, ...)."""
    reasons = getattr(exc, "cancellation_reasons", None) or []
    return [r.code if r is not None else None for r in reasons]
