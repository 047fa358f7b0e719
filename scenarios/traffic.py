"""Traffic generators: what users and attackers do to the gateway during a drill.

Every generator is bounded in count *and* time and records every response it sees as a
:class:`grader.model.Observation`, so checks are computed from what clients really got, not from
what the platform says it did. Generators talk to the platform only over HTTP through the
gateway. Distinct client IPs come from distinct source addresses: drills name them as loopback
addresses (``127.0.0.N``), which the runtime may map to addresses of its own (``sources``, see
``Runtime.client_addresses``). The gateway reads the socket peer, so each generator is a
different client to its rate limiter; no generator claims an address in a header.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, Literal

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grader.model import Account, Observation

API = "/api/v1"
INTERESTING_HEADERS = (
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-request-id",
)
DEFAULT_TIMEOUT_S = 8.0  # above the gateway's 3 s upstream timeout plus its retries
MAX_IN_FLIGHT = 32  # a generator never has more requests open than this
SETUP_IP = "127.0.0.2"  # accounts and steady-state probes


class TrafficError(Exception):
    """A generator could not prepare (for example no price to size an order with)."""


# --- parameters of each kind (validated when a scenario loads) ---------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_ip: str | None = Field(default=None, pattern=r"^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=60)


class RequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    path: str = Field(pattern=r"^/")  # /api/v1/... or /health
    auth: bool = False  # send the account's bearer token
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    idempotency_key: bool = False  # a fresh Idempotency-Key per request
    label: str | None = None  # Observation.route; the path when absent


class RequestsParams(_Params):
    """Round-robin over ``requests`` at ``rate`` per second (``count`` at most)."""

    requests: list[RequestSpec] = Field(min_length=1)
    account: str | None = None
    rate: float = Field(default=5.0, gt=0, le=200)
    count: int | None = Field(default=None, ge=1, le=100_000)
    # [from, until): seconds after the first request in which none is sent; the next goes at
    # the first slot from `until` on, a moment the drill knows (breaker-rules starts a
    # half-open round so).
    pause: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _pause_ordered(self) -> RequestsParams:
        if self.pause is not None and not 0 <= self.pause[0] < self.pause[1]:
            raise ValueError("pause: [from, until] with 0 <= from < until (seconds)")
        return self


class BrowseParams(_Params):
    """Steady background browsing: the public asset list and the account's balance."""

    account: str
    rate: float = Field(default=5.0, gt=0, le=200)
    routes: list[Literal["assets", "balance"]] = ["assets", "balance"]


class _LoginAttack(_Params):
    # Requests in flight at once. Each login costs an argon2 verification (tens of MiB, most of
    # a core): a wide-open flood on a small machine measures the CPU, not the protections, and
    # failures only count once answered. One at a time, the fifth failure lands before the sixth
    # guess is sent, so the drill shows the policy exactly.
    concurrency: int = Field(default=1, ge=1, le=MAX_IN_FLIGHT)


class LoginBruteforceParams(_LoginAttack):
    """Wrong passwords for one username from one IP."""

    account: str
    attempts: int = Field(default=30, ge=1, le=5000)
    rate: float = Field(default=20.0, gt=0, le=500)


class LoginManyUsersParams(_LoginAttack):
    """Credential stuffing: many (unknown) usernames from one IP."""

    attempts: int = Field(default=60, ge=1, le=5000)
    rate: float = Field(default=30.0, gt=0, le=500)
    # Afterwards, take the limiter at its word (probe_retry_after): get a 429 right after a
    # fresh slot was spent, wait exactly its Retry-After and send one request (GET
    # probe_path), recorded as ``NAME.after_retry_after``; twice.
    probe_retry_after: bool = False
    probe_path: str = Field(default=f"{API}/inventory/assets", pattern=r"^/api/v1/")


class LoginSprayParams(_LoginAttack):
    """One username from many client IPs (a distributed guessing attack)."""

    account: str
    ips: int = Field(default=15, ge=1, le=250)
    attempts_per_ip: int = Field(default=2, ge=1, le=100)
    rate: float = Field(default=20.0, gt=0, le=500)
    subnet: int = Field(default=3, ge=1, le=255)  # addresses are 127.0.{subnet}.1..ips


