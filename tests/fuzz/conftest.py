"""A platform for the fuzzer: its own ``lab up``, a funded user, and a record of what ran.

The fuzzer is one client hammering every route, so its sandbox gets a larger per-address and
per-user budget (the limits stay ON: a 429 is still a documented answer). Its requests leave from
a loopback address of their own; the logins that keep it authenticated leave from another, so
the fuzzer's own bad logins (which the login guard blocks after five) never lock it out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from requests.adapters import HTTPAdapter
from schemathesis.core.failures import Failure

from tests.sandbox import Sandbox, lab_sandbox, next_ip

FIRST_OFFSET = 20000 + 97 * 10
API = "/api/v1"
PASSWORD = "Fuzz!Passw0rd42"
# Higher budgets for one busy client; every protection stays switched on.
FUZZ_SERVICE_ENV = {"CNOP_RATE_LIMIT_IP_LIMIT": "20000", "CNOP_RATE_LIMIT_USER_LIMIT": "20000"}
DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


class SourceAddressAdapter(HTTPAdapter):
    """Sends every request of a ``requests`` session from one local address."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


@dataclass
class FuzzUser:
    """The logged-in user the fuzzer acts as; ``login`` hands out a fresh token."""

    gateway: str
    username: str
    login_ip: str = field(default_factory=next_ip)

    def login(self) -> str:
        transport = httpx.HTTPTransport(local_address=self.login_ip)
        with httpx.Client(base_url=self.gateway, transport=transport, timeout=15) as client:
            r = client.post(
                f"{API}/auth/login", json={"username": self.username, "password": PASSWORD}
            )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@dataclass(frozen=True)
class Finding:
    operation: str
    title: str
    status: int
    reproduce: str


@dataclass
class FuzzRecord:
    """What the fuzz tests sent and what broke, read by the final summary test."""

    responses: Counter[str] = field(default_factory=Counter)
    statuses: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    stateful: Counter[str] = field(default_factory=Counter)  # "METHOD /path STATUS"

    def response(self, operation: str, status: int) -> None:
        self.responses[operation] += 1
        self.statuses[operation][status] += 1

    def failed(self, operation: str, failure: Failure, status: int, reproduce: str) -> None:
        # One entry per (operation, kind of failure): the first reproducer is enough to fix it.
        key = (operation, failure.title)
        self.findings.setdefault(key, Finding(operation, failure.title, status, reproduce))


@pytest.fixture(scope="module")
def fuzz_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with lab_sandbox(tmp_path_factory.mktemp("fuzz-home"), FIRST_OFFSET, FUZZ_SERVICE_ENV) as box:
        yield box


@pytest.fixture(scope="module")
def fuzz_user(fuzz_sandbox: Sandbox) -> FuzzUser:
    """Registered, logged in and funded, so orders and withdrawals can succeed."""
    user = FuzzUser(fuzz_sandbox.gateway, "fuzzer_main")
    transport = httpx.HTTPTransport(local_address=user.login_ip)
    with httpx.Client(base_url=fuzz_sandbox.gateway, transport=transport, timeout=15) as client:
        r = client.post(
            f"{API}/auth/register",
            json={
                "username": user.username,
                "email": "fuzzer@example.com",
                "password": PASSWORD,
                "first_name": "Fuzz",
                "last_name": "Tester",
            },
        )
        assert r.status_code == 201, r.text
        token = user.login()
        r = client.post(
            f"{API}/balance/deposit",
            json={"amount": "9000.00"},  # the daily limit is 10,000
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
    return user


@pytest.fixture(scope="module")
def fuzz_session() -> Iterator[requests.Session]:
    session = requests.Session()
    adapter = SourceAddressAdapter(next_ip())
    session.mount("http://", adapter)
    yield session
    session.close()


@pytest.fixture(scope="module")
def fuzz_record() -> FuzzRecord:
    return FuzzRecord()


def authenticate(schema: schemathesis.BaseSchema, user: FuzzUser) -> None:
    """Bearer tokens for every call; a 401 (the fuzzer logged the token out) fetches a new one.
    Logout itself gets a throw-away token, so it revokes nothing the other calls use."""

    @schema.auth()
    class Bearer:
        def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
            return user.login()

        def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
            token = user.login() if case.operation.path.endswith("/auth/logout") else data
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
