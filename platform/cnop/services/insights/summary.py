"""Portfolio figures, the LLM prompt built from them, and the rule-based fallback summary.

Both texts come from the same :class:`Figures`, so an LLM outage changes the wording a user
reads, never the numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal

from cnop.core.money import qty_str, usd, usd_str
from cnop.services.insights.portfolio import Portfolio

HUNDRED = Decimal(100)
FALLBACK_MODEL = "rule-based"


@dataclass(frozen=True)
class Position:
    asset_id: str
    quantity: Decimal
    price: Decimal
    value: Decimal
    share: Decimal  # % of the whole portfolio, cash included


@dataclass(frozen=True)
class Figures:
    total: Decimal
    cash: Decimal
    cash_share: Decimal
    invested: Decimal
    positions: tuple[Position, ...]  # largest first
    top_share_of_invested: Decimal  # % of invested value in the largest holding
    effective_holdings: Decimal  # 1 / Herfindahl index of the holdings' weights

    @property
    def top(self) -> Position | None:
        return self.positions[0] if self.positions else None

    @property
    def empty(self) -> bool:
        return self.total == 0 and not self.positions


def figures(portfolio: Portfolio) -> Figures:
    """Recompute shares from values: the upstream's percentages are not relied upon."""
    held = [h for h in portfolio.assets if h.quantity > 0 or h.market_value > 0]
    invested = sum((h.market_value for h in held), Decimal(0))
    total = max(portfolio.total_value, invested + portfolio.usd_balance)

    def share(value: Decimal) -> Decimal:
        return value / total * HUNDRED if total else Decimal(0)

    positions = tuple(
        Position(h.asset_id, h.quantity, h.current_price, h.market_value, share(h.market_value))
        for h in sorted(held, key=lambda h: (-h.market_value, h.asset_id))
    )
    if invested > 0:
        weights = [p.value / invested for p in positions]
        hhi = sum((w * w for w in weights), Decimal(0))
        top_share = positions[0].value / invested * HUNDRED
        effective = 1 / hhi if hhi else Decimal(0)
    else:
        top_share = effective = Decimal(0)
    return Figures(
        total=total,
        cash=portfolio.usd_balance,
        cash_share=share(portfolio.usd_balance),
        invested=invested,
        positions=positions,
        top_share_of_invested=top_share,
        effective_holdings=effective,
    )


def _money(value: Decimal) -> str:
    return f"{usd(value):,.2f} USD"


def _pct(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}%"


def fallback_summary(f: Figures) -> str:
    """A deterministic summary from the numbers alone (no LLM, no network)."""
    if f.empty:
        return (
            "Your portfolio is empty: no cash and no asset holdings yet. "
            "Deposit USD to start building positions."
        )
    if not f.positions:
        return (
            f"Your portfolio is all cash: {_money(f.cash)} and no asset holdings. "
            "Nothing is exposed to market moves yet; buying a few different assets would "
            "start a diversified portfolio."
        )
    top = f.top
    assert top is not None
    count = len(f.positions)
    parts = [
        f"Your portfolio is worth {_money(f.total)}: {_money(f.invested)} in "
        f"{count} asset{'s' if count != 1 else ''} and {_money(f.cash)} in cash "
        f"({_pct(f.cash_share)} of the total).",
        f"The largest holding is {top.asset_id} at {_pct(top.share)} of the portfolio "
        f"({_money(top.value)}).",
    ]
    if count == 1:
        parts.append(
            f"Concentration is total: {top.asset_id} carries all of your market risk, so "
            "adding other assets would diversify it."
        )
    else:
        level = (
            "high"
            if f.top_share_of_invested >= 60
            else "moderate"
            if f.top_share_of_invested >= 35
            else "low"
        )
        spread = (
            "diversification is limited"
            if f.effective_holdings < 3
            else "holdings are reasonably spread"
        )
        parts.append(
            f"Concentration is {level}: the top holding is {_pct(f.top_share_of_invested)} of "
            f"invested value, and with an effective {f.effective_holdings.quantize(Decimal('0.1'))}"
            f" holdings {spread}."
        )
    if f.cash_share > 50:
        parts.append("Most of the value is idle cash, which limits both gains and losses.")
    elif f.cash_share < 5:
        parts.append("Little cash is left as a buffer against price drops.")
    else:
        parts.append(f"The {_pct(f.cash_share)} cash share is a buffer against price drops.")
    parts.append("This summary is computed from your holdings by fixed rules, not advice.")
    return " ".join(parts)


SYSTEM_INSTRUCTION = (
    "You are a concise portfolio analyst for a cryptocurrency trading simulator. "
    "Write 3 to 5 plain-text sentences (no markdown, no lists) for the portfolio's owner: "
    "overall value, diversification and concentration, cash share, the largest holding, and "
    "one risk worth watching. Use only the figures given. Give no price predictions and no "
    "personalised investment advice."
)


def build_prompt(f: Figures) -> str:
    """Holdings and cash only: the user's identity never goes to the LLM provider."""
    lines = [
        "Portfolio (all values in USD):",
        f"- Total value: {usd_str(f.total)}",
        f"- Cash: {usd_str(f.cash)} ({_pct(f.cash_share)} of total)",
        f"- Invested in assets: {usd_str(f.invested)}",
    ]
    if f.positions:
        lines.append("Holdings, largest first:")
        lines += [
            f"- {p.asset_id}: quantity {qty_str(p.quantity)}, price {usd_str(p.price)}, "
            f"value {usd_str(p.value)}, {_pct(p.share)} of total"
            for p in f.positions
        ]
    else:
        lines.append("Holdings: none")
    lines.append(
        f"Largest holding share of invested value: {_pct(f.top_share_of_invested)}; "
        f"effective number of holdings: {f.effective_holdings.quantize(Decimal('0.1'))}."
    )
    lines.append("Summarise this portfolio.")
    return "\n".join(lines)


def cache_key(portfolio: Portfolio, model: str) -> str:
    """Same holdings, cash and (whole-percent) weights give the same key.

    Prices move every few seconds; hashing them would make every key unique and the cache
    useless, while a summary of a portfolio's shape stays true for the cache's lifetime.
    """
    f = figures(portfolio)
    canonical = {
        "model": model,
        "cash": usd_str(f.cash),
        "cash_share": str(f.cash_share.quantize(Decimal(1))),
        "holdings": [
            {
                "asset_id": p.asset_id,
                "quantity": qty_str(p.quantity),
                "share": str(p.share.quantize(Decimal(1))),
            }
            for p in sorted(f.positions, key=lambda p: p.asset_id)
        ],
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return "cnop:insights:v1:" + hashlib.sha256(blob.encode()).hexdigest()
