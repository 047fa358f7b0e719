"""Invariant checks: read an account back through the public API and prove the books add up.

Money and quantities arrive as JSON strings of decimals and are summed as :class:`Decimal`:
a float sum of 0.10 + 0.20 is not 0.30, and a grader must not invent a discrepancy.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from grader.checks.common import (
    CheckEnv,
    CheckError,
    compare,
    comparison_evidence,
    plain,
)
from grader.model import Account, InvariantCheck

PAGE = 50
MAX_PAGES = 400
MAX_RETRY_WAIT_S = 10.0
ZERO = Decimal("0")

# Ledger entries whose amount is given as a positive number but takes money out of the account.
_DEBIT_WORDS = ("withdraw", "buy", "debit", "fee", "purchase")
# Entries that never moved money.
_VOID_STATUSES = {"failed", "pending", "cancelled", "canceled", "rejected", "reversed"}


def dec(value: Any, what: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # tolerate a float in a response, without its binary tail
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise CheckError(f"{what} is not a decimal: {value!r}") from None


class Api:
    """The public API as one account sees it, through the gateway."""

    def __init__(self, env: CheckEnv, name: str) -> None:
        accounts = env.ctx.accounts
        if name not in accounts:
            known = ", ".join(sorted(accounts)) or "none"
            raise CheckError(f"the scenario created no account {name!r} (accounts: {known})")
        self.env = env
        self.name = name
        self.account: Account = accounts[name]
        self.base = env.ctx.gateway_url.rstrip("/") + "/api/v1"
        self.calls = 0

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, waiting out 429/503 answers that say when to come back."""
        waited = 0.0
        while True:
            self.calls += 1
            try:
                response = self.env.http.request(method, self.base + path, **kwargs)
            except httpx.HTTPError as exc:
                raise CheckError(f"{method} /api/v1{path} failed: {exc}") from exc
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code in (429, 503) and retry_after.isdigit():
                pause = max(0.2, float(retry_after))
                if waited + pause <= MAX_RETRY_WAIT_S:
                    self.env.sleep(pause)
                    waited += pause
                    continue
            return response

    def _login(self) -> str:
        response = self._send(
            "POST",
            "/auth/login",
            json={"username": self.account.username, "password": self.account.password},
        )
        if response.status_code != 200:
            raise CheckError(f"cannot log in as {self.account.username!r}: {_problem(response)}")
        token = response.json().get("access_token")
        if not isinstance(token, str):
            raise CheckError("the login response carries no access_token")
        return token

    def token(self, fresh: bool = False) -> str:
        tokens = self.env.tokens
        if fresh or self.name not in tokens:
            if not fresh and self.account.token:
                tokens[self.name] = self.account.token
            else:
                tokens[self.name] = self._login()
        return tokens[self.name]

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        response = self._send("GET", path, params=params, headers=self._auth())
        if response.status_code == 401 and self.account.password:
            # The token expired or was revoked by the drill: log in once more.
            response = self._send("GET", path, params=params, headers=self._auth(fresh=True))
        return response

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self.get(path, params)
        if response.status_code != 200:
            raise CheckError(f"GET /api/v1{path} answered {_problem(response)}")
        try:
            return response.json()
        except ValueError:
            raise CheckError(f"GET /api/v1{path} did not answer JSON") from None

    def _auth(self, fresh: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(fresh)}"}

    def pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[dict]:
        """Every item of a paginated list (``limit``/``offset``)."""
        items: list[dict] = []
        for page in range(MAX_PAGES):
            body = self.get_json(path, {**(params or {}), "limit": PAGE, "offset": page * PAGE})
            chunk = body.get(key) if isinstance(body, dict) else None
            if not isinstance(chunk, list):
                raise CheckError(f"GET /api/v1{path} has no list {key!r}")
            items.extend(chunk)
            total = body.get("total_count")
            if len(chunk) < PAGE or body.get("has_more") is False:
                return items
            if isinstance(total, int) and len(items) >= total:
                return items
        raise CheckError(f"GET /api/v1{path} has more than {MAX_PAGES * PAGE} items")

    # --- the account's books --------------------------------------------------------------
    def balance(self) -> Decimal:
        body = self.get_json("/balance")
        return dec(body.get("current_balance"), "current_balance")

    def holdings(self) -> dict[str, Decimal]:
        body = self.get_json("/portfolio")
        assets = body.get("assets") if isinstance(body, dict) else None
        if not isinstance(assets, list):
            raise CheckError("GET /api/v1/portfolio has no list 'assets'")
        held: dict[str, Decimal] = {}
        for item in assets:
            asset = str(item.get("asset_id", "")).upper()
            held[asset] = held.get(asset, ZERO) + dec(item.get("quantity"), f"{asset} quantity")
        return held


def _problem(response: httpx.Response) -> str:
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or body.get("title") or "")
    except ValueError:
        pass
    return f"{response.status_code} {detail}".strip()[:200]


def _completed(item: dict[str, Any]) -> bool:
    return str(item.get("status", "completed")).lower() not in _VOID_STATUSES


def signed_amount(entry: dict[str, Any]) -> Decimal:
    """A ledger entry's effect on the balance: a negative amount is taken as given, a positive
    one is a debit when its type says money left (withdrawal, buy, fee)."""
    amount = dec(entry.get("amount"), "ledger amount")
    kind = str(entry.get("transaction_type", "")).lower()
    if amount > 0 and any(word in kind for word in _DEBIT_WORDS):
        return -amount
    return amount


