"""Money and quantity types: Decimal end to end, validated at the edge, rendered exactly.

Amounts leave the API as JSON *strings* ("1250.00"): a JSON number would be parsed as a float by
most clients, which is exactly the rounding the contract forbids.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import Field

CENT = Decimal("0.01")
QUANTUM_QTY = Decimal("0.00000001")
MAX_AMOUNT = Decimal("1000000")
MIN_QUANTITY = Decimal("0.001")

# Request types: pydantic rejects NaN/Infinity, too many decimals and out-of-range values (422).
Amount = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, decimal_places=2)]
Quantity = Annotated[Decimal, Field(ge=MIN_QUANTITY, le=Decimal("1000000000"), decimal_places=8)]
Price = Annotated[Decimal, Field(gt=0, decimal_places=8)]


def usd(value: Decimal) -> Decimal:
    """Round to cents (banker's rounding, as ledgers do)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def qty(value: Decimal) -> Decimal:
    return Decimal(value).quantize(QUANTUM_QTY, rounding=ROUND_HALF_EVEN)


def usd_str(value: Decimal) -> str:
    return format(usd(value), "f")


def qty_str(value: Decimal) -> str:
    """Quantities without trailing zeros ("0.5", "10"), never in exponent form."""
    text = format(qty(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
