"""What a scan is pointed at: the sandbox's gateway and two users the lab creates for it.

Every engine scans as a logged-in user (``owner``), funded and holding one order, so the
authenticated routes answer with data and the stateful links (a new order, then its detail) have
something to follow. A second user (``other``) exists for the checks that need two accounts
(BOLA: can one user read the other's order by its id?). Requests leave from addresses of their
own (:data:`SOURCES`): the scanner's bad logins must never get the logins that keep it
authenticated blocked, and the probes that fail logins on purpose must not block each other.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from scenarios.runtime.base import Runtime

__all__ = ["API", "SOURCES", "ScanAccount", "ScanError", "ScanTarget", "prepare_target"]

API = "/api/v1"
# Drill-style client addresses (mapped by the runtime to addresses the gateway sees as peers).
SOURCES = {
    "setup": "127.0.0.71",  # registrations and logins that keep the scanner authenticated
    "scanner": "127.0.0.72",  # the engine's own requests
    "probe": "127.0.0.73",  # probes that behave (reads, CORS, headers)
    "enumeration": "127.0.0.74",  # two failed logins on purpose
    "xff": "127.0.0.75",  # five failed logins on purpose, then one with X-Forwarded-For
}
_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class ScanError(Exception):
    """A scan could not be set up or an engine could not run; one line for the CLI."""


@dataclass
class ScanAccount:
    username: str
    password: str
    token: str = ""
    order_id: str | None = None


@dataclass
class ScanTarget:
    """The gateway as the scanner reaches it, and the accounts it acts as."""

    gateway: str
    owner: ScanAccount
    other: ScanAccount
    sources: dict[str, str | None] = field(default_factory=dict)
    nonce: str = ""

    @property
    def openapi_url(self) -> str:
        return f"{self.gateway}{API}/openapi.json"

    def client(self, role: str, timeout: float = 15.0) -> httpx.Client:
        """A client whose requests leave from ``role``'s address (see :data:`SOURCES`)."""
        transport = httpx.HTTPTransport(local_address=self.sources.get(role), retries=0)
        return httpx.Client(
            base_url=self.gateway, transport=transport, timeout=timeout, follow_redirects=False
        )

    def login(self, account: ScanAccount) -> str:
        """A fresh token for ``account`` (from the setup address, which never fails a login)."""
        with self.client("setup") as client:
            r = _call(
                client,
                "POST",
                f"{API}/auth/login",
                200,
                "login",
                json={"username": account.username, "password": account.password},
            )
        return str(r.json()["access_token"])


def _call(
    client: httpx.Client,
    method: str,
    path: str,
    ok: int,
    what: str,
    also: tuple[int, ...] = (),
    **kwargs: Any,
) -> httpx.Response:
    """A setup request; waits out the platform shedding load (429, 502-504) a few times, else
    fails with one line. ``also`` are answers that count as success after such a retry (a
    registration that went through although its answer was a 504 is a 409 the second time)."""
    response: httpx.Response | None = None
    for attempt in range(6):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ScanError(f"scan setup: {what} failed ({type(exc).__name__}: {exc})") from exc
        if response.status_code == ok or (attempt and response.status_code in also):
            return response
        retry = response.headers.get("Retry-After", "")
        if response.status_code in (429, 502, 503, 504):
            time.sleep(min(5, int(retry)) if retry.isdigit() else 2.0)
            continue
        break
    status = response.status_code if response is not None else "nothing"
    raise ScanError(f"scan setup: {what} answered {status}")


def _account(role: str, nonce: str) -> ScanAccount:
    password = "Scan!" + "".join(secrets.choice(_ALPHABET) for _ in range(10)) + "a9Z"
    return ScanAccount(username=f"scan_{role}_{nonce}", password=password)


def _register(client: httpx.Client, account: ScanAccount) -> None:
    _call(
        client,
        "POST",
        f"{API}/auth/register",
        201,
        f"registering {account.username}",
        also=(409,),
        json={
            "username": account.username,
            "email": f"{account.username}@example.com",
            "password": account.password,
            "first_name": "Scan",
            "last_name": "Target",
        },
    )


def prepare_target(runtime: Runtime) -> ScanTarget:
    """Register two users, fund the owner and give it one order; log both in."""
    net = runtime.client_addresses(list(SOURCES.values()))
    sources = {role: net.source(address) for role, address in SOURCES.items()}
    nonce = secrets.token_hex(3)
    target = ScanTarget(
        gateway=net.gateway.rstrip("/"),
        owner=_account("owner", nonce),
        other=_account("other", nonce),
        sources=sources,
        nonce=nonce,
    )
    with target.client("setup") as client:
        for account in (target.owner, target.other):
            _register(client, account)
            account.token = target.login(account)
        auth = {"Authorization": f"Bearer {target.owner.token}"}
        _call(
            client,
            "POST",
            f"{API}/balance/deposit",
            201,
            "a deposit",
            json={"amount": "5000.00"},
            headers=auth,
        )
        assets = _call(client, "GET", f"{API}/inventory/assets", 200, "listing assets").json()
        asset = next((a for a in assets.get("data", []) if a.get("is_active", True)), None)
        if asset is None:
            raise ScanError("scan setup: the inventory lists no active asset")
        order = _call(
            client,
            "POST",
            f"{API}/orders",
            201,
            "placing an order",
            json={"asset_id": asset["asset_id"], "order_type": "market_buy", "quantity": "0.001"},
            headers=auth,
        ).json()
    data = order.get("data") if isinstance(order.get("data"), dict) else order
    target.owner.order_id = str(data.get("order_id") or "")
    if not target.owner.order_id:
        raise ScanError("scan setup: the new order carries no order_id")
    return target
