"""Money and quantity types: Decimal end to end, validated at the edge, rendered exactly.

Amounts leave the API as JSON *strings* ("1250.00"): a JSON number would be parsed as a float by
most clients, which is exactly the rounding the contract forbids.

Every request field is bounded above and below and limited in decimals, so whatever a client can
send is either one of these values or a 422. Arithmetic runs in :data:`EXACT`, a context wide
enough that any product and rounding of bounded values is exact and cannot raise; the default
context (28 digits) would round a large product silently, or raise ``InvalidOperation`` when
asked to quantize one (``Decimal("1e100").quantize(CENT)``), which is a 500.

Rounding never creates money: a debit (what a client pays: a buy, a withdrawal) rounds up to the
cent, a credit (what a client receives: a sell) rounds down. Half-even is for display only.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
)
from typing import Annotated

from pydantic import Field

CENT = Decimal("0.01")
QUANTUM_QTY = Decimal("0.00000001")
MAX_AMOUNT = Decimal("1000000")
MIN_QUANTITY = Decimal("0.001")
MAX_QUANTITY = Decimal("1000000000")
# The most a client may name as a unit price (market orders never execute at it anyway).
MAX_PRICE = Decimal("1000000000")

# 200 significant digits: a bounded quantity times a bounded price has at most 36, and even a
# sum of a million such values stays far below. Traps stay on: past this, raising beats rounding.
EXACT = Context(prec=200, Emax=10_000, Emin=-10_000, traps=[InvalidOperation])

# Request types: pydantic rejects NaN/Infinity, too many decimals and out-of-range values (422).
# Every one has both bounds, so no accepted value can overflow the helpers below.
Amount = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, decimal_places=2, allow_inf_nan=False)]
Quantity = Annotated[
    Decimal, Field(ge=MIN_QUANTITY, le=MAX_QUANTITY, decimal_places=8, allow_inf_nan=False)
]
Price = Annotated[Decimal, Field(gt=0, le=MAX_PRICE, decimal_places=8, allow_inf_nan=False)]


def _round(value: Decimal, quantum: Decimal, rounding: str) -> Decimal:
    return Decimal(value).quantize(quantum, rounding=rounding, context=EXACT)


def times(a: Decimal, b: Decimal) -> Decimal:
    """The exact product (the default context would round it to 28 digits first)."""
    return EXACT.multiply(Decimal(a), Decimal(b))


def debit_usd(value: Decimal) -> Decimal:
    """What a client pays (a buy, a withdrawal): rounded up to the cent, never in their favour."""
    return _round(value, CENT, ROUND_CEILING)


def credit_usd(value: Decimal) -> Decimal:
    """What a client receives (a sell): rounded down to the cent, never in their favour."""
    return _round(value, CENT, ROUND_FLOOR)


def debit_price(value: Decimal) -> Decimal:
    """A unit price a client pays, to 8 decimals, rounded up (a buy's execution price)."""
    return _round(value, QUANTUM_QTY, ROUND_CEILING)


def credit_price(value: Decimal) -> Decimal:
    """A unit price a client is paid, to 8 decimals, rounded down (a sell's execution price)."""
    return _round(value, QUANTUM_QTY, ROUND_FLOOR)


def usd(value: Decimal) -> Decimal:
    """Round to cents, half-even: for *showing* a value (a portfolio), never for moving money."""
    return _round(value, CENT, ROUND_HALF_EVEN)


def qty(value: Decimal) -> Decimal:
    return _round(value, QUANTUM_QTY, ROUND_HALF_EVEN)


def usd_str(value: Decimal) -> str:
    return format(usd(value), "f")


def qty_str(value: Decimal) -> str:
    """Quantities without trailing zeros ("0.5", "10"), never in exponent form."""
    text = format(qty(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
