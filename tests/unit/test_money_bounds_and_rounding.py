"""Money at the edge: any number a client can send is a valid value or a 422, never a crash, and
rounding never favours the client. Property-style (hypothesis) over absurd numbers, as JSON
numbers and as strings, through the same parser and models the services use."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from cnop.core.idempotency import is_final
from cnop.core.json_body import api_router, check_routes, loads
from cnop.core.money import (
    CENT,
    credit_price,
    credit_usd,
    debit_price,
    debit_usd,
    qty_str,
    times,
    usd_str,
)
from cnop.services.order.schemas import OrderRequest
from cnop.services.user.schemas import AmountRequest
from fastapi import APIRouter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

ABSURD = [
    "1e100",
    "1E+100",
    "-0",
    "-0.0",
    "0E-100",
    "1E-100",
    "1e-7",
    "NaN",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1" + "0" * 30,
    "9" * 5000,
    "0." + "0" * 4000 + "1",
    "1e999999999",
    "1e-999999999",
    "1e1000000",
    "123456789012345678901234567890.123456789",
    "0.019999999999999999",
    "1000000.001",
    "999999999.99999999",
    "1000000000.00000001",
    "2.5e3",
    "1_000",
    " 1",
    "0x10",
    "",
]

# Texts shaped like numbers: signs, long digit runs, fractions and exponents of any size.
NUMBER_TEXT = st.one_of(
    st.sampled_from(ABSURD),
    st.from_regex(r"\A-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,10})?\Z"),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
)
JSON_NUMBER = st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,10})?\Z")


def _as_json(text: str, as_number: bool) -> str:
    return text if as_number else json.dumps(text)


def _parse(model: type[Any], body: str) -> Any | None:
    """What the service sees: the body through the shared parser, then the model (or a 422)."""
    try:
        return model.model_validate(loads(body))
    except ValidationError:
        return None


def _check_order(order: OrderRequest) -> None:
    """Everything the order service computes from a valid request, none of which may raise."""
    assert Decimal("0.001") <= order.quantity <= Decimal("1000000000")
    assert order.quantity == order.quantity.quantize(Decimal("1E-8"))
    order.fingerprint_payload()
    qty_str(order.quantity)
    for price in (order.price, Decimal("0.00000001"), Decimal("1000000000")):
        if price is None:
            continue
        value = times(order.quantity, price)
        assert debit_usd(value) >= value >= credit_usd(value)
        usd_str(debit_usd(value)), usd_str(credit_usd(value))
        debit_price(price), credit_price(price)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(text=NUMBER_TEXT, as_number=st.booleans(), field=st.sampled_from(["quantity", "price"]))
@example(text="1e100", as_number=False, field="price")  # the reported 500
@example(text="1e100", as_number=True, field="price")
def test_any_order_number_is_valid_or_a_validation_error(
    text: str, as_number: bool, field: str
) -> None:
    values = {"quantity": '"1"', "price": '"10"'}
    values[field] = _as_json(text, as_number)
    body = (
        '{"order_type": "market_buy", "asset_id": "BTC", '
        f'"quantity": {values["quantity"]}, "price": {values["price"]}}}'
    )
    try:
        parsed = loads(body)
    except ValueError:
        return  # not JSON at all (e.g. a bare NaN text): FastAPI answers 422 itself
    try:
        order = OrderRequest.model_validate(parsed)
    except ValidationError as exc:
        assert {e["loc"][0] for e in exc.errors()} == {field}
        return
    _check_order(order)
    if order.price is not None:
        assert Decimal(0) < order.price <= Decimal("1000000000")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(text=NUMBER_TEXT, as_number=st.booleans())
@example(text="0.019999999999999999", as_number=True)
def test_any_amount_is_valid_or_a_validation_error(text: str, as_number: bool) -> None:
    try:
        parsed = loads(f'{{"amount": {_as_json(text, as_number)}}}')
    except ValueError:
        return
    try:
        request = AmountRequest.model_validate(parsed)
    except ValidationError:
        return
    amount = request.amount
    assert Decimal(0) < amount <= Decimal(1000000)
    # Exactly what was sent: at most 2 decimals, never a float's neighbour.
    assert amount == Decimal(text.strip()) and amount == amount.quantize(CENT)
    assert debit_usd(amount) == credit_usd(amount) == amount
    usd_str(amount)


@settings(max_examples=300)
@given(text=JSON_NUMBER)
def test_json_numbers_keep_their_exact_text(text: str) -> None:
    assert loads(f'{{"n": {text}}}')["n"] == Decimal(text)


@pytest.mark.parametrize(
    "body",
    [
        '{"amount": 0.019999999999999999}',
        '{"amount": 10.004999999999999}',
        '{"amount": "0.019999999999999999"}',
        '{"amount": 1.0000000000000001}',
    ],
)
def test_a_number_with_more_than_two_decimals_is_refused_not_rounded(body: str) -> None:
    assert _parse(AmountRequest, body) is None


def test_numbers_and_strings_are_both_accepted_exactly() -> None:
    assert _parse(AmountRequest, '{"amount": 0.1}').amount == Decimal("0.1")
    assert _parse(AmountRequest, '{"amount": "10.50"}').amount == Decimal("10.50")
    assert _parse(AmountRequest, '{"amount": 1000000}').amount == Decimal(1000000)
    assert _parse(AmountRequest, '{"amount": 2.5e2}').amount == Decimal("250")
    order = _parse(
        OrderRequest,
        '{"order_type": "market_buy", "asset_id": "doge", "quantity": 0.30000001, "price": 1e2}',
    )
    assert order.quantity == Decimal("0.30000001") and order.price == Decimal(100)


# -- rounding: never in the client's favour ---------------------------------------------------


def test_debits_round_up_and_credits_round_down_to_the_cent() -> None:
    assert debit_usd(Decimal("0.001")) == Decimal("0.01")
    assert debit_usd(Decimal("0.0149")) == Decimal("0.02")
    assert debit_usd(Decimal("0.015")) == Decimal("0.02")
    assert debit_usd(Decimal("10.00")) == Decimal("10.00")
    assert credit_usd(Decimal("0.0199")) == Decimal("0.01")
    assert credit_usd(Decimal("0.0051")) == Decimal("0.00")
    assert credit_usd(Decimal("10.00")) == Decimal("10.00")
    assert debit_price(Decimal("0.000000011")) == Decimal("0.00000002")
    assert credit_price(Decimal("0.000000019")) == Decimal("0.00000001")


def test_products_are_exact_beyond_the_default_28_digits() -> None:
    quantity, price = Decimal("999999999.99999999"), Decimal("99999999.99999999")
    exact = times(quantity, price)
    assert exact == Decimal("99999999999999989.0000000000000001")
    # The default context keeps 28 digits and drops the last one: rounding up would lose a cent.
    assert debit_usd(quantity * price) == Decimal("99999999999999989.00")
    assert debit_usd(exact) == Decimal("99999999999999989.01")
    assert credit_usd(exact) == Decimal("99999999999999989.00")


@settings(max_examples=300)
@given(
    quantity=st.decimals(min_value="0.001", max_value="1000000000", places=8),
    price=st.decimals(min_value="0.00000001", max_value="1000000000", places=8),
)
def test_a_round_trip_never_pays_out_more_than_it_took(quantity: Decimal, price: Decimal) -> None:
    value = times(quantity, price)
    paid, received = debit_usd(value), credit_usd(value)
    assert received <= value <= paid
    assert paid - received <= CENT
    assert paid == paid.quantize(CENT) and received == received.quantize(CENT)


@settings(max_examples=100)
@given(
    parts=st.lists(
        st.decimals(min_value="0.001", max_value="1000", places=8), min_size=1, max_size=30
    ),
    price=st.decimals(min_value="0.00000001", max_value="100", places=8),
)
def test_splitting_an_order_never_beats_rounding(parts: list[Decimal], price: Decimal) -> None:
    """Buy the whole, sell it back piece by piece (or the reverse): the client never gains."""
    whole = sum(parts, Decimal(0))
    bought_whole = debit_usd(times(whole, debit_price(price)))
    sold_parts = sum((credit_usd(times(p, credit_price(price))) for p in parts), Decimal(0))
    assert sold_parts <= bought_whole
    bought_parts = sum((debit_usd(times(p, debit_price(price))) for p in parts), Decimal(0))
    sold_whole = credit_usd(times(whole, credit_price(price)))
    assert sold_whole <= bought_parts


# -- the shared parser is used wherever a body is read; what idempotency stores --------------


def test_a_body_route_on_the_float_parsing_route_class_is_refused_at_start_up() -> None:
    plain = APIRouter()

    @plain.post("/amounts")
    async def take(body: AmountRequest) -> None:
        return None

    with pytest.raises(TypeError, match="api_router"):
        check_routes([plain])
    decimal = api_router()
    decimal.add_api_route("/amounts", take, methods=["POST"])
    check_routes([decimal])


@pytest.mark.parametrize(
    ("status", "final"),
    [(200, True), (201, True), (404, True), (422, True)]
    + [(s, False) for s in (408, 409, 429, 500, 503, 504)],
)
def test_only_final_answers_are_stored_for_replay(status: int, final: bool) -> None:
    assert is_final(status) is final