class LoginBurstParams(_Params):
    """``attempts`` wrong passwords for one username, all released at the same moment: from
    ``source_ip`` (a brute force) or spread round-robin over ``ips`` client addresses
    127.0.{subnet}.1.. (a spray). Unlike the paced attacks, the point is the concurrency:
    every guess is in flight before the first is answered, which is when a guard that checks
    before and counts after lets them all through. Without ``account`` the username is one
    nobody registered (``ghost_<nonce>``), like a botnet's guessed name."""

    account: str | None = None
    attempts: int = Field(default=40, ge=1, le=200)
    ips: int = Field(default=1, ge=1, le=250)
    subnet: int = Field(default=4, ge=1, le=255)

    @model_validator(mode="after")
    def _one_source(self) -> LoginBurstParams:
        if self.ips > 1 and self.source_ip is not None:
            raise ValueError("a burst from many ips (ips > 1) takes subnet, not source_ip")
        return self

    def addresses(self) -> list[str]:
        if self.ips == 1 and self.source_ip is not None:
            return [self.source_ip]
        return [f"127.0.{self.subnet}.{i + 1}" for i in range(self.ips)]


class LoginLegitParams(_Params):
    """A legitimate user logging in with the right password, from its own IP."""

    account: str
    rate: float = Field(default=1.0, gt=0, le=50)
    count: int | None = Field(default=None, ge=1)


class OrderRaceParams(_Params):
    """``concurrency`` identical market buys for one account, released at the same moment."""

    account: str
    asset_id: str = Field(default="BTC", pattern=r"^[A-Za-z0-9]{1,10}$")
    concurrency: int = Field(default=50, ge=1, le=500)
    quantity: str | None = None  # decimal text; else sized from amount_usd at the current price
    amount_usd: float | None = Field(default=None, gt=0)
    idempotency_key: bool = False
    delay_s: float = Field(default=0, ge=0, le=60)  # after sizing the order, before sending
    # A buy refused with 409 (lock contention) is sent again after its Retry-After, as a
    # well-behaved client does, at most this many times: contention then delays a buy the
    # account can afford instead of losing it, however long each holder keeps the lock.
    conflict_retries: int = Field(default=0, ge=0, le=10)


class IdempotentOrdersParams(_Params):
    """Market buys, each with its own Idempotency-Key, retried with the same key on a 5xx or
    a client timeout: the platform must execute each key at most once."""

    account: str
    asset_id: str = Field(default="BTC", pattern=r"^[A-Za-z0-9]{1,10}$")
    amount_usd: float = Field(default=10.0, gt=0)
    rate: float = Field(default=2.0, gt=0, le=50)
    count: int | None = Field(default=None, ge=1)
    retries: int = Field(default=2, ge=0, le=10)


TOKEN_VARIANTS = ("missing", "garbage", "forged", "alg_none", "tampered", "expired", "revoked")


class TokenAttackParams(_Params):
    """Requests with bad tokens on an authenticated route; every one must be a 401."""

    account: str
    path: str = f"{API}/balance"
    variants: list[Literal[TOKEN_VARIANTS]] = list(TOKEN_VARIANTS)  # type: ignore[valid-type]
    rounds: int = Field(default=3, ge=1, le=100)
    rate: float = Field(default=10.0, gt=0, le=200)


KIND_PARAMS: dict[str, type[_Params]] = {
    "requests": RequestsParams,
    "browse": BrowseParams,
    "login_bruteforce": LoginBruteforceParams,
    "login_many_users": LoginManyUsersParams,
    "login_spray": LoginSprayParams,
    "login_burst": LoginBurstParams,
    "login_legit": LoginLegitParams,
    "order_race": OrderRaceParams,
    "idempotent_orders": IdempotentOrdersParams,
    "token_attacks": TokenAttackParams,
}


# --- recording and the maths over it ------------------------------------------------------------


