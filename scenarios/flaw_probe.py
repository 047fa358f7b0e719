"""Send a flaw's probe (``security/flaws.yaml``) through the gateway and say whether it is open.

A probe is what a trainee does by hand to see the hole: register a user (and a second one with
an order, for BOLA), send one request (or a few), and read the answer. :func:`run_probe` does
exactly that and compares the answer with the catalogue's ``open`` and ``closed`` descriptions:
``open`` when the answer shows the hole, ``closed`` when it shows the protection, ``unclear``
when it shows neither (a 5xx, a 429 from a limiter, a setup step that failed). It never reads
the sandbox's settings: what it reports is what a client sees.

A probe changes the platform's state like any client: it registers users, places an order, and
its failed logins count toward the gateway's login blocks (trust-any-xff's, with the flaw off,
block the probing address for five minutes; `lab reset` clears that). Give it an address of its
own (``local_address``) where that matters.
"""

from __future__ import annotations

import base64
import json
import secrets
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import httpx
import jwt
from jwt.warnings import InsecureKeyLengthWarning

from scenarios.accounts import registration_body
from scenarios.flaws import Flaw, Probe, ProbeExpectation

__all__ = ["ProbeOutcome", "run_probe"]

Verdict = Literal["open", "closed", "unclear"]
_REQUEST_TIMEOUT_SECONDS = 15.0
_BODY_EXCERPT = 2000


class _SetupFailed(Exception):
    """A step before the probe itself failed; the verdict is ``unclear``."""


@dataclass(frozen=True)
class ProbeOutcome:
    """What the probe sent, what came back and what that shows (JSON-ready via as_dict)."""

    flaw: str
    verdict: Verdict
    shows: str
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.verdict == "open"

    def as_dict(self) -> dict[str, Any]:
        return {
            "flaw": self.flaw,
            "verdict": self.verdict,
            "shows": self.shows,
            "request": self.request,
            "response": self.response,
            "notes": self.notes,
        }


def run_probe(
    flaw: Flaw,
    gateway: str,
    *,
    local_address: str | None = None,
    timeout: float = _REQUEST_TIMEOUT_SECONDS,
) -> ProbeOutcome:
    """Probe ``flaw`` on the platform behind ``gateway`` (``http://127.0.0.1:8080``)."""
    probe = flaw.probe
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    with httpx.Client(base_url=gateway.rstrip("/"), timeout=timeout, transport=transport) as http:
        try:
            return _run(flaw, probe, http)
        except _SetupFailed as exc:
            return ProbeOutcome(flaw.name, "unclear", probe.shows, notes=[str(exc)])
        except httpx.HTTPError as exc:
            note = f"{type(exc).__name__}: {exc}"
            return ProbeOutcome(flaw.name, "unclear", probe.shows, notes=[note])


def _run(flaw: Flaw, probe: Probe, http: httpx.Client) -> ProbeOutcome:
    nonce = secrets.token_hex(4)
    words: dict[str, str] = {"nonce": nonce}
    notes: list[str] = []
    token: str | None = None
    if probe.as_ != "none" or probe.needs:
        words["username"] = f"probe_{nonce}"
        token = _account(http, words["username"])
        if probe.as_ == "none":
            token = None  # the account exists; the request goes without its token
    if "other-order" in probe.needs:
        other = _account(http, f"owner_{nonce}")
        words["other_order_id"] = _place_order(http, other, nonce)
        notes.append(f"owner_{nonce} placed order {words['other_order_id']}")
    cracked: bool | None = None
    if probe.as_ == "unsigned":
        assert token is not None
        token = _unsigned(token)
    elif probe.as_ == "cracked":
        assert token is not None
        word = _crack(token, probe.crack)
        cracked = word is not None
        if word is None:
            notes.append(f"none of {len(probe.crack)} words signs the token")
            verdict = _verdict(probe, None, cracked)
            return ProbeOutcome(flaw.name, verdict, probe.shows, notes=notes)
        notes.append(f"the token is signed with the word {word!r}")
        token = _resign(token, word)
    headers = {k: _fill(v, words) for k, v in probe.headers.items()}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    path = _fill(probe.path, words)
    body = _fill_json(probe.json_body, words)
    response: httpx.Response | None = None
    for i in range(1, probe.times + 1):
        sent = dict(headers)
        sent.update({k: _fill(v, {**words, "i": str(i)}) for k, v in probe.vary_header.items()})
        response = http.request(
            probe.method, path, headers=sent, json=body if body is not None else None
        )
    assert response is not None
    answer = _Answer(response, headers.get("Origin") or headers.get("origin"))
    verdict = _verdict(probe, answer, cracked)
    return ProbeOutcome(
        flaw.name,
        verdict,
        probe.shows,
        request={
            "method": probe.method,
            "path": path,
            "headers": {
                k: ("Bearer <token>" if k == "Authorization" else v) for k, v in sent.items()
            },
            "json": body,
            "times": probe.times,
        },
        response=answer.as_dict(),
        notes=notes,
    )


# --- judging -----------------------------------------------------------------------------


