from __future__ import annotations

import io
import json
import logging
from decimal import Decimal

import pytest
from cnop.core.logging import JsonFormatter, log_event, request_id_var, user_var
from cnop.core.money import Amount, Quantity, qty_str, usd, usd_str
from cnop.core.settings import ServiceSettings
from pydantic import BaseModel, ValidationError


def test_settings_refuse_missing_or_short_secret_outside_dev_mode() -> None:
    with pytest.raises(ValidationError, match="CNOP_JWT_SECRET"):
        ServiceSettings(jwt_secret=None)
    with pytest.raises(ValidationError, match="at least 32"):
        ServiceSettings(jwt_secret="short")
    assert len(ServiceSettings(dev_mode=True).secret) >= 32
    assert ServiceSettings(jwt_secret="s" * 32, internal_secret="i" * 32).secret == "s" * 32


def test_settings_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNOP_JWT_SECRET", "e" * 40)
    monkeypatch.setenv("CNOP_INTERNAL_SECRET", "n" * 40)
    monkeypatch.setenv("CNOP_LOCK_TTL_SECONDS", "7.5")
    settings = ServiceSettings()
    assert settings.lock_ttl_seconds == 7.5 and settings.secret == "e" * 40


class _Money(BaseModel):
    amount: Amount
    quantity: Quantity = Decimal("1")


@pytest.mark.parametrize("raw", ["0", "-1", "0.001", "1000000.01", "NaN", "Infinity", "abc", 1e400])
def test_amount_rejects(raw: object) -> None:
    with pytest.raises(ValidationError):
        _Money(amount=raw)


def test_amount_and_quantity_accept_exact_decimals() -> None:
    assert _Money(amount="0.01").amount == Decimal("0.01")
    assert _Money(amount=1000000).amount == Decimal("1000000")
    assert _Money(amount="0.1", quantity="0.001").quantity == Decimal("0.001")
    with pytest.raises(ValidationError):
        _Money(amount="1", quantity="0.0009")
    with pytest.raises(ValidationError):
        _Money(amount="1", quantity="0.123456789")


def test_money_rendering_is_exact() -> None:
    assert usd(Decimal("0.125")) == Decimal("0.12")  # banker's rounding
    assert usd_str(Decimal("100")) == "100.00"
    assert usd_str(Decimal("0.1") + Decimal("0.2")) == "0.30"
    assert qty_str(Decimal("1.50000000")) == "1.5"
    assert qty_str(Decimal("10")) == "10"
    assert qty_str(Decimal("1E-8")) == "0.00000001"


def test_log_lines_are_json_with_request_id_and_user() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("order"))
    logger = logging.getLogger("cnop")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        request_id_var.set("req-12345678")
        user_var.set("alice_trader")
        log_event("order_completed", order_id="ord_1", total="10.00")
    finally:
        logger.removeHandler(handler)
        request_id_var.set(None)
        user_var.set(None)
    doc = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert doc["service"] == "order" and doc["event"] == "order_completed"
    assert doc["request_id"] == "req-12345678" and doc["user"] == "alice_trader"
    assert doc["order_id"] == "ord_1" and doc["level"] == "info" and doc["timestamp"]


async def test_password_hashing_runs_at_most_max_concurrent_at_once() -> None:
    """A login burst must not run 40 argon2 hashes (19 MiB each) at once: a container with a
    memory limit would be killed."""
    import asyncio
    import threading

    from cnop.services.user.passwords import Passwords

    passwords = Passwords(time_cost=1, memory_cost_kib=1024, parallelism=1, max_concurrent=2)
    running = peak = 0
    guard = threading.Lock()
    two_at_once = threading.Event()
    verify = passwords._hasher.verify

    def counting(*args: object) -> bool:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
            if running >= 2:
                two_at_once.set()
        try:
            import time

            # A hash holds its slot until a second one runs too: a fixed 0.05 s alone let a
            # loaded machine start the second thread after the first was done (peak 1). If the
            # limit never lets two in, the first gives up waiting after 5 s and peak says so.
            if not two_at_once.wait(5):
                two_at_once.set()
            time.sleep(0.05)  # and overlaps the others, should the limit let more in
            return verify(*args)  # type: ignore[arg-type]
        finally:
            with guard:
                running -= 1

    passwords._hasher.verify = counting  # type: ignore[method-assign]
    results = await asyncio.gather(*(passwords.verify("x", None) for _ in range(10)))
    assert results == [False] * 10
    assert peak == 2