class Recorder:
    """Collects observations per generator, plus numbers generators learn (``stats``)."""

    def __init__(self) -> None:
        self.observations: dict[str, list[Observation]] = {}
        self.stats: dict[str, Any] = {}

    def add(self, obs: Observation, *also: str) -> None:
        self.observations.setdefault(obs.generator, []).append(obs)
        for name in also:
            self.observations.setdefault(name, []).append(
                obs.model_copy(update={"generator": name})
            )

    def ensure(self, generator: str) -> None:
        self.observations.setdefault(generator, [])


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(observations: list[Observation]) -> dict[str, Any]:
    """Counts, availability and latency of one generator, for progress lines and reports."""
    total = len(observations)
    by_status: dict[str, int] = {}
    for obs in observations:
        by_status[str(obs.status)] = by_status.get(str(obs.status), 0) + 1
    failed = sum(1 for obs in observations if obs.status == 0 or obs.status >= 500)
    latencies_ms = [obs.latency_s * 1000 for obs in observations]
    return {
        "requests": total,
        "by_status": dict(sorted(by_status.items())),
        "availability": (total - failed) / total if total else None,
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
    }


# --- the context generators run in ---------------------------------------------------------------


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: building one loads the CA bundle, which takes a
    quarter of a second on a busy 2-core machine, and a spray's 40 clients built one after the
    other would stall the event loop (and every other generator's pacing) for ten seconds."""
    return httpx.create_ssl_context()


def source_client(
    base_url: str,
    source_ip: str | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """A client that plays one client IP by sending from that address: the gateway sees it as
    the socket peer. It sends no X-Forwarded-For: a client naming itself in a header is what
    the gateway must never believe, so a drill does not rely on it either."""
    transport = httpx.AsyncHTTPTransport(
        local_address=source_ip, retries=0, limits=limits or httpx.Limits(), verify=_tls_context()
    )
    return httpx.AsyncClient(
        base_url=base_url,
        transport=transport,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
        follow_redirects=False,
    )


@dataclass
class TrafficContext:
    gateway_url: str
    accounts: dict[str, Account]
    rng: random.Random
    recorder: Recorder
    nonce: str
    signing_secret: str | None = None
    # Drill address -> the source address that plays it (absent: the drill address itself).
    sources: Mapping[str, str | None] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(
        self, source_ip: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> httpx.AsyncClient:
        client = source_client(
            self.gateway_url,
            None if source_ip is None else self.sources.get(source_ip, source_ip),
            timeout_s,
            limits=httpx.Limits(max_connections=MAX_IN_FLIGHT * 2, max_keepalive_connections=16),
        )
        self.clients.append(client)
        return client

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise TrafficError(f"no account named {name!r} in the scenario's setup") from None

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        self.clients.clear()


async def send(
    ctx: TrafficContext,
    client: httpx.AsyncClient,
    generator: str,
    method: str,
    path: str,
    *,
    route: str | None = None,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    also: tuple[str, ...] = (),
) -> Observation:
    """One request, always recorded (a transport error or client timeout is status 0)."""
    sent = time.time()
    started = time.perf_counter()
    status, error, kept = 0, None, {}
    try:
        response = await client.request(method, path, headers=headers, json=json_body)
        status = response.status_code
        kept = {k: v for k, v in response.headers.items() if k.lower() in INTERESTING_HEADERS}
    except httpx.TimeoutException:
        error = "timeout"
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    if status in (409, 429, 503) and "retry-after" not in {k.lower() for k in kept}:
        # A refusal that does not say when to come back (a limit, an outage, lock contention):
        # recorded apart so a check can count it.
        also = (*also, f"{generator}.no_retry_after")
    obs = Observation(
        generator=generator,
        t=sent,
        status=status,
        latency_s=time.perf_counter() - started,
        route=route or f"{method} {path}",
        error=error,
        headers=kept,
    )
    ctx.recorder.add(obs, *also)
    return obs


def retry_after_s(obs: Observation) -> int | None:
    """The answer's Retry-After in whole seconds, None when absent or not a number of seconds."""
    wait = obs.header("Retry-After") or ""
    return int(wait) if wait.isdigit() else None


async def paced(
    rate: float,
    duration: float | None,
    count: int | None,
    make: Callable[[int], Awaitable[Any]],
    max_in_flight: int = MAX_IN_FLIGHT,
    pause: tuple[float, float] | None = None,
) -> None:
    """Start ``make(i)`` every ``1/rate`` s (open loop: a slow answer does not slow the pace,
    up to ``max_in_flight`` unanswered requests),
    until ``count`` requests or ``duration`` seconds, whichever is first; then wait for the
    requests still in flight (each bounded by its client timeout). Slots that fall in
    ``pause`` ([from, until) seconds after the start) are skipped, not moved (they still count
    toward ``count``): the pace resumes on the same grid, at the first slot from ``until`` on."""
    if count is None and duration is None:
        raise TrafficError("a generator needs a duration or a count")
    limit = count if count is not None else math.inf
    if duration is not None:
        limit = min(limit, max(1, math.floor(duration * rate) + 1))
    gate = asyncio.Semaphore(max(1, min(max_in_flight, MAX_IN_FLIGHT)))
    tasks: set[asyncio.Task[Any]] = set()

    async def one(i: int) -> None:
        try:
            await make(i)
        finally:
            gate.release()

    start = time.monotonic()
    deadline = start + duration if duration is not None else math.inf
    i = 0
    try:
        while i < limit:
            now = time.monotonic()
            if now >= deadline:
                break
            if pause is not None and pause[0] <= i / rate < pause[1]:
                i += 1
                continue
            await asyncio.sleep(max(0.0, start + i / rate - now))
            await gate.acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


# --- helpers shared by generators ------------------------------------------------------------


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def wrong_password(i: int) -> str:
    """Passes the format rules (12..20, upper, lower, digit, special) but is never right."""
    return f"Wrong-Guess-{i:05d}x"


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await client.post(
        f"{API}/auth/login", json={"username": username, "password": password}
    )
    if response.status_code != 200:
        raise TrafficError(f"login of {username} answered {response.status_code}")
    return str(response.json()["access_token"])


async def current_price(client: httpx.AsyncClient, asset_id: str) -> Decimal:
    response = await client.get(f"{API}/inventory/assets/{asset_id}")
    if response.status_code != 200:
        raise TrafficError(f"price of {asset_id}: the gateway answered {response.status_code}")
    try:
        return Decimal(str(response.json()["data"]["price_usd"]))
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise TrafficError(f"price of {asset_id}: unexpected answer") from exc


def quantity_for(amount_usd: float, price: Decimal) -> Decimal:
    """The largest 8-decimal quantity whose value does not exceed ``amount_usd``."""
    if price <= 0:
        raise TrafficError("price must be positive")
    qty = (Decimal(str(amount_usd)) / price).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
    if qty < Decimal("0.001"):
        raise TrafficError(f"{amount_usd} USD buys less than the minimum quantity 0.001")
    return qty


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_tokens(
    real_token: str, revoked_token: str | None, rng: random.Random, secret: str | None = None
) -> dict[str, str | None]:
    """Attack tokens built from a real token's claims. An attacker never knows the platform's
    secret, so the forged variants use another one. The expired token stands for one replayed
    from an old capture: correctly signed (with the sandbox's ``secret``, which the lab as
    operator has) but past its ``exp``, so only the expiry check can refuse it."""
    claims = jwt.decode(real_token, options={"verify_signature": False})
    header, _payload, signature = real_token.split(".")
    wrong_secret = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(48))
    now = int(time.time())
    expired = {**claims, "iat": now - 7200, "exp": now - 3600, "jti": uuid.uuid4().hex}
    tampered_claims = {**claims, "sub": "admin", "role": "admin"}
    tampered = ".".join(
        [header, _b64(json.dumps(tampered_claims, separators=(",", ":")).encode()), signature]
    )
    alg_none = ".".join(
        [
            _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
            _b64(json.dumps(claims, separators=(",", ":")).encode()),
            "",
        ]
    )
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "forged": jwt.encode({**claims, "jti": uuid.uuid4().hex}, wrong_secret, algorithm="HS256"),
        "alg_none": alg_none,
        "tampered": tampered,
        "expired": jwt.encode(expired, secret or wrong_secret, algorithm="HS256"),
        "revoked": revoked_token,
    }


# --- the generators ----------------------------------------------------------------------------


Runner = Callable[[TrafficContext, str, Any, float | None], Awaitable[None]]


async def run_requests(
    ctx: TrafficContext, name: str, p: RequestsParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    token = ctx.account(p.account).token if p.account else None

    async def make(i: int) -> None:
        spec = p.requests[i % len(p.requests)]
        headers = bearer(token) if spec.auth else {}
        if spec.idempotency_key:
            headers["Idempotency-Key"] = f"lab-{ctx.nonce}-{name}-{i}"
        await send(
            ctx,
            client,
            name,
            spec.method,
            spec.path,
            route=spec.label,
            headers=headers,
            json_body=spec.json_body,
        )

    await paced(p.rate, duration, p.count, make, pause=p.pause)


async def run_browse(
    ctx: TrafficContext, name: str, p: BrowseParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    token = ctx.account(p.account).token
    # Each route is also recorded as its own generator (``name.assets``...) so a check can tell
    # the route whose upstream is down from the ones that must keep working.
    routes = {
        "assets": ("GET", f"{API}/inventory/assets", {}),
        "balance": ("GET", f"{API}/balance", bearer(token)),
    }

    async def make(i: int) -> None:
        key = p.routes[i % len(p.routes)]
        method, path, headers = routes[key]
        await send(
            ctx, client, name, method, path, route=key, headers=headers, also=(f"{name}.{key}",)
        )

    for key in p.routes:
        ctx.recorder.ensure(f"{name}.{key}")
    await paced(p.rate, duration, None, make)


async def run_login_bruteforce(
    ctx: TrafficContext, name: str, p: LoginBruteforceParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    username = ctx.account(p.account).username

    async def make(i: int) -> None:
        body = {"username": username, "password": wrong_password(i)}
        await send(ctx, client, name, "POST", f"{API}/auth/login", route="login", json_body=body)

    await paced(p.rate, duration, p.attempts, make, p.concurrency)


async def run_login_many_users(
    ctx: TrafficContext, name: str, p: LoginManyUsersParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)

    async def make(i: int) -> None:
        body = {"username": f"ghost_{ctx.nonce}_{i:05d}", "password": wrong_password(i)}
        await send(ctx, client, name, "POST", f"{API}/auth/login", route="login", json_body=body)

    await paced(p.rate, duration, p.attempts, make, p.concurrency)
    if p.probe_retry_after:
        await probe_retry_after(ctx, client, name, p.probe_path)


MAX_RETRY_AFTER_S = 5  # a client that retries waits what Retry-After says, but not longer
PROBE_ASKS = 5  # requests sent at most to be refused once (each admitted one spends a slot)
PROBE_ROUNDS = 2  # refusals taken at their word, each right after a fresh slot was spent
PROBE_POLL_S = 0.05  # pause between asks while waiting for the next slot
PROBE_SLACK_S = 1.0  # beyond what Retry-After said, how long the probe still polls for a slot


async def probe_retry_after(
    ctx: TrafficContext,
    client: httpx.AsyncClient,
    name: str,
    path: str,
    rounds: int = PROBE_ROUNDS,
) -> None:
    """Is Retry-After true? Be refused (429), wait exactly what it says, ask again: that
    request (``NAME.after_retry_after``) must get in. Every other ask is recorded under
    ``name`` (the same client).

    Retry-After is whole seconds and at least 1, so a header that says too little shows only
    when the real wait is over a second, and the real wait after a refusal is anything up to
    one emission interval (window / limit: 1.5 s at 40 per 60 s). It is a whole interval right
    after a request took a slot the moment it came free. So each round first asks every
    ``PROBE_POLL_S`` until a request gets through (that one took the fresh slot), then asks
    again at once and takes that refusal at its word: a header that says half the wait (1 s
    for 1.5 s) meets another 429 every time, not only when the first refusal came late in an
    interval."""
    probe = f"{name}.after_retry_after"
    ctx.recorder.ensure(probe)
    for _ in range(rounds):
        said = await _refused(ctx, client, name, path)
        if said is None:
            return  # never refused: no limiter to take at its word
        if not await _fresh_slot(ctx, client, name, path, said):
            # Still refused well past what Retry-After said: that request is the answer.
            await send(ctx, client, probe, "GET", path, route="probe")
            return
        said = await _refused(ctx, client, name, path)
        if said is None:
            return
        await asyncio.sleep(said)
        await send(ctx, client, probe, "GET", path, route="probe")


async def _refused(
    ctx: TrafficContext, client: httpx.AsyncClient, name: str, path: str
) -> int | None:
    """Ask until refused, at most ``PROBE_ASKS`` times: that refusal's Retry-After (s)."""
    for _ in range(PROBE_ASKS):
        answer = await send(ctx, client, name, "GET", path, route="ask")
        wait = retry_after_s(answer)
        if answer.status == 429 and wait is not None:
            return wait
    return None


async def _fresh_slot(
    ctx: TrafficContext, client: httpx.AsyncClient, name: str, path: str, said: int
) -> bool:
    """After a refusal that said ``said`` s: ask every ``PROBE_POLL_S`` until a request gets
    through, which then took the slot within a poll of its coming free. False when none got
    through within ``said`` plus ``PROBE_SLACK_S``."""
    deadline = time.monotonic() + said + PROBE_SLACK_S
    while time.monotonic() < deadline:
        await asyncio.sleep(PROBE_POLL_S)
        answer = await send(ctx, client, name, "GET", path, route="poll")
        if answer.status != 429:
            return True
    return False


async def run_login_spray(
    ctx: TrafficContext, name: str, p: LoginSprayParams, duration: float | None
) -> None:
    username = ctx.account(p.account).username
    clients = [ctx.client(ip, p.timeout_s) for ip in spray_addresses(p)]
    order = [(ip, n) for n in range(p.attempts_per_ip) for ip in range(p.ips)]

    async def make(i: int) -> None:
        ip, _ = order[i]
        body = {"username": username, "password": wrong_password(i)}
        await send(
            ctx, clients[ip], name, "POST", f"{API}/auth/login", route="login", json_body=body
        )

    await paced(p.rate, duration, len(order), make, p.concurrency)


async def run_login_burst(
    ctx: TrafficContext, name: str, p: LoginBurstParams, duration: float | None
) -> None:
    username = ctx.account(p.account).username if p.account else f"ghost_{ctx.nonce}"
    clients = [ctx.client(ip, p.timeout_s) for ip in p.addresses()]
    release = asyncio.Event()

    async def one(i: int) -> None:
        body = {"username": username, "password": wrong_password(i)}
        await release.wait()
        await send(
            ctx,
            clients[i % len(clients)],
            name,
            "POST",
            f"{API}/auth/login",
            route="login",
            json_body=body,
        )

    tasks = [asyncio.create_task(one(i)) for i in range(p.attempts)]
    await asyncio.sleep(0)  # every task is parked on the event: they start together
    release.set()
    await asyncio.gather(*tasks)


async def run_login_legit(
    ctx: TrafficContext, name: str, p: LoginLegitParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    account = ctx.account(p.account)

    async def make(i: int) -> None:
        body = {"username": account.username, "password": account.password}
        await send(ctx, client, name, "POST", f"{API}/auth/login", route="login", json_body=body)

    await paced(p.rate, duration, p.count, make)


async def run_order_race(
    ctx: TrafficContext, name: str, p: OrderRaceParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    account = ctx.account(p.account)
    if p.quantity is not None:
        quantity = Decimal(p.quantity)
    elif p.amount_usd is not None:
        price = await current_price(client, p.asset_id)
        quantity = quantity_for(p.amount_usd, price)
        ctx.recorder.stats[f"{name}.price"] = str(price)
    else:
        raise TrafficError(f"{name}: order_race needs quantity or amount_usd")
    ctx.recorder.stats[f"{name}.quantity"] = str(quantity)
    body = {"order_type": "market_buy", "asset_id": p.asset_id, "quantity": str(quantity)}
    release = asyncio.Event()

    async def one(i: int) -> None:
        headers = bearer(account.token)
        if p.idempotency_key:
            headers["Idempotency-Key"] = f"lab-{ctx.nonce}-{name}-{i}"
        await release.wait()
        for attempt in range(p.conflict_retries + 1):
            obs = await send(
                ctx,
                client,
                name,
                "POST",
                f"{API}/orders",
                route="buy" if attempt == 0 else "buy-retry",
                headers=headers,
                json_body=body,
            )
            wait = retry_after_s(obs)
            if obs.status != 409 or wait is None:
                return
            await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))

    tasks = [asyncio.create_task(one(i)) for i in range(p.concurrency)]
    await asyncio.sleep(p.delay_s)  # every task is parked on the event: they start together
    release.set()
    await asyncio.gather(*tasks)


async def run_idempotent_orders(
    ctx: TrafficContext, name: str, p: IdempotentOrdersParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    account = ctx.account(p.account)
    quantity = quantity_for(p.amount_usd, await current_price(client, p.asset_id))
    body = {"order_type": "market_buy", "asset_id": p.asset_id, "quantity": str(quantity)}
    succeeded: set[str] = set()
    attempts: dict[str, int] = {}

    async def make(i: int) -> None:
        key = f"lab-{ctx.nonce}-{name}-{i}"
        headers = {**bearer(account.token), "Idempotency-Key": key}
        for attempt in range(p.retries + 1):
            attempts[key] = attempt + 1
            obs = await send(
                ctx,
                client,
                name,
                "POST",
                f"{API}/orders",
                route="buy",
                headers=headers,
                json_body=body,
            )
            if obs.status == 201:
                succeeded.add(key)
                return
            if obs.status not in (0, 502, 503, 504):
                return  # a definite answer (4xx): retrying would not change it
            await asyncio.sleep(0.2 * (attempt + 1))

    await paced(p.rate, duration, p.count, make)
    ctx.recorder.stats[f"{name}.keys"] = len(attempts)
    ctx.recorder.stats[f"{name}.succeeded_keys"] = len(succeeded)
    ctx.recorder.stats[f"{name}.retried_keys"] = sum(1 for n in attempts.values() if n > 1)


async def run_token_attacks(
    ctx: TrafficContext, name: str, p: TokenAttackParams, duration: float | None
) -> None:
    client = ctx.client(p.source_ip, p.timeout_s)
    account = ctx.account(p.account)
    real = await login(client, account.username, account.password)
    revoked = None
    if "revoked" in p.variants:
        revoked = await login(client, account.username, account.password)
        response = await client.post(f"{API}/auth/logout", headers=bearer(revoked), json={})
        if response.status_code != 200:
            raise TrafficError(f"logout to revoke a token answered {response.status_code}")
    tokens = forge_tokens(real, revoked, ctx.rng, ctx.signing_secret)
    plan = [variant for _ in range(p.rounds) for variant in p.variants]
    for variant in p.variants:
        ctx.recorder.ensure(f"{name}.{variant}")

    async def make(i: int) -> None:
        variant = plan[i]
        await send(
            ctx,
            client,
            name,
            "GET",
            p.path,
            route=variant,
            headers=bearer(tokens[variant]),
            also=(f"{name}.{variant}",),
        )

    await paced(p.rate, duration, len(plan), make)


RUNNERS: dict[str, Runner] = {
    "requests": run_requests,
    "browse": run_browse,
    "login_bruteforce": run_login_bruteforce,
    "login_many_users": run_login_many_users,
    "login_spray": run_login_spray,
    "login_burst": run_login_burst,
    "login_legit": run_login_legit,
    "order_race": run_order_race,
    "idempotent_orders": run_idempotent_orders,
    "token_attacks": run_token_attacks,
}


def spray_addresses(params: LoginSprayParams) -> list[str]:
    return [f"127.0.{params.subnet}.{i + 1}" for i in range(params.ips)]


def client_addresses(params: BaseModel) -> list[str]:
    """Every client address a step sends from (what the runtime must provide before it runs)."""
    if isinstance(params, LoginSprayParams):
        return spray_addresses(params)
    if isinstance(params, LoginBurstParams):
        return params.addresses()
    source_ip = getattr(params, "source_ip", None)
    return [source_ip] if source_ip else []


def generator_names(name: str, kind: str, params: BaseModel) -> list[str]:
    """Every generator name a step records under (checks may refer to any of them):
    the step's own, one per route or token variant, and ``NAME.no_retry_after`` (409, 429 and
    503 answers without a Retry-After header)."""
    names = [name, f"{name}.no_retry_after"]
    if isinstance(params, BrowseParams):
        names += [f"{name}.{route}" for route in params.routes]
    if isinstance(params, TokenAttackParams):
        names += [f"{name}.{variant}" for variant in params.variants]
    if isinstance(params, LoginManyUsersParams) and params.probe_retry_after:
        names.append(f"{name}.after_retry_after")
    return names