class _Answer:
    def __init__(self, response: httpx.Response, origin: str | None) -> None:
        self.status = response.status_code
        self.headers = response.headers
        self.origin = origin
        self.text = response.text
        try:
            self.body: Any = response.json()
        except ValueError:
            self.body = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": dict(self.headers.items()),
            "body": self.body if self.body is not None else self.text[:_BODY_EXCERPT],
        }


def _verdict(probe: Probe, answer: _Answer | None, cracked: bool | None) -> Verdict:
    is_open = _matches(probe.open, answer, cracked)
    is_closed = _matches(probe.closed, answer, cracked)
    if is_open and not is_closed:
        return "open"
    if is_closed and not is_open:
        return "closed"
    return "unclear"


def _matches(want: ProbeExpectation, answer: _Answer | None, cracked: bool | None) -> bool:
    if want.cracked is not None and want.cracked != cracked:
        return False
    if answer is None:  # nothing was sent: only `cracked` can be judged
        return want.cracked is not None and not _needs_answer(want)
    if want.status is not None and answer.status != want.status:
        return False
    for name, value in want.headers.items():
        expected = value.replace("{origin}", answer.origin or "")
        if answer.headers.get(name) != expected:
            return False
    if any(name in answer.headers for name in want.headers_absent):
        return False
    if any(not _has(answer.body, path) for path in want.body_has):
        return False
    return not any(_has(answer.body, path) for path in want.body_lacks)


def _needs_answer(want: ProbeExpectation) -> bool:
    return bool(
        want.status is not None
        or want.headers
        or want.headers_absent
        or want.body_has
        or want.body_lacks
    )


def _has(body: Any, path: str) -> bool:
    node = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --- setup: accounts, an order, tokens ----------------------------------------------------


def _account(http: httpx.Client, username: str) -> str:
    """Register ``username`` and log in; its access token."""
    password = f"Probe-{secrets.token_hex(6)}9x"
    registered = http.post(
        "/api/v1/auth/register",
        json=registration_body(username, password, first_name="Probe", last_name="User"),
    )
    if registered.status_code != 201:
        raise _SetupFailed(f"register {username}: {registered.status_code} {registered.text[:200]}")
    login = http.post("/api/v1/auth/login", json={"username": username, "password": password})
    token = login.json().get("access_token") if login.status_code == 200 else None
    if not isinstance(token, str):
        raise _SetupFailed(f"log in {username}: {login.status_code} {login.text[:200]}")
    return token


def _place_order(http: httpx.Client, token: str, nonce: str) -> str:
    auth = {"Authorization": f"Bearer {token}"}
    deposit = http.post("/api/v1/balance/deposit", json={"amount": "1000.00"}, headers=auth)
    if deposit.status_code != 201:
        raise _SetupFailed(f"deposit: {deposit.status_code} {deposit.text[:200]}")
    asset = http.get("/api/v1/inventory/assets/BTC", headers=auth)
    price = Decimal(str(((asset.json() or {}).get("data") or {}).get("price_usd") or "0"))
    if asset.status_code != 200 or price <= 0:
        raise _SetupFailed(f"price of BTC: {asset.status_code} {asset.text[:200]}")
    # The smallest order the platform takes (0.001): a share of 50 USD is below it once BTC
    # passes 50,000 USD, and prices move.
    quantity = Decimal("0.001")
    if price * quantity > Decimal("900"):
        raise _SetupFailed(f"BTC at {price} USD: 0.001 BTC costs more than the 1000 USD deposit")
    order = http.post(
        "/api/v1/orders",
        json={"order_type": "market_buy", "asset_id": "BTC", "quantity": str(quantity)},
        headers={**auth, "Idempotency-Key": f"probe-{nonce}"},
    )
    order_id = ((order.json() or {}).get("data") or {}).get("order_id")
    if order.status_code != 201 or not isinstance(order_id, str):
        raise _SetupFailed(f"order: {order.status_code} {order.text[:200]}")
    return order_id


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(token: str) -> str:
    """The token's claims under an ``alg: none`` header, with an empty signature."""
    payload = token.split(".")[1]
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}, separators=(",", ":")).encode())
    return f"{header}.{payload}."


def _crack(token: str, words: list[str]) -> str | None:
    """The word of ``words`` that signs ``token`` (HS256), as a dictionary attack finds it."""
    for word in words:
        try:
            with warnings.catch_warnings():  # short keys are the point of the attack
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                jwt.decode(token, word, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            return word  # the signature verified; a claim check failed, which does not matter
        return word
    return None


def _resign(token: str, word: str) -> str:
    """The same claims signed again with the cracked ``word`` (a forged, valid token)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["jti"] = secrets.token_hex(16)  # a token the platform never issued
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, word, algorithm="HS256")


def _shown(name: str, value: str) -> str:
    return "Bearer <token>" if name == "Authorization" else value


def _fill(text: str, words: dict[str, str]) -> str:
    for key, value in words.items():
        text = text.replace("{" + key + "}", value)
    return text


def _fill_json(value: Any, words: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, words)
    if isinstance(value, list):
        return [_fill_json(v, words) for v in value]
    if isinstance(value, dict):
        return {k: _fill_json(v, words) for k, v in value.items()}
    return value
