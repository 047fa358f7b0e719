"""The user service's pure rules: field validation, money amounts, portfolio arithmetic."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from cnop.services.user import validation as v
from cnop.services.user.funds import draw_red_pocket
from cnop.services.user.portfolio import Position, parse_price, portfolio_view, price_str
from cnop.services.user.schemas import AmountRequest, ProfileUpdate
from pydantic import ValidationError


@pytest.mark.parametrize("name", ["abcdef", "Alice_Trader", "a" * 30, "user_123"])
def test_good_usernames_are_lower_cased(name: str) -> None:
    assert v.check_username(name) == name.lower()


@pytest.mark.parametrize(
    "name", ["abcde", "a" * 31, "alice-trader", "alice trader", "alice_trader\n", "ålice_trader"]
)
def test_bad_usernames(name: str) -> None:
    with pytest.raises(ValueError, match="username"):
        v.check_username(name)


@pytest.mark.parametrize("pw", ["Str0ng!Passw0rd", "Aa1!" * 3, "Aa1=" + "x" * 16, "Zz9_zzzzzzzz"])
def test_good_passwords(pw: str) -> None:
    assert v.check_password(pw) == pw


@pytest.mark.parametrize(
    ("pw", "missing"),
    [
        ("Aa1!aaaaaaa", "12-20"),
        ("Aa1!" + "a" * 17, "12-20"),
        ("aa1!aaaaaaaa", "upper-case"),
        ("AA1!AAAAAAAA", "lower-case"),
        ("Aa!!aaaaaaaa", "digit"),
        ("Aa11aaaaaaaa", "one of"),
        ("Aa1~aaaaaaaa", "one of"),
    ],
)
def test_bad_passwords_say_which_rule(pw: str, missing: str) -> None:
    with pytest.raises(ValueError, match=missing) as info:
        v.check_password(pw)
    assert pw not in str(info.value)


@pytest.mark.parametrize("name", ["Alice", "O'Neil", "Smith-Jones", "Mary Ann", "Zoë", "X" * 50])
def test_good_names(name: str) -> None:
    assert v.check_name(name) == name


@pytest.mark.parametrize("name", ["", "X" * 51, "Al1ce", "Bob!", "   ", "-'", "<b>"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        v.check_name(name)


@pytest.mark.parametrize(
    ("phone", "ok"),
    [
        ("1234567890", True),
        ("123456789012345", True),
        ("123456789", False),
        ("1234567890123456", False),
        ("+1234567890", False),
        ("123-456-7890", False),
        ("١٢٣٤٥٦٧٨٩٠", False),  # non-ASCII digits
    ],
)
def test_phone(phone: str, ok: bool) -> None:
    if ok:
        assert v.check_phone(phone) == phone
    else:
        with pytest.raises(ValueError):
            v.check_phone(phone)


TODAY = date(2026, 6, 15)


@pytest.mark.parametrize(
    ("dob", "ok"),
    [
        ("2013-06-15", True),  # 13 today
        ("2013-06-16", False),  # 13 tomorrow
        ("1906-06-16", True),  # 119
        ("1906-06-15", True),  # 120 today
        ("1905-06-14", False),  # 121
        ("2030-01-01", False),
        ("1990-02-30", False),
        ("1990-2-3", False),
        ("19900203", False),
        ("03/02/1990", False),
    ],
)
def test_date_of_birth(dob: str, ok: bool) -> None:
    if ok:
        assert v.check_date_of_birth(dob, TODAY) == dob
    else:
        with pytest.raises(ValueError):
            v.check_date_of_birth(dob, TODAY)


def test_asset_id() -> None:
    assert v.check_asset_id("btc") == "BTC"
    for bad in ("", "ABCDEFGHIJK", "BT-C", "BTC\n"):
        with pytest.raises(ValueError):
            v.check_asset_id(bad)


@pytest.mark.parametrize("amount", ["0.01", "1", "10.5", "99.99", "1000000", "1000000.00", 5])
def test_good_amounts(amount: object) -> None:
    assert AmountRequest.model_validate({"amount": amount}).amount == Decimal(str(amount))


@pytest.mark.parametrize(
    "amount", ["0", "-1", "0.001", "1.234", "1000000.01", "NaN", "Infinity", "abc", None, [], True]
)
def test_bad_amounts(amount: object) -> None:
    with pytest.raises(ValidationError):
        AmountRequest.model_validate({"amount": amount})


def test_profile_update_refuses_null_for_required_fields() -> None:
    assert ProfileUpdate.model_validate({"phone": None}).model_fields_set == {"phone"}
    for field in ("first_name", "last_name", "email", "marketing_emails_consent"):
        with pytest.raises(ValidationError, match=field):
            ProfileUpdate.model_validate({field: None})


def test_portfolio_view_math() -> None:
    view = portfolio_view(
        Decimal("1000"),
        [
            Position("BTC", Decimal("0.5"), Decimal("50000")),
            Position("X", Decimal("3"), Decimal("1")),
        ],
    )
    assert view["usd_balance"] == "1000.00" and view["total_value"] == "26003.00"
    btc, x = view["assets"]
    assert btc == {
        "asset_id": "BTC",
        "quantity": "0.5",
        "current_price": "50000.00",
        "market_value": "25000.00",
        "percentage": "96.14",
    }
    assert x["market_value"] == "3.00" and x["percentage"] == "0.01"


def test_portfolio_view_with_nothing_is_zero_not_a_division_error() -> None:
    view = portfolio_view(Decimal(0), [Position("BTC", Decimal("1"), Decimal("0"))])
    assert view["total_value"] == "0.00"
    assert view["assets"][0]["percentage"] == "0.00"


def test_prices() -> None:
    assert parse_price("50000.00") == Decimal("50000.00")
    assert parse_price(0.25) == Decimal("0.25")
    assert parse_price(3) == Decimal(3)
    for bad in (None, True, "abc", "NaN", "-1", {}):
        with pytest.raises(ValueError):
            parse_price(bad)
    assert price_str(Decimal("0.00001234")) == "0.00001234"
    assert price_str(Decimal("1E+2")) == "100.00"
    assert price_str(Decimal("3000.5")) == "3000.50"


def test_red_pocket_draw_is_in_range_and_in_cents() -> None:
    low, high = Decimal("1.00"), Decimal("88.88")
    draws = {draw_red_pocket(low, high) for _ in range(500)}
    assert all(low <= d <= high and d == d.quantize(Decimal("0.01")) for d in draws)
    assert len(draws) > 100
    assert draw_red_pocket(Decimal("5.00"), Decimal("5.00")) == Decimal("5.00")