def trade_effect(trade: dict[str, Any]) -> Decimal:
    quantity = abs(dec(trade.get("quantity"), "trade quantity"))
    kind = str(trade.get("transaction_type", trade.get("order_type", ""))).lower()
    return -quantity if "sell" in kind else quantity


def evaluate(spec: InvariantCheck, env: CheckEnv) -> tuple[bool, dict[str, Any]]:
    api = Api(env, spec.account)
    evidence: dict[str, Any] = {"account": spec.account, "rule": spec.rule}
    rule = spec.rule
    if rule == "balance_non_negative":
        balance = api.balance()
        evidence["balance"] = plain(balance)
        evidence["observed"] = f"balance {plain(balance)} USD"
        passed = balance >= ZERO
        evidence["comparison"] = f"{plain(balance)} >= 0: {'holds' if passed else 'does not hold'}"
    elif rule == "holdings_non_negative":
        held = api.holdings()
        if spec.asset_id:
            held = {spec.asset_id.upper(): held.get(spec.asset_id.upper(), ZERO)}
        negative = {a: plain(q) for a, q in held.items() if q < ZERO}
        evidence["holdings"] = {a: plain(q) for a, q in sorted(held.items())}
        evidence["negative"] = negative
        evidence["observed"] = (
            "negative: " + ", ".join(f"{a} {q}" for a, q in negative.items())
            if negative
            else f"none negative ({len(held)} held)"
        )
        passed = not negative
    elif rule == "ledger_equals_balance":
        passed = _ledger_equals_balance(api, evidence)
    elif rule == "trades_equal_holdings":
        passed = _trades_equal_holdings(api, spec.asset_id, evidence)
    elif rule == "orders_completed":
        if spec.value is None:
            raise CheckError("orders_completed needs `value` (how many completed orders)")
        orders = api.pages("/orders", "data")
        completed = sum(1 for o in orders if str(o.get("status", "")).lower() == "completed")
        evidence["orders"] = len(orders)
        evidence["by_status"] = _count_by(orders, "status")
        passed = compare(completed, spec.op, spec.value, spec.tolerance)
        evidence.update(comparison_evidence(completed, spec.op, spec.value, passed, spec.tolerance))
    elif rule == "balance_equals":
        if spec.value is None:
            raise CheckError("balance_equals needs `value` (the expected USD balance)")
        balance = api.balance()
        expected = dec(spec.value, "value")
        passed = compare(balance, spec.op, expected, spec.tolerance)
        evidence.update(comparison_evidence(balance, spec.op, expected, passed, spec.tolerance))
    else:  # pragma: no cover - the model's Literal forbids it
        raise CheckError(f"unknown invariant rule {rule!r}")
    evidence["api_calls"] = api.calls
    return passed, evidence


def _count_by(items: list[dict[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        name = str(item.get(key, "?"))
        counts[name] = counts.get(name, 0) + 1
    return counts


def _ledger_equals_balance(api: Api, evidence: dict[str, Any]) -> bool:
    entries = api.pages("/balance/transactions", "transactions")
    # Checks run after the drill's traffic stopped, so ledger and balance are read at rest.
    balance = api.balance()
    counted = [e for e in entries if _completed(e)]
    total = sum((signed_amount(e) for e in counted), ZERO)
    by_type: dict[str, dict[str, Any]] = {}
    for entry in counted:
        kind = str(entry.get("transaction_type", "?"))
        row = by_type.setdefault(kind, {"entries": 0, "sum": ZERO})
        row["entries"] += 1
        row["sum"] += signed_amount(entry)
    passed = total == balance
    evidence.update(
        {
            "ledger_entries": len(entries),
            "ledger_entries_counted": len(counted),
            "ledger_by_type": {
                k: {"entries": v["entries"], "sum": plain(v["sum"])}
                for k, v in sorted(by_type.items())
            },
            "ledger_sum": plain(total),
            "balance": plain(balance),
            "difference": plain(balance - total),
            "observed": f"ledger {plain(total)}, balance {plain(balance)}",
            "comparison": f"ledger {plain(total)} == balance {plain(balance)}: "
            + ("holds" if passed else "does not hold"),
        }
    )
    return passed


def _trades_equal_holdings(api: Api, asset_id: str | None, evidence: dict[str, Any]) -> bool:
    held = api.holdings()
    if asset_id:
        assets = [asset_id.upper()]
    else:
        # Every asset ever traded, and every asset held (a holding without trades is wrong too).
        orders = api.pages("/orders", "data")
        traded = {str(o.get("asset_id", "")).upper() for o in orders if o.get("asset_id")}
        assets = sorted(traded | set(held))
    rows: dict[str, dict[str, Any]] = {}
    passed = True
    for asset in assets:
        trades = [t for t in api.pages(f"/assets/{asset}/transactions", "data") if _completed(t)]
        total = sum((trade_effect(t) for t in trades), ZERO)
        holding = held.get(asset, ZERO)
        ok = total == holding
        passed = passed and ok
        rows[asset] = {
            "trades": len(trades),
            "trades_sum": plain(total),
            "holding": plain(holding),
            "equal": ok,
        }
    evidence["assets"] = rows
    evidence["observed"] = (
        "; ".join(f"{a}: trades {r['trades_sum']}, held {r['holding']}" for a, r in rows.items())
        or "no trades, no holdings"
    )
    differ = ", ".join(a for a, r in rows.items() if not r["equal"])
    evidence["comparison"] = (
        "trades equal holdings for every asset"
        if passed
        else f"trades differ from holdings for: {differ}"
    )
    return passed
