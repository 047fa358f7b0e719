"""The order service's settings (``CNOP_`` env prefix, like every service)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from cnop.core.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "order"
    port: int = 8002
    # Checked at the inventory's execution price, never at the price the client sent.
    max_order_value: Decimal = Field(default=Decimal("10000"), gt=0)
    # False is a deliberately weakened lab mode: balances and holdings are checked in Python and
    # written without condition expressions, so a race (with locks off) can overdraw an account.
    order_conditional_writes: bool = True
    # Attempts after a TransactionConflict before the client gets a 409 with Retry-After.
    transaction_retries: int = Field(default=3, ge=0, le=10)
    # False is the bola flaw (security/flaws.yaml): an order is looked up by its id alone, so
    # any logged-in user reads anyone's order. True: by (caller, id), another's is a 404.
    order_ownership_check_enabled: bool = True
