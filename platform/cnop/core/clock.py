"""Time and identifiers: UTC everywhere, ids that sort by creation time."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    return iso(utc_now())


def utc_day(dt: datetime | None = None) -> str:
    return (dt or utc_now()).strftime("%Y-%m-%d")


def new_id(prefix: str) -> str:
    """``{prefix}_{13-digit ms}{10 hex}``: unique, URL-safe, sorted by time (newest first)."""
    return f"{prefix}_{int(time.time() * 1000):013d}{secrets.token_hex(5)}"
